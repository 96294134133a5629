#!/usr/bin/env bash
# tests/systemd_unit.sh: contrib/mixctl.service.
#
#  - it has the directives the deployment relies on (check before start and
#    before reload, HUP on reload, Restart=on-failure, KillMode=mixed, the
#    bind capability, LimitNOFILE, the hardening block);
#  - `systemd-analyze verify` passes without a single warning, with the unit
#    pointing at a built mixctl and its man page installed on MANPATH (the
#    Documentation= line is checked too); and `systemd-analyze security
#    --offline` rates it. Both only when systemd-analyze is there;
#  - the unit's own ExecStartPre, ExecStart and ExecReload lines, run by hand
#    against a rules file on loopback, as systemctl start/reload/stop would:
#    the check passes and the daemon serves; with a broken file the reload's
#    check fails (so no HUP would be sent) and the daemon is untouched; with a
#    rule added, both reload lines succeed, the same process serves the new
#    rule and the old one; SIGTERM stops it with status 0.
set -u
. "$(dirname "$0")/lib.sh"
need make:make g++:g++ python3:python3

UNIT="$T_ROOT/contrib/mixctl.service"
T_TMP=$(mktemp -d /tmp/mixctl-systemd.XXXXXX)
trap cleanup EXIT
trap 'exit 1' INT TERM

# ---- the directives ----------------------------------------------------------------------------------
for line in "ExecStartPre=/usr/local/bin/mixctl -check -f /etc/mixctl/rules.yaml" \
    "ExecStart=/usr/local/bin/mixctl -f /etc/mixctl/rules.yaml" \
    "Restart=on-failure" "KillMode=mixed" "AmbientCapabilities=CAP_NET_BIND_SERVICE" \
    "NoNewPrivileges=yes" "ProtectSystem=strict" "ProtectHome=yes" "PrivateTmp=yes" "Documentation=man:mixctl(8)"; do
    check "has $line" grep -qxF -- "$line" "$UNIT"
done
check "has LimitNOFILE=" grep -q "^LimitNOFILE=[0-9]" "$UNIT"
check "ExecReload: mixctl -check first, then kill -HUP \$MAINPID" \
    test "$(grep '^ExecReload=' "$UNIT" | tr '\n' '|')" = \
    'ExecReload=/usr/local/bin/mixctl -check -f /etc/mixctl/rules.yaml|ExecReload=/bin/kill -HUP $MAINPID|'

# ---- a mixctl to point the unit at ------------------------------------------------------------------------
BUILD="$T_ROOT/build/static"
build_static "$BUILD"
BIN="$BUILD/mixctl"
mkdir -p "$T_TMP/man/man8"
cp "$T_ROOT/mixctl.8" "$T_TMP/man/man8/mixctl.8"
start_upstream 120
# A fixed port, so that a reload keeps the same listener.
listen=$(python3 "$T_ROOT/tests/tcp_check.py" freeport)
printf 'rules:\n- name: unit\n  from: 127.0.0.1:%s\n  to: 127.0.0.1:%s\n' "$listen" "$upstream" >"$T_TMP/rules.yaml"
sed -e "s|/usr/local/bin/mixctl|$BIN|g" -e "s|/etc/mixctl/rules.yaml|$T_TMP/rules.yaml|g" "$UNIT" >"$T_TMP/mixctl.service"

# ---- systemd-analyze -------------------------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
    out=$(MANPATH="$T_TMP/man" timeout 60 systemd-analyze verify "$T_TMP/mixctl.service" 2>&1)
    status=$?
    check "systemd-analyze verify: status 0, no warnings${out:+: $out}" test "$status-$out" = "0-"
    out=$(timeout 60 systemd-analyze security --offline=true "$T_TMP/mixctl.service" 2>&1 | tail -n 1)
    check "systemd-analyze security: $out" sh -c 'printf "%s" "$1" | grep -q "exposure level.*OK"' _ "$out"
else
    echo "note: systemd-analyze not installed: verify and security skipped (apt-get install systemd to run them)"
fi

# ---- the unit's command lines, by hand -------------------------------------------------------------------------
# exec_lines KEY: the unit's KEY= lines, one command each, $MAINPID left as is.
exec_lines() { sed -n "s/^$1=//p" "$T_TMP/mixctl.service"; }

pre=$(exec_lines ExecStartPre)
out=$(timeout 30 sh -c "$pre" 2>&1)
check "ExecStartPre ($pre): configuration OK" test "$out" = "configuration OK"

start=$(exec_lines ExecStart)
sh -c "exec $start -w 2" >"$T_TMP/mixctl.out" 2>"$T_TMP/mixctl.log" &
MAINPID=$!
started "$MAINPID"
if wait_for 30 has_port "$T_TMP/mixctl.log" unit; then
    ok "ExecStart: the daemon is serving"
    port=$(forwarded_port "$T_TMP/mixctl.log" unit)
    good=$(cat "$T_TMP/rules.yaml")
    reload_check=$(exec_lines ExecReload | head -n 1)
    hup=$(exec_lines ExecReload | sed -n 2p)
    # systemctl reload with a broken file: the first line fails, systemd
    # stops there, no HUP.
    printf 'rules:\n- name: broken\n  from: 127.0.0.1:70000\n  to: []\n' >"$T_TMP/rules.yaml"
    out=$(timeout 30 sh -c "$reload_check" 2>&1)
    status=$?
    check "ExecReload #1 with a broken file fails (exit $status), naming file and line: $(echo "$out" | head -n 1)" \
        sh -c '[ "$1" != 0 ] && printf "%s" "$2" | grep -q "rules.yaml:3:"' _ "$status" "$out"
    # systemctl reload with a rule added: both lines, in order.
    printf '%s\n- name: added\n  from: 127.0.0.1:0\n  to: 127.0.0.1:%s\n' "$good" "$upstream" >"$T_TMP/rules.yaml"
    n=0
    for line in "$reload_check" "$hup"; do
        n=$((n + 1))
        command=${line//\$MAINPID/$MAINPID}
        out=$(timeout 30 sh -c "$command" 2>&1)
        check "ExecReload #$n ($line) succeeds${out:+: $out}" test $? = 0
    done
    check "after the reload: 'reloaded' logged" wait_for 20 grep -q "reloaded .*rules.yaml" "$T_TMP/mixctl.log"
    check "after the reload: the same process (pid $MAINPID) still runs" kill -0 "$MAINPID"
    check "after the reload: the kept rule relays on the same port (2 x 64 KiB)" \
        timeout 60 python3 "$T_ROOT/tests/tcp_check.py" client "$port" 65536 2
    added=$(forwarded_port "$T_TMP/mixctl.log" added)
    check "after the reload: the added rule relays (2 x 64 KiB)" \
        timeout 60 python3 "$T_ROOT/tests/tcp_check.py" client "${added:-0}" 65536 2
    sed 's/^/  mixctl: /' "$T_TMP/mixctl.log" | grep -v "Connected\|Closed" | tail -n 6
    kill -TERM "$MAINPID"
    if wait_exit 25 "$MAINPID"; then
        check "SIGTERM (systemctl stop): exit status 0 within TimeoutStopSec (got $T_STATUS)" test "$T_STATUS" = 0
    else
        bad "the daemon did not stop within 25 s of SIGTERM"
    fi
else
    bad "ExecStart: no Forwarding line within 30 s"
    cat "$T_TMP/mixctl.log"
fi

finish
