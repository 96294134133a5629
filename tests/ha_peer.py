#!/usr/bin/env python3
"""The upstreams and the client of tests/ha.sh, run inside its namespaces.

  ha_peer.py serve NAME PORT          an upstream: reads a request, answers
                                      like a Go TLS server answers plain HTTP,
                                      plus "served-by NAME via BALANCER-IP"
  ha_peer.py client HOST PORT OUT STOP SECONDS
                                      connects every 50 ms until the file STOP
                                      exists (at most SECONDS); one line per
                                      attempt in OUT: "TIME ok NAME VIA" or
                                      "TIME fail WHY"
  ha_peer.py report OUT [SINCE]       attempts, failures, served-by counts and
                                      the longest gap between two good replies
"""
import os
import socket
import sys
import threading
import time

REQUEST = b"HEAD / HTTP/1.0\r\n\r\n"


def serve(name, port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(256)

    def answer(conn, peer):
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nserved-by %s via %s\n"
                             % (name.encode(), peer[0].encode()))
            except OSError:
                pass

    while True:
        conn, peer = listener.accept()
        threading.Thread(target=answer, args=(conn, peer), daemon=True).start()


def one_attempt(host, port):
    with socket.create_connection((host, port), timeout=0.5) as conn:
        conn.settimeout(1.0)
        conn.sendall(REQUEST)
        reply = b""
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    for line in reply.decode(errors="replace").splitlines():
        if line.startswith("served-by "):
            words = line.split()
            return "ok %s %s" % (words[1], words[3])
    return "fail no-reply"


def client(host, port, out, stop, seconds):
    end = time.time() + seconds
    with open(out, "a") as log:
        while time.time() < end and not os.path.exists(stop):
            started = time.time()
            try:
                result = one_attempt(host, port)
            except OSError as e:
                result = "fail " + (type(e).__name__ if not e.strerror else e.strerror.replace(" ", "-"))
            log.write("%.3f %s\n" % (started, result))
            log.flush()
            time.sleep(0.05)


def report(out, since=0.0):
    """The gap is the longest time without a good reply: between two good
    replies, or from the first attempt to the first good reply, or from the
    last good reply to the last attempt (an outage the loop ended in)."""
    attempts, failed, served, last_ok, gap, last_t = 0, 0, {}, None, 0.0, None
    with open(out) as log:
        for line in log:
            words = line.split()
            t = float(words[0])
            if t < since:
                continue
            attempts += 1
            if last_ok is None:
                last_ok = t
            last_t = t
            if words[1] != "ok":
                failed += 1
                continue
            key = "%s via %s" % (words[2], words[3])
            served[key] = served.get(key, 0) + 1
            gap = max(gap, t - last_ok)
            last_ok = t
    if last_t is not None:
        gap = max(gap, last_t - last_ok)
    spread = ", ".join("%s: %d" % (k, served[k]) for k in sorted(served))
    print("attempts=%d failed=%d gap=%.2fs served={%s}" % (attempts, failed, gap, spread))


def main(argv):
    if len(argv) >= 3 and argv[0] == "serve":
        serve(argv[1], int(argv[2]))
    elif len(argv) == 6 and argv[0] == "client":
        client(argv[1], int(argv[2]), argv[3], argv[4], float(argv[5]))
    elif len(argv) in (2, 3) and argv[0] == "report":
        report(argv[1], float(argv[2]) if len(argv) == 3 else 0.0)
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
