# shellcheck shell=bash
# tests/lib.sh - helpers for the shell tests (sourced by the bash scripts).
#
# ok/bad count checks, `finish` prints "NAME: N passed, N failed" and sets
# the exit status; `need` installs missing Debian packages when run as root
# and otherwise skips (exit 77) naming the command to run; `started` records
# pids that `cleanup` kills, by pid only. Every wait is bounded.
# build_static, start_upstream, relay_check and sigterm_check are the steps
# busybox.sh, cross.sh and systemd_unit.sh share.

T_PASSED=0
T_FAILED=0
T_PIDS=""
T_REAPED=""
T_NAME=${T_NAME:-$(basename "$0" .sh)}
T_ROOT=$(cd "$(dirname "$0")/.." && pwd)

ok() { T_PASSED=$((T_PASSED + 1)); echo "ok: $*"; }
bad() { T_FAILED=$((T_FAILED + 1)); echo "FAIL: $*"; }
# check "description" command...: ok when the command succeeds.
check() {
    what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}
skip() {
    echo "SKIP: $T_NAME: $*"
    exit 77
}
die() {
    echo "FAIL: $T_NAME: $*"
    exit 1
}
finish() {
    echo "$T_NAME: $T_PASSED passed, $T_FAILED failed"
    [ "$T_FAILED" -eq 0 ]
}

# need "command-or-file:debian-package" ...
# Installs what is missing (apt-get update once, then install) when root;
# otherwise skips, saying which packages are missing.
need() {
    missing=""
    for pair in "$@"; do
        what=${pair%%:*}
        pkg=${pair#*:}
        case $what in
        /*) [ -e "$what" ] && continue ;;
        *) command -v "$what" >/dev/null 2>&1 && continue ;;
        esac
        case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        skip "missing Debian packages:$missing (run: sudo apt-get install -y --no-install-recommends$missing)"
    fi
    echo "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # The lock timeout: another apt-get may be running on a shared machine.
    apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null ||
        die "apt-get update failed"
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing >/dev/null ||
        die "apt-get install$missing failed"
}

started() { T_PIDS="$T_PIDS $*"; }

# Children of a pid (a mixctl parent's workers), from /proc.
children_of() {
    cat "/proc/$1/task/$1/children" 2>/dev/null || true
}

cleanup() {
    # (stderr off: bash reports a killed job as "Killed" when it reaps it)
    {
        for pid in $T_PIDS; do
            # a pid already reaped may belong to someone else by now
            case " $T_REAPED " in *" $pid "*) continue ;; esac
            for child in $(children_of "$pid"); do kill -KILL "$child" || true; done
            kill -KILL "$pid" || true
        done
        for pid in $T_PIDS; do wait "$pid" || true; done
    } 2>/dev/null
    T_PIDS=""
    if [ -n "${T_TMP:-}" ] && [ -d "$T_TMP" ]; then rm -rf "$T_TMP"; fi
}

# wait_for SECONDS command...: polls every 0.1 s until the command succeeds.
wait_for() {
    limit=$(($1 * 10))
    shift
    i=0
    while [ "$i" -lt "$limit" ]; do
        if "$@"; then return 0; fi
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# wait_exit SECONDS PID: waits for a child to end; its status in T_STATUS.
# Returns 1 if it is still running at the deadline.
wait_exit() {
    limit=$(($1 * 10))
    i=0
    while [ "$i" -lt "$limit" ]; do
        # A zombie still answers kill -0: look at its state too.
        if ! kill -0 "$2" 2>/dev/null || [ "$(sed -n 's/^[^)]*) \(.\).*/\1/p' "/proc/$2/stat" 2>/dev/null)" = Z ]; then
            T_STATUS=0
            wait "$2" || T_STATUS=$?
            T_REAPED="$T_REAPED $2"
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# The port mixctl actually bound for a rule, from its "Forwarding (NAME)
# from: ADDR:PORT to: ..." line in a log file; empty until it is there.
forwarded_port() {
    sed -n "s/.*Forwarding ($2) from: .*:\([0-9][0-9]*\) to: .*/\1/p" "$1" 2>/dev/null | head -n 1
}

has_port() { [ -n "$(forwarded_port "$1" "$2")" ]; }

makefile_version() {
    sed -n 's/^VERSION *:= *//p' "$T_ROOT/Makefile"
}

# build_static OUT [CXX]: `make static` into the folder OUT (with CXX when
# given); on failure shows the end of make's output and dies.
build_static() {
    if ! timeout 600 make -s -C "$T_ROOT" static O="$1" ${2:+"CXX=$2"} >"$T_TMP/make.log" 2>&1; then
        grep -v "statically linked applications requires\|in function" "$T_TMP/make.log" | tail -n 30
        die "make static${2:+ CXX=$2} failed"
    fi
}

# start_upstream SECONDS: tests/tcp_check.py's echo server on 127.0.0.1, for
# at most SECONDS (and killed by cleanup); its port in $upstream.
start_upstream() {
    python3 "$T_ROOT/tests/tcp_check.py" serve "$T_TMP/upstream.port" "$1" &
    started $!
    wait_for 20 test -s "$T_TMP/upstream.port" || die "the python3 upstream did not start"
    upstream=$(cat "$T_TMP/upstream.port")
}

# relay_check LOG PORT BYTES CONNECTIONS WHAT: CONNECTIONS connections of
# BYTES each through 127.0.0.1:PORT to the echo upstream, every byte compared
# (the check named WHAT); then mixctl's Closed lines in LOG count those bytes
# both ways.
relay_check() {
    check "$5" timeout 120 python3 "$T_ROOT/tests/tcp_check.py" client "$2" "$3" "$4"
    check "Closed lines count the bytes both ways" \
        wait_for 20 grep -q "Closed .*bytes_in=$3 bytes_out=$3" "$1"
}

# sigterm_check PID: SIGTERM to mixctl, which must exit with status 0 within
# 30 s. Returns 1 only when it did not stop at all.
sigterm_check() {
    kill -TERM "$1"
    if wait_exit 30 "$1"; then
        check "SIGTERM: exit status 0 (got $T_STATUS)" test "$T_STATUS" = 0
        return 0
    fi
    bad "mixctl did not stop within 30 s of SIGTERM"
    return 1
}
