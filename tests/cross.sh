#!/usr/bin/env bash
# tests/cross.sh ARCH (aarch64 | arm | mipsel): the static cross build of
# mixctl, run under qemu user mode (called explicitly: binfmt is not needed).
#
#  1. make static CXX=TRIPLE-g++ O=build/cross-ARCH; the binary must be
#     static, stripped and for ARCH.
#  2. Under qemu: -V prints the Makefile's version, -check passes, and a
#     relay on loopback (2 workers) carries checksummed bytes both ways to a
#     python3 echo upstream; SIGTERM stops it with status 0.
#  3. The unit tests (yaml_lite, config, flags, net, shared64, localtime:
#     local time against ARCH's glibc, 32-bit time_t on arm and mipsel; not
#     the integration tests) built for ARCH with Catch2, run under qemu.
# Build products stay in build/cross-ARCH (the Catch2 main is compiled once);
# everything else lives in a temp folder removed at exit. Bounded in time.
set -u
ARCH=${1:-aarch64}
T_NAME="cross-$ARCH"
. "$(dirname "$0")/lib.sh"

case $ARCH in
aarch64) TRIPLE=aarch64-linux-gnu QEMU=qemu-aarch64 MACHINE=AArch64 CLASS=ELF64 ;;
arm) TRIPLE=arm-linux-gnueabihf QEMU=qemu-arm MACHINE=ARM CLASS=ELF32 ;;
mipsel) TRIPLE=mipsel-linux-gnu QEMU=qemu-mipsel MACHINE=MIPS CLASS=ELF32 ;;
*)
    echo "usage: $0 aarch64|arm|mipsel" >&2
    exit 2
    ;;
esac
CXX="$TRIPLE-g++"
need "$CXX:g++-$TRIPLE" "$QEMU:qemu-user" /usr/include/catch2/catch.hpp:catch2 python3:python3 readelf:binutils make:make

BUILD="$T_ROOT/build/cross-$ARCH"
BIN="$BUILD/mixctl"
T_TMP=$(mktemp -d "/tmp/mixctl-$T_NAME.XXXXXX")
trap cleanup EXIT
trap 'exit 1' INT TERM
mkdir -p "$BUILD"
start=$(date +%s)

version=$(makefile_version)
# ---- 3a. the unit tests, compiled for ARCH in the background ----------------------
FLAGS="-std=c++17 -Wall -Wextra -Werror -O1 -I$T_ROOT -DMIXCTL_VERSION=\"$version\""
objects="$BUILD/catch_main.o"
pids=""
compile() { # compile SRC OBJ FLAGS...: in the background, when OBJ is stale
    src=$1
    obj=$2
    shift 2
    if [ -f "$obj" ] && [ -z "$(find "$src" "$T_ROOT"/*.hpp "$T_ROOT"/tests/*.hpp -newer "$obj" 2>/dev/null | head -n 1)" ]; then
        return 0
    fi
    rm -f "$obj"
    # shellcheck disable=SC2086
    timeout 900 "$CXX" "$@" -c -o "$obj.tmp" "$src" >"$obj.log" 2>&1 && mv -f "$obj.tmp" "$obj" &
    pids="$pids $!"
}
if [ ! -f "$BUILD/catch_main.o" ] || [ "$T_ROOT/tests/catch_main.cpp" -nt "$BUILD/catch_main.o" ]; then
    echo "compiling the Catch2 main for $ARCH (once; kept in $BUILD)"
    compile "$T_ROOT/tests/catch_main.cpp" "$BUILD/catch_main.o" -std=c++17 -O0
fi
for name in yaml_lite config flags net shared64 localtime; do
    src="$T_ROOT/tests/${name}_test.cpp"
    [ -f "$src" ] || continue
    # shellcheck disable=SC2086
    compile "$src" "$BUILD/${name}_test.o" $FLAGS
    objects="$objects $BUILD/${name}_test.o"
done
# ---- 1. the static build --------------------------------------------------------
echo "building $BIN with $CXX"
build_static "$BUILD" "$CXX"
size=$(wc -c <"$BIN")
echo "size: $size bytes ($ARCH, static, stripped)"
headers=$(readelf -hlSW "$BIN" 2>&1)
check "ELF class $CLASS, machine $MACHINE" \
    sh -c 'printf "%s\n" "$1" | grep -q "Class: *$2" && printf "%s\n" "$1" | grep -q "Machine: *.*$3"' _ "$headers" "$CLASS" "$MACHINE"
check "statically linked (no program interpreter, no dynamic section)" \
    sh -c '! printf "%s\n" "$1" | grep -q "INTERP\|\.dynamic "' _ "$headers"
check "stripped (no .symtab)" sh -c '! printf "%s\n" "$1" | grep -q "\.symtab"' _ "$headers"

# ---- 2. the binary under qemu ------------------------------------------------------
out=$(timeout 60 "$QEMU" "$BIN" -V 2>&1)
check "-V prints 'mixctl $version' (got '$out')" test "$out" = "mixctl $version"
out=$(timeout 60 "$QEMU" "$BIN" -version 2>&1)
check "-version prints 'mixctl $version'" test "$out" = "mixctl $version"
timeout 60 "$QEMU" "$BIN" -h >/dev/null 2>"$T_TMP/usage"
check "-h prints usage naming -f and -syslog" grep -q -- "-syslog" "$T_TMP/usage"

start_upstream 240
cat >"$T_TMP/rules.yaml" <<EOF
version: 0.1
rules:
- name: cross
  from: 127.0.0.1:0
  to:
    - 127.0.0.1:$upstream
EOF
out=$(timeout 60 "$QEMU" "$BIN" -check -f "$T_TMP/rules.yaml" 2>&1)
check "-check passes: '$out'" test "$out" = "configuration OK"

"$QEMU" "$BIN" -f "$T_TMP/rules.yaml" -w 2 -t 3s >"$T_TMP/mixctl.out" 2>"$T_TMP/mixctl.log" &
mixctl=$!
started "$mixctl"
if wait_for 60 has_port "$T_TMP/mixctl.log" cross; then
    port=$(forwarded_port "$T_TMP/mixctl.log" cross)
    ok "mixctl listens on 127.0.0.1:$port under $QEMU"
    wait_for 30 grep -q " started: 2 workers" "$T_TMP/mixctl.log"
    relay_check "$T_TMP/mixctl.log" "$port" 262144 5 "5 connections x 256 KiB relayed both ways, SHA-256 equal"
    if sigterm_check "$mixctl"; then
        check "SIGTERM: 'stopped' logged" grep -q "stopped" "$T_TMP/mixctl.log"
    fi
else
    bad "mixctl did not log its Forwarding line within 60 s"
fi
sed 's/^/  mixctl: /' "$T_TMP/mixctl.log" | tail -n 12

# ---- 3b. the unit tests, linked and run under qemu -----------------------------------
for pid in $pids; do wait "$pid" || true; done
built=1
for obj in $objects; do
    if [ ! -f "$obj" ]; then
        built=0
        echo "compile failed: $obj"
        head -n 20 "$obj.log" 2>/dev/null
    fi
done
# shellcheck disable=SC2086
if [ "$built" = 1 ] && timeout 300 "$CXX" -static -o "$BUILD/unit" $objects -pthread -Wl,--as-needed -latomic 2>"$BUILD/unit.log"; then
    ok "unit tests built for $ARCH: $(echo $objects | wc -w) objects"
    # qemu-mipsel (7.2) hands the host's SO_ERROR value (ECONNREFUSED = 111)
    # to the guest untranslated; MIPS's ECONNREFUSED is 146. Not mixctl's.
    spec=()
    if [ "$ARCH" = mipsel ]; then
        spec=("~dialing a closed port reports connection refused")
        echo "skipped under $QEMU: '${spec[0]#\~}' (qemu passes SO_ERROR untranslated: 111, MIPS ECONNREFUSED is 146)"
    fi
    if (cd "$T_ROOT" && timeout 600 "$QEMU" "$BUILD/unit" "${spec[@]}" >"$T_TMP/unit.out" 2>&1); then
        ok "unit tests pass under $QEMU: $(tail -n 1 "$T_TMP/unit.out")"
    else
        bad "unit tests under $QEMU"
        tail -n 40 "$T_TMP/unit.out"
    fi
else
    bad "building the unit tests for $ARCH"
    tail -n 20 "$BUILD/unit.log" 2>/dev/null
fi

echo "$T_NAME took $(($(date +%s) - start)) s"
finish
