#!/usr/bin/env python3
"""Loopback traffic for the shell tests: an echo upstream and a checking client.

  tcp_check.py serve PORTFILE SECONDS [HOST]
      Listens on HOST (default 127.0.0.1) port 0, writes the port to
      PORTFILE, echoes every connection's bytes back and half-closes when the
      client does. Exits after SECONDS, whatever happens.
  tcp_check.py client PORT BYTES CONNECTIONS [HOST]
      Per connection: sends BYTES pseudo-random bytes (seeded per
      connection) while reading the echo, half-closes, reads to EOF, and
      compares length and SHA-256 of what came back with what was sent.
      Prints one line per connection; exit 0 only if all match.
  tcp_check.py freeport [HOST]
      Prints a port that was free on HOST a moment ago (bound, then closed).
  tcp_check.py poke PORT [HOST]
      Connects, sends nothing and waits (at most 10 s) for the other side to
      close; exit 0 if the connect succeeded.

Only loopback addresses are accepted. Every socket has a timeout.
"""
import hashlib
import os
import random
import socket
import sys
import threading
import time

TIMEOUT = 30.0
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(portfile, seconds, host="127.0.0.1"):
    assert host in LOOPBACK, host
    deadline = time.monotonic() + seconds
    listener = socket.socket(family(host), socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, 0))
    listener.listen(64)
    listener.settimeout(0.2)
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % listener.getsockname()[1])
    os.rename(tmp, portfile)

    def echo(conn):
        conn.settimeout(TIMEOUT)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()

    while time.monotonic() < deadline:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            continue
        threading.Thread(target=echo, args=(conn,), daemon=True).start()
    return 0


def one_client(port, size, seed, host):
    data = random.Random(seed).randbytes(size)
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    errors = []

    def send():
        try:
            view = memoryview(data)
            while view:
                n = sock.send(view[:65536])
                view = view[n:]
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append("send: %s" % e)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    got = hashlib.sha256()
    count = 0
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got.update(chunk)
            count += len(chunk)
    except OSError as e:
        errors.append("recv: %s" % e)
    sender.join(TIMEOUT)
    sock.close()
    want = hashlib.sha256(data).hexdigest()
    if errors:
        return False, "connection %d: %s (got %d of %d bytes)" % (seed, "; ".join(errors), count, size)
    if count != size or got.hexdigest() != want:
        return False, "connection %d: got %d bytes sha256 %s, sent %d sha256 %s" % (
            seed, count, got.hexdigest()[:16], size, want[:16])
    return True, "connection %d: %d bytes each way, sha256 %s" % (seed, size, want[:16])


def client(port, size, connections, host="127.0.0.1"):
    assert host in LOOPBACK, host
    good = True
    for seed in range(1, connections + 1):
        try:
            ok, line = one_client(port, size, seed, host)
        except OSError as e:
            ok, line = False, "connection %d: %s" % (seed, e)
        print(line)
        good = good and ok
    return 0 if good else 1


def poke(port, host="127.0.0.1"):
    assert host in LOOPBACK, host
    sock = socket.create_connection((host, port), timeout=10)
    try:
        sock.settimeout(10)
        while sock.recv(4096):
            pass
    except OSError:
        pass
    sock.close()
    return 0


def freeport(host="127.0.0.1"):
    assert host in LOOPBACK, host
    sock = socket.socket(family(host), socket.SOCK_STREAM)
    sock.bind((host, 0))
    print(sock.getsockname()[1])
    sock.close()
    return 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "serve":
        return serve(argv[1], float(argv[2]), *argv[3:4])
    if len(argv) >= 4 and argv[0] == "client":
        return client(int(argv[1]), int(argv[2]), int(argv[3]), *argv[4:5])
    if len(argv) >= 1 and argv[0] == "freeport":
        return freeport(*argv[1:2])
    if len(argv) >= 2 and argv[0] == "poke":
        return poke(int(argv[1]), *argv[2:3])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
