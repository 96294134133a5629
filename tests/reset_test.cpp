// Resets, end to end: an abort on one side must reach the other side as an
// abort (ECONNRESET), never as a clean EOF, whichever side aborts, on the
// read/write path and on the splice path, before or after a half-close.
// The real mixctl between real sockets on loopback; every wait has a deadline.
#include <catch2/catch.hpp>

#include <condition_variable>
#include <deque>

#include "harness.hpp"

using namespace harness;

namespace {

// How a receiving socket saw its stream end.
struct Ending {
    enum Kind { eof, reset, other_error, timeout } kind = timeout;
    int err = 0;
    std::string data;
};

// Reads until the stream ends, keeping what arrived (at most `limit`).
Ending read_ending(int fd, size_t limit) {
    Ending e;
    char buf[65536];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            if (e.data.size() + static_cast<size_t>(n) > limit) {
                e.kind = Ending::other_error;
                return e;
            }
            e.data.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) {
            e.kind = Ending::eof;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            e.kind = Ending::timeout;
        } else {
            e.kind = errno == ECONNRESET ? Ending::reset : Ending::other_error;
            e.err = errno;
        }
        return e;
    }
}

// close() with SO_LINGER 0: the kernel sends RST, not FIN.
void abort_socket(net::Fd& fd) {
    net::set_abortive_close(fd.get());
    fd.reset();
}

// One cell of the matrix: who aborts, how much it sends first, and whether
// the other side has already half-closed toward it.
struct Cell {
    const char* name;
    bool upload;             // the client aborts (else the upstream does)
    size_t size;             // bytes sent just before the abort
    bool other_half_closed;  // the receiving side shut its sending half first
    bool unread = false;     // aborts by a plain close() with unread input, not SO_LINGER 0
};

// Waits until `n` bytes can be read, then reads one: the rest stays unread.
bool leave_unread(int fd, size_t n) {
    char buf[8];
    if (::recv(fd, buf, n, MSG_PEEK | MSG_WAITALL) != static_cast<ssize_t>(n)) return false;
    return ::recv(fd, buf, 1, 0) == 1;
}

struct Tally {
    int eof = 0, reset = 0, other = 0, timeout = 0, whole = 0, prefix = 0;
    std::string text() const {
        return "eof=" + std::to_string(eof) + " reset=" + std::to_string(reset) + " other=" + std::to_string(other) +
               " timeout=" + std::to_string(timeout) + " whole=" + std::to_string(whole) +
               " intact_prefix=" + std::to_string(prefix);
    }
    void add(const Ending& e, const std::string& message) {
        switch (e.kind) {
            case Ending::eof: ++eof; break;
            case Ending::reset: ++reset; break;
            case Ending::other_error: ++other; break;
            case Ending::timeout: ++timeout; break;
        }
        if (e.data == message) ++whole;
        if (e.data.size() <= message.size() && message.compare(0, e.data.size(), e.data) == 0) ++prefix;
    }
};

// The upstream side of the trials: each accepted connection runs the
// current cell's script and, when it is the receiver, posts how its
// stream ended.
class Peer {
public:
    Peer() : server_([this](int fd) { serve(fd); }) {}

    uint16_t port() const { return server_.port(); }
    std::string address() const { return server_.address(); }
    bool ok() const { return server_.ok(); }

    void set(const Cell& cell, const std::string& message) {
        std::lock_guard<std::mutex> lock(mutex_);
        cell_ = cell;
        message_ = message;
        endings_.clear();
    }

    bool next_ending(Ending& out, Ms limit) {
        std::unique_lock<std::mutex> lock(mutex_);
        if (!ready_.wait_for(lock, limit, [&] { return !endings_.empty(); })) return false;
        out = std::move(endings_.front());
        endings_.pop_front();
        return true;
    }

private:
    void serve(int fd) {
        Cell cell;
        std::string message;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            cell = cell_;
            message = message_;
        }
        set_timeouts(fd, 5000ms);
        if (cell.upload) {
            // A greeting proves to the client that the relay is up; then
            // this side receives the client's message and its abort.
            if (!send_all(fd, std::string(cell.unread ? "GX" : "G"))) return;
            if (cell.other_half_closed) ::shutdown(fd, SHUT_WR);
            Ending e = read_ending(fd, message.size() + 1);
            std::lock_guard<std::mutex> lock(mutex_);
            endings_.push_back(std::move(e));
            ready_.notify_all();
            return;
        }
        // Download: wait for the client's hello (and its half-close), then
        // send the message and abort at once. The Server closes fd after we
        // return: with SO_LINGER 0 that close is the RST.
        std::string hello;
        if (cell.unread ? !leave_unread(fd, 2) : !read_exact(fd, hello, 1)) return;
        if (cell.other_half_closed) {
            char c;
            if (::recv(fd, &c, 1, 0) != 0) return;
        }
        send_all(fd, message);
        if (!cell.unread) net::set_abortive_close(fd);
    }

    Server server_;
    std::mutex mutex_;
    std::condition_variable ready_;
    Cell cell_{"", true, 0, false};
    std::string message_;
    std::deque<Ending> endings_;
};

// One trial through `port` (the daemon, or the peer itself for the direct
// baseline); returns how the receiving side saw the end. With `hold`, the
// worker is stopped while the client sends and aborts, so that the bytes and
// the reset reach it in one wakeup (otherwise it is a race which comes first).
Ending trial(Peer& peer, uint16_t port, const Cell& cell, const std::string& message, pid_t hold = 0) {
    Ending e;
    net::Fd fd = dial(port, AF_INET, 5000ms);
    if (!fd) {
        e.kind = Ending::other_error;
        e.err = errno;
        return e;
    }
    if (cell.upload) {
        std::string greeting;
        if (cell.unread ? !leave_unread(fd.get(), 2) : !read_exact(fd.get(), greeting, 1)) return e;
        if (cell.other_half_closed) {
            char c;
            if (::recv(fd.get(), &c, 1, 0) != 0) return e;  // the upstream's FIN has been relayed
        }
        if (hold) kill(hold, SIGSTOP);
        send_all(fd.get(), message);
        if (cell.unread)
            fd.reset();  // the unread byte makes close() send RST
        else
            abort_socket(fd);
        if (hold) kill(hold, SIGCONT);
        if (!peer.next_ending(e, 10000ms)) e.kind = Ending::timeout;
        return e;
    }
    if (!send_all(fd.get(), std::string(cell.unread ? "HX" : "H"))) return e;
    if (cell.other_half_closed) ::shutdown(fd.get(), SHUT_WR);
    return read_ending(fd.get(), message.size() + 1);
}

const Cell matrix[] = {
    {"upload, read/write", true, 1000, false},
    {"download, read/write", false, 1000, false},
    {"upload, splice", true, 256 * 1024, false},
    {"download, splice", false, 256 * 1024, false},
    {"upload after the upstream's half-close, read/write", true, 1000, true},
    {"download after the client's half-close, read/write", false, 1000, true},
    {"upload after the upstream's half-close, splice", true, 256 * 1024, true},
    {"download after the client's half-close, splice", false, 256 * 1024, true},
    {"upload, nothing sent before the reset", true, 0, false},
    {"download, nothing sent before the reset", false, 0, false},
    {"upload, reset by close() with unread input", true, 1000, false, true},
    {"download, reset by close() with unread input", false, 1000, false, true},
};

constexpr int trials = 200;
constexpr size_t small = 32 * 1024;  // one read of the relay's buffer: the read/write path

}  // namespace

TEST_CASE("an abort on either side reaches the other side as a reset, never as a clean EOF", "[reset]") {
    Peer peer;
    REQUIRE(peer.ok());
    Daemon d(one_rule({peer.address()}), {"-w", "1", "-v=false"});
    uint16_t port = d.ready_port(1);
    std::vector<pid_t> workers = d.workers(1);
    for (const Cell& cell : matrix) {
        const std::string message = pattern(cell.size, cell.size + (cell.upload ? 1 : 2));
        peer.set(cell, message);
        Tally direct, proxied;
        // The baseline: what the same abort looks like without a proxy.
        for (int i = 0; i < 20; ++i) direct.add(trial(peer, peer.port(), cell, message), message);
        Clock::time_point start = Clock::now();
        for (int i = 0; i < trials; ++i) {
            // Half the uploads with the worker held (a small message fits the
            // client's send buffer, so the client does not wait on it).
            pid_t hold = cell.upload && cell.size < small && i % 2 ? workers[0] : 0;
            proxied.add(trial(peer, port, cell, message, hold), message);
            if (elapsed_ms(start) > 60000) break;  // bounded: the rest count as missing
        }
        INFO(cell.name);
        INFO("direct (20 trials): " + direct.text());
        INFO("through mixctl (" + std::to_string(trials) + " trials): " + proxied.text());
        INFO(d.log());
        CHECK(proxied.reset == trials);
        CHECK(proxied.eof == 0);
        CHECK(proxied.prefix == trials);  // what arrived is the start of the message, unchanged
        // The direct connection delivers a small message whole before the
        // reset; so must the relay.
        if (cell.size < small && direct.whole == 20) CHECK(proxied.whole == trials);
    }
}

TEST_CASE("a reset is logged with the side that reset, and counted per side in stats and /metrics", "[reset]") {
    Peer peer;
    REQUIRE(peer.ok());
    Daemon d("metrics: 127.0.0.1:0\n" + one_rule({peer.address()}));
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    REQUIRE(d.wait_log("Serving metrics on http://127.0.0.1:"));
    // One abort by the client, then two by the upstream.
    const std::string message = pattern(1000, 5);
    const Cell upload{"upload", true, 1000, false}, download{"download", false, 1000, false};
    peer.set(upload, message);
    CHECK(trial(peer, port, upload, message).kind == Ending::reset);
    peer.set(download, message);
    for (int i = 0; i < 2; ++i) CHECK(trial(peer, port, download, message).kind == Ending::reset);
    INFO(d.log());
    CHECK(d.wait_log(" reset_by=client", 5000ms, 1));
    CHECK(d.wait_log(" reset_by=upstream", 5000ms, 2));
    // The Go shape first, the extra fields after it.
    const std::string head = "Closed 127.0.0.1:" + std::to_string(port) + " => " + peer.address() + " (127.0.0.1:";
    for (const std::string& line : lines_of(d.log()))
        if (line.find("reset_by=") != std::string::npos) CHECK(line.find(head) != std::string::npos);

    d.signal(SIGUSR1);
    CHECK(d.wait_log("stats rule=r upstream=" + peer.address()));
    CHECK(d.wait_log(" resets_by_client=1 resets_by_upstream=2"));

    std::string log = d.log();
    const std::string needle = "Serving metrics on http://127.0.0.1:";
    uint16_t mport = static_cast<uint16_t>(atoi(log.c_str() + log.find(needle) + needle.size()));
    const std::string labels = "{rule=\"r\",upstream=\"" + peer.address() + "\"} ";
    std::string body;
    CHECK(wait_until([&] {
        body.clear();
        return exchange(mport, "GET /metrics HTTP/1.0\r\n\r\n", body) &&
               body.find("\nmixctl_upstream_resets_by_client_total" + labels + "1\n") != std::string::npos &&
               body.find("\nmixctl_upstream_resets_by_upstream_total" + labels + "2\n") != std::string::npos;
    }));
    INFO(body);
    CHECK(body.find("# TYPE mixctl_upstream_resets_by_client_total counter") != std::string::npos);
}

TEST_CASE("a client that half-closes and then aborts: the upstream gets the FIN, then the reset", "[reset]") {
    // The upstream reads the whole request to its EOF (the client's FIN,
    // relayed), then waits for the abort that follows it: its socket must
    // fail (a reset), not stay open and quiet.
    std::mutex mutex;
    std::condition_variable changed;
    int requests = 0, resets = 0, quiet = 0;
    Server up([&](int fd) {
        std::string request;
        bool whole = read_to_eof(fd, request) && request == pattern(1000, 9);
        {
            std::lock_guard<std::mutex> lock(mutex);
            if (whole) ++requests;
            changed.notify_all();
        }
        // Readable for good after the EOF: wait for an error or hang-up only.
        pollfd p{fd, 0, 0};
        bool failed = ::poll(&p, 1, 5000) == 1 && (p.revents & (POLLERR | POLLHUP)) && net::pending_error(fd) != 0;
        std::lock_guard<std::mutex> lock(mutex);
        ++(failed ? resets : quiet);
        changed.notify_all();
    });
    REQUIRE(up.ok());
    Daemon d(one_rule(up));
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    const int rounds = 50;
    for (int i = 0; i < rounds; ++i) {
        net::Fd fd = dial(port);
        REQUIRE(fd);
        REQUIRE(send_all(fd.get(), pattern(1000, 9)));
        ::shutdown(fd.get(), SHUT_WR);
        std::unique_lock<std::mutex> lock(mutex);
        if (!changed.wait_for(lock, 5000ms, [&] { return requests == i + 1; })) break;
        lock.unlock();
        abort_socket(fd);
        lock.lock();
        changed.wait_for(lock, 10000ms, [&] { return resets + quiet == i + 1; });
    }
    // The upstream can see the last reset before the worker has logged that
    // connection's Closed line: wait for the lines, then count them exactly.
    d.wait_log(" reset_by=client", patience, static_cast<size_t>(rounds));
    std::lock_guard<std::mutex> lock(mutex);
    INFO(d.log());
    CHECK(requests == rounds);
    CHECK(resets == rounds);
    CHECK(quiet == 0);
    CHECK(d.count(" reset_by=client") == static_cast<size_t>(rounds));
}
