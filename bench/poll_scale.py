#!/usr/bin/env python3
"""bench/poll_scale.py - how mixctl's wait loop grows with idle connections, on both backends.

For mixctl -w 1 with epoll (its Linux default), mixctl -w 1 with poll()
(MIXCTL_POLLER=poll, the portable backend) and HAProxy (nbthread 1, epoll:
the reference), with N idle connections held open through the proxy (N = 10, 100,
1000, 10000, capped by the fd limit): a fixed keep-alive load (wrk -t1 -c4
against the nginx upstream's 64-byte file) and the proxy's CPU µs per request,
req/s and p99. A separate pass (perf stat for 1 s inside a 3 s wrk run)
counts the proxy's poll()/epoll_wait() calls and all its syscalls per request
(the timed pass runs without perf). Table on stdout, JSON in
bench/results/poll-scale.json.

Same rules and helpers as bench/run.py (imported): loopback only, the proxy on
CPU 0, everything else on CPU 1, nice -19 as root, every process started here
stopped by pid, every load bounded. `make bench-poll` runs it; -h for options.

Per repetition, per proxy (order swapped each repetition): one proxy start,
then for each N (ascending in even repetitions; descending, by closing idle
connections, in odd ones, so drift over time does not line up with N):
open/close idle connections until the proxy's tree holds 2 fds per
connection, count pass (also the warm-up), timed pass.

--workers LIST (e.g. 1,2,4,8) is the workers variant: one N (--idle, default
the largest of --conns), mixctl with each -w W (proxy still on CPU 0, so CPU
is comparable; --wide W also runs -w W on --wide-cpus, default 0,1, reported
separately) and HAProxy (nbthread 1) as the reference. Per start: PSS and
USS of the idle process tree; N idle connections; how they spread over the
workers (each worker's fds from /proc/PID/fd, checked against the `stats
worker=` lines mixctl logs on SIGUSR1, whose accepted counts also tell which
workers balance.hpp holds back); the proxy's CPU for --idle-seconds with the
connections and no load; count pass; timed pass with each worker's CPU time
(schedstat) and a SIGUSR1 1 s in, to see which workers hold wrk's
connections. JSON in bench/results/poll-scale-workers.json.
"""
import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (bench/run.py: processes, configs, wrk)

PROXIES = ["mixctl", "mixctl-poll", "haproxy"]
LABEL = {"mixctl": "mixctl epoll", "mixctl-poll": "mixctl poll()", "haproxy": "haproxy"}
# syscalls counted per proxy in the perf pass: the wait call, and all syscalls
WAIT_EVENTS = {
    "mixctl": ["syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait"],
    "mixctl-poll": ["syscalls:sys_enter_poll", "syscalls:sys_enter_ppoll"],
    "haproxy": ["syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait"],
}
ALL_SYSCALLS = "raw_syscalls:sys_enter"
T0 = time.monotonic()


def log(msg):
    print("[poll-scale %6.1fs] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


# ------------------------------------------------------------------- perf --

def perf_usable(perf):
    if not perf:
        return False
    try:
        r = subprocess.run([perf, "stat", "-x,", "-e", WAIT_EVENTS["mixctl-poll"][0] + "," + ALL_SYSCALLS, "true"],
                           capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and b"<not supported>" not in r.stderr


def parse_perf(path):
    """{event: count} from perf stat -x, output (None where not counted)."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) > 2 and not line.startswith("#"):
                    out[parts[2]] = int(parts[0]) if parts[0].isdigit() else None
    except OSError:
        pass
    return out


def count_pass(kind, setup, port, proxy_pid, seconds):
    """perf stat counts the proxy tree's syscalls for `seconds` in the middle
    of a wrk keep-alive run `seconds` + 2 long; per request = count over
    (wrk's rate x `seconds`), so when perf attaches does not matter. Returns
    {wait_per_req, syscalls_per_req} or None."""
    pids = bench.tree(proxy_pid)
    events = WAIT_EVENTS[kind] + [ALL_SYSCALLS]
    out_file = os.path.join(setup.tmp, "perf-%s.txt" % kind)
    if os.path.exists(out_file):
        os.unlink(out_file)
    # perf counts the pids for as long as its `sleep` runs; it starts 0.5 s
    # into the wrk run and ends before it
    perf = [setup.perf, "stat", "-x,", "-o", out_file, "-e", ",".join(events),
            "-p", ",".join(str(p) for p in pids), "--", "sleep", str(seconds)]
    p = bench.PROCS.start("perf", ["sh", "-c", 'sleep 0.5; exec "$@"', "sh"] + perf, setup.load_cpus,
                          os.path.join(setup.tmp, "perf.log"))
    try:
        r = wrk(setup, port, seconds + 2, None, {})
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log("perf still running after wrk: stopped")
    finally:
        bench.PROCS.stop(p)
    counts = parse_perf(out_file)
    if not r or not r["rate"] or r["errors"]:
        return None
    waits = [counts.get(e) for e in WAIT_EVENTS[kind]]
    if any(w is None for w in waits) or counts.get(ALL_SYSCALLS) is None:
        log("%s: perf counted nothing (%s)" % (kind, counts))
        return None
    requests = r["rate"] * seconds
    return {"wait_per_req": sum(waits) / requests, "syscalls_per_req": counts[ALL_SYSCALLS] / requests,
            "count_rate": r["rate"]}


# ---------------------------------------------------------------- the runs --

def wrk(setup, port, seconds, proxy_pid, res):
    """bench.run_wrk keep-alive with -c setup.args.ka_conns for `seconds`
    (run_wrk reads the length from args.duration)."""
    keep, setup.args.duration = setup.args.duration, seconds
    try:
        return bench.run_wrk(setup, port, False, proxy_pid, res)
    finally:
        setup.args.duration = keep


def record_wrk(point, r, res):
    """Puts one timed wrk run's figures (r: wrk()'s result, res: its noise
    samples) into a measurement point."""
    if r:
        point.update({"cpu_us": r.get("cpu_us"), "rate": r["rate"], "p50_us": r["p50_us"],
                      "p99_us": r["p99_us"], "requests": r["requests"], "errors": r["errors"]})
        for key, src in (("runq_wait_pct", "_wait"), ("other_pct", "_other")):
            if res.get(src):
                point[key] = res[src][-1]
    if point.get("cpu_us") and point.get("wait_per_req"):
        point["us_per_wait"] = point["cpu_us"] / point["wait_per_req"]


def user_sys(root):
    """(utime, stime) seconds of the process tree (children reaped included)."""
    u = s = 0
    for pid in bench.tree(root):
        try:
            with open("/proc/%d/stat" % pid) as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        u += int(rest[11]) + int(rest[13])
        s += int(rest[12]) + int(rest[14])
    return u / bench.CLK_TCK, s / bench.CLK_TCK


def set_idle(port, n, holder, proxy_pid, base_fds):
    """Opens (bench.open_idle) or closes idle connections until `holder` has n
    and the proxy's tree holds 2 fds per connection; returns that count."""
    deadline = time.monotonic() + 40
    if len(holder) < n:
        return bench.open_idle(port, n, holder, proxy_pid, base_fds, deadline)
    while len(holder) > n:
        holder.pop().close()
    while time.monotonic() < deadline and bench.fd_count(proxy_pid) > base_fds + 2 * n:
        time.sleep(0.01)
    return (bench.fd_count(proxy_pid) - base_fds) // 2


def measure(kind, setup, rep, counts):
    """One proxy start, every N; returns {N: point}."""
    args = setup.args
    out = {}
    p, port, _ = bench.start_proxy_http_ready(kind, setup, "r%d" % rep)
    holder = []
    try:
        time.sleep(0.3)
        base_fds = bench.fd_count(p.pid)
        order = counts if rep % 2 == 0 else counts[::-1]
        for n in order:
            got = set_idle(port, n, holder, p.pid, base_fds)
            if got < n:
                log("%s: only %d of %d idle connections held by the proxy" % (kind, got, n))
            time.sleep(0.3)
            point = {"n": n, "held": got, "rep": rep}
            if setup.perf:
                c = count_pass(kind, setup, port, p.pid, args.count_seconds)
                if c:
                    point.update(c)
            else:  # warm-up instead
                wrk(setup, port, 1, None, {})
            res = {}
            us0 = user_sys(p.pid)
            r = wrk(setup, port, args.duration, p.pid, res)
            us1 = user_sys(p.pid)
            if us1[0] + us1[1] > us0[0] + us0[1]:
                point["sys_pct"] = (us1[1] - us0[1]) / (us1[0] + us1[1] - us0[0] - us0[1]) * 100
            record_wrk(point, r, res)
            log("%s rep %d N=%d: %s" % (kind, rep + 1, got, ", ".join(
                "%s %.3g" % (k, point[k]) for k in ("cpu_us", "rate", "p99_us", "wait_per_req") if k in point)))
            out[n] = point
    finally:
        for s in holder:
            s.close()
        bench.PROCS.stop(p)
    return out


# ------------------------------------------------------- workers variant --

def children(root):
    """Direct children of root (mixctl's workers), sorted."""
    return [pid for pid, ppid in sorted(bench.all_ppids().items()) if ppid == root]


def fds_of(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def cpu_of(pid):
    """Seconds on a CPU of one (single-threaded) process, from
    /proc/PID/schedstat (ns, not the 10 ms tick)."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def tree_cpu(pids):
    vals = [cpu_of(pid) for pid in pids]
    return sum(v for v in vals if v is not None)


def usr1_stats(pid, logf, workers, timeout=3.0):
    """kill -USR1 the mixctl parent and parse the `stats worker=I pid=P
    active=A accepted=C` lines it logs: [{worker, pid, active, accepted}]."""
    try:
        start = os.path.getsize(logf)
    except OSError:
        start = 0
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(logf, errors="replace") as f:
                f.seek(start)
                text = f.read()
        except OSError:
            text = ""
        rows = []
        for line in text.splitlines():
            i = line.find("stats worker=")
            if i < 0:
                continue
            kv = dict(x.split("=", 1) for x in line[i + 6:].split() if "=" in x)
            try:
                rows.append({k: int(kv[k]) for k in ("worker", "pid", "active", "accepted")})
            except (KeyError, ValueError):
                pass
        if len(rows) >= workers:
            return rows[:workers]
        time.sleep(0.05)
    log("no `stats worker=` lines after SIGUSR1 within %gs" % timeout)
    return None


def held_back(accepted, lead=32):
    """Workers that balance.hpp keeps off the listeners (accepted more than
    Board::lead ahead of the slowest); each rechecks on a timer paced by its
    size (an idle worker that is not held back has no timed wakeup)."""
    return sum(1 for a in accepted if a > min(accepted) + lead) if accepted else None


def config_label(c):
    if c["kind"] == "haproxy":
        return "haproxy nbthread 1, CPU %s" % c["cpus"]
    return "mixctl -w %d, CPU%s %s" % (c["w"], "s" if "," in c["cpus"] or "-" in c["cpus"] else "", c["cpus"])


def measure_workers(c, setup, rep, n):
    """One start of one configuration (c: kind, w, cpus) with n idle
    connections; returns a point."""
    args = setup.args
    args.workers = c["w"]
    setup.proxy_cpus, setup.proxy_cpu_set = c["cpus"], set(bench.cpu_list(c["cpus"]))
    tag = "w%d-c%s-r%d" % (c["w"], c["cpus"].replace(",", "_"), rep)
    logf = os.path.join(setup.tmp, "%s-%s" % (c["kind"], tag), "out.log")
    p, port, _ = bench.start_proxy_http_ready(c["kind"], setup, tag)
    holder = []
    point = {"rep": rep, "n": n}
    try:
        time.sleep(0.3)
        point["pss_idle_kib"], point["uss_idle_kib"] = bench.memory_kib(p.pid)
        workers = children(p.pid) if c["kind"] == "mixctl" else [p.pid]
        base = {pid: fds_of(pid) for pid in workers}
        base_fds = bench.fd_count(p.pid)
        got = set_idle(port, n, holder, p.pid, base_fds)
        if got < n:
            log("%s: only %d of %d idle connections held by the proxy" % (config_label(c), got, n))
        point["held"] = got
        time.sleep(0.3)
        point["pss_n_kib"], point["uss_n_kib"] = bench.memory_kib(p.pid)
        active0 = None
        if c["kind"] == "mixctl":
            point["idle_per_worker"] = [((fds_of(pid) or 0) - (base[pid] or 0)) // 2 for pid in workers]
            rows = usr1_stats(p.pid, logf, c["w"])
            if rows:
                point["usr1_active"] = [r["active"] for r in rows]
                point["usr1_accepted"] = [r["accepted"] for r in rows]
                active0 = {r["pid"]: r["active"] for r in rows}
                point["held_back_idle"] = held_back(point["usr1_accepted"])
                fd_view = dict(zip(workers, point["idle_per_worker"]))
                if any(abs(active0.get(pid, -1) - k) > 1 for pid, k in fd_view.items()):
                    log("fds and SIGUSR1 disagree: fds %s, active %s" % (fd_view, active0))
        # CPU the proxy burns with the N idle connections and no load at all
        # (timed wakeups would each be a poll() over all of a worker's fds)
        all_pids = bench.tree(p.pid)
        t0, c0 = time.monotonic(), tree_cpu(all_pids)
        time.sleep(args.idle_seconds)
        point["idle_cpu_pct"] = (tree_cpu(all_pids) - c0) / (time.monotonic() - t0) * 100
        if setup.perf:
            cp = count_pass(c["kind"], setup, port, p.pid, args.count_seconds)
            if cp:
                point.update(cp)
        else:
            wrk(setup, port, 1, None, {})
        res = {}
        mid = {}
        timer = None
        if active0 is not None:
            # which workers hold wrk's connections: SIGUSR1 1 s into the run,
            # active minus the idle connections counted before
            def probe():
                rows = usr1_stats(p.pid, logf, c["w"])
                if rows:
                    mid["rows"] = rows
            timer = threading.Timer(min(1.0, args.duration / 2), probe)
            timer.start()
        us0, w0 = user_sys(p.pid), {pid: cpu_of(pid) for pid in workers}
        r = wrk(setup, port, args.duration, p.pid, res)
        us1, w1 = user_sys(p.pid), {pid: cpu_of(pid) for pid in workers}
        if timer:
            timer.join()
        if us1[0] + us1[1] > us0[0] + us0[1]:
            point["sys_pct"] = (us1[1] - us0[1]) / (us1[0] + us1[1] - us0[0] - us0[1]) * 100
        if c["kind"] == "mixctl":
            cpu = [(w1[pid] - w0[pid]) if w0[pid] is not None and w1[pid] is not None else 0.0 for pid in workers]
            point["worker_cpu_s"] = cpu
            if mid.get("rows"):
                load = {r["pid"]: r["active"] - active0.get(r["pid"], 0) for r in mid["rows"]}
                point["load_conns_per_worker"] = [load.get(pid, 0) for pid in workers]
                point["held_back_load"] = held_back([r["accepted"] for r in mid["rows"]])
                serving = [(k, x) for k, x, n in zip(point["idle_per_worker"], cpu, point["load_conns_per_worker"])
                           if n > 0]
                if serving:
                    point["idle_per_serving_worker"] = statistics.mean(k for k, _ in serving)
                    if r and r["requests"]:
                        # CPU of the workers holding wrk's connections only:
                        # what a request costs where it is relayed
                        point["serving_cpu_us"] = sum(x for _, x in serving) * 1e6 / r["requests"]
        record_wrk(point, r, res)
        spread = point.get("idle_per_worker")
        log("%s rep %d N=%d: %s%s" % (config_label(c), rep + 1, got, ", ".join(
            "%s %.3g" % (k, point[k]) for k in ("cpu_us", "serving_cpu_us", "rate", "p99_us", "wait_per_req",
                                                 "idle_cpu_pct", "pss_idle_kib", "uss_idle_kib") if k in point),
            "; idle per worker %s, wrk conns per worker %s, held back %s/%s" % (
                spread, point.get("load_conns_per_worker"), point.get("held_back_idle"), point.get("held_back_load"))
            if spread else ""))
    finally:
        for s in holder:
            s.close()
        bench.PROCS.stop(p)
    return point


WKEYS = ["cpu_us", "serving_cpu_us", "held_back_idle", "held_back_load", "rate", "p50_us", "p99_us", "wait_per_req", "syscalls_per_req", "us_per_wait",
         "sys_pct", "held", "idle_cpu_pct", "pss_idle_kib", "uss_idle_kib", "pss_n_kib", "uss_n_kib",
         "idle_per_serving_worker", "runq_wait_pct", "other_pct", "errors"]


def per_worker_slope(configs, summary, key="pss_idle_kib"):
    """Least-squares slope of `key` over W (mixctl on the first CPU set):
    KiB each extra worker adds."""
    pts = [(c["w"], summary[c["id"]][key]["median"]) for c in configs
           if c["kind"] == "mixctl" and not c["wide"] and key in summary[c["id"]]]
    if len(pts) < 2:
        return None
    mw, mp = statistics.mean(w for w, _ in pts), statistics.mean(v for _, v in pts)
    den = sum((w - mw) ** 2 for w, _ in pts)
    return sum((w - mw) * (v - mp) for w, v in pts) / den if den else None


def render_workers(configs, summary, points, title):
    def cell(cid, key, f):
        s = summary[cid].get(key)
        return fmt(s["median"], f, s["spread_pct"] if len(s["runs"]) > 1 else None) if s else "-"

    base = next((c for c in configs if c["kind"] == "mixctl" and c["w"] == 1 and not c["wide"]), None)
    b = summary[base["id"]].get("cpu_us", {}).get("median") if base else None
    bs = summary[base["id"]].get("serving_cpu_us", {}).get("median") if base else None
    header = ["proxy", "idle per worker", "wrk conns per worker", "held back", "us/req", "vs -w 1",
              "serving worker us/req", "vs -w 1", "1/W", "req/s", "p99 us", "poll()/req",
              "idle CPU %", "PSS idle KiB", "USS idle KiB", "PSS loaded KiB"]
    rows = []
    for c in configs:
        cid, sm = c["id"], summary[c["id"]]
        spreads = [pt["idle_per_worker"] for pt in points[cid] if pt.get("idle_per_worker")]
        if spreads:
            lo, hi = min(min(x) for x in spreads), max(max(x) for x in spreads)
            spread = "%d" % lo if lo == hi else "%d-%d" % (lo, hi)
        else:
            spread = "%d" % sm["held"]["median"] if "held" in sm else "-"
        m = sm.get("cpu_us", {}).get("median")
        ms = sm.get("serving_cpu_us", {}).get("median")
        mix = c["kind"] == "mixctl"
        # wrk's connections over the workers, per repetition: "4" all on one, "2+1+1"
        loads = ["+".join(str(x) for x in sorted((x for x in pt["load_conns_per_worker"] if x), reverse=True)) or "0"
                 for pt in points[cid] if pt.get("load_conns_per_worker")]
        held = " / ".join("%s/%s" % (pt.get("held_back_idle", "?"), pt.get("held_back_load", "?"))
                          for pt in points[cid] if "held_back_idle" in pt)
        rows.append([config_label(c), spread, " / ".join(loads) or "-", held or "-", cell(cid, "cpu_us", "%.1f"),
                     fmt(m / b if m and b and mix else None, "%.2f"),
                     cell(cid, "serving_cpu_us", "%.1f"), fmt(ms / bs if ms and bs and mix else None, "%.2f"),
                     fmt(1.0 / c["w"] if mix else None, "%.2f"),
                     cell(cid, "rate", "%.0f"), cell(cid, "p99_us", "%.0f"), cell(cid, "wait_per_req", "%.2f"),
                     cell(cid, "idle_cpu_pct", "%.1f"), cell(cid, "pss_idle_kib", "%.0f"),
                     cell(cid, "uss_idle_kib", "%.0f"), cell(cid, "pss_n_kib", "%.0f")])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(x.rjust(w) if i else x.ljust(w)
                                         for i, (x, w) in enumerate(zip(r, widths))) + " |"
    out = [title, line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]
    slope, uslope = per_worker_slope(configs, summary), per_worker_slope(configs, summary, "uss_idle_kib")
    if slope is not None:
        out.append("per extra worker, no connections (least squares over W, CPU %s): PSS %.0f KiB, USS %.0f KiB"
                   % (configs[1]["cpus"], slope, uslope))
    out.append("per repetition (the medians above mix these states): wrk conns per worker, held back idle/load "
               "-> us/req tree, serving worker; idle CPU %")
    for c in configs:
        if c["kind"] != "mixctl":
            continue
        parts = []
        for pt in points[c["id"]]:
            load = "+".join(str(x) for x in sorted((x for x in pt.get("load_conns_per_worker", []) if x),
                                                    reverse=True)) or "?"
            parts.append("%s, %s/%s -> %s, %s; %s" % (
                load, pt.get("held_back_idle", "?"), pt.get("held_back_load", "?"), fmt(pt.get("cpu_us"), "%.0f"),
                fmt(pt.get("serving_cpu_us"), "%.0f"), fmt(pt.get("idle_cpu_pct"), "%.0f")))
        out.append("  %s: %s" % (config_label(c), " | ".join(parts)))
    for c in configs:
        vals = [summary[c["id"]].get(k, {}).get("median") for k in ("runq_wait_pct", "other_pct")]
        if all(v is not None for v in vals):
            out.append("noise: %s runnable but waiting for a CPU %.0f %% (summed over its processes), its CPUs busy "
                       "with other work %.0f %%" % (config_label(c), vals[0], vals[1]))
    return "\n".join(out)


def run_workers(args, setup, meta, n):
    """The --workers variant: every configuration at one N."""
    configs = [{"kind": "haproxy", "w": 1, "cpus": args.proxy_cpus, "wide": False}]
    configs += [{"kind": "mixctl", "w": w, "cpus": args.proxy_cpus, "wide": False} for w in args.worker_counts]
    configs += [{"kind": "mixctl", "w": w, "cpus": args.wide_cpus, "wide": True} for w in args.wide]
    for c in configs:
        c["id"] = "%s-w%d-cpus%s" % (c["kind"], c["w"], c["cpus"])
    settings = {"n": n, "workers": args.worker_counts, "wide": args.wide, "wide_cpus": args.wide_cpus,
                "reps": args.reps, "duration_s": args.duration, "count_seconds": args.count_seconds,
                "wrk": "-t1 -c%d keep-alive, 64-byte file" % args.wrk_conns, "proxy_cpus": args.proxy_cpus,
                "load_cpus": args.load_cpus, "nofile": setup.nofile, "nice": args.nice, "perf": bool(setup.perf)}
    log("machine: %s, %s CPUs, kernel %s, load %.2f, CPUs %.0f%% busy before start; N %d; workers %s%s; "
        "%d reps x %gs" % (meta["cpu"], meta["cpus"], meta["kernel"], meta["loadavg_start"],
                           meta["busy_before_pct"], n, ",".join(map(str, args.worker_counts)),
                           " (+ %s on CPUs %s)" % (",".join(map(str, args.wide)), args.wide_cpus) if args.wide else "",
                           args.reps, args.duration))
    points = {c["id"]: [] for c in configs}
    rep_times = []
    for rep in repetitions(args, rep_times):
        r0 = time.monotonic()
        for c in (configs if rep % 2 == 0 else configs[::-1]):
            try:
                points[c["id"]].append(measure_workers(c, setup, rep, n))
            except (RuntimeError, OSError) as e:
                log("%s rep %d failed: %s" % (config_label(c), rep + 1, e))
        rep_times.append(time.monotonic() - r0)
    summary = {cid: {k: s for k in WKEYS for s in [stats([pt.get(k) for pt in pts])] if s}
               for cid, pts in points.items()}
    held_n = min((summary[c["id"]]["held"]["median"] for c in configs if "held" in summary[c["id"]]), default=n)
    title = ("mixctl workers (" + os.environ.get("MIXCTL_POLLER", "default backend") + ") %s: N=%d idle connections\n%s, %s CPUs, kernel %s, Debian %s; %d reps x %gs wrk "
             "-t1 -c%d keep-alive; nice %d; load %.2f, CPUs busy before start %.0f%%") % (
        meta["date"], held_n, meta["cpu"], meta["cpus"], meta["kernel"], meta["debian"], len(rep_times),
        args.duration, args.wrk_conns, args.nice, meta["loadavg_start"], meta["busy_before_pct"])
    table = render_workers(configs, summary, points, title)
    table += ("\nmedian of the repetitions; ±: half the range as % of the median; vs -w 1: us/req over mixctl -w 1's; "
              "1/W: what N/W scaling predicts;\nwrk conns per worker: how wrk's connections were spread, per "
              "repetition;\nheld back: workers balance.hpp keeps off the listener (accepted > slowest + 32; they "
              "recheck on a timer paced by their size), with the idle connections / during the load, per repetition;\n"
              "us/req: whole process tree; serving worker us/req: only the workers holding wrk's connections;\n"
              "idle CPU %: the proxy's CPU with the N idle connections and no load; poll()/req: from the count "
              "pass, a separate wrk run whose connections may land on other workers;\n"
              "PSS/USS idle: no connections; PSS loaded: with the N idle connections")
    report(args, "poll-scale-workers.json", meta, table,
           {"settings": settings, "configs": configs, "points": points, "summary": summary,
            "pss_idle_kib_per_extra_worker": per_worker_slope(configs, summary),
            "uss_idle_kib_per_extra_worker": per_worker_slope(configs, summary, "uss_idle_kib")})


def clean_up(args, tmp):
    """Stops every process the run started; removes its folder unless --keep."""
    bench.PROCS.stop_all()
    if args.keep:
        log("kept %s" % tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def repetitions(args, rep_times):
    """0 .. args.reps - 1, stopping early (after two at least) when one more
    as long as the longest so far (rep_times) would overrun --budget."""
    for rep in range(args.reps):
        if rep >= 2 and time.monotonic() - T0 + max(rep_times) > args.budget:
            log("stopping after %d repetitions to stay within %ds" % (rep, args.budget))
            return
        yield rep


# ------------------------------------------------------------------ report --

def report(args, default_name, meta, table, results):
    """Prints the table and the run time, and writes meta, the table and
    `results` as JSON to --json or bench/results/default_name."""
    meta["runtime_s"] = time.monotonic() - T0
    meta["loadavg_end"] = os.getloadavg()[0]
    print(table)
    print("runtime %.0f s" % meta["runtime_s"])
    path = args.json or os.path.join(HERE, "results", default_name)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(dict(results, meta=meta, table=table), f, indent=1, sort_keys=True)
    print("JSON: %s" % path)


KEYS = ["cpu_us", "rate", "p50_us", "p99_us", "wait_per_req", "syscalls_per_req", "us_per_wait", "sys_pct", "held",
        "runq_wait_pct", "other_pct", "errors"]


def stats(vals):
    vals = [v for v in vals if isinstance(v, (int, float))]
    if not vals:
        return None
    med = statistics.median(vals)
    return {"runs": vals, "median": med, "spread_pct": (max(vals) - min(vals)) / 2 / med * 100 if med else 0.0}


def summarize(points, counts):
    """points: {kind: [{N: point} per rep]} -> {kind: {N: {key: stats}}}"""
    out = {}
    for kind, reps in points.items():
        out[kind] = {}
        for n in counts:
            out[kind][n] = {k: s for k in KEYS for s in [stats([r[n].get(k) for r in reps if n in r])] if s}
    return out


def med(summary, kind, n, key):
    s = summary.get(kind, {}).get(n, {}).get(key)
    return s["median"] if s else None


def crossing(pairs, level):
    """First N where the value reaches `level`, log-linear between the two
    points around it; pairs: [(N, value)] ascending. None if it never does,
    the first N if it already does there."""
    if not pairs or pairs[0][1] >= level:
        return pairs[0][0] if pairs else None
    for (n0, v0), (n1, v1) in zip(pairs, pairs[1:]):
        if v0 < level <= v1:
            return 10 ** (math.log10(n0) + (math.log10(n1) - math.log10(n0)) * (level - v0) / (v1 - v0))
    return None


def held(summary, n):
    h = [med(summary, k, n, "held") for k in PROXIES if med(summary, k, n, "held") is not None]
    return min(h) if h else n


def about(n):
    return "%d" % round(n, -1 if n < 1000 else -2) if n >= 20 else "%d" % round(n)


def crossovers(summary, counts):
    """mixctl's CPU per request against HAProxy's and against its own at the
    first N: ({"haproxy": N or None, "double": N or None}, [lines])."""
    ratio, growth = [], []
    m0 = med(summary, "mixctl", counts[0], "cpu_us")
    for n in counts:
        m, h = med(summary, "mixctl", n, "cpu_us"), med(summary, "haproxy", n, "cpu_us")
        if m and h:
            ratio.append((held(summary, n), m / h))
        if m and m0:
            growth.append((held(summary, n), m / m0))
    out, lines = {"haproxy": crossing(ratio, 1.0), "double": crossing(growth, 2.0)}, []
    if ratio:
        x = out["haproxy"]
        if x is None:
            lines.append("cross-over: none up to N=%d, mixctl's CPU per request stays below HAProxy's" % ratio[-1][0])
        elif x == ratio[0][0]:
            lines.append("cross-over: mixctl's CPU per request is already above HAProxy's at N=%d" % x)
        else:
            lines.append("cross-over: mixctl's CPU per request passes HAProxy's at about N=%s (log-linear)" % about(x))
    if growth and out["double"] is not None and out["double"] != growth[0][0]:
        lines.append("mixctl's CPU per request doubles (vs N=%d) at about N=%s" % (growth[0][0], about(out["double"])))
    return out, lines


def per_fd(summary, counts):
    """CPU per request = fixed + (poll calls per request) x (polled fds) x c:
    c in ns per polled fd per poll() call, from each N against the first
    (2 fds per idle connection; the few active and control fds cancel out)."""
    a = counts[0]
    ca, pa, na = (med(summary, "mixctl-poll", a, k) for k in ("cpu_us", "wait_per_req", "held"))
    out = {}
    for n in counts[1:]:
        cn, pn, nn = (med(summary, "mixctl-poll", n, k) for k in ("cpu_us", "wait_per_req", "held"))
        if None in (ca, pa, na, cn, pn, nn):
            continue
        scanned = 2 * (pn * nn - pa * na)
        if scanned > 0:
            out[n] = (cn - ca) * 1e3 / scanned
    return out


def fmt(v, f, spread=None):
    if v is None:
        return "-"
    s = f % v
    if spread is not None:
        s += " ±%.0f%%" % spread
    return s


def render(summary, counts, title):
    def cell(kind, n, key, f):
        s = summary.get(kind, {}).get(n, {}).get(key)
        return fmt(s["median"], f, s["spread_pct"] if len(s["runs"]) > 1 else None) if s else "-"

    header = ["N idle", "epoll us/req", "poll() us/req", "haproxy us/req", "epoll ratio", "poll() ratio",
              "epoll growth", "poll() growth", "haproxy growth", "epoll req/s", "poll() req/s", "haproxy req/s",
              "epoll p99 us", "poll() p99 us", "haproxy p99 us"]
    rows = []
    first = {k: med(summary, k, counts[0], "cpu_us") for k in PROXIES}
    for n in counts:
        cpu = {k: med(summary, k, n, "cpu_us") for k in PROXIES}
        h = cpu["haproxy"]
        rows.append(["%d" % held(summary, n)] +
                    [cell(k, n, "cpu_us", "%.1f") for k in PROXIES] +
                    [fmt(cpu[k] / h if cpu[k] and h else None, "%.2fx") for k in ("mixctl", "mixctl-poll")] +
                    [fmt(cpu[k] / first[k] if cpu[k] and first[k] else None, "%.2fx") for k in PROXIES] +
                    [cell(k, n, "rate", "%.0f") for k in PROXIES] +
                    [cell(k, n, "p99_us", "%.0f") for k in PROXIES])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.rjust(w) if i else c.ljust(w)
                                         for i, (c, w) in enumerate(zip(r, widths))) + " |"
    out = [title, line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]
    for kind, label in (("mixctl", "mixctl epoll_wait() calls per request"),
                        ("mixctl-poll", "mixctl poll() calls per request"),
                        ("haproxy", "haproxy epoll_wait() calls per request")):
        vals = [(n, med(summary, kind, n, "wait_per_req")) for n in counts]
        if any(v for _, v in vals):
            out.append("%s: %s" % (label, ", ".join("N=%d %s" % (held(summary, n), fmt(v, "%.2f"))
                                                    for n, v in vals)))
    for kind in PROXIES:
        vals = [(n, med(summary, kind, n, "sys_pct")) for n in counts]
        if all(v is not None for _, v in vals):
            out.append("%s CPU in the kernel (%%): %s" % (kind, ", ".join(
                "N=%d %.0f" % (held(summary, n), v) for n, v in vals)))
    vals = [(n, med(summary, "mixctl-poll", n, "us_per_wait")) for n in counts]
    if all(v for _, v in vals):
        out.append("mixctl CPU per poll() wakeup (us): %s" % ", ".join(
            "N=%d %.1f" % (held(summary, n), v) for n, v in vals))
    fd = per_fd(summary, counts)
    if fd:
        out.append("mixctl CPU per polled fd per poll() call, vs N=%d (ns): %s" % (held(summary, counts[0]), ", ".join(
            "N=%d %.0f" % (held(summary, n), v) for n, v in fd.items())))
    for kind in PROXIES:
        vals = [med(summary, kind, n, "runq_wait_pct") for n in counts]
        if all(v is not None for v in vals):
            out.append("noise: %s runnable but waiting for CPU 0 (%% of time): %s" % (kind, ", ".join(
                "%.0f" % v for v in vals)))
    return "\n".join(out)


# -------------------------------------------------------------------- main --

def parse_args():
    ap = argparse.ArgumentParser(description="mixctl poll() vs HAProxy epoll: CPU per request with N idle "
                                             "connections (loopback)")
    ap.add_argument("--conns", default="10,100,1000,10000", help="idle connection counts (default 10,100,1000,10000;"
                    " capped by the fd limit)")
    ap.add_argument("--reps", type=int, default=2, help="repetitions (default 2, at least 2)")
    ap.add_argument("--duration", type=int, default=3, help="seconds per timed wrk run (default 3)")
    ap.add_argument("--count-seconds", type=int, default=1, help="seconds perf counts, within a wrk run 2 s "
                    "longer (default 1)")
    ap.add_argument("--wrk-conns", type=int, default=4, help="wrk -c (default 4)")
    ap.add_argument("--proxies", default=",".join(PROXIES), help="which to measure (default %s; mixctl is "
                    "epoll, mixctl-poll the same binary under MIXCTL_POLLER=poll)" % ",".join(PROXIES))
    ap.add_argument("--no-perf", action="store_true", help="skip the perf stat counting pass")
    ap.add_argument("--budget", type=int, default=170, help="seconds: no repetition past the 2nd starts if it "
                    "would end after this (default 170)")
    ap.add_argument("--json", default=os.environ.get("BENCH_POLL_JSON", ""),
                    help="where to write JSON (default bench/results/poll-scale.json)")
    ap.add_argument("--nice", type=int, default=int(os.environ.get("BENCH_NICE", "-19" if os.geteuid() == 0 else "0")),
                    help="nice level (process and autogroup), as in run.py (default -19 as root; 0 turns it off)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--workers", dest="workers_list", default="", metavar="LIST",
                    help="workers variant: mixctl -w W for each W in LIST (e.g. 1,2,4,8) at one N, proxy on CPU 0, "
                    "HAProxy as the reference; JSON in bench/results/poll-scale-workers.json")
    ap.add_argument("--idle", type=int, default=0, help="with --workers: idle connections (default the largest of "
                    "--conns, capped by the fd limit)")
    ap.add_argument("--wide", default="", metavar="LIST", help="with --workers: also run mixctl -w W for each W in "
                    "LIST on --wide-cpus, reported separately (e.g. 2)")
    ap.add_argument("--idle-seconds", type=float, default=2.0, help="with --workers: seconds the proxy's CPU is "
                    "measured with the idle connections and no load (default 2)")
    ap.add_argument("--wide-cpus", default="0,1", help="CPUs for --wide (default 0,1; the load stays on CPU 1)")
    a = ap.parse_args()
    a.worker_counts = sorted({int(x) for x in a.workers_list.split(",") if x.strip()})
    a.wide = sorted({int(x) for x in a.wide.split(",") if x.strip()})
    a.reps = max(2, a.reps)
    a.counts = sorted({int(x) for x in a.conns.split(",") if x.strip()})
    a.proxies = [x.strip() for x in a.proxies.split(",") if x.strip()]
    # what bench.Setup, bench.proxy_argv and bench.run_wrk read
    a.workers, a.proxy_cpus, a.load_cpus = 1, "0", "1"
    a.ka_conns, a.close_conns = a.wrk_conns, a.wrk_conns
    if os.cpu_count() < 2:
        a.load_cpus = "0"
    return a


def main():
    args = parse_args()
    bench.become_subreaper()
    bench.run_niced(args, run, log)


def run(args):
    try:
        os.sched_setaffinity(0, {int(args.load_cpus)})
    except (OSError, ValueError):
        pass
    bins = bench.binaries()
    if not (bins["haproxy"] and bins["nginx_http"] and bins["wrk"] and bench.have("taskset")):
        bench.ensure_packages()
        bins = bench.binaries()
    if not bins["mixctl"]:
        sys.exit("poll_scale: ./mixctl is missing: run make first (make bench-poll does)")
    for need in ("haproxy", "nginx_http", "wrk"):
        if not bins[need]:
            sys.exit("poll_scale: %s is missing (apt-get install -y haproxy nginx wrk)" % need)
    nofile = bench.raise_nofile()
    tmp = tempfile.mkdtemp(prefix="mixctl-poll.")
    setup = bench.Setup(args, tmp, bins, nofile)
    setup.wrk_lua = bench.write(os.path.join(tmp, "report.lua"), bench.WRK_LUA)
    setup.perf = None if args.no_perf else bench.which("perf")
    if setup.perf and not perf_usable(setup.perf):
        log("perf stat cannot count syscall tracepoints here: no poll() counts")
        setup.perf = None
    counts = []
    for n in args.counts:
        if n > setup.maxconn - 64:
            log("fd limit %d allows %d connections through a proxy (2 fds each): N %d -> %d"
                % (nofile, setup.maxconn, n, setup.maxconn - 64))
            n = setup.maxconn - 64
        if n not in counts:
            counts.append(n)
    meta = bench.machine()
    allcpus = set(range(os.cpu_count()))
    b0, t0 = bench.cpu_stat(allcpus), time.monotonic()
    time.sleep(1.0)
    b1 = bench.cpu_stat(allcpus)
    meta["busy_before_pct"] = (b1[0] - b0[0] + b1[1] - b0[1]) / ((time.monotonic() - t0) * os.cpu_count()) * 100
    meta["versions"] = {"mixctl": bench.version_of([bins["mixctl"], "-version"]),
                        "haproxy": bench.version_of([bins["haproxy"], "-v"]),
                        "nginx": bench.version_of([bins["nginx_http"], "-v"]),
                        "wrk": bench.version_of([bins["wrk"], "-v"]),
                        "perf": bench.version_of([setup.perf, "--version"]) if setup.perf else None}
    if args.worker_counts:
        n = min(args.idle or max(args.counts), setup.maxconn - 64)
        try:
            setup.http_proc, setup.http_ports = bench.start_http_upstream(setup)
            run_workers(args, setup, meta, n)
        finally:
            clean_up(args, tmp)
        return
    settings = {"counts": counts, "reps": args.reps, "duration_s": args.duration, "count_seconds": args.count_seconds,
                "wrk": "-t1 -c%d keep-alive, 64-byte file" % args.wrk_conns, "proxy_cpus": args.proxy_cpus,
                "load_cpus": args.load_cpus, "nofile": nofile, "nice": args.nice, "perf": bool(setup.perf)}
    log("machine: %s, %s CPUs, kernel %s, load %.2f, CPUs %.0f%% busy before start; N %s; %d reps x %gs"
        % (meta["cpu"], meta["cpus"], meta["kernel"], meta["loadavg_start"], meta["busy_before_pct"],
           ",".join(map(str, counts)), args.reps, args.duration))
    try:
        setup.http_proc, setup.http_ports = bench.start_http_upstream(setup)
        points = {k: [] for k in PROXIES}
        rep_times = []
        for rep in repetitions(args, rep_times):
            r0 = time.monotonic()
            chosen = [k for k in PROXIES if k in args.proxies]
            for kind in (chosen if rep % 2 == 0 else chosen[::-1]):
                log("rep %d/%d: %s" % (rep + 1, args.reps, kind))
                try:
                    points[kind].append(measure(kind, setup, rep, counts))
                except (RuntimeError, OSError) as e:
                    log("%s rep %d failed: %s" % (kind, rep + 1, e))
            rep_times.append(time.monotonic() - r0)
        summary = summarize(points, counts)
        cross, cross_lines = crossovers(summary, counts)
        m10, h10 = med(summary, "mixctl", counts[0], "cpu_us"), med(summary, "haproxy", counts[0], "cpu_us")
        p10 = med(summary, "mixctl-poll", counts[0], "cpu_us")
        for n in counts:
            m, h = med(summary, "mixctl", n, "cpu_us"), med(summary, "haproxy", n, "cpu_us")
            pm = med(summary, "mixctl-poll", n, "cpu_us")
            summary.setdefault("ratio", {})[n] = m / h if m and h else None
            summary.setdefault("poll_ratio", {})[n] = pm / h if pm and h else None
            summary.setdefault("poll_growth", {})[n] = pm / p10 if pm and p10 else None
            summary.setdefault("mixctl_growth", {})[n] = m / m10 if m and m10 else None
            summary.setdefault("haproxy_growth", {})[n] = h / h10 if h and h10 else None
        title = ("mixctl epoll and poll() scale %s\n%s, %s CPUs, kernel %s, Debian %s; %d reps x %gs wrk -t1 -c%d keep-alive; "
                 "nice %d; CPUs busy before start %.0f%%") % (
            meta["date"], meta["cpu"], meta["cpus"], meta["kernel"], meta["debian"], len(rep_times), args.duration,
            args.wrk_conns, args.nice, meta["busy_before_pct"])
        table = render(summary, counts, title)
        tail = list(cross_lines)
        tail.append("median of the repetitions; ±: half the range as % of the median; ratio: mixctl/haproxy; "
                    "growth: us/req relative to the first N")
        table += "\n" + "\n".join(tail)
        report(args, "poll-scale.json", meta, table,
               {"settings": settings, "points": points, "summary": summary,
                "crossover": dict(cross, text=cross_lines),
                "mixctl_ns_per_polled_fd": per_fd(summary, counts)})
    finally:
        clean_up(args, tmp)


if __name__ == "__main__":
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, bench.on_signal)
    try:
        main()
    except KeyboardInterrupt as e:
        bench.PROCS.stop_all()
        log("interrupted (%s): every started process stopped" % (e or "Ctrl-C"))
        sys.exit(130)
