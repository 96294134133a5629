#!/usr/bin/env python3
"""bench/udp.py - mixctl's UDP relay against nginx stream (`listen ... udp
reuseport`), both with one worker pinned to CPU 0; the load generator and
the echo upstream (bench/udp_load.cpp) run on CPU 1. Loopback only.

  dns   64-byte request/response, every request from a new client socket
        (a new session each time), responses: 1 / proxy_responses 1
  bulk  1,400-byte datagrams, 8 client sockets with 16 in flight each,
        sessions that last

For each: round trips per second, round trips per CPU second of the proxy
(its whole process tree) and the ratio mixctl/nginx; then the memory of
2,000 idle sessions (PSS of the proxy tree, per session). Figures are
noisy on a shared machine: compare ratios from one run.
  python3 bench/udp.py [--seconds 5] [--only dns|bulk|memory]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import cpu_seconds, memory_kib, STREAM_MODULE  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def build_load(out_dir):
    binary = os.path.join(out_dir, "udp_load")
    subprocess.check_call([os.environ.get("CXX", "g++"), "-O2", "-std=c++17", "-o", binary,
                           os.path.join(HERE, "udp_load.cpp")])
    return binary


def start_proxy(kind, port, upstream, responses, d):
    if kind == "mixctl":
        rules = os.path.join(d, "rules.yaml")
        with open(rules, "w") as f:
            f.write("rules:\n- name: u\n  from: 127.0.0.1:%d\n  protocol: udp\n  max_sessions: 100000\n"
                    "  to: [127.0.0.1:%d]\n%s" % (port, upstream, "  responses: 1\n" if responses else ""))
        cmd = [os.path.join(ROOT, "mixctl"), "-f", rules, "-w", "1", "-v=false"]
    else:
        cfg = os.path.join(d, "nginx.conf")
        with open(cfg, "w") as f:
            f.write("load_module %s;\ndaemon off;\nworker_processes 1;\npid %s/nginx.pid;\n"
                    "error_log %s/error.log warn;\nworker_rlimit_nofile 200000;\n"
                    "events { worker_connections 100000; }\n"
                    "stream {\n  server {\n    listen 127.0.0.1:%d udp reuseport;\n"
                    "    proxy_pass 127.0.0.1:%d;\n    proxy_timeout 60s;\n%s  }\n}\n"
                    % (STREAM_MODULE, d, d, port, upstream, "    proxy_responses 1;\n" if responses else ""))
        cmd = [shutil.which("nginx"), "-p", d + "/", "-e", d + "/error.log", "-c", cfg]
    p = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return p


def run_load(load, port, size, sockets, window, seconds, fresh):
    env = dict(os.environ, new_source="1" if fresh else "0")
    out = subprocess.check_output(["taskset", "-c", "1", load, "client", str(port), str(size), str(sockets),
                                   str(window), str(seconds)], env=env, text=True)
    words = out.split()
    return int(words[3]), int(words[5])


def measure(kind, scenario, load, upstream, seconds, d):
    port = free_port()
    dns = scenario == "dns"
    p = start_proxy(kind, port, upstream, dns, d)
    try:
        run_load(load, port, 64, 4, 1, 0.5, dns)  # warm up
        cpu0 = cpu_seconds(p.pid)
        received, lost = run_load(load, port, 64 if dns else 1400, 200 if dns else 8, 1 if dns else 16, seconds, dns)
        cpu = cpu_seconds(p.pid) - cpu0
    finally:
        p.terminate()
        p.wait(10)
    return {"round_trips_per_s": received / seconds, "lost": lost, "proxy_cpu_s": cpu,
            "round_trips_per_cpu_s": received / cpu if cpu > 0 else 0.0}


def session_memory(kind, upstream, d, sessions=2000):
    port = free_port()
    p = start_proxy(kind, port, upstream, False, d)
    socks = []
    try:
        before = memory_kib(p.pid)[0]
        # One at a time: a burst of 2,000 would overflow the listening
        # socket's receive buffer (rmem_default) in front of either proxy.
        answered = 0
        for _ in range(sessions):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(("127.0.0.1", port))
            s.settimeout(1)
            s.send(b"x")
            try:
                s.recv(16)
                answered += 1
            except OSError:
                pass
            socks.append(s)
        if answered < sessions:
            print("memory %s: only %d of %d sessions answered" % (kind, answered, sessions))
        after = memory_kib(p.pid)[0]
        return (after - before) / sessions
    finally:
        for s in socks:
            s.close()
        p.terminate()
        p.wait(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--only", choices=["dns", "bulk", "memory"])
    args = ap.parse_args()
    if not (shutil.which("nginx") and os.path.exists(STREAM_MODULE) and shutil.which("taskset")):
        sys.exit("needs nginx, libnginx-mod-stream and taskset (apt-get install nginx libnginx-mod-stream util-linux)")
    if not os.path.exists(os.path.join(ROOT, "mixctl")):
        sys.exit("build mixctl first (make)")
    d = tempfile.mkdtemp(prefix="mixctl-bench-udp-")
    load = build_load(d)
    upstream = free_port()
    echo = subprocess.Popen(["taskset", "-c", "1", load, "echo", str(upstream)])
    results = {}
    try:
        time.sleep(0.3)
        for scenario in ["dns", "bulk"]:
            if args.only and args.only != scenario:
                continue
            for kind in ["mixctl", "nginx"]:
                results["%s/%s" % (scenario, kind)] = r = measure(kind, scenario, load, upstream, args.seconds, d)
                print("%-5s %-6s %9.0f round trips/s  %9.0f per proxy CPU s  lost %d" %
                      (scenario, kind, r["round_trips_per_s"], r["round_trips_per_cpu_s"], r["lost"]), flush=True)
            m, n = results["%s/mixctl" % scenario], results["%s/nginx" % scenario]
            if n["round_trips_per_cpu_s"] > 0:
                print("%-5s mixctl/nginx: %.2fx round trips per CPU second, %.2fx round trips per second" %
                      (scenario, m["round_trips_per_cpu_s"] / n["round_trips_per_cpu_s"],
                       m["round_trips_per_s"] / max(n["round_trips_per_s"], 1)), flush=True)
        if not args.only or args.only == "memory":
            for kind in ["mixctl", "nginx"]:
                results["memory/%s" % kind] = kib = session_memory(kind, upstream, d)
                print("memory %-6s %.2f KiB PSS per idle session" % (kind, kib), flush=True)
    finally:
        echo.terminate()
        echo.wait(10)
        shutil.rmtree(d, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
