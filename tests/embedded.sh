#!/usr/bin/env bash
# tests/embedded.sh [ARCH]: `make test-embedded`. Installs, when root, the
# Debian packages the shell tests need (once, up front), then runs them:
# install.sh, busybox.sh, systemd_unit.sh, openwrt_init.sh (after busybox.sh
# built the static mixctl it runs the init script's flags through) and cross.sh ARCH
# (default aarch64). A test that exits 77 was skipped (not root, packages
# missing): that is reported, not failed. Ends with one line
# "embedded: N passed, N failed, N skipped" (checks passed and failed over
# all tests, tests skipped); exits 1 if any check or test failed.
set -u
ARCH=${1:-aarch64}
T_NAME=embedded
. "$(dirname "$0")/lib.sh"

case $ARCH in
aarch64) TRIPLE=aarch64-linux-gnu QEMU=qemu-aarch64 ;;
arm) TRIPLE=arm-linux-gnueabihf QEMU=qemu-arm ;;
mipsel) TRIPLE=mipsel-linux-gnu QEMU=qemu-mipsel ;;
*)
    echo "usage: $0 [aarch64|arm|mipsel]" >&2
    exit 2
    ;;
esac

begin=$(date +%s)
if [ "$(id -u)" = 0 ]; then
    # One apt-get for all of them; the tests' own checks then find everything.
    (need busybox:busybox-static "$QEMU:qemu-user" "$TRIPLE-g++:g++-$TRIPLE" /usr/include/catch2/catch.hpp:catch2 \
        python3:python3 readelf:binutils make:make g++:g++) || echo "note: installing the packages failed; the tests say what is missing"
else
    echo "note: not root: tests whose Debian packages are missing are skipped (each names them), busybox.sh needs root for chroot"
fi
echo "packages ready after $(($(date +%s) - begin)) s"

passed=0
failed=0
skipped=0
summary=""
for test in install busybox systemd_unit openwrt_init "cross $ARCH"; do
    script=${test%% *}
    args=${test#"$script"}
    t0=$(date +%s)
    echo "=== tests/$script.sh$args"
    # shellcheck disable=SC2086
    log=$(mktemp /tmp/mixctl-embedded.XXXXXX)
    bash "$T_ROOT/tests/$script.sh" $args 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    took=$(($(date +%s) - t0))
    counts=$(sed -n 's/^[^ ]*: \([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed$/\1 \2/p' "$log" | tail -n 1)
    rm -f "$log"
    if [ "$status" = 77 ]; then
        skipped=$((skipped + 1))
        summary="$summary  $script$args: skipped ($took s)\n"
        continue
    fi
    p=${counts%% *}
    f=${counts##* }
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    if [ "$status" != 0 ] && [ "${f:-0}" = 0 ]; then
        failed=$((failed + 1)) # died before counting
    fi
    summary="$summary  $script$args: ${p:-0} passed, ${f:-0} failed, exit $status ($took s)\n"
done
echo "=== test-embedded, $(($(date +%s) - begin)) s in all:"
printf "%b" "$summary"
echo "embedded: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
