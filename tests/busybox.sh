#!/usr/bin/env bash
# tests/busybox.sh: the static mixctl in a BusyBox-only root, as on an
# initramfs or a minimal router image.
#
# The root folder holds only busybox (Debian busybox-static) and its applet
# links, the static mixctl, a rules file and an /etc/hosts that maps the
# made-up name upstream.test to 127.0.0.1 (plus the empty /dev and /var/log
# that syslogd writes into). mixctl is started by busybox sh inside chroot
# and relays checksummed bytes to a python3 echo upstream listening on
# 127.0.0.1 outside the chroot (same network namespace: the chroot shares
# loopback). Then:
#   - SIGTERM stops it with status 0;
#   - -syslog sends its lines to BusyBox syslogd inside the root, facility
#     daemon, ident mixctl, each worker's lines under the worker's pid;
#   - as on an initramfs: BusyBox init as pid 1 (in a new pid namespace) runs
#     syslogd and mixctl -syslog from /etc/inittab, relays, and respawns
#     mixctl when it is killed;
#   - without the upstream.test line in /etc/hosts, -check fails with exit 1
#     and an error naming the file, the line and the host (run in a private
#     network namespace, so the failed lookup's DNS query goes nowhere).
# Needs root (chroot). Bounded in time.
set -u
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root for chroot (run: sudo make test-busybox)"
need busybox:busybox-static python3:python3 make:make g++:g++ readelf:binutils
BUSYBOX=$(command -v busybox)
readelf -lW "$BUSYBOX" | grep -q INTERP && die "$BUSYBOX is not static: install busybox-static"

BUILD="$T_ROOT/build/static"
T_TMP=$(mktemp -d /tmp/mixctl-busybox.XXXXXX)
trap cleanup EXIT
trap 'exit 1' INT TERM
start=$(date +%s)

echo "building the static mixctl into $BUILD"
build_static "$BUILD"
echo "size: $(wc -c <"$BUILD/mixctl") bytes ($(uname -m), static, stripped)"
check "the static mixctl has no program interpreter" sh -c '! readelf -lW "$1" | grep -q INTERP' _ "$BUILD/mixctl"

# ---- the root folder ------------------------------------------------------------
ROOT="$T_TMP/root"
mkdir -p "$ROOT/bin" "$ROOT/usr/bin" "$ROOT/etc/mixctl" "$ROOT/dev" "$ROOT/var/log"
cp "$BUSYBOX" "$ROOT/bin/busybox"
chroot "$ROOT" /bin/busybox --install -s /bin || die "busybox --install failed"
cp "$BUILD/mixctl" "$ROOT/usr/bin/mixctl"
hosts_with="127.0.0.1 localhost
127.0.0.1 upstream.test"
printf '%s\n' "$hosts_with" >"$ROOT/etc/hosts"

start_upstream 240
cat >"$ROOT/etc/mixctl/rules.yaml" <<EOF
version: 0.1
rules:
- name: busybox
  from: 127.0.0.1:0
  to: upstream.test:$upstream
- name: refused
  from: 127.0.0.1:0
  to: 127.0.0.1:1
EOF
files=$(cd "$ROOT" && find . -type f | sort | tr '\n' ' ')
check "the root holds only files busybox, mixctl, rules.yaml, hosts: $files" \
    test "$files" = "./bin/busybox ./etc/hosts ./etc/mixctl/rules.yaml ./usr/bin/mixctl "

out=$(timeout 30 chroot "$ROOT" /bin/sh -c 'mixctl -check -f /etc/mixctl/rules.yaml' 2>&1)
check "-check in the chroot: '$out'" test "$out" = "configuration OK"

# ---- relay -------------------------------------------------------------------------
chroot "$ROOT" /bin/sh -c 'exec mixctl -f /etc/mixctl/rules.yaml -w 2' >"$T_TMP/mixctl.out" 2>"$T_TMP/mixctl.log" &
mixctl=$!
started "$mixctl"
if wait_for 30 has_port "$T_TMP/mixctl.log" busybox; then
    port=$(forwarded_port "$T_TMP/mixctl.log" busybox)
    check "Forwarding line names the upstream by its /etc/hosts name" \
        grep -q "Forwarding (busybox) from: 127.0.0.1:$port to: \[upstream.test:$upstream\]" "$T_TMP/mixctl.log"
    relay_check "$T_TMP/mixctl.log" "$port" 1048576 8 \
        "8 connections x 1 MiB relayed both ways through the chroot, SHA-256 equal"
    sigterm_check "$mixctl"
else
    bad "mixctl did not log its Forwarding line within 30 s"
fi
sed 's/^/  mixctl: /' "$T_TMP/mixctl.log" | tail -n 6

# ---- -syslog to BusyBox syslogd inside the root ----------------------------------------
chroot "$ROOT" /bin/busybox syslogd -n -O /var/log/messages >/dev/null 2>&1 &
syslogd=$!
started "$syslogd"
if wait_for 20 test -S "$ROOT/dev/log"; then
    chroot "$ROOT" /bin/sh -c 'exec mixctl -syslog -f /etc/mixctl/rules.yaml -w 2' >"$T_TMP/syslog.out" 2>"$T_TMP/syslog.err" &
    mixctl=$!
    started "$mixctl"
    if wait_for 30 has_port "$ROOT/var/log/messages" busybox; then
        port=$(forwarded_port "$ROOT/var/log/messages" busybox)
        timeout 60 python3 "$T_ROOT/tests/tcp_check.py" client "$port" 4096 4 >/dev/null
        wait_for 20 grep -q "Closed .*bytes_in=4096" "$ROOT/var/log/messages"
        check "-syslog: Forwarding line at daemon.info as mixctl[$mixctl]" \
            grep -q "daemon.info mixctl\[$mixctl\]: Forwarding (busybox)" "$ROOT/var/log/messages"
        check "-syslog: a worker's Closed line under the worker's own pid" \
            sh -c 'grep "mixctl\[[0-9]*\]: Closed" "$1" | grep -vq "mixctl\[$2\]"' _ "$ROOT/var/log/messages" "$mixctl"
        check "-syslog: nothing on stderr" test ! -s "$T_TMP/syslog.err"
        refused=$(forwarded_port "$ROOT/var/log/messages" refused)
        timeout 30 python3 "$T_ROOT/tests/tcp_check.py" poke "$refused"
        check "-syslog: a failed dial is logged at daemon.err" \
            wait_for 20 grep -q "daemon.err mixctl\\[[0-9]*\\]: " "$ROOT/var/log/messages"
        kill -TERM "$mixctl"
        wait_exit 30 "$mixctl" || bad "mixctl -syslog did not stop within 30 s"
        check "-syslog: 'stopped' logged to syslog" wait_for 10 grep -q "mixctl\[$mixctl\]: stopped" "$ROOT/var/log/messages"
    else
        bad "no Forwarding line in syslogd's /var/log/messages within 30 s"
        cat "$T_TMP/syslog.err"
    fi
    sed 's/^/  syslog: /' "$ROOT/var/log/messages" | tail -n 4
else
    bad "busybox syslogd did not create /dev/log within 20 s"
fi

# ---- BusyBox init as pid 1, from /etc/inittab --------------------------------------------
# (the inittab lines are the ones the README's Deploy section gives)
kill -TERM "$syslogd" 2>/dev/null
wait_exit 10 "$syslogd" || true
rm -f "$ROOT/var/log/messages" "$ROOT/dev/log" # as after a boot: no socket yet
mkdir -p "$ROOT/proc" "$ROOT/etc/init.d"
printf '%s\n' "::sysinit:/etc/init.d/rcS" "::respawn:/usr/bin/mixctl -f /etc/mixctl/rules.yaml -syslog" >"$ROOT/etc/inittab"
cat >"$ROOT/etc/init.d/rcS" <<'RCS'
#!/bin/sh
syslogd
# syslogd forks before its socket is up: wait for it (5 s at most), so
# that mixctl's start-up lines reach the log.
i=0
while [ ! -S /dev/log ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
RCS
chmod 755 "$ROOT/etc/init.d/rcS"
# mixctl_under PID: the host pid of the mixctl that init (the child of PID) runs.
mixctl_under() {
    for p in $(children_of "$(children_of "$1" | awk '{print $1}')"); do
        if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = mixctl ]; then
            echo "$p"
            return 0
        fi
    done
    return 1
}
starts() { grep -c "mixctl\[[0-9]*\]: mixctl .* started" "$ROOT/var/log/messages" 2>/dev/null; }
if unshare -p -f --mount-proc="$ROOT/proc" true 2>/dev/null; then
    unshare -p -f --mount-proc="$ROOT/proc" chroot "$ROOT" /bin/init >"$T_TMP/init.out" 2>&1 &
    init=$!
    started "$init"
    if wait_for 30 has_port "$ROOT/var/log/messages" busybox; then
        port=$(forwarded_port "$ROOT/var/log/messages" busybox)
        ok "init: mixctl started from /etc/inittab, logging to syslogd"
        check "init: 3 connections x 256 KiB relayed, SHA-256 equal" \
            timeout 60 python3 "$T_ROOT/tests/tcp_check.py" client "$port" 262144 3
        first=$(mixctl_under "$init")
        if [ -n "$first" ]; then
            kill -KILL "$first"
            respawned() { [ "$(starts)" -ge 2 ]; }
            check "init: mixctl killed with SIGKILL is respawned (a second start line)" wait_for 30 respawned
            wait_for 30 sh -c '[ "$(grep -c "Forwarding (busybox)" "$1")" -ge 2 ]' _ "$ROOT/var/log/messages"
            port=$(sed -n 's/.*Forwarding (busybox) from: .*:\([0-9][0-9]*\) to: .*/\1/p' "$ROOT/var/log/messages" | tail -n 1)
            check "init: the respawned mixctl relays (port $port)" \
                timeout 60 python3 "$T_ROOT/tests/tcp_check.py" client "$port" 65536 2
        else
            bad "init: no mixctl process found under init"
        fi
    else
        bad "init: no Forwarding line in /var/log/messages within 30 s"
        cat "$T_TMP/init.out"
    fi
    grep -v "Connected\|Closed" "$ROOT/var/log/messages" 2>/dev/null | sed 's/^/  init: /' | tail -n 6
    # Killing init, pid 1 of its namespace, ends every process in it.
    inner=$(children_of "$init" | awk '{print $1}')
    [ -n "$inner" ] && kill -KILL "$inner" 2>/dev/null
    check "init: gone with its namespace" wait_exit 10 "$init"
else
    echo "note: unshare -p (a pid namespace) is not available: the BusyBox init check was skipped"
fi

# ---- a missing /etc/hosts entry ---------------------------------------------------------
printf '127.0.0.1 localhost\n' >"$ROOT/etc/hosts"
netns=""
if unshare -n true 2>/dev/null; then netns="unshare -n"; fi
out=$(timeout 60 $netns chroot "$ROOT" /bin/sh -c 'mixctl -check -f /etc/mixctl/rules.yaml' 2>&1)
status=$?
check "without the hosts entry: exit 1 (got $status)" test "$status" = 1
check "without the hosts entry: the error names file, line and host: '$out'" \
    sh -c 'printf "%s" "$1" | grep -q "/etc/mixctl/rules.yaml:5: to: lookup upstream.test: "' _ "$out"
check "without the hosts entry: nothing was bound (no Forwarding line)" \
    sh -c '! printf "%s" "$1" | grep -q Forwarding' _ "$out"

# ---- out of memory: the static build's terminate handler (terminate.hpp) ---------------
# A 12 MiB rules file cannot be read within 8 MiB of address space: the
# std::bad_alloc ends mixctl through std::terminate, which names the type
# thrown (as the ABI spells it: all that can be read portably) and aborts.
python3 -c 'import sys; sys.stdout.write("# filler\n" * (12 << 17))' >"$ROOT/etc/mixctl/huge.yaml"
out=$(timeout 60 chroot "$ROOT" /bin/sh -c 'ulimit -c 0; ulimit -v 8192; exec mixctl -check -f /etc/mixctl/huge.yaml' 2>&1)
status=$?
rm -f "$ROOT/etc/mixctl/huge.yaml"
check "out of memory: SIGABRT, status 134 (got $status)" test "$status" = 134
check "out of memory: the terminate handler names the exception: '$(printf '%s' "$out" | tr '\n' '|')'" \
    test "$out" = "terminate called after throwing an instance of 'St9bad_alloc'"

echo "$T_NAME took $(($(date +%s) - start)) s"
finish
