#!/usr/bin/env python3
"""tests/chaos.py - nothing lost under faults: a seeded chaos soak of the real mixctl.

Loopback only. Every process it starts (the daemon, the upstream servers) is
stopped by pid; every phase is bounded in time; every stream has a deadline.

Chaos run (default; `make chaos` is the long form, .ci/run the short one):
  Three upstream processes A, B, C (this script with --serve), a daemon
  `mixctl -w 2 -t 300ms -grace 60s` with rules
      main (port P1) -> A, B, C        side (port P2) -> B, C, A
  and, coming and going with reloads, extra rules on P3/P4.
  Client streams (asyncio, many at once) against P1 and P2, every byte checked
  against the pattern it must be (byte-exact, so any lost, duplicated,
  reordered or altered byte shows at its offset):
      echo      client sends N bytes, half-closes, reads N echoed bytes and EOF
      bulk      client half-closes right after its header; upstream sends N bytes
      reqresp   R request/response rounds on one connection, then half-close
      slow-rd   bulk, read in small pieces with pauses
      slow-wr   echo, written in small pieces with pauses
      up-reset  upstream sends K bytes then resets: the client must see the
                prefix and a reset (a clean EOF there is a reset relayed as FIN)
      cl-reset  client sends part of an echo, then resets (SO_LINGER 0)
  Meanwhile, at seeded random moments: SIGKILL a worker (stopped first, its
  client sockets noted, so each loss is attributed), SIGHUP every ~0.5 s with
  good files (rules added/removed/reordered) and bad ones (syntax error, empty
  to:, a listener that cannot bind), kill and restart an upstream (stopped
  first, its open streams noted), turn an upstream into a black hole (listen
  backlog 0, queue filled), lower a worker's (or both workers') soft fd limit
  to its current count with `prlimit --pid P --nofile=N:` and restore it.
  Then calm (no chaos, every stream must succeed), drain, audit:
      corrupted == 0, refused == 0, every lost stream attributed to a killed
      worker or a killed upstream, daemon fds back to the baseline, RSS within
      a margin of it, no CLOSE_WAIT in the daemon's tree, exit 0 on SIGTERM.
  One summary line; `--seed S` replays a run's chaos schedule.

Scale run (--scale N): N concurrent connections through `-w 2`, each relaying
--rounds rounds of 2 KiB checked bytes while all are open; the daemon's RSS,
fds and CPU seconds reported; fds back to baseline after.

Exit status 0 when every check holds, 1 otherwise (the daemon's log tail is
printed on failure).
"""
import argparse
import asyncio
import collections
import hashlib
import os
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HEADER = struct.Struct("<4sBBHIQI")  # magic, mode, flags, reserved, stream id, size, seed
MAGIC = b"CHS1"
M_ECHO, M_BULK, M_REQ, M_UPRESET = 1, 2, 3, 4
BLOCK = 1 << 16


# ---- the byte pattern ------------------------------------------------------------

class Pattern:
    """A deterministic byte stream for a seed: 64 KiB chunks, each a rotation
    of one seeded block, so both ends make it without sharing anything."""

    _cache = collections.OrderedDict()

    def __init__(self, seed):
        block = Pattern._cache.get(seed)
        if block is None:
            block = hashlib.shake_256(struct.pack("<Q", seed)).digest(BLOCK)
            Pattern._cache[seed] = block
            if len(Pattern._cache) > 256:
                Pattern._cache.popitem(last=False)
        self.block = block

    def chunk(self, k):
        r = (k * 7919) % BLOCK
        return self.block[r:] + self.block[:r]

    def slice(self, offset, size):
        out = []
        while size > 0:
            k, at = divmod(offset, BLOCK)
            take = min(size, BLOCK - at)
            out.append(self.chunk(k)[at:at + take])
            offset += take
            size -= take
        return b"".join(out)


def digest(data):
    return hashlib.blake2b(data, digest_size=8).digest()


# ---- upstream server (a child process: --serve PORT) -----------------------------

def serve(port, report):
    """Upstream: the mode in each stream's header says what to do. Reports
    "O id" when it has read a header and "C id" when the stream is done on
    stdout, so the harness knows which streams it held when it is killed."""
    out = sys.stdout if report else None

    def note(kind, sid):
        if out:
            out.write("%s %d\n" % (kind, sid))
            out.flush()

    async def handle(reader, writer):
        sid = None
        try:
            head = await reader.readexactly(HEADER.size)
            magic, mode, _flags, _res, sid, size, seed = HEADER.unpack(head)
            if magic != MAGIC:
                return
            note("O", sid)
            if mode == M_ECHO:
                while True:
                    data = await reader.read(BLOCK)
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
                writer.write_eof()
            elif mode in (M_BULK, M_UPRESET):
                pat, sent = Pattern(seed), 0
                while sent < size:
                    n = min(BLOCK, size - sent)
                    writer.write(pat.slice(sent, n))
                    await writer.drain()
                    sent += n
                if mode == M_UPRESET:
                    await asyncio.sleep(0.05)  # let the bytes leave first
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                writer.write_eof()
                await reader.read()  # the client's half-close, if it has not come yet
            elif mode == M_REQ:
                for r in range(size):
                    n, = struct.unpack("<I", await reader.readexactly(4))
                    body = await reader.readexactly(n)
                    reply_size = (n * 3) % 5000 + 1
                    writer.write(digest(body) + struct.pack("<I", reply_size) +
                                 Pattern(seed + r + 1).slice(0, reply_size))
                    await writer.drain()
                await reader.read()
                writer.write_eof()
            # Wait for the client's side to end before closing: a close with
            # unread input would send a reset.
            await asyncio.wait_for(reader.read(), 60)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            if sid is not None:
                note("C", sid)
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True, backlog=4096)
        print("ready %d" % port, flush=True)
        async with server:
            await server.serve_forever()

    raise_fd_limit()
    asyncio.run(main())


# ---- processes and /proc -----------------------------------------------------------

def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def tree(pid):
    return [pid] + children(pid)


def proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


def socket_inodes(pid):
    out = set()
    base = "/proc/%d/fd" % pid
    try:
        names = os.listdir(base)
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(base + "/" + name)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def tcp_table(pid=None):
    """(inode, local port, remote port, state) for every TCP socket in the
    network namespace (of pid, or ours)."""
    rows = []
    prefix = "/proc/%d/net" % pid if pid else "/proc/net"
    for name in ("tcp", "tcp6"):
        try:
            with open(prefix + "/" + name) as f:
                next(f)
                for line in f:
                    p = line.split()
                    rows.append((int(p[9]), int(p[1].rsplit(":", 1)[1], 16), int(p[2].rsplit(":", 1)[1], 16), p[3]))
        except (OSError, StopIteration):
            pass
    return rows


def fd_soft_limit(pid):
    try:
        with open("/proc/%d/limits" % pid) as f:
            for line in f:
                if line.startswith("Max open files"):
                    return line.split()[3]
    except OSError:
        pass
    return None


def wait_stopped(pid, limit=2.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc_state(pid) in ("T", "t", "Z", "?"):
            return True
        time.sleep(0.002)
    return False


# ---- the daemon --------------------------------------------------------------------

class Daemon:
    def __init__(self, mixctl, workdir, rules, args):
        self.file = os.path.join(workdir, "rules.yaml")
        self.logfile = os.path.join(workdir, "mixctl.log")
        self.write(rules)
        self.log_out = open(self.logfile, "wb")
        self.proc = subprocess.Popen([mixctl, "-f", self.file] + args, stdout=self.log_out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    def write(self, text):
        tmp = self.file + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.file)

    def log(self):
        try:
            with open(self.logfile, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def count(self, needle):
        return self.log().count(needle)

    def alive(self):
        return self.proc.poll() is None

    def workers(self):
        return children(self.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            for p in tree(self.pid):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            self.proc.wait()
        return None

    def kill(self):
        for p in reversed(tree(self.pid)):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.log_out.close()

    def figures(self):
        pids = tree(self.pid)
        return sum(fd_count(p) for p in pids), sum(rss_kib(p) for p in pids), len(pids)


async def wait_for(cond, limit, step=0.02):
    end = time.monotonic() + limit
    while True:
        if cond():
            return True
        if time.monotonic() >= end:
            return False
        await asyncio.sleep(step)


# ---- upstream processes, as the harness sees them ------------------------------------

class Upstream:
    def __init__(self, name, port, script):
        self.name, self.port, self.script = name, port, script
        self.proc = None
        self.open_ids = set()
        self.buf = b""
        self.hole = []  # the black hole's sockets while it is one

    def start(self, registered):
        self.proc = subprocess.Popen([sys.executable, self.script, "--serve", str(self.port)],
                                     stdout=subprocess.PIPE, start_new_session=True)
        first = self.proc.stdout.readline()  # "ready PORT": listening
        if not first.startswith(b"ready"):
            raise RuntimeError("upstream %s on %d did not start" % (self.name, self.port))
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.registered = registered
        self.open_ids = set()
        self.buf = b""
        asyncio.get_running_loop().add_reader(self.proc.stdout.fileno(), self.drain)

    def drain(self):
        while True:
            try:
                data = os.read(self.proc.stdout.fileno(), 65536)
            except BlockingIOError:
                return
            if not data:
                try:
                    asyncio.get_running_loop().remove_reader(self.proc.stdout.fileno())
                except (RuntimeError, ValueError):
                    pass
                return
            self.buf += data
            *lines, self.buf = self.buf.split(b"\n")
            for line in lines:
                kind, sid = line.split()
                sid = int(sid)
                if kind == b"O":
                    self.open_ids.add(sid)
                    self.registered.add(sid)
                else:
                    self.open_ids.discard(sid)

    def kill(self):
        """Stops it, reads every report it wrote, then SIGKILLs it: returns the
        ids of the streams it held."""
        if self.proc is None:
            return set()
        os.kill(self.proc.pid, signal.SIGSTOP)
        wait_stopped(self.proc.pid)
        self.drain()
        held = set(self.open_ids)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        try:
            asyncio.get_running_loop().remove_reader(self.proc.stdout.fileno())
        except (RuntimeError, ValueError):
            pass
        self.proc.stdout.close()
        self.proc = None
        return held

    def black_hole(self):
        """Its port becomes a listener with backlog 0 whose queue is full:
        SYNs to it go unanswered."""
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(0)
        self.hole = [lst]
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.hole.append(c)
            time.sleep(0.02)
            if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                try:
                    c.getpeername()
                    continue  # it got into the queue: fill more
                except OSError:
                    pass
            break

    def end_black_hole(self):
        for s in self.hole:
            s.close()
        self.hole = []

    def stop(self):
        self.end_black_hole()
        if self.proc is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.proc.stdout.fileno())
            except (RuntimeError, ValueError):
                pass
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None


# ---- the chaos run -----------------------------------------------------------------

KINDS = [  # (name, weight)
    ("echo", 30), ("echo-big", 8), ("bulk", 10), ("reqresp", 25), ("slow-rd", 5), ("slow-wr", 6),
    ("up-reset", 6), ("cl-reset", 6),
]


class Run:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.rng = random.Random(self.seed)
        self.t0 = time.monotonic()
        self.next_sid = 1
        self.counts = collections.Counter()
        self.failures = []         # (sid, kind, why, lport, t_start, t_end, registered)
        self.registered = set()    # stream ids that reached an upstream
        self.upstream_killed = set()
        self.worker_kills = []     # (time, set of client ports)
        self.upstream_kill_times = []
        self.events = collections.Counter()
        self.timeline = []         # (time, what) of every chaos action, for the report
        self.problems = []
        self.chaos_on = False
        self.calm = False

    def now(self):
        return time.monotonic() - self.t0

    def event(self, name, detail=""):
        self.events[name] += 1
        self.timeline.append((self.now(), name + (" " + detail if detail else "")))

    # -- rules --
    def rules(self, variant=None):
        a, b, c = (u.address for u in self.ups)
        main = [a, b, c]
        side = [b, c, a]
        extra = []
        if variant:
            if variant.get("shuffle"):
                main = variant["shuffle"]
            for port in variant.get("extra", []):
                extra.append(("extra%d" % port, port, [c, a]))
        text = "version: 0.1\nrules:\n"
        for name, port, to in [("main", self.p_main, main), ("side", self.p_side, side)] + extra:
            text += "- name: %s\n  from: \"127.0.0.1:%d\"\n  to:\n" % (name, port)
            text += "".join("    - \"%s\"\n" % t for t in to)
        return text

    # -- one stream --
    async def stream(self, kind, port):
        rng = self.rng
        sid = self.next_sid
        self.next_sid += 1
        seed = rng.getrandbits(32)
        t_start = self.now()
        lport = 0
        self.counts["started"] += 1
        deadline = 90 if kind.startswith("slow") else 60
        raw = socket.socket()
        raw.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", port)), 30)
            # Noted before anything can close it: the daemon's side of a
            # killed worker is found by this port.
            lport = raw.getsockname()[1]
            reader, writer = await asyncio.open_connection(sock=raw)
        except ConnectionRefusedError:
            raw.close()
            self.counts["refused"] += 1
            self.failures.append((sid, kind, "connect refused", 0, t_start, self.now(), False))
            return
        except (OSError, asyncio.TimeoutError) as e:
            raw.close()
            self.counts["connect_failed"] += 1
            self.failures.append((sid, kind, "connect: %r" % e, lport, t_start, self.now(), False))
            return
        sock = writer.get_extra_info("socket")
        try:
            outcome = await asyncio.wait_for(self.exchange(kind, sid, seed, reader, writer, sock, rng), deadline)
        except asyncio.TimeoutError:
            outcome = ("fail", "no progress within %d s" % deadline)
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as e:
            outcome = ("fail", "%s: %s" % (type(e).__name__, e))
        finally:
            writer.transport.abort() if kind == "cl-reset" else writer.close()
        result, why = outcome
        if result == "ok":
            self.counts["completed"] += 1
            self.counts["ok_" + kind] += 1
        elif result == "corrupt":
            self.counts["corrupted"] += 1
            self.failures.append((sid, kind, "CORRUPT " + why, lport, t_start, self.now(), sid in self.registered))
        elif result == "reset_as_fin":
            self.counts["reset_as_fin"] += 1
            self.failures.append((sid, kind, "upstream reset relayed as a clean EOF " + why, lport, t_start,
                                  self.now(), sid in self.registered))
        else:
            self.failures.append((sid, kind, why, lport, t_start, self.now(), sid in self.registered))

    async def exchange(self, kind, sid, seed, reader, writer, sock, rng):
        if kind in ("echo", "echo-big", "slow-wr", "cl-reset"):
            size = {"echo": rng.randint(1, 64 << 10), "echo-big": rng.randint(256 << 10, 3 << 20),
                    "slow-wr": rng.randint(32 << 10, 256 << 10), "cl-reset": rng.randint(64 << 10, 1 << 20)}[kind]
            writer.write(HEADER.pack(MAGIC, M_ECHO, 0, 0, sid, size, seed))
            pat = Pattern(seed)
            piece = 4096 if kind == "slow-wr" else BLOCK
            stop_at = rng.randint(1, size) if kind == "cl-reset" else size

            async def send():
                sent = 0
                while sent < stop_at:
                    n = min(piece, stop_at - sent)
                    writer.write(pat.slice(sent, n))
                    await writer.drain()
                    sent += n
                    if kind == "slow-wr":
                        await asyncio.sleep(0.01)
                if kind != "cl-reset":
                    writer.write_eof()

            sender = asyncio.ensure_future(send())
            got = 0
            try:
                while True:
                    if kind == "cl-reset" and got >= stop_at // 2:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        return ("ok", "")  # the caller aborts: a reset from the client side
                    data = await reader.read(BLOCK)
                    if not data:
                        break
                    if data != pat.slice(got, len(data)):
                        return ("corrupt", "echo byte mismatch at offset %d" % got)
                    got += len(data)
                await sender
            finally:
                sender.cancel()
            if got != size:
                return ("fail", "echo short: %d of %d bytes then EOF" % (got, size))
            return ("ok", "")
        if kind in ("bulk", "slow-rd"):
            size = rng.randint(64 << 10, 4 << 20) if kind == "bulk" else rng.randint(128 << 10, 1 << 20)
            writer.write(HEADER.pack(MAGIC, M_BULK, 0, 0, sid, size, seed))
            writer.write_eof()  # half-close at once: the reply must still come
            pat, got = Pattern(seed), 0
            while True:
                data = await reader.read(BLOCK if kind == "bulk" else 8192)
                if not data:
                    break
                if data != pat.slice(got, len(data)):
                    return ("corrupt", "bulk byte mismatch at offset %d" % got)
                got += len(data)
                if kind == "slow-rd":
                    await asyncio.sleep(0.01)
            if got != size:
                return ("fail", "bulk short: %d of %d bytes then EOF" % (got, size))
            return ("ok", "")
        if kind == "reqresp":
            rounds = rng.randint(2, 20)
            writer.write(HEADER.pack(MAGIC, M_REQ, 0, 0, sid, rounds, seed))
            for r in range(rounds):
                n = rng.randint(1, 8192)
                body = Pattern(seed ^ (r * 0x9E3779B1)).slice(0, n)
                writer.write(struct.pack("<I", n) + body)
                await writer.drain()
                head = await reader.readexactly(12)
                if head[:8] != digest(body):
                    return ("corrupt", "round %d: digest mismatch" % r)
                m, = struct.unpack("<I", head[8:])
                if m != (n * 3) % 5000 + 1:
                    return ("corrupt", "round %d: reply length %d" % (r, m))
                if await reader.readexactly(m) != Pattern(seed + r + 1).slice(0, m):
                    return ("corrupt", "round %d: reply bytes" % r)
                if rng.random() < 0.1:
                    await asyncio.sleep(0.02)  # think time
            writer.write_eof()
            if await reader.read(1) != b"":
                return ("corrupt", "bytes after the last reply")
            return ("ok", "")
        if kind == "up-reset":
            size = rng.randint(1, 256 << 10)
            writer.write(HEADER.pack(MAGIC, M_UPRESET, 0, 0, sid, size, seed))
            pat, got = Pattern(seed), 0
            try:
                while True:
                    data = await reader.read(BLOCK)
                    if not data:
                        break
                    if data != pat.slice(got, len(data)):
                        return ("corrupt", "byte mismatch at offset %d before the reset" % got)
                    got += len(data)
            except ConnectionResetError:
                return ("ok", "")
            return ("reset_as_fin", "(%d of %d bytes)" % (got, size))
        raise ValueError(kind)

    # -- clients --
    async def client(self, index, until):
        rng = self.rng
        names = [k for k, _ in KINDS]
        weights = [w for _, w in KINDS]
        while self.now() < until():
            kind = rng.choices(names, weights)[0]
            port = self.p_main if rng.random() < 0.7 else self.p_side
            await self.stream(kind, port)

    # -- chaos actions --
    async def reload(self):
        rng = self.rng
        r = rng.random()
        d = self.daemon
        if r < 0.25:
            which = rng.choice(["syntax", "empty", "clash"])
            if which == "syntax":
                text = self.rules() + "- name: broken\n\tfrom: x\n"
            elif which == "empty":
                text = self.rules() + "- name: empty\n  from: \"127.0.0.1:%d\"\n  to: []\n" % self.p_extra[0]
            else:
                text = self.rules({"extra": [self.clash_port]})
            outcome = "failed: still serving"
            self.event("reload_bad_" + which)
        else:
            extra = [p for p in self.p_extra if rng.random() < 0.5]
            ups = [u.address for u in self.ups]
            rng.shuffle(ups)
            text = self.rules({"extra": extra, "shuffle": ups})
            outcome = "reloaded "
            self.event("reload_good", "extra rules on %s" % extra)
            self.extra_now = extra
        before = d.count(outcome)
        d.write(text)
        os.kill(d.pid, signal.SIGHUP)
        if not await wait_for(lambda: d.count(outcome) > before, 10):
            self.problems.append("t=%.1fs: a reload was not answered with '%s' within 10 s" % (self.now(), outcome))
            return
        if outcome == "reloaded " and self.extra_now:
            # An added rule serves at once.
            port = rng.choice(self.extra_now)
            self.counts["probes"] += 1
            await self.stream("echo", port)

    async def kill_worker(self):
        workers = self.daemon.workers()
        if not workers:
            return
        victim = self.rng.choice(sorted(workers))
        listen_ports = {self.p_main, self.p_side} | set(self.p_extra)
        os.kill(victim, signal.SIGSTOP)  # it accepts nothing more while we look
        wait_stopped(victim)
        inodes = socket_inodes(victim)
        ports = {remote for inode, local, remote, state in tcp_table(victim)
                 if inode in inodes and local in listen_ports and state != "0A"}
        os.kill(victim, signal.SIGKILL)
        self.worker_kills.append((self.now(), ports))
        self.event("worker_kill", "pid %d holding %d clients" % (victim, len(ports)))

    async def upstream_down(self, black_hole):
        up = self.rng.choice(self.ups)
        held = up.kill()
        self.upstream_killed |= held
        self.upstream_kill_times.append(self.now())
        self.event("upstream_kill", "%s holding %d streams" % (up.name, len(held)))
        if black_hole:
            up.black_hole()
            self.event("black_hole", up.name)
        await asyncio.sleep(self.rng.uniform(0.3, 2.0))
        up.end_black_hole()
        up.start(self.registered)
        self.event("upstream_restart", up.name)

    async def emfile(self):
        workers = sorted(self.daemon.workers())
        if not workers:
            return
        chosen = workers if self.rng.random() < 0.3 else [self.rng.choice(workers)]
        saved = []
        for w in chosen:
            soft = fd_soft_limit(w)
            n = fd_count(w)
            if soft is None or n == 0:
                continue
            if subprocess.call(["prlimit", "--pid", str(w), "--nofile=%d:" % n],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0:
                saved.append((w, soft))
        self.event("emfile", "workers %s at their fd count" % [w for w, _ in saved])
        await asyncio.sleep(self.rng.uniform(0.5, 1.5))
        for w, soft in saved:
            subprocess.call(["prlimit", "--pid", str(w), "--nofile=%s:" % soft],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.event("emfile_end")

    async def reloader(self, until):
        while self.now() < until:
            await self.reload()
            await asyncio.sleep(self.rng.uniform(0.4, 0.6))

    async def chaos(self, until):
        busy_upstream = None
        busy_emfile = None
        while self.now() < until:
            await asyncio.sleep(self.rng.uniform(0.3, 1.2))
            r = self.rng.random()
            if r < 0.3:
                await self.kill_worker()
            elif r < 0.6:
                if busy_upstream is None or busy_upstream.done():
                    busy_upstream = asyncio.ensure_future(self.upstream_down(black_hole=self.rng.random() < 0.4))
            elif r < 0.8:
                if busy_emfile is None or busy_emfile.done():
                    busy_emfile = asyncio.ensure_future(self.emfile())
        for task in (busy_upstream, busy_emfile):
            if task is not None:
                await task

    # -- the whole run --
    async def main(self):
        a = self.args
        raise_fd_limit()
        self.ups = []
        for name in "ABC":
            port = free_port()
            u = Upstream(name, port, os.path.abspath(__file__))
            u.address = "127.0.0.1:%d" % port
            u.start(self.registered)
            self.ups.append(u)
        self.p_main, self.p_side, self.clash_port = free_port(), free_port(), None
        self.p_extra = [free_port(), free_port()]
        clash = socket.socket()  # a port held here: a rule on it cannot bind
        clash.bind(("127.0.0.1", 0))
        clash.listen(1)
        self.clash_port = clash.getsockname()[1]
        self.extra_now = []
        work = tempfile.mkdtemp(prefix="chaos-")
        self.daemon = d = Daemon(a.mixctl, work, self.rules(),
                                 ["-w", "2", "-t", "300ms", "-grace", "60s", "-v=false"])
        ok = False
        try:
            ok = await self.phases(d)
        finally:
            d.kill()
            for u in self.ups:
                u.stop()
            clash.close()
            if not ok:
                tail = d.log().splitlines()[-80:]
                print("---- mixctl log (last %d lines of %s)" % (len(tail), d.logfile))
                print("\n".join(tail))
            else:
                for name in os.listdir(work):
                    os.unlink(os.path.join(work, name))
                os.rmdir(work)
        return ok

    async def phases(self, d):
        a = self.args
        if not await wait_for(lambda: d.count("Forwarding (side)") >= 1 and len(d.workers()) == 2, 20):
            self.problems.append("the daemon did not start")
            return self.report(None, None)
        # Warm-up: load, no chaos.
        warm_end = self.now() + a.warmup
        await asyncio.gather(*[self.client(i, lambda: warm_end) for i in range(a.clients)])
        before = await self.settled(d)
        # Chaos: load, reloads, kills, holes, EMFILE.
        self.counts_before_chaos = dict(self.counts)
        chaos_end = self.now() + a.seconds
        calm_end = chaos_end + a.calm
        tasks = [self.reloader(chaos_end), self.chaos(chaos_end)]
        tasks += [self.client(i, lambda: calm_end) for i in range(a.clients)]
        await asyncio.gather(*tasks)
        # Back to the first configuration, so fds compare.
        before_reload = d.count("reloaded ")
        d.write(self.rules())
        os.kill(d.pid, signal.SIGHUP)
        if not await wait_for(lambda: d.count("reloaded ") > before_reload, 10):
            self.problems.append("the final reload was not answered")
        after = await self.settled(d)
        # CLOSE_WAIT in the daemon's tree.
        self.close_wait = -1
        def no_close_wait():
            inodes = set()
            for p in tree(d.pid):
                inodes |= socket_inodes(p)
            self.close_wait = sum(1 for inode, _, _, st in tcp_table(d.pid) if st == "08" and inode in inodes)
            return self.close_wait == 0
        await wait_for(no_close_wait, 10)
        d.log_out.flush()
        code = d.stop()
        self.exit_code = code
        return self.report(before, after)

    async def settled(self, d):
        """The tree's figures once it has 2 workers and its fd count has held
        still for a second (bounded: 30 s)."""
        last, since, end = None, time.monotonic(), time.monotonic() + 30
        while time.monotonic() < end:
            fig = d.figures()
            if fig[2] == 3 and fig[0] == (last[0] if last else None):
                if time.monotonic() - since >= 1.0:
                    return fig
            else:
                since = time.monotonic()
            last = fig
            await asyncio.sleep(0.1)
        return last

    def report(self, before, after):
        c = self.counts
        lost_worker = lost_upstream = no_upstream = 0
        unaccounted, reset_as_fin = [], []
        # Clients the daemon closed because every upstream it dialed failed
        # near an upstream kill. Upstreams killed (and restarted) in the last
        # 10 s are still marked down (max_fails 1, fail_timeout 10s) but are
        # tried last, so this needs every upstream dead at that moment.
        gave_up = set()
        for line in self.daemon.log().splitlines():
            at = line.find(" reachable for 127.0.0.1:")
            if at >= 0 and "no upstream of" in line:
                gave_up.add(int(line[at + 25:].split(":")[0]))
        for sid, kind, why, lport, t1, t2, registered in self.failures:
            if why.startswith("CORRUPT"):
                continue
            if why == "connect refused":
                unaccounted.append((sid, kind, why, lport, t1, t2))
                continue
            if lport and any(t1 <= t <= t2 and lport in ports for t, ports in self.worker_kills):
                lost_worker += 1
            elif sid in self.upstream_killed:
                lost_upstream += 1
            elif not registered and any(t1 <= t <= t2 for t in self.upstream_kill_times):
                lost_upstream += 1  # in the killed upstream's accept queue: it never read the header
            elif not registered and lport in gave_up and any(t - 1 <= t1 <= t + 11 for t in self.upstream_kill_times):
                no_upstream += 1
            elif why.startswith("upstream reset relayed"):
                reset_as_fin.append((sid, kind, why, lport, t1, t2))
            else:
                unaccounted.append((sid, kind, why, lport, t1, t2))
        ok = True
        checks = []

        def check(cond, text):
            nonlocal ok
            if not cond:
                ok = False
                checks.append(text)

        check(c["corrupted"] == 0, "corrupted streams")
        check(c["refused"] == 0, "refused connections")
        check(not unaccounted, "lost streams not explained by a kill")
        check(not reset_as_fin, "upstream resets relayed as a clean EOF, no kill involved")
        check(not self.problems, "; ".join(self.problems))
        if before and after:
            check(after[0] == before[0], "daemon fds %d -> %d" % (before[0], after[0]))
            check(after[1] <= before[1] * 1.5 + 4096, "daemon RSS %d -> %d KiB" % (before[1], after[1]))
        else:
            check(False, "daemon figures unavailable")
        check(getattr(self, "close_wait", 1) == 0, "CLOSE_WAIT sockets left: %s" % getattr(self, "close_wait", "?"))
        check(getattr(self, "exit_code", None) == 0, "exit on SIGTERM: %s" % getattr(self, "exit_code", None))
        emfile_lines = self.daemon.log().count("too many open files")
        e = self.events
        lost = lost_worker + lost_upstream + no_upstream + len(unaccounted) + len(reset_as_fin)
        print("chaos: seed=%d %s%s streams=%d completed=%d corrupted=%d lost=%d (worker-killed=%d "
              "upstream-killed=%d no-live-upstream-left=%d unaccounted=%d) refused=%d reset-as-fin=%d | worker-kills=%d reloads=%d+%d-bad "
              "upstream-kills=%d black-holes=%d emfile=%d (%d log lines) | fds %s->%s rss %s->%s KiB "
              "close-wait=%s exit=%s | %s"
              % (self.seed, "%ds" % self.args.seconds,
                 " poller=" + os.environ["MIXCTL_POLLER"] if os.environ.get("MIXCTL_POLLER") else "", c["started"], c["completed"], c["corrupted"], lost,
                 lost_worker, lost_upstream, no_upstream, len(unaccounted), c["refused"], len(reset_as_fin),
                 e["worker_kill"], e["reload_good"],
                 e["reload_bad_syntax"] + e["reload_bad_empty"] + e["reload_bad_clash"],
                 e["upstream_kill"], e["black_hole"], e["emfile"], emfile_lines,
                 before[0] if before else "?", after[0] if after else "?",
                 before[1] if before else "?", after[1] if after else "?",
                 getattr(self, "close_wait", "?"), getattr(self, "exit_code", "?"),
                 "PASS" if ok else "FAIL"), flush=True)
        if not ok:
            print("chaos: failed checks: " + " | ".join(checks))
            for f in unaccounted[:20]:
                print("  unaccounted: stream %d %s: %s [client port %d, t=%.2f..%.2fs]" % f)
                for t, what in self.timeline:
                    if f[4] - 2 <= t <= f[5] + 0.5:
                        print("      t=%.2fs %s" % (t, what))
            for f in [f for f in self.failures if f[2].startswith("CORRUPT")][:20] + reset_as_fin[:20]:
                print("  %s: stream %d %s [client port %d, t=%.2f..%.2fs]" % (f[2], f[0], f[1], f[3], f[4], f[5]))
                for t, what in self.timeline:
                    if f[4] - 2 <= t <= f[5] + 0.5:
                        print("      t=%.2fs %s" % (t, what))
            print("chaos: replay with --seed %d (timings differ; the schedule of choices is the same)" % self.seed)
        return ok


# ---- scale: N concurrent connections ---------------------------------------------------

async def scale(args):
    limit = raise_fd_limit()
    n = args.scale
    if limit < n + 100:
        print("scale: fd limit %d is below %d connections" % (limit, n))
        return False
    port = free_port()
    up = Upstream("echo", port, os.path.abspath(__file__))
    up.address = "127.0.0.1:%d" % port
    registered = set()
    up.start(registered)
    listen = free_port()
    rules = ("version: 0.1\nrules:\n- name: scale\n  from: \"127.0.0.1:%d\"\n  to:\n    - \"%s\"\n"
             % (listen, up.address))
    work = tempfile.mkdtemp(prefix="chaos-scale-")
    d = Daemon(args.mixctl, work, rules, ["-w", "2", "-v=false"])
    ok = False
    conns = []
    try:
        if not await wait_for(lambda: d.count("Forwarding (scale)") >= 1 and len(d.workers()) == 2, 20):
            print("scale: the daemon did not start")
            return False
        fd0, rss0, _ = d.figures()
        cpu0 = sum(cpu_seconds(p) for p in tree(d.pid))
        t0 = time.monotonic()
        sem = asyncio.Semaphore(256)  # connects in flight at once: the listen queue is finite
        failures = collections.Counter()

        async def open_one(i):
            async with sem:
                for attempt in range(3):
                    try:
                        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", listen), 30)
                        w.write(HEADER.pack(MAGIC, M_ECHO, 0, 0, i, 0, i))
                        return (r, w)
                    except (OSError, asyncio.TimeoutError) as e:
                        failures["connect " + type(e).__name__] += 1
                        await asyncio.sleep(0.1)
                return None

        conns = await asyncio.gather(*[open_one(i) for i in range(n)])
        opened = sum(1 for c in conns if c)
        t_open = time.monotonic() - t0
        good = [0]

        async def round_trip(i, rw, rnd):
            r, w = rw
            data = Pattern(i).slice(rnd * 2048, 2048)
            w.write(data)
            try:
                got = await asyncio.wait_for(r.readexactly(2048), 120)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                failures["round " + type(e).__name__] += 1
                return False
            if got != data:
                failures["corrupt"] += 1
                return False
            return True

        ok_rounds = 0
        for rnd in range(args.rounds):
            res = await asyncio.gather(*[round_trip(i, c, rnd) for i, c in enumerate(conns) if c])
            ok_rounds += sum(res)
        good[0] = ok_rounds
        fd1, rss1, _ = d.figures()
        per_worker = [(p, fd_count(p)) for p in d.workers()]
        cpu1 = sum(cpu_seconds(p) for p in tree(d.pid))
        t_relay = time.monotonic() - t0
        for c in conns:
            if c:
                c[1].close()
        conns = []
        await asyncio.sleep(0)
        fd2 = None
        def back():
            nonlocal fd2
            fd2 = d.figures()[0]
            return fd2 == fd0
        back_ok = await wait_for(back, 60, 0.2)
        rss2 = d.figures()[1]
        want = n * args.rounds
        ok = opened == n and ok_rounds == want and back_ok and not failures
        print("scale: %d connections through -w 2 (%d opened in %.1f s), %d x 2 KiB rounds: %d/%d intact; "
              "daemon RSS %d -> %d KiB (%.2f KiB/conn), fds %d -> %d -> %d (workers %s); daemon CPU %.2f s "
              "(%.0f us/conn); %.1f s in all; rss after close %d KiB | %s%s"
              % (n, opened, t_open, args.rounds, ok_rounds, want, rss0, rss1, (rss1 - rss0) / max(n, 1),
                 fd0, fd1, fd2, " ".join("%d:%d" % pw for pw in per_worker), cpu1 - cpu0,
                 (cpu1 - cpu0) * 1e6 / max(n, 1), t_relay, rss2,
                 "PASS" if ok else "FAIL", "" if not failures else " failures: %s" % dict(failures)), flush=True)
        code = d.stop()
        if code != 0:
            print("scale: mixctl exit on SIGTERM: %s" % code)
            ok = False
        return ok
    finally:
        for c in conns:
            if c:
                c[1].close()
        d.kill()
        up.stop()
        if not ok:
            print("---- mixctl log tail")
            print("\n".join(d.log().splitlines()[-40:]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mixctl", default=os.environ.get("MIXCTL", "./mixctl"))
    p.add_argument("--seed", type=int, default=None, help="replay a run's random choices")
    p.add_argument("--seconds", type=int, default=120, help="chaos phase length (default 120)")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--calm", type=float, default=5.0, help="load without chaos after it (every stream must pass)")
    p.add_argument("--clients", type=int, default=24, help="concurrent client loops")
    p.add_argument("--scale", type=int, default=0, help="instead: N concurrent checked connections")
    p.add_argument("--rounds", type=int, default=3, help="scale: 2 KiB round trips per connection")
    p.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve is not None:
        serve(args.serve, report=True)
        return 0
    if not os.access(args.mixctl, os.X_OK):
        print("chaos: no mixctl at %s (build it, or set MIXCTL)" % args.mixctl)
        return 1
    if args.scale:
        return 0 if asyncio.run(scale(args)) else 1
    if args.seed is None:
        args.seed = random.SystemRandom().getrandbits(31)
    print("chaos: seed=%d, %d s of chaos, %d client loops, mixctl %s%s" % (
        args.seed, args.seconds, args.clients, args.mixctl,
        " (MIXCTL_POLLER=%s)" % os.environ["MIXCTL_POLLER"] if os.environ.get("MIXCTL_POLLER") else ""), flush=True)
    return 0 if asyncio.run(Run(args).main()) else 1


if __name__ == "__main__":
    sys.exit(main())
