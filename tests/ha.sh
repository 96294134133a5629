#!/usr/bin/env bash
# tests/ha.sh (make test-ha) - two mixctl balancers behind one keepalived
# (VRRP) virtual address, with contrib/ha's files, entirely inside network
# namespaces this script creates: a client, lb1, lb2 and two upstreams on one
# bridge with no uplink and no default route (192.0.2.0/24, TEST-NET-1, used
# only inside them). Each balancer runs mixctl (rules from
# contrib/ha/k3s-rules.yaml, `from: ":6443"`, so it is ready before the
# address arrives) and keepalived (contrib/ha/keepalived-lbN.conf: one VRRP
# instance, `vrrp_script` = mixctl -probe, `track_script`).
#
# Scenarios, each printing what it measured: the address on lb1 and
# connections spread over both upstreams; kill -9 of every mixctl process on
# lb1, SIGSTOP of them (wedged) and lb1's link down, each with a client loop
# across the failover (failed connects and the longest gap between two good
# replies) and lb1 taking the address back; SIGHUP reloads on the master
# under a client loop (no failed connect, the address stays).
#
# Cleanup on any exit: every process inside the namespaces (they are all
# ours) by pid, then the namespaces, which takes their veths and bridge
# along. Nothing outside them is touched: no host interface, route or
# sysctl. A watchdog ends the run after 175 s.
set -u
T_NAME=ha
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
need keepalived:keepalived ip:iproute2 python3:python3 setsid:util-linux
MIXCTL=${MIXCTL:-$T_ROOT/mixctl}
[ -x "$MIXCTL" ] || die "no mixctl at $MIXCTL: run make first"
PEER="$T_ROOT/tests/ha_peer.py"
CONTRIB="$T_ROOT/contrib/ha"

RUN=mxha$$                 # every namespace is $RUN-NODE
NET=192.0.2                # inside the namespaces only
VIP=$NET.10
declare -A ADDR=([client]=$NET.2 [lb1]=$NET.11 [lb2]=$NET.12 [up1]=$NET.21 [up2]=$NET.22)
NODES="client lb1 lb2 up1 up2"
MADE=""                    # namespaces created, for cleanup
# keepalived runs a root script only from a path no other user can write
# to: not under /tmp. Logs, files and a copy of mixctl go here.
T_TMP=$(mktemp -d /run/mxha-XXXXXX) || die "mktemp -d /run/mxha-XXXXXX failed"

ha_cleanup() {
    trap - EXIT INT TERM
    [ -n "${WATCHDOG:-}" ] && kill "$WATCHDOG" 2>/dev/null && wait "$WATCHDOG" 2>/dev/null
    {
        for ns in $MADE; do
            for pid in $(ip netns pids "$ns"); do kill -CONT "$pid"; kill -TERM "$pid"; done
        done
        for _ in $(seq 30); do
            left=""
            for ns in $MADE; do left="$left$(ip netns pids "$ns")"; done
            [ -z "$left" ] && break
            sleep 0.1
        done
        for ns in $MADE; do
            for pid in $(ip netns pids "$ns"); do kill -KILL "$pid"; done
        done
        wait
        for ns in $MADE; do ip netns del "$ns"; done
    } 2>/dev/null
    rm -rf "$T_TMP"
}
trap ha_cleanup EXIT
trap 'echo "FAIL: ha: interrupted"; exit 1' INT TERM
# The watchdog's sleep must not outlive it: it would hold the output open.
(
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    sleep 175 >/dev/null 2>&1 &
    nap=$!
    wait "$nap" && echo "FAIL: ha: still running after 175 s" && kill -TERM $$
) &
WATCHDOG=$!

in_ns() { ns=$1; shift; ip netns exec "$RUN-$ns" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
fail_with_logs() {
    bad "$1"
    for f in "$T_TMP"/*.log; do echo "---- $(basename "$f")"; tail -n 15 "$f"; done
}

cp "$MIXCTL" "$T_TMP/mixctl" || die "cannot copy $MIXCTL"
MIXCTL=$T_TMP/mixctl

# ---- topology ------------------------------------------------------------------------------------
ip netns add "$RUN-sw" || die "ip netns add failed"
MADE="$RUN-sw"
ip -n "$RUN-sw" link set lo up
ip -n "$RUN-sw" link add mxha-br type bridge || die "no bridge"
ip -n "$RUN-sw" link set mxha-br up
for node in $NODES; do
    ip netns add "$RUN-$node" || die "ip netns add $RUN-$node failed"
    MADE="$MADE $RUN-$node"
    ip -n "$RUN-sw" link add "mxha-$node" type veth peer name mxha0 netns "$RUN-$node" || die "veth for $node"
    ip -n "$RUN-sw" link set "mxha-$node" master mxha-br up
    ip -n "$RUN-$node" link set lo up
    ip -n "$RUN-$node" link set mxha0 up
    ip -n "$RUN-$node" addr add "${ADDR[$node]}/24" dev mxha0
done
check "topology: 6 namespaces, bridge without uplink, no default route" \
    test -z "$(for n in $NODES; do ip -n "$RUN-$n" route show default; done)"

# ---- the files from contrib/ha, rewritten for the namespaces -----------------------------------
sed "s|to: \[10.0.0.11:6443, 10.0.0.12:6443, 10.0.0.13:6443\]|to: [${ADDR[up1]}:6443, ${ADDR[up2]}:6443]|" \
    "$CONTRIB/k3s-rules.yaml" >"$T_TMP/rules.yaml"
grep -q "to: \[${ADDR[up1]}:6443, ${ADDR[up2]}:6443\]" "$T_TMP/rules.yaml" || die "k3s-rules.yaml has no 'to:' line to rewrite"
for lb in lb1 lb2; do
    sed -e "s|interface eth0|interface mxha0|" -e "s|10.0.0.10/24|$VIP/24|" \
        -e "s|/usr/bin/mixctl|$MIXCTL|g" -e "s|/etc/mixctl/rules.yaml|$T_TMP/rules.yaml|g" \
        "$CONTRIB/keepalived-$lb.conf" >"$T_TMP/keepalived-$lb.conf"
done
check "contrib's keepalived.conf and rules.yaml pass keepalived -t and mixctl -check" sh -c \
    "ip netns exec '$RUN-lb1' keepalived -t -f '$T_TMP/keepalived-lb1.conf' &&
     ip netns exec '$RUN-lb2' keepalived -t -f '$T_TMP/keepalived-lb2.conf' &&
     '$MIXCTL' -check -f '$T_TMP/rules.yaml' >/dev/null"

# ---- upstreams, balancers, keepalived ------------------------------------------------------------
# start NAME NODE command...: in NODE's namespace, its own session, output in $T_TMP/NAME.log; pid in $pid.
start() {
    local log=$T_TMP/$1.log node=$2
    shift 2
    # ip netns exec and setsid both exec (a background job of a script is
    # no group leader, so setsid need not fork): $! is the command itself,
    # leading its own process group.
    ip netns exec "$RUN-$node" setsid "$@" >>"$log" 2>&1 &
    pid=$!
}
for up in up1 up2; do start "$up" "$up" python3 "$PEER" serve "$up" 6443; done
start_mixctl() { start "mixctl-$1" "$1" "$MIXCTL" -f "$T_TMP/rules.yaml" -w 2 -v=false; eval "MIXCTL_$1=$pid"; }
start_mixctl lb1
start_mixctl lb2
probe_ok() { in_ns "$1" "$MIXCTL" -f "$T_TMP/rules.yaml" -t 800ms -probe k3s-api >/dev/null 2>&1; }
check "mixctl on lb1 relays to an upstream (-probe k3s-api)" wait_for 15 probe_ok lb1
check "mixctl on lb2 relays to an upstream (-probe k3s-api)" wait_for 15 probe_ok lb2
probe_line=$(in_ns lb1 "$MIXCTL" -f "$T_TMP/rules.yaml" -t 800ms -probe k3s-api 2>&1)
echo "  lb1: $probe_line"
for lb in lb1 lb2; do
    start "keepalived-$lb" "$lb" keepalived -n -l -D -G -P -f "$T_TMP/keepalived-$lb.conf" \
        -p "$T_TMP/$lb-keepalived.pid" -r "$T_TMP/$lb-vrrp.pid" -c "$T_TMP/$lb-checkers.pid" -b "$T_TMP/$lb-bfd.pid"
done

vip_on() { ip -n "$RUN-$1" -4 -o addr show dev mxha0 | grep -q " $VIP/"; }
# wait_vip NODE SECONDS: polls every 50 ms.
wait_vip() {
    end=$(($(date +%s) + $2))
    while [ "$(date +%s)" -le "$end" ]; do
        vip_on "$1" && return 0
        sleep 0.05
    done
    return 1
}

t0=$(now)
if wait_vip lb1 30; then ok "the virtual address $VIP is on lb1 ($(since "$t0") s after keepalived started)"
else fail_with_logs "the virtual address never reached lb1"; exit 1; fi
check "and not on lb2" sh -c "! ip -n '$RUN-lb2' -4 -o addr show dev mxha0 | grep -q ' $VIP/'"

# client_loop NAME: the client connects to the VIP every 50 ms until stop_loop.
client_loop() {
    rm -f "$T_TMP/stop"
    LOOP_OUT="$T_TMP/client-$1.out"
    start "client-$1" client python3 "$PEER" client "$VIP" 6443 "$LOOP_OUT" "$T_TMP/stop" 60
    LOOP_PID=$pid
}
stop_loop() {
    touch "$T_TMP/stop"
    wait_exit 10 "$LOOP_PID" || kill -KILL "$LOOP_PID"
    REPORT=$(python3 "$PEER" report "$LOOP_OUT")
}
field() { echo "$REPORT" | sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }
served_via() { echo "$REPORT" | grep -q "up[12] via $1: [1-9]"; }
good_reply_via() { [ -f "$LOOP_OUT" ] && awk -v t="$2" -v via="$1" '$1 >= t && $2 == "ok" && $4 == via { found = 1 } END { exit !found }' "$LOOP_OUT"; }

# ---- 1. spread ----------------------------------------------------------------------------------------
client_loop spread
wait_for 20 sh -c "[ \$(cat '$LOOP_OUT' 2>/dev/null | grep -c ' ok ') -ge 40 ]"
stop_loop
echo "  spread: $REPORT"
check "spread: connections to the VIP go through lb1, none fail" \
    sh -c "[ '$(field failed)' = 0 ] && echo '$REPORT' | grep -q 'via ${ADDR[lb1]}' && ! echo '$REPORT' | grep -q 'via ${ADDR[lb2]}'"
check "spread: both upstreams served" sh -c "echo '$REPORT' | grep -q 'up1 via' && echo '$REPORT' | grep -q 'up2 via'"

# failover NAME ACTION RESTORE: a client loop; ACTION at t0; the address must
# reach lb2 and a reply come back through lb2; then RESTORE, and lb1 (priority
# 200, preempting) must take the address back. Prints the figures.
SUMMARY=""
failover() {
    local name=$1 action=$2 restore=$3 t0 t1 moved served back
    client_loop "$name"
    wait_for 10 good_reply_via "${ADDR[lb1]}" 0
    t0=$(now)
    $action
    if wait_vip lb2 20; then
        moved=$(since "$t0")
        ok "$name: the address moved to lb2 in $moved s"
    else
        moved=never
        fail_with_logs "$name: the address did not move to lb2 within 20 s"
    fi
    [ "$moved" = never ] || check "$name: at most 10 s (target 3 s)" awk "BEGIN { exit !($moved <= 10) }"
    check "$name: a client reply came back through lb2" wait_for 15 good_reply_via "${ADDR[lb2]}" "$t0"
    # What keepalived's script on lb1 sees now (keepalived does not log it).
    echo "  $name: on lb1 now: $(in_ns lb1 "$MIXCTL" -f "$T_TMP/rules.yaml" -t 800ms -probe k3s-api 2>&1)"
    served=$(since "$t0")
    sleep 0.5
    stop_loop
    check "$name: lb1 let the address go" sh -c "! ip -n '$RUN-lb1' -4 -o addr show dev mxha0 | grep -q ' $VIP/'"
    t1=$(now)
    $restore
    if wait_vip lb1 30 && wait_for 5 sh -c "! ip -n '$RUN-lb2' -4 -o addr show dev mxha0 | grep -q ' $VIP/'"; then
        back=$(since "$t1")
        ok "$name: lb1 took the address back $back s after $restore"
    else
        back=never
        fail_with_logs "$name: lb1 did not take the address back"
    fi
    echo "  $name: failover $moved s (address on lb2), first reply via lb2 after $served s;" \
        "client: $(field failed) of $(field attempts) connects failed, longest gap $(field gap); lb1 back after $back s"
    SUMMARY="$SUMMARY$name $moved s (client gap $(field gap), $(field failed) failed); "
}

# kill -9 of every mixctl process on lb1 (the parent and its workers).
kill_mixctl() { kill -KILL -- "-$MIXCTL_lb1"; wait "$MIXCTL_lb1" 2>/dev/null; }
restart_mixctl() { start_mixctl lb1; }
stop_mixctl() {
    kill -STOP -- "-$MIXCTL_lb1"
    # Still there for pidof and killall -0, and its listener still completes
    # connects; only the data path shows it is gone.
    check "sigstop: every mixctl process on lb1 is stopped, and still exists" sh -c \
        "for p in \$(ps -o pid= -g $MIXCTL_lb1); do grep -q '^State:.*T' /proc/\$p/status || exit 1; done"
}
cont_mixctl() { kill -CONT -- "-$MIXCTL_lb1"; }
link_down() { ip -n "$RUN-sw" link set mxha-lb1 down; }
link_up() { ip -n "$RUN-sw" link set mxha-lb1 up; }

# ---- 2. kill -9 ---------------------------------------------------------------------------------------
failover kill-9 kill_mixctl restart_mixctl
# ---- 3. SIGSTOP: running but wedged; a liveness check would keep the address here -------------------
failover sigstop stop_mixctl cont_mixctl
# ---- 4. link loss --------------------------------------------------------------------------------------
failover link-down link_down link_up

# ---- 5. SIGHUP reloads on the master under a client loop -------------------------------------------------
masters_before=$(grep -c "Entering MASTER STATE" "$T_TMP/keepalived-lb2.log")
client_loop reload
wait_for 10 good_reply_via "${ADDR[lb1]}" 0
stayed=yes
for _ in 1 2 3; do
    kill -HUP "$MIXCTL_lb1"
    for _ in $(seq 10); do vip_on lb1 || stayed=no; sleep 0.1; done
done
sleep 1
stop_loop
echo "  reload: 3 SIGHUPs to mixctl on lb1: $REPORT"
check "reload: no connection refused or failed" test "$(field failed)" = 0
check "reload: every reply came through lb1" sh -c "! echo '$REPORT' | grep -q 'via ${ADDR[lb2]}'"
check "reload: the address stayed on lb1" test "$stayed" = yes
check "reload: lb2 never became master" test "$(grep -c "Entering MASTER STATE" "$T_TMP/keepalived-lb2.log")" = "$masters_before"
check "reload: mixctl on lb1 reloaded 3 times" wait_for 5 sh -c "[ \$(grep -c 'reloaded ' '$T_TMP/mixctl-lb1.log') -ge 3 ]"

echo "$(keepalived --version 2>&1 | head -n 1) + mixctl -probe (advert_int 1, probe interval 1 s, fall 2, rise 2):"
echo "failover: ${SUMMARY%; }"
finish
