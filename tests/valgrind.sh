#!/usr/bin/env bash
# tests/valgrind.sh: a short relay session with mixctl under valgrind memcheck.
#
# mixctl -w 1 runs under
#   valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 --trace-children=yes
# with one log file per process (the parent and every worker it forks are all
# under memcheck). Upstreams: tests/tcp_check.py's echo server and a loopback
# port nobody listens on. The session: checksummed transfers through the echo
# rule, transfers through a rule whose first upstream refuses (failover), a
# client closed by the daemon because its only upstream refuses, a reload
# (SIGHUP, when this mixctl supports it) and more transfers, then SIGTERM.
# Passes when mixctl exits 0 and every process's report has no errors and
# nothing definitely lost.
#   MIXCTL=path/to/mixctl tests/valgrind.sh      (make valgrind builds build/valgrind/mixctl with -O1 -g)
# Loopback only; every wait is bounded.
set -u
. "$(dirname "$0")/lib.sh"

need valgrind:valgrind python3:python3
MIXCTL=${MIXCTL:-$T_ROOT/mixctl}
[ -x "$MIXCTL" ] || die "no mixctl at $MIXCTL (run: make valgrind)"
CHECK="$T_ROOT/tests/tcp_check.py"

T_TMP=$(mktemp -d /tmp/mixctl-valgrind.XXXXXX)
trap cleanup EXIT
trap 'exit 1' INT TERM
start=$(date +%s)

# The echo upstream lives at most 170 s, whatever happens.
python3 "$CHECK" serve "$T_TMP/echo.port" 170 &
started $!
wait_for 10 test -s "$T_TMP/echo.port" || die "the echo upstream did not start"
ECHO=$(cat "$T_TMP/echo.port")
# A loopback port with nothing listening: connects to it are refused.
REFUSED=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

rules() {  # rules FILE VARIANT: the second variant reorders the failover rule
    if [ "$2" = 1 ]; then mixed="[127.0.0.1:$REFUSED, 127.0.0.1:$ECHO]"; else mixed="[127.0.0.1:$ECHO, 127.0.0.1:$REFUSED]"; fi
    cat >"$1.new" <<EOF
version: 0.1
rules:
- name: echo
  from: 127.0.0.1:0
  to: [127.0.0.1:$ECHO]
- name: mixed
  from: 127.0.0.1:0
  strategy: round-robin
  to: $mixed
- name: refused
  from: 127.0.0.1:0
  to: [127.0.0.1:$REFUSED]
EOF
    mv "$1.new" "$1"
}
rules "$T_TMP/rules.yaml" 1

valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 --trace-children=yes \
    --num-callers=30 --log-file="$T_TMP/vg.%p.log" \
    "$MIXCTL" -f "$T_TMP/rules.yaml" -w 1 -t 2s -grace 5s >"$T_TMP/mixctl.log" 2>&1 &
MIX=$!
started $MIX

wait_for 60 has_port "$T_TMP/mixctl.log" echo || { cat "$T_TMP/mixctl.log"; die "mixctl did not start under valgrind within 60 s"; }
wait_for 60 has_port "$T_TMP/mixctl.log" refused || die "mixctl did not bind every rule"
P_ECHO=$(forwarded_port "$T_TMP/mixctl.log" echo)
P_MIXED=$(forwarded_port "$T_TMP/mixctl.log" mixed)
P_REFUSED=$(forwarded_port "$T_TMP/mixctl.log" refused)
wait_for 30 sh -c '[ -n "$(cat /proc/$1/task/$1/children 2>/dev/null)" ]' _ "$MIX" || die "no worker started"
sleep 1  # the worker is still starting up under valgrind

check "3 x 256 KiB echoed byte-exact through the echo rule" \
    timeout 60 python3 "$CHECK" client "$P_ECHO" 262144 3
check "4 x 64 KiB byte-exact through a rule whose other upstream refuses" \
    timeout 60 python3 "$CHECK" client "$P_MIXED" 65536 4
check "a client of a rule whose only upstream refuses is closed by the daemon" \
    timeout 20 python3 "$CHECK" poke "$P_REFUSED"

# One reload with a changed rule, when this mixctl has reload.
rules "$T_TMP/rules.yaml" 2
kill -HUP "$MIX"
if wait_for 30 grep -q "reloaded " "$T_TMP/mixctl.log"; then
    ok "SIGHUP: reloaded"
    P_ECHO=$(sed -n 's/.*Forwarding (echo) from: .*:\([0-9][0-9]*\) to: .*/\1/p' "$T_TMP/mixctl.log" | tail -n 1)
    P_MIXED=$(sed -n 's/.*Forwarding (mixed) from: .*:\([0-9][0-9]*\) to: .*/\1/p' "$T_TMP/mixctl.log" | tail -n 1)
    sleep 1
    check "after the reload: 2 x 128 KiB through the echo rule" \
        timeout 60 python3 "$CHECK" client "$P_ECHO" 131072 2
    check "after the reload: 2 x 128 KiB through the failover rule" \
        timeout 60 python3 "$CHECK" client "$P_MIXED" 131072 2
elif grep -q "reload is not supported" "$T_TMP/mixctl.log"; then
    echo "note: this mixctl has no reload yet; the SIGHUP was only logged"
else
    bad "SIGHUP: no \"reloaded\" line within 30 s"
fi

kill -TERM "$MIX"
if wait_exit 90 "$MIX"; then
    check "mixctl exits 0 on SIGTERM under valgrind (status $T_STATUS)" test "$T_STATUS" = 0
else
    bad "mixctl still running 90 s after SIGTERM"
fi
# Retired or stopping workers write their reports as they exit.
wait_for 30 sh -c '! pgrep -P "$1" >/dev/null 2>&1' _ "$MIX" || true

logs=$(ls "$T_TMP"/vg.*.log 2>/dev/null | wc -l)
check "valgrind wrote a report per process (parent and workers: $logs)" test "$logs" -ge 2
for log in "$T_TMP"/vg.*.log; do
    [ -f "$log" ] || continue
    pid=$(basename "$log" .log | sed 's/^vg\.//')
    summary=$(sed -n 's/.*ERROR SUMMARY: \([0-9][0-9]*\) errors.*/\1/p' "$log" | tail -n 1)
    lost=$(sed -n 's/.*definitely lost: \([0-9,][0-9,]*\) bytes.*/\1/p' "$log" | tail -n 1 | tr -d ,)
    reachable=$(sed -n 's/.*still reachable: \([0-9,][0-9,]*\) bytes.*/\1/p' "$log" | tail -n 1)
    echo "valgrind pid $pid: errors ${summary:-?}, definitely lost ${lost:-0} bytes, still reachable ${reachable:-0} bytes"
    if [ -z "$summary" ]; then
        bad "pid $pid: no ERROR SUMMARY in its report (killed?)"
        tail -n 20 "$log"
        continue
    fi
    check "pid $pid: no memcheck errors" test "$summary" = 0
    check "pid $pid: nothing definitely lost" test "${lost:-0}" = 0
    if [ "$summary" != 0 ] || [ "${lost:-0}" != 0 ]; then
        sed -n '/== [0-9]* errors\? in context\|definitely lost in\|Invalid\|uninitialised\|Mismatched/,/^==[0-9]*== $/p' "$log" | head -n 80
    fi
done
if grep -q "exited: status 99" "$T_TMP/mixctl.log"; then
    bad "a worker exited with valgrind's error status 99"
fi
echo "mixctl log:"
sed 's/^/  /' "$T_TMP/mixctl.log" | tail -n 40
echo "time: $(($(date +%s) - start)) s"
finish
