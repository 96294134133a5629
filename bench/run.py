#!/usr/bin/env python3
"""bench/run.py - mixctl against HAProxy, nginx stream and "direct" (no proxy).

Loopback only, every load bounded in time, every process started here killed
by pid at the end (also on error, Ctrl-C, SIGTERM, SIGHUP). Standard library
only. `make bench` runs it; `python3 bench/run.py -h` lists the options.

Layout of one run (see bench/README.md for the method):
  CPU 0: the proxy (taskset)    CPU 1: this runner, iperf3, wrk, the nginx
                                       HTTP upstream, the idle-socket holder
For each repetition and each target (order rotated per repetition):
  startup time (exec -> first HTTP 200 through the proxy), idle PSS, PSS with
  N1 and N2 idle connections, wrk Connection: close, wrk keep-alive, then a
  proxy with the iperf3 config: iperf3 -P 1 and -P 4. Then, for mixctl and
  HAProxy only:
  defaults  each as users run it (mixctl without -w: a worker per CPU; HAProxy
            without nbthread: a thread per CPU), on --defaults-cpus (both
            CPUs, unpinned; the load shares CPU 1): wrk keep-alive.
  fdlimit   one process (mixctl -w 1, HAProxy nbthread 1) whose soft
            RLIMIT_NOFILE leaves room for one relayed connection, wrk -c 8
            Connection: close: how fast accepts resume when a descriptor frees.
--workloads picks among http,bulk,defaults,fdlimit.
"""
import argparse
import ctypes
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LOOP = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
TARGETS = ["mixctl", "haproxy", "nginx", "direct"]
PROXIES = ["mixctl", "haproxy", "nginx"]
# mixctl under each wait backend: "mixctl" is the build's default (epoll on
# Linux), "mixctl-poll" the portable poll() backend of the same binary.
MIXCTL_BACKENDS = {"mixctl": [], "mixctl-epoll": ["env", "MIXCTL_POLLER=epoll"],
                   "mixctl-poll": ["env", "MIXCTL_POLLER=poll"]}
EXTRA_BINS = {}  # --mixctl-bin NAME=PATH: more mixctl targets, each its own binary
T0 = time.monotonic()


def log(msg):
    print("[bench %6.1fs] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes --

def read_stat(pid):
    """(ppid, utime+stime+cutime+cstime in ticks, state) or None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): ppid = field 4, utime..cstime = fields 14..17
    return int(rest[1]), sum(int(x) for x in rest[11:15]), rest[0]


def all_ppids():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st:
                out[int(name)] = st[0]
    return out


def tree(root):
    """root and all its descendants, root first (empty if root is gone)."""
    if not os.path.exists("/proc/%d" % root):
        return []
    ppids = all_ppids()
    kids = {}
    for pid, ppid in ppids.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(sorted(kids.get(pid, [])))
    return out


def cpu_seconds(root):
    total = 0
    for pid in tree(root):
        st = read_stat(pid)
        if st:
            total += st[1]
    return total / CLK_TCK


def memory_kib(root):
    """(PSS, USS) of the process tree in KiB, from smaps_rollup. PSS counts a
    page shared by k processes as 1/k (pre-forked workers are not counted
    twice); USS is the private part only, which other processes mapping the
    same libraries do not move."""
    pss = uss = 0
    for pid in tree(root):
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                        uss += int(line.split()[1])
        except OSError:
            pass
    return pss, uss


def fd_count(root):
    n = 0
    for pid in tree(root):
        try:
            n += len(os.listdir("/proc/%d/fd" % pid))
        except OSError:
            pass
    return n


def cpu_stat(cpus):
    """seconds of (user+nice+system, softirq+irq, steal) summed over cpus, from /proc/stat."""
    busy = soft = steal = 0
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                if int(parts[0][3:]) in cpus:
                    v = [int(x) for x in parts[1:9]]
                    busy += v[0] + v[1] + v[2]
                    soft += v[5] + v[6]
                    steal += v[7]
    return busy / CLK_TCK, soft / CLK_TCK, steal / CLK_TCK


def runqueue_wait_s(root):
    """seconds the process tree spent runnable but waiting for a CPU (schedstat)."""
    total = 0
    for pid in tree(root):
        try:
            tasks = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tasks:
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return total / 1e9


class Window:
    """A timed run: the proxy's CPU seconds, and how busy its CPUs were with
    anything else (other processes on this shared machine, kernel threads)."""

    def __init__(self, setup, proxy_pid):
        self.cpus, self.pid = setup.proxy_cpu_set, proxy_pid
        self.t0 = time.monotonic()
        self.c0 = cpu_seconds(proxy_pid) if proxy_pid else 0.0
        self.q0 = runqueue_wait_s(proxy_pid) if proxy_pid else 0.0
        self.s0 = cpu_stat(self.cpus)

    def done(self):
        wall = time.monotonic() - self.t0
        proxy = (cpu_seconds(self.pid) if self.pid else 0.0) - self.c0
        s1 = cpu_stat(self.cpus)
        busy, soft, steal = (b - a for a, b in zip(self.s0, s1))
        span = wall * len(self.cpus)
        self.proxy_s = proxy
        self.wait_pct = ((runqueue_wait_s(self.pid) - self.q0) / wall * 100) if self.pid else None
        self.other_pct = max(0.0, busy - proxy) / span * 100
        self.softirq_pct = soft / span * 100
        self.steal_pct = steal / span * 100
        return self


def noise(res, w):
    res.setdefault("_other", []).append(w.other_pct)
    res.setdefault("_steal", []).append(w.steal_pct)
    if w.wait_pct is not None:
        res.setdefault("_wait", []).append(w.wait_pct)


class Procs:
    """Every process this run starts, so all of them can be killed by pid."""

    def __init__(self):
        self.live = {}  # pid -> (Popen, name)
        self.me = os.getpid()

    nice = 0

    def prefix(self, cpus):
        # the process nice is inherited from this runner (os.nice in main)
        return ["taskset", "-c", cpus] if cpus else []

    def start(self, name, argv, cpus, logfile):
        cmd = self.prefix(cpus) + argv
        out = open(logfile, "ab")
        try:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True)
        finally:
            out.close()
        self.live[p.pid] = (p, name)
        self.prioritize(p.pid)
        return p

    def run(self, name, argv, cpus, timeout):
        """Runs a bounded load tool; returns (rc, stdout, stderr)."""
        cmd = self.prefix(cpus) + argv
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True, close_fds=True)
        self.live[p.pid] = (p, name)
        self.prioritize(p.pid)
        try:
            out, err = p.communicate(timeout=timeout)
            return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        except subprocess.TimeoutExpired:
            log("%s: still running after %ss, killed" % (name, timeout))
            return None, "", "timeout"
        finally:
            self.stop(p, grace=1.0)

    def prioritize(self, pid):
        """Each process starts in its own session, so with autogroup scheduling
        it is its own group and its nice value would only count inside it:
        give the group the same nice (needs root)."""
        if self.nice:
            try:
                with open("/proc/%d/autogroup" % pid, "w") as f:
                    f.write(str(self.nice))
            except OSError:
                pass

    def stop(self, p, grace=3.0):
        if p.pid not in self.live:
            return
        pids = tree(p.pid) if p.poll() is None else []
        # descendants reparented to us (we are a subreaper) after an earlier death
        ppids = all_ppids()
        pids += [pid for pid, pp in ppids.items() if pp == self.me and pid not in self.live and pid not in pids]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if p.poll() is not None and not any(self._ours(pid, pids) for pid in pids if pid != p.pid):
                break
            self._reap(pids)
            time.sleep(0.01)
        for pid in pids:
            if self._ours(pid, pids):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._reap(pids)
        del self.live[p.pid]

    def _ours(self, pid, family):
        """pid still runs (not a zombie) and is one of ours: child of a process
        in family, or reparented to this runner (a subreaper)."""
        st = read_stat(pid)
        return bool(st) and st[2] != "Z" and (st[0] in family or st[0] == self.me)

    def _reap(self, pids):
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except OSError:
                pass

    def stop_all(self):
        for pid in list(self.live):
            p, name = self.live[pid]
            try:
                self.stop(p, grace=2.0)
            except Exception as e:  # keep going: every pid must be tried
                log("stopping %s (pid %d): %s" % (name, pid, e))


PROCS = Procs()


def become_subreaper():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


# -------------------------------------------------------------- environment --

def which(cmd):
    """PATH lookup, plus the sbin directories a non-root PATH may lack."""
    found = shutil.which(cmd)
    if not found:
        for d in ("/usr/sbin", "/sbin"):
            if os.access(os.path.join(d, cmd), os.X_OK):
                return os.path.join(d, cmd)
    return found


def have(cmd):
    return which(cmd) is not None


def ensure_packages():
    """Installs missing Debian packages when root; otherwise says what to run."""
    want = []
    for cmd, pkg in (("taskset", "util-linux"), ("haproxy", "haproxy"), ("nginx", "nginx"),
                     ("iperf3", "iperf3"), ("wrk", "wrk")):
        if not have(cmd):
            want.append(pkg)
    if not os.path.exists(STREAM_MODULE):
        want.append("libnginx-mod-stream")
    if not want:
        return
    line = "apt-get install -y " + " ".join(want)
    if os.geteuid() != 0 or not have("apt-get"):
        log("missing: %s; install with:  sudo apt-get update && sudo %s" % (" ".join(want), line))
        return
    log("installing %s (apt-get update once, then %s)" % (" ".join(want), line))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Debian starts a freshly installed nginx/haproxy service (nginx on :80);
    # policy-rc.d exit 101 forbids that. Only added if absent, removed after.
    guard = "/usr/sbin/policy-rc.d"
    added_guard = False
    if not os.path.exists(guard):
        try:
            with open(guard, "w") as f:
                f.write("#!/bin/sh\n# temporary, from mixctl bench/run.py: no service starts during install\nexit 101\n")
            os.chmod(guard, 0o755)
            added_guard = True
        except OSError:
            pass
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=300, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq"] + want, env=env, timeout=600, check=False)
    finally:
        if added_guard:
            os.unlink(guard)


def binaries():
    nginx = which("nginx")
    return {
        "haproxy": which("haproxy"),
        "nginx": nginx if nginx and os.path.exists(STREAM_MODULE) else None,
        "nginx_http": nginx,
        "iperf3": which("iperf3"),
        "wrk": which("wrk"),
        "mixctl": os.path.join(ROOT, "mixctl") if os.access(os.path.join(ROOT, "mixctl"), os.X_OK) else None,
        **EXTRA_BINS,
    }


def version_of(argv):
    try:
        r = subprocess.run(argv, capture_output=True, timeout=5)
        text = (r.stdout + r.stderr).decode(errors="replace").strip().splitlines()
        return text[0] if text else ""
    except Exception:
        return ""


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except OSError:
        mem = 0
    debian = ""
    if os.path.exists("/etc/debian_version"):
        debian = open("/etc/debian_version").read().strip()
    virt = ""
    try:
        virt = subprocess.run(["systemd-detect-virt"], capture_output=True, timeout=3).stdout.decode().strip()
    except Exception:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "mem_mib": mem, "kernel": platform.release(),
            "debian": debian, "virt": virt, "loadavg_start": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


_used_ports = set()


def free_port():
    for _ in range(100):
        with socket.socket() as s:
            s.bind((LOOP, 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port")


def listening(port):
    """True when something listens on 127.0.0.1:port (from /proc, no connect)."""
    want = "0100007F:%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 3 and parts[1] == want and parts[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def wait_listening(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(port):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def http_get_once(port, timeout=1.0):
    try:
        with socket.create_connection((LOOP, port), timeout=timeout) as s:
            s.sendall(b"GET /tiny HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


# ------------------------------------------------------------------ configs --

class Setup:
    def __init__(self, args, tmp, bins, nofile):
        self.args, self.tmp, self.bins = args, tmp, bins
        self.nofile = nofile
        self.proxy_cpus = args.proxy_cpus
        self.load_cpus = args.load_cpus
        self.proxy_cpu_set = set(cpu_list(args.proxy_cpus))
        # connections a proxy may hold: 2 fds each, plus listeners and logs
        self.maxconn = max(100, (nofile - 128) // 2)


def cpu_list(text):
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def proxy_argv(kind, setup, listen, ups, tag):
    """argv for one proxy: listen on LOOP:listen, upstreams ups (list of ports)."""
    d = os.path.join(setup.tmp, "%s-%s" % (kind, tag))
    os.makedirs(d, exist_ok=True)
    w = setup.args.workers
    defaults = getattr(setup, "defaults", False)  # what users run: no -w, no nbthread
    if kind in MIXCTL_BACKENDS:
        to = ", ".join("%s:%d" % (LOOP, u) for u in ups)
        cfg = write(os.path.join(d, "rules.yaml"),
                    "version: 0.1\nrules:\n- name: bench\n  from: %s:%d\n  to: [%s]\n" % (LOOP, listen, to))
        # env execs mixctl: the pid is mixctl's
        return MIXCTL_BACKENDS[kind] + [setup.bins.get(kind) or setup.bins["mixctl"]] + ([] if defaults else ["-w", str(w)]) + \
            ["-v=false", "-f", cfg]
    if kind == "haproxy":
        servers = "".join("    server s%d %s:%d\n" % (i + 1, LOOP, u) for i, u in enumerate(ups))
        cfg = write(os.path.join(d, "haproxy.cfg"), (
            "global\n%s    maxconn %d\n\n"
            "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 10m\n    timeout server 10m\n\n"
            "frontend fe\n    bind %s:%d\n    default_backend be\n\n"
            "backend be\n    balance random(1)\n%s") % ("" if defaults else "    nbthread %d\n" % w, setup.maxconn,
                                                   LOOP, listen, servers))
        return [setup.bins["haproxy"], "-db", "-f", cfg]
    if kind == "nginx":
        servers = "".join("        server %s:%d;\n" % (LOOP, u) for u in ups)
        cfg = write(os.path.join(d, "nginx.conf"), (
            "load_module %s;\n"
            "daemon off;\nworker_processes %d;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n"
            "worker_rlimit_nofile %d;\n"
            "events { worker_connections %d; }\n"
            "stream {\n    upstream be {\n        random;\n%s    }\n"
            "    server {\n        listen %s:%d backlog=4096;\n        proxy_pass be;\n"
            "        proxy_timeout 10m;\n    }\n}\n") % (
            STREAM_MODULE, w, d, d, setup.nofile, 2 * setup.maxconn + 64, servers, LOOP, listen))
        return [setup.bins["nginx"], "-p", d + "/", "-e", d + "/error.log", "-c", cfg]
    raise ValueError(kind)


def start_http_upstream(setup):
    """nginx (HTTP) on two ports serving a tiny file, pinned to the load CPU."""
    d = os.path.join(setup.tmp, "upstream-http")
    www = os.path.join(d, "www")
    os.makedirs(www, exist_ok=True)
    write(os.path.join(www, "tiny"), "x" * 63 + "\n")
    for path in (setup.tmp, d, www):
        os.chmod(path, 0o755)
    os.chmod(os.path.join(www, "tiny"), 0o644)
    ports = [free_port(), free_port()]
    temps = "".join("    %s_temp_path %s/%s;\n" % (t, d, t) for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    cfg = write(os.path.join(d, "nginx.conf"), (
        "daemon off;\nworker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n"
        "worker_rlimit_nofile %d;\nevents { worker_connections %d; }\n"
        "http {\n    access_log off;\n%s"
        "    keepalive_requests 100000000;\n    keepalive_timeout 600s;\n    client_header_timeout 600s;\n"
        "    server {\n        listen %s:%d backlog=4096;\n        listen %s:%d backlog=4096;\n"
        "        root %s;\n        location / { }\n    }\n}\n") % (
        d, d, setup.nofile, setup.nofile - 64, temps, LOOP, ports[0], LOOP, ports[1], www))
    p = PROCS.start("nginx-http-upstream", [setup.bins["nginx_http"], "-p", d + "/", "-e", d + "/error.log", "-c", cfg],
                    setup.load_cpus, os.path.join(d, "out.log"))
    if not (wait_listening(ports[0], p) and wait_listening(ports[1], p) and http_get_once(ports[0])):
        raise RuntimeError("nginx HTTP upstream did not start; see %s" % d)
    return p, ports


def start_iperf_server(setup):
    port = free_port()
    d = os.path.join(setup.tmp, "iperf3")
    os.makedirs(d, exist_ok=True)
    p = PROCS.start("iperf3-server", [setup.bins["iperf3"], "-s", "-B", LOOP, "-p", str(port)],
                    setup.load_cpus, os.path.join(d, "server.log"))
    if not wait_listening(port, p):
        raise RuntimeError("iperf3 server did not start")
    return p, port


# ------------------------------------------------------------- measurements --

WRK_LUA = r'''
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
'''


def run_wrk(setup, port, close, proxy_pid, res):
    args = setup.args
    conns = args.close_conns if close else args.ka_conns
    argv = [setup.bins["wrk"], "-t", "1", "-c", str(conns), "-d", "%ds" % args.duration, "--timeout", "2s",
            "--latency", "-s", setup.wrk_lua]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append("http://%s:%d/tiny" % (LOOP, port))
    w = Window(setup, proxy_pid)
    rc, out, err = PROCS.run("wrk", argv, setup.load_cpus, timeout=args.duration + 15)
    w.done()
    m = re.search(r"BENCHJSON (\{.*\})", out)
    if rc != 0 or not m:
        log("wrk failed (rc %s): %s" % (rc, (err or out).strip()[-300:]))
        return None
    r = json.loads(m.group(1))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    rate = r["requests"] / (r["duration_us"] / 1e6)
    noise(res, w)
    out = {"rate": rate, "requests": r["requests"], "errors": errors, "p50_us": r["p50_us"], "p99_us": r["p99_us"]}
    if proxy_pid and r["requests"]:
        out["cpu_us"] = w.proxy_s * 1e6 / r["requests"]
    if errors:
        log("wrk: %d errors (%s)" % (errors, {k: r[k] for k in ("connect", "read", "write", "status", "timeout")}))
    return out


def run_iperf(setup, port, streams, proxy_pid, res_all):
    args = setup.args
    argv = [setup.bins["iperf3"], "-c", LOOP, "-p", str(port), "-t", str(args.duration), "-P", str(streams),
            "-J", "--connect-timeout", "3000"]
    for attempt in range(3):
        if setup.iperf_server.poll() is not None:  # died: start another on the same port
            log("iperf3 server exited; restarting it")
            PROCS.stop(setup.iperf_server)
            setup.iperf_server = PROCS.start("iperf3-server", [setup.bins["iperf3"], "-s", "-B", LOOP, "-p",
                                             str(setup.iperf_port)], setup.load_cpus,
                                             os.path.join(setup.tmp, "iperf3", "server.log"))
            wait_listening(setup.iperf_port, setup.iperf_server)
        w = Window(setup, proxy_pid)
        rc, out, err = PROCS.run("iperf3", argv, setup.load_cpus, timeout=args.duration + 20)
        w.done()
        try:
            j = json.loads(out)
        except ValueError:
            j = {"error": (err or out).strip()[-200:] or "no output (rc %s)" % rc}
        if "error" in j or "end" not in j:
            log("iperf3 -P %d failed (try %d): %s" % (streams, attempt + 1, j.get("error")))
            time.sleep(0.5)
            continue
        recv = j["end"]["sum_received"]
        noise(res_all, w)
        res = {"gbps": recv["bits_per_second"] / 1e9, "bytes": recv["bytes"]}
        if proxy_pid and recv["bytes"]:
            res["cpu_s_per_gb"] = w.proxy_s / (recv["bytes"] / 1e9)
        return res
    return None


def start_proxy_http_ready(kind, setup, tag):
    """Starts a proxy in front of the HTTP upstream; returns (proc, port, ms to first HTTP 200)."""
    port = free_port()
    argv = proxy_argv(kind, setup, port, setup.http_ports, tag)
    logf = os.path.join(setup.tmp, "%s-%s" % (kind, tag), "out.log")
    t0 = time.perf_counter()
    p = PROCS.start(kind, argv, setup.proxy_cpus, logf)
    deadline = t0 + 10
    while time.perf_counter() < deadline:
        if p.poll() is not None:
            break
        try:
            s = socket.create_connection((LOOP, port), timeout=2)
        except OSError:
            time.sleep(0.0002)
            continue
        with s:
            try:
                s.sendall(b"GET /tiny HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                s.settimeout(2)
                data = s.recv(64)
            except OSError:
                data = b""
        if data.startswith(b"HTTP/1.1 200"):
            return p, port, (time.perf_counter() - t0) * 1e3
        time.sleep(0.001)
    tail = open(logf, errors="replace").read()[-400:] if os.path.exists(logf) else ""
    PROCS.stop(p)
    raise RuntimeError("%s did not serve within 10s: %s" % (kind, tail.strip()))


def open_idle(port, count, holder, proxy_pid, base_fds, deadline):
    """Opens idle connections up to `count` held in `holder`; waits until the
    proxy holds both sides of each (2 fds per connection)."""
    failures = 0
    while len(holder) < count and time.monotonic() < deadline:
        batch = min(200, count - len(holder))
        for _ in range(batch):
            try:
                s = socket.create_connection((LOOP, port), timeout=3)
                holder.append(s)
            except OSError as e:
                failures += 1
                if failures > 20:
                    raise RuntimeError("cannot open idle connections: %s" % e)
        # pace: let the proxy accept and dial before the next batch
        while time.monotonic() < deadline and fd_count(proxy_pid) < base_fds + 2 * len(holder) - 2 * batch // 2:
            time.sleep(0.002)
    while time.monotonic() < deadline and fd_count(proxy_pid) < base_fds + 2 * len(holder):
        time.sleep(0.01)
    held = (fd_count(proxy_pid) - base_fds) // 2
    return held


def measure_proxy_http(kind, setup, rep):
    """startup x K, memory (idle, N1, N2), wrk close, wrk keep-alive."""
    args = setup.args
    res = {}
    starts = []
    p = None
    for i in range(args.startups):
        if p is not None:
            PROCS.stop(p)
        p, port, ms = start_proxy_http_ready(kind, setup, "http-r%d-s%d" % (rep, i))
        starts.append(ms)
    res["startup_ms"] = statistics.median(starts)
    try:
        time.sleep(0.3)
        base_fds = fd_count(p.pid)
        res["pss_idle_kib"], res["uss_idle_kib"] = memory_kib(p.pid)
        holder = []
        try:
            deadline = time.monotonic() + 60
            for n, key in ((args.conns1, "1"), (args.conns2, "2")):
                held = open_idle(port, n, holder, p.pid, base_fds, deadline)
                if held < n:
                    log("%s: only %d of %d idle connections reached the upstream" % (kind, held, n))
                time.sleep(0.3)
                pss, uss = memory_kib(p.pid)
                res["pss_%s_kib" % key] = pss
                res["kib_per_conn_%s" % key] = (pss - res["pss_idle_kib"]) / max(1, len(holder))
                res["uss_kib_per_conn_%s" % key] = (uss - res["uss_idle_kib"]) / max(1, len(holder))
                res["conns_%s" % key] = len(holder)
        finally:
            for s in holder:
                s.close()
            holder.clear()
        deadline = time.monotonic() + 15  # let the proxy and upstream close them
        while time.monotonic() < deadline and fd_count(p.pid) > base_fds + 4:
            time.sleep(0.02)
        if setup.bins["wrk"]:
            r = run_wrk(setup, port, True, p.pid, res)
            if r:
                res.update({"conn_rate": r["rate"], "conn_cpu_us": r.get("cpu_us"), "conn_errors": r["errors"]})
            r = run_wrk(setup, port, False, p.pid, res)
            if r:
                res.update({"ka_rate": r["rate"], "ka_p50_us": r["p50_us"], "ka_p99_us": r["p99_us"],
                            "ka_cpu_us": r.get("cpu_us"), "ka_errors": r["errors"]})
    finally:
        PROCS.stop(p)
    return res


def measure_proxy_bulk(kind, setup, rep):
    res = {}
    port = free_port()
    # iperf3 = one control connection + N data connections, which must all
    # reach the same server: both upstream entries are that one server.
    argv = proxy_argv(kind, setup, port, [setup.iperf_port, setup.iperf_port], "bulk-r%d" % rep)
    p = PROCS.start(kind, argv, setup.proxy_cpus, os.path.join(setup.tmp, "%s-bulk-r%d" % (kind, rep), "out.log"))
    try:
        if not wait_listening(port, p):
            raise RuntimeError("%s (bulk config) did not listen" % kind)
        time.sleep(0.1)  # workers up (listening is the parent's bind)
        for streams in (1, 4):
            r = run_iperf(setup, port, streams, p.pid, res)
            if r:
                res["bulk%d_gbps" % streams] = r["gbps"]
                if "cpu_s_per_gb" in r:
                    res["bulk%d_cpu_s_per_gb" % streams] = r["cpu_s_per_gb"]
    finally:
        PROCS.stop(p)
    return res


def measure_direct(setup):
    res = {}
    if setup.bins["iperf3"]:
        for streams in (1, 4):
            r = run_iperf(setup, setup.iperf_port, streams, None, res)
            if r:
                res["bulk%d_gbps" % streams] = r["gbps"]
    if setup.bins["wrk"] and setup.http_ports:
        r = run_wrk(setup, setup.http_ports[0], True, None, res)
        if r:
            res.update({"conn_rate": r["rate"], "conn_errors": r["errors"]})
        r = run_wrk(setup, setup.http_ports[0], False, None, res)
        if r:
            res.update({"ka_rate": r["rate"], "ka_p50_us": r["p50_us"], "ka_p99_us": r["p99_us"],
                        "ka_errors": r["errors"]})
    return res


# ------------------------------------------------- default settings, fdlimit --

def measure_defaults(kind, setup, rep):
    """What users run: mixctl with no -w (one worker per CPU), HAProxy with no
    nbthread (one thread per CPU), both free to use both CPUs (the load
    shares CPU 1). wrk keep-alive: rate, p99, CPU per request."""
    res = {}
    keep = setup.proxy_cpus, setup.proxy_cpu_set
    setup.defaults = True
    setup.proxy_cpus = setup.args.defaults_cpus
    setup.proxy_cpu_set = set(cpu_list(setup.proxy_cpus))
    p = None
    try:
        p, port, _ = start_proxy_http_ready(kind, setup, "defaults-r%d" % rep)
        time.sleep(0.3)
        run_wrk(setup, port, False, None, {})  # warm-up: every worker/thread has seen traffic
        r = run_wrk(setup, port, False, p.pid, res)
        if r:
            res.update({"def_ka_rate": r["rate"], "def_ka_p50_us": r["p50_us"], "def_ka_p99_us": r["p99_us"],
                        "def_ka_cpu_us": r.get("cpu_us"), "def_ka_errors": r["errors"]})
    finally:
        setup.defaults = False
        setup.proxy_cpus, setup.proxy_cpu_set = keep
        if p is not None:
            PROCS.stop(p)
    return res


def fd_numbers(pid):
    try:
        return {int(x) for x in os.listdir("/proc/%d/fd" % pid)}
    except OSError:
        return set()


def limit_with_room(pid, room):
    """The soft RLIMIT_NOFILE under which exactly `room` descriptor numbers
    are free in pid (the kernel hands out the lowest free number)."""
    held, n, free = fd_numbers(pid), 0, 0
    while True:
        if n not in held:
            free += 1
            if free > room:
                return n
        n += 1


def prlimit_nofile(pid, soft):
    """Sets pid's soft RLIMIT_NOFILE, keeping its hard limit (root cannot
    raise a lowered hard limit again); returns the previous (soft, hard)."""
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, old[1]))
    return old


def measure_fdlimit(kind, setup, rep):
    """Issue 20.4: one process (mixctl -w 1, HAProxy nbthread 1) whose soft
    descriptor limit leaves room for one relayed connection (client +
    upstream), eight clients looping connect/request/reply/close (wrk -c 8,
    Connection: close). Requests per second: how soon accepts resume when a
    descriptor frees."""
    res = {}
    keep = setup.args.workers, setup.args.close_conns
    setup.args.workers, setup.args.close_conns = 1, 8
    p = None
    limited = []
    try:
        p, port, _ = start_proxy_http_ready(kind, setup, "fdlimit-r%d" % rep)
        time.sleep(0.3)
        http_get_once(port)
        time.sleep(0.3)
        procs = [pid for pid, pp in all_ppids().items() if pp == p.pid] if kind in MIXCTL_BACKENDS else [p.pid]
        for pid in procs:
            limited.append((pid, prlimit_nofile(pid, limit_with_room(pid, 2))))
        r = run_wrk(setup, port, True, p.pid, res)
        if r:
            res.update({"fdlimit_rate": r["rate"], "fdlimit_errors": r["errors"], "fdlimit_p99_us": r["p99_us"],
                        "fdlimit_failed_rate": r["errors"] / setup.args.duration})
            if r.get("cpu_us"):
                res["fdlimit_cpu_us"] = r["cpu_us"]
    finally:
        for pid, old in limited:
            try:
                resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
            except OSError:
                pass
        setup.args.workers, setup.args.close_conns = keep
        if p is not None:
            PROCS.stop(p)
    return res


def binary_sizes(setup):
    out = {}
    m = setup.bins["mixctl"]
    if m:
        out["mixctl"] = {"file_kib": os.path.getsize(m) / 1024}
        if have("strip"):
            stripped = os.path.join(setup.tmp, "mixctl.stripped")
            if subprocess.run(["strip", "-o", stripped, m], capture_output=True, timeout=30).returncode == 0:
                out["mixctl"]["stripped_kib"] = os.path.getsize(stripped) / 1024
    if setup.bins["haproxy"]:
        k = os.path.getsize(os.path.realpath(setup.bins["haproxy"])) / 1024
        out["haproxy"] = {"file_kib": k, "stripped_kib": k}
    if setup.bins["nginx"]:
        k = (os.path.getsize(os.path.realpath(setup.bins["nginx"])) + os.path.getsize(STREAM_MODULE)) / 1024
        out["nginx"] = {"file_kib": k, "stripped_kib": k}
    return out


# ------------------------------------------------------------------ report --

# key, label, unit, better ("hi"/"lo"), format
METRICS = [
    ("bulk1_gbps", "bulk 1 stream", "Gbit/s", "hi", "%.2f"),
    ("bulk4_gbps", "bulk 4 streams", "Gbit/s", "hi", "%.2f"),
    ("bulk1_cpu_s_per_gb", "CPU per GB, 1 stream", "s", "lo", "%.3f"),
    ("bulk4_cpu_s_per_gb", "CPU per GB, 4 streams", "s", "lo", "%.3f"),
    ("conn_rate", "new connections/s", "1/s", "hi", "%.0f"),
    ("conn_cpu_us", "CPU per connection", "us", "lo", "%.1f"),
    ("ka_rate", "keep-alive requests/s", "1/s", "hi", "%.0f"),
    ("ka_p50_us", "keep-alive p50 latency", "us", "lo", "%.0f"),
    ("ka_p99_us", "keep-alive p99 latency", "us", "lo", "%.0f"),
    ("ka_cpu_us", "CPU per request", "us", "lo", "%.2f"),
    ("pss_idle_kib", "PSS idle (process tree)", "KiB", "lo", "%.0f"),
    ("uss_idle_kib", "USS idle (private pages)", "KiB", "lo", "%.0f"),
    ("pss_1_kib", "PSS with N1 idle conns", "KiB", "lo", "%.0f"),
    ("pss_2_kib", "PSS with N2 idle conns", "KiB", "lo", "%.0f"),
    ("kib_per_conn_1", "memory per idle conn (N1)", "KiB", "lo", "%.2f"),
    ("kib_per_conn_2", "memory per idle conn (N2)", "KiB", "lo", "%.2f"),
    ("startup_ms", "startup to first reply", "ms", "lo", "%.1f"),
    ("def_ka_rate", "defaults (-w/threads = CPUs, unpinned): keep-alive req/s", "1/s", "hi", "%.0f"),
    ("def_ka_p99_us", "defaults: keep-alive p99 latency", "us", "lo", "%.0f"),
    ("def_ka_cpu_us", "defaults: CPU per request", "us", "lo", "%.2f"),
    ("fdlimit_rate", "fdlimit: req/s with room for 1 conn, 8 clients", "1/s", "hi", "%.0f"),
    ("fdlimit_failed_rate", "fdlimit: failed req/s (closed unanswered)", "1/s", "lo", "%.0f"),
    ("binary_kib", "binary size (stripped)", "KiB", "lo", "%.0f"),
    ("runq_wait_pct", "noise: proxy runnable, waiting for CPU", "% of time", "lo", "%.1f"),
]


def summarize(runs):
    """runs: {target: [rep dicts]} -> {target: {key: {runs, median, spread_pct}}}"""
    out = {}
    for target, reps in runs.items():
        keys = sorted({k for r in reps for k in r})
        out[target] = {}
        for k in keys:
            vals = [r[k] for r in reps if isinstance(r.get(k), (int, float))]
            if not vals:
                continue
            med = statistics.median(vals)
            spread = (max(vals) - min(vals)) / 2 / med * 100 if med else 0.0
            out[target][k] = {"runs": vals, "median": med, "spread_pct": spread}
    return out


def render(summary, targets, n1, n2, title):
    base = summary.get("haproxy", {})
    rows = []
    header = ["metric (unit, better)"] + ["%s" % t for t in targets]
    for key, label, unit, better, fmt in METRICS:
        label = label.replace("N1", "%d" % n1).replace("N2", "%d" % n2)
        row = ["%s (%s, %s)" % (label, unit, "higher" if better == "hi" else "lower")]
        anyval = False
        for t in targets:
            s = summary.get(t, {}).get(key)
            if not s:
                row.append("-")
                continue
            anyval = True
            cell = fmt % s["median"]
            if len(s["runs"]) > 1:
                cell += " ±%.0f%%" % s["spread_pct"]
            b = base.get(key)
            if t != "haproxy" and b and b["median"] and not key.startswith("runq"):
                cell += "  %.2fx" % (s["median"] / b["median"])
            row.append(cell)
        if anyval:
            rows.append(row)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    out = [title, line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    out.append("median of the repetitions; ±: half the range as % of the median; Nx: ratio to haproxy in this run")
    return "\n".join(out)


# -------------------------------------------------------------------- main --

def parse_args():
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    ap = argparse.ArgumentParser(description="mixctl vs HAProxy vs nginx stream vs direct, on loopback")
    ap.add_argument("--quick", action="store_true", default=quick, help="~1 minute smoke run (or BENCH_QUICK=1)")
    ap.add_argument("--json", default=os.environ.get("BENCH_JSON", ""),
                    help="where to write JSON (default bench/results/latest.json, or scale-w<N>.json)")
    ap.add_argument("--reps", type=int, default=0, help="repetitions (default 3, 2 when --quick; at least 2)")
    ap.add_argument("--duration", type=int, default=0, help="seconds per iperf3/wrk run (default 4, quick 1)")
    ap.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", "1")),
                    help="mixctl -w, haproxy nbthread, nginx worker_processes (default 1)")
    ap.add_argument("--proxy-cpus", default=os.environ.get("BENCH_PROXY_CPUS", "0"),
                    help="taskset CPU list for the proxy (default 0)")
    ap.add_argument("--load-cpus", default=os.environ.get("BENCH_LOAD_CPUS", "1"),
                    help="taskset CPU list for load, upstreams and this runner (default 1)")
    ap.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""), help="comma list from " + ",".join(TARGETS))
    ap.add_argument("--close-conns", type=int, default=32, help="wrk -c for the Connection: close run")
    ap.add_argument("--ka-conns", type=int, default=16, help="wrk -c for the keep-alive run")
    ap.add_argument("--conns", default="", help="idle connection counts N1,N2 (default 1000,10000; quick 1000,3000)")
    ap.add_argument("--startups", type=int, default=0, help="starts per repetition for startup time (default 3)")
    ap.add_argument("--budget", type=int, default=330, help="seconds: no repetition past the 2nd starts if it "
                    "would end after this (default 330)")
    ap.add_argument("--nice", type=int, default=int(os.environ.get("BENCH_NICE", "-19" if os.geteuid() == 0 else "0")),
                    help="nice level (process and autogroup) for everything the bench runs (default -19 as root: "
                    "shields the figures from other work on a shared machine; 0 turns it off)")
    ap.add_argument("--defaults-cpus", default=os.environ.get("BENCH_DEFAULTS_CPUS", "0,1"),
                    help="CPUs for the default-settings workload (default 0,1: both, unpinned; the load shares one)")
    ap.add_argument("--workloads", default=os.environ.get("BENCH_WORKLOADS", "http,bulk,defaults,fdlimit"),
                    help="comma list from http,bulk,defaults,fdlimit (default all)")
    ap.add_argument("--mixctl-bin", action="append", default=[], metavar="NAME=PATH",
                    help="A/B runs: one more target NAME (e.g. mixctl-old) running the mixctl binary at PATH "
                    "beside ./mixctl, same settings; repeatable; MIXCTL_POLLER=poll|epoll prefixes as "
                    "NAME=poll:PATH")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    a = ap.parse_args()
    for spec in a.mixctl_bin:
        name, _, path = spec.partition("=")
        env = []
        if path.startswith(("poll:", "epoll:")):
            backend, _, path = path.partition(":")
            env = ["env", "MIXCTL_POLLER=" + backend]
        if not name or not path or name in TARGETS or not os.access(path, os.X_OK):
            ap.error("--mixctl-bin %s: want NAME=PATH, a new name and an executable" % spec)
        MIXCTL_BACKENDS[name] = env
        TARGETS.insert(TARGETS.index("mixctl") + 1, name)
        EXTRA_BINS[name] = os.path.abspath(path)
    a.workloads = {x.strip() for x in a.workloads.split(",") if x.strip()}
    a.reps = max(2, a.reps or (2 if a.quick else 3))
    a.duration = a.duration or (1 if a.quick else 4)
    a.startups = a.startups or (2 if a.quick else 3)
    n = a.conns or ("1000,3000" if a.quick else "1000,10000")
    a.conns1, a.conns2 = (int(x) for x in n.split(","))
    if os.cpu_count() < 2:
        a.proxy_cpus = a.load_cpus = "0"
    return a


def main():
    args = parse_args()
    become_subreaper()
    own_group_nice = None
    if args.nice:
        try:
            os.nice(args.nice)
            PROCS.nice = args.nice
            own_group_nice = autogroup_nice(os.getpid(), args.nice)
        except OSError:
            log("cannot set nice %d: running at the default priority" % args.nice)
            args.nice = 0
    try:
        run(args)
    finally:
        if own_group_nice is not None:
            autogroup_nice(os.getpid(), own_group_nice)


def autogroup_nice(pid, nice):
    """Sets the nice of pid's autogroup (this runner's is its caller's
    session: restored at the end); returns the previous value or None."""
    try:
        with open("/proc/%d/autogroup" % pid) as f:
            old = int(f.read().split()[-1])
        with open("/proc/%d/autogroup" % pid, "w") as f:
            f.write(str(nice))
        return old
    except (OSError, ValueError, IndexError):
        return None


def run(args):
    try:
        os.sched_setaffinity(0, {int(c) for c in args.load_cpus.split(",")})
    except (OSError, ValueError):
        pass
    ensure_packages()
    bins = binaries()
    if not bins["mixctl"]:
        sys.exit("bench: ./mixctl is missing: run make first (make bench does)")
    for need in ("nginx_http", "iperf3", "wrk"):
        if not bins[need]:
            log("warning: %s missing: its measurements are skipped" % need)
    if not have("taskset"):
        sys.exit("bench: taskset missing: apt-get install -y util-linux")
    if not bins["nginx_http"] and not bins["iperf3"]:
        sys.exit("bench: neither nginx nor iperf3: nothing to measure")
    targets = [t for t in TARGETS if t == "direct" or bins.get(t)]
    if args.only:
        targets = [t for t in targets if t in args.only.split(",")]
    for t in PROXIES:
        if t not in targets and not args.only:
            log("warning: %s not available: skipped (ratios need haproxy)" % t)

    nofile = raise_nofile()
    tmp = tempfile.mkdtemp(prefix="mixctl-bench.")
    setup = Setup(args, tmp, bins, nofile)
    setup.wrk_lua = write(os.path.join(tmp, "report.lua"), WRK_LUA)
    if args.conns2 > setup.maxconn:
        log("fd limit %d allows %d connections through a proxy (2 fds each): N2 %d -> %d"
            % (nofile, setup.maxconn, args.conns2, setup.maxconn - 64))
        args.conns2 = setup.maxconn - 64
        args.conns1 = min(args.conns1, args.conns2)
    meta = machine()
    b0, t0 = cpu_stat(set(range(os.cpu_count()))), time.monotonic()
    time.sleep(1.0)
    b1 = cpu_stat(set(range(os.cpu_count())))
    meta["busy_before_pct"] = (b1[0] - b0[0] + b1[1] - b0[1]) / ((time.monotonic() - t0) * os.cpu_count()) * 100
    if meta["busy_before_pct"] > 15:
        log("warning: before the run other processes kept the CPUs %.0f%% busy: rates and latencies will be noisy "
            "(CPU-per-unit and memory figures much less so); the table's noise row shows how long the proxy "
            "waited for its CPU"
            % meta["busy_before_pct"])
    meta["versions"] = {
        "mixctl": version_of([bins["mixctl"], "-version"]),
        "haproxy": version_of([bins["haproxy"], "-v"]) if bins["haproxy"] else None,
        "nginx": version_of([bins["nginx_http"], "-v"]) if bins["nginx_http"] else None,
        "iperf3": version_of([bins["iperf3"], "-v"]) if bins["iperf3"] else None,
        "wrk": version_of([bins["wrk"], "-v"]) if bins["wrk"] else None,
    }
    settings = {k: getattr(args, k) for k in ("quick", "reps", "duration", "workers", "proxy_cpus", "load_cpus",
                                                "close_conns", "ka_conns", "conns1", "conns2", "startups")}
    settings["nofile"] = nofile
    settings["workloads"] = sorted(args.workloads)
    settings["defaults_cpus"] = args.defaults_cpus
    settings["nice"] = args.nice
    log("machine: %s, %s CPUs, kernel %s, load %.2f; proxy on CPU %s, load on CPU %s; %d reps x %ds runs"
        % (meta["cpu"], meta["cpus"], meta["kernel"], meta["loadavg_start"], args.proxy_cpus, args.load_cpus,
           args.reps, args.duration))
    try:
        if bins["nginx_http"]:
            setup.http_proc, setup.http_ports = start_http_upstream(setup)
        else:
            setup.http_ports = None
        if bins["iperf3"]:
            setup.iperf_server, setup.iperf_port = start_iperf_server(setup)
        runs = {t: [] for t in targets}
        rep_times = []
        for rep in range(args.reps):
            elapsed = time.monotonic() - T0
            if rep >= 2 and rep_times and elapsed + max(rep_times) > args.budget:
                log("stopping after %d repetitions to stay within %ds" % (rep, args.budget))
                break
            r0 = time.monotonic()
            order = targets[rep % len(targets):] + targets[:rep % len(targets)]
            for t in order:
                log("rep %d/%d: %s" % (rep + 1, args.reps, t))
                res = {}
                try:
                    if t == "direct":
                        res.update(measure_direct(setup))
                    else:
                        if setup.http_ports and "http" in args.workloads:
                            res.update(measure_proxy_http(t, setup, rep))
                        if bins["iperf3"] and "bulk" in args.workloads:
                            res.update(measure_proxy_bulk(t, setup, rep))
                        # the two proxies whose settings users leave alone and
                        # whose accept path issue 20.4 compares
                        if setup.http_ports and (t == "haproxy" or t in MIXCTL_BACKENDS) and bins["wrk"]:
                            if "defaults" in args.workloads:
                                res.update(measure_defaults(t, setup, rep))
                            if "fdlimit" in args.workloads:
                                res.update(measure_fdlimit(t, setup, rep))
                except (RuntimeError, OSError) as e:  # one target's failure does not end the run
                    log("%s: %s (rep %d keeps what was measured)" % (t, e, rep + 1))
                    res.setdefault("_failures", []).append(str(e))
                for key, lst in (("other_pct", res.pop("_other", [])), ("steal_pct", res.pop("_steal", [])),
                                 ("runq_wait_pct", res.pop("_wait", []))):
                    if lst:
                        res[key] = statistics.mean(lst)
                runs[t].append(res)
            rep_times.append(time.monotonic() - r0)
        sizes = binary_sizes(setup)
        for t, s in sizes.items():
            if t in runs:
                for r in runs[t]:
                    r["binary_kib"] = s.get("stripped_kib", s["file_kib"])
        summary = summarize(runs)
        for t in summary:
            for k, s in summary[t].items():
                b = summary.get("haproxy", {}).get(k)
                s["ratio_vs_haproxy"] = s["median"] / b["median"] if b and b["median"] else None
        flag = ""
        if args.workers != 1 or args.proxy_cpus != "0":
            flag = "  [SCALING VARIANT: %d workers/threads each, proxy on CPUs %s, load on CPU %s]" % (
                args.workers, args.proxy_cpus, args.load_cpus)
        title = ("mixctl benchmark %s%s%s\n%s, %s CPUs, kernel %s, Debian %s; %d reps x %ds; nice %d; "
                 "CPUs busy before start %.0f%%") % (
            meta["date"], " (QUICK)" if args.quick else "", flag, meta["cpu"], meta["cpus"], meta["kernel"],
            meta["debian"], len(rep_times), args.duration, args.nice, meta["busy_before_pct"])
        table = render(summary, targets, args.conns1, args.conns2, title)
        meta["runtime_s"] = time.monotonic() - T0
        meta["loadavg_end"] = os.getloadavg()[0]
        print(table)
        print("runtime %.0f s" % meta["runtime_s"])
        path = args.json or os.path.join(HERE, "results", "latest.json" if args.workers == 1 and args.proxy_cpus == "0"
                                         else "scale-w%d.json" % args.workers)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"meta": meta, "settings": settings, "binaries": sizes, "runs": runs, "summary": summary,
                       "table": table}, f, indent=1, sort_keys=True)
        print("JSON: %s" % path)
    finally:
        PROCS.stop_all()
        if args.keep:
            log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def on_signal(number, frame):
    signal.signal(number, signal.SIG_IGN)
    raise KeyboardInterrupt("signal %d" % number)


if __name__ == "__main__":
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    try:
        main()
    except KeyboardInterrupt as e:
        PROCS.stop_all()
        log("interrupted (%s): every started process stopped" % (e or "Ctrl-C"))
        sys.exit(130)
