#!/usr/bin/env bash
# tests/install.sh: `make install` honours PREFIX, DESTDIR and MANDIR, and
# uses nothing but what BusyBox's install applet offers.
#
# Run twice: with the system's install, and with a stand-in `install` first
# on PATH that accepts only `-d DIR...` and `-m MODE SRC DEST` (both in
# BusyBox's install) and fails on any other option, doing the work with
# mkdir, cp and chmod. The binary installed is a stand-in too (O= points at
# a folder holding one), so no compiler is needed. Also: the man page
# formats without warnings (when groff is there).
set -u
. "$(dirname "$0")/lib.sh"
need make:make

T_TMP=$(mktemp -d /tmp/mixctl-install.XXXXXX)
trap cleanup EXIT
mkdir -p "$T_TMP/out" "$T_TMP/shim"
printf '#!/bin/sh\necho "mixctl stand-in"\n' >"$T_TMP/out/mixctl"
chmod 700 "$T_TMP/out/mixctl"

# The BusyBox-subset install.
cat >"$T_TMP/shim/install" <<'EOF'
#!/bin/sh
echo "install $*" >>"$INSTALL_LOG"
if [ "$1" = -d ]; then
    shift
    for d in "$@"; do
        case $d in -*) echo "install: unsupported: $d" >&2; exit 1 ;; esac
        mkdir -p "$d" || exit 1
    done
    exit 0
fi
mode=755
if [ "$1" = -m ]; then mode=$2; shift 2; fi
if [ $# -ne 2 ]; then echo "install: want SRC DEST, got: $*" >&2; exit 1; fi
case $1$2 in -*) echo "install: unsupported option in: $*" >&2; exit 1 ;; esac
cp "$1" "$2" && chmod "$mode" "$2"
EOF
chmod 755 "$T_TMP/shim/install"


# verify LABEL ROOT BIN MAN SHARE: the three files with their modes.
verify() {
    check "$1: $3 mode 755, the built binary" sh -c '[ "$(stat -c %a "$1")" = 755 ] && cmp -s "$1" "$2"' _ "$3" "$T_TMP/out/mixctl"
    check "$1: $4 mode 644, the man page" sh -c '[ "$(stat -c %a "$1")" = 644 ] && cmp -s "$1" "$2"' _ "$4" "$T_ROOT/mixctl.8"
    check "$1: $5 mode 644, the example rules" sh -c '[ "$(stat -c %a "$1")" = 644 ] && cmp -s "$1" "$2"' _ "$5" "$T_ROOT/rules.example.yaml"
}

run_install() { # run_install LOG make-arguments...
    log=$1
    shift
    (cd "$T_ROOT" && timeout 60 make -s install O="$T_TMP/out" "$@") >"$log" 2>&1
}

# 1. the system's install, PREFIX=/usr, DESTDIR
D="$T_TMP/pkg1"
if run_install "$T_TMP/1.log" PREFIX=/usr DESTDIR="$D"; then
    verify "install, PREFIX=/usr DESTDIR=pkg" "$D" "$D/usr/bin/mixctl" "$D/usr/share/man/man8/mixctl.8" \
        "$D/usr/share/mixctl/rules.example.yaml"
    extra=$(cd "$D" && find . -type f | sort | tr '\n' ' ')
    check "nothing else installed: $extra" test "$extra" = "./usr/bin/mixctl ./usr/share/man/man8/mixctl.8 ./usr/share/mixctl/rules.example.yaml "
else
    bad "make install PREFIX=/usr DESTDIR=pkg"
    cat "$T_TMP/1.log"
fi

# 2. the BusyBox subset, default PREFIX (/usr/local) under DESTDIR
D="$T_TMP/pkg2"
export INSTALL_LOG="$T_TMP/shim.log"
: >"$INSTALL_LOG"
if PATH="$T_TMP/shim:$PATH" run_install "$T_TMP/2.log" DESTDIR="$D"; then
    verify "BusyBox-style install, default PREFIX" "$D" "$D/usr/local/bin/mixctl" \
        "$D/usr/local/share/man/man8/mixctl.8" "$D/usr/local/share/mixctl/rules.example.yaml"
    check "every install call was -d or -m MODE ($(wc -l <"$INSTALL_LOG") calls)" \
        sh -c '! grep -v "^install -d \|^install -m [0-7]* " "$1"' _ "$INSTALL_LOG"
else
    bad "make install with only BusyBox's install options"
    cat "$T_TMP/2.log"
fi

# 3. MANDIR, and PREFIX without DESTDIR (a staging folder as the prefix)
D="$T_TMP/pkg3"
if run_install "$T_TMP/3.log" PREFIX="$D/opt" MANDIR="$D/man"; then
    verify "PREFIX=folder MANDIR=folder" "$D" "$D/opt/bin/mixctl" "$D/man/man8/mixctl.8" \
        "$D/opt/share/mixctl/rules.example.yaml"
else
    bad "make install PREFIX=... MANDIR=..."
    cat "$T_TMP/3.log"
fi

# The man page formats cleanly.
if command -v groff >/dev/null 2>&1; then
    warnings=$(groff -man -Tutf8 -ww -z "$T_ROOT/mixctl.8" 2>&1)
    check "groff -man -ww formats mixctl.8 without warnings${warnings:+: $warnings}" test -z "$warnings"
else
    echo "note: groff not installed, man page formatting not checked"
fi

finish
