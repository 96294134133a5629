// Soak: one mixctl (-w 2, -t 1000ms) under a minute of mixed abuse, then an
// audit. Bounded: about 50 s in all (SOAK_SECONDS sets the chaos phase,
// default 36), every socket has a timeout, every wait a deadline.
//
// Upstreams (all on 127.0.0.1): an echo server, a digest server, a port that
// refuses (bound, never listening) and a black hole (backlog 0, filled, so
// SYNs go unanswered). Rules, on fixed ports so a reload keeps them:
//   echo    -> echo, refused, hole   (failover on every dial)
//   digest  -> digest, refused
//   hole    -> hole                   (every dial times out after -t)
//   refused -> refused                (every dial is refused)
// Client threads mix: checksummed echo transfers (1 B .. 4 MiB, bytes checked
// as they arrive), digest exchanges ending in a half-close, resets in
// mid-transfer (SO_LINGER 0), aborts while the daemon is still dialing, and
// clients that wait for the daemon to give up on a refused or black-hole
// upstream. Meanwhile a chaos thread SIGKILLs a worker every 3 s and reloads
// (SIGHUP) with a rewritten rules file every 8 s.
//
// Phases: warm-up (load, no chaos; baselines taken), chaos, calm (load, no
// chaos), drain. The audit: no exchange ever saw a wrong byte; every exchange
// that no worker kill overlapped completed; the parent's and every worker's
// descriptor count is back to a fresh worker's baseline; RSS within a margin
// of the warmed-up baseline; no socket of the daemon in CLOSE_WAIT; exit 0 on
// SIGTERM. Figures are printed with WARN so they show in every run.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "harness.hpp"

// Everything lives in its own namespace, so a helper added to harness.hpp
// later can never make a name here ambiguous.
namespace soak {

using namespace harness;

// The daemon's dial deadline (-t). Not tight: on a loaded machine a
// loopback connect to a busy server can take hundreds of milliseconds, and a
// deadline met there fails an exchange the soak counts. The client waits for
// the daemon to give up on a black hole for 5 times this, and a close before
// 3/4 of it is an error (the daemon gave up before its deadline).
constexpr Ms dial_deadline = 1000ms;

// ---- upstreams --------------------------------------------------------------

// Thread per connection like harness::Server, but the handler threads are
// detached: a soak makes tens of thousands of connections, and unjoined
// threads would pile up (harness::Server joins them only at stop()).
class SoakServer {
public:
    using Handler = std::function<void(int fd)>;

    explicit SoakServer(Handler handler) : handler_(std::move(handler)) {
        listener_ = net::Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        int one = 1;
        setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        net::SockAddr at = loopback(0);
        if (::bind(listener_.get(), at.get(), at.length) < 0 || ::listen(listener_.get(), 1024) < 0) return;
        net::SockAddr bound;
        net::local_address(listener_.get(), bound);
        port_ = bound.port();
        acceptor_ = std::thread([this] { accept_loop(); });
    }
    ~SoakServer() { stop(); }

    uint16_t port() const { return port_; }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
    int accepted() const { return accepted_.load(); }

    void stop() {
        if (stopped_.exchange(true)) return;
        ::shutdown(listener_.get(), SHUT_RDWR);
        if (acceptor_.joinable()) acceptor_.join();
        {
            std::lock_guard<std::mutex> lock(state_->mutex);
            for (int fd : state_->open) ::shutdown(fd, SHUT_RDWR);
        }
        // Handlers see their sockets shut down and return; bounded wait.
        wait_until([&] { return state_->active.load() == 0; }, 10000ms);
    }

private:
    // Shared with the detached handlers, which may outlive a failed stop().
    struct State {
        std::mutex mutex;
        std::set<int> open;
        std::atomic<int> active{0};
    };

    void accept_loop() {
        for (;;) {
            int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED) continue;
                if (errno == EMFILE || errno == ENFILE) {
                    std::this_thread::sleep_for(10ms);
                    continue;
                }
                return;
            }
            set_timeouts(fd, 15000ms);
            accepted_.fetch_add(1);
            std::shared_ptr<State> state = state_;
            {
                std::lock_guard<std::mutex> lock(state->mutex);
                state->open.insert(fd);
            }
            state->active.fetch_add(1);
            Handler handler = handler_;
            try {
                std::thread([state, handler, fd] {
                    handler(fd);
                    {
                        std::lock_guard<std::mutex> lock(state->mutex);
                        state->open.erase(fd);
                    }
                    ::close(fd);
                    state->active.fetch_sub(1);
                }).detach();
            } catch (const std::system_error&) {  // no thread to be had: drop this one
                std::lock_guard<std::mutex> lock(state->mutex);
                state->open.erase(fd);
                ::close(fd);
                state->active.fetch_sub(1);
            }
        }
    }

    Handler handler_;
    net::Fd listener_;
    uint16_t port_ = 0;
    std::thread acceptor_;
    std::atomic<int> accepted_{0};
    std::atomic<bool> stopped_{false};
    std::shared_ptr<State> state_ = std::make_shared<State>();
};

// The other upstreams are harness::RefusedPort and harness::BlackHole; the
// rules' own ports come from harness::free_port(), so a reload keeps them.

// ---- process figures ---------------------------------------------------------

// Socket inodes a process holds.
std::set<unsigned long> socket_inodes(pid_t pid) {
    std::set<unsigned long> out;
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* d = opendir(dir.c_str());
    if (!d) return out;
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        char target[128];
        ssize_t n = readlink((dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = '\0';
        unsigned long inode = 0;
        if (sscanf(target, "socket:[%lu]", &inode) == 1) out.insert(inode);
    }
    closedir(d);
    return out;
}

// TCP sockets in `wanted` state ("08" CLOSE_WAIT, "0A" LISTEN) among
// `inodes`, from /proc/net/tcp{,6}.
int tcp_state_among(const std::set<unsigned long>& inodes, const std::string& wanted, std::string& detail) {
    int n = 0;
    for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
        std::ifstream in(file);
        std::string line;
        std::getline(in, line);  // header
        while (std::getline(in, line)) {
            std::istringstream fields(line);
            std::string sl, local, remote, state, queues, timer, retr, uid, timeout;
            unsigned long inode = 0;
            if (!(fields >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >> inode))
                continue;
            if (state == wanted && inodes.count(inode)) {
                ++n;
                detail += "  " + local + " -> " + remote + " inode " + std::to_string(inode) + "\n";
            }
        }
    }
    return n;
}

// ---- the load ----------------------------------------------------------------

enum Kind { k_echo, k_digest, k_reset, k_abort_dial, k_refused, k_hole, k_count };
const char* const kind_names[k_count] = {"echo", "digest", "reset mid-transfer", "abort mid-dial",
                                         "refused upstream", "black-hole upstream"};

struct Tally {
    std::atomic<uint64_t> started{0}, completed{0}, excused{0}, failed{0}, corrupted{0}, bytes{0};
};

// Everything the client threads and the chaos thread share.
struct Soak {
    uint16_t echo_port = 0, digest_port = 0, hole_port = 0, refused_port = 0;
    std::string blob;                       // 8 MiB of pattern; exchanges send slices of it
    std::atomic<uint64_t> kills{0};         // bumped before each SIGKILL
    std::atomic<uint64_t> reloads{0};       // bumped before each SIGHUP
    std::atomic<bool> running{true};
    Tally tally[k_count];
    std::mutex mutex;
    std::vector<std::string> failures;      // the first few, for the report

    Clock::time_point epoch = Clock::now();
    std::chrono::system_clock::time_point wall_epoch = std::chrono::system_clock::now();
    std::vector<std::string> events;        // kills and reloads, with times, for the report
    std::vector<uint16_t> failed_ports;     // client ports of failed exchanges, to find in the log

    long ms() const { return static_cast<long>(std::chrono::duration_cast<Ms>(Clock::now() - epoch).count()); }

    void event(const std::string& what) {
        std::lock_guard<std::mutex> lock(mutex);
        events.push_back("t=" + std::to_string(ms()) + "ms " + what);
    }

    // "HH:MM:SS" of a moment `at_ms` after the epoch, as the daemon's log
    // lines print it.
    std::string wall(long at_ms) const {
        time_t t = std::chrono::system_clock::to_time_t(wall_epoch + Ms(at_ms));
        tm parts{};
        localtime_r(&t, &parts);
        char text[16];
        strftime(text, sizeof text, "%H:%M:%S", &parts);
        return text;
    }

    void fail(Kind kind, const std::string& why, bool corrupt, uint16_t client_port, long started_ms) {
        (corrupt ? tally[kind].corrupted : tally[kind].failed).fetch_add(1);
        std::lock_guard<std::mutex> lock(mutex);
        if (failures.size() >= 20) return;
        long now = ms();
        failures.push_back(std::string(kind_names[kind]) + (corrupt ? " CORRUPT: " : ": ") + why + " [client port " +
                           std::to_string(client_port) + ", t=" + std::to_string(started_ms) + ".." +
                           std::to_string(now) + "ms, " + wall(started_ms) + "]");
        failed_ports.push_back(client_port);
        failed_seconds.push_back({wall(started_ms), wall(now)});
    }
    std::vector<std::pair<std::string, std::string>> failed_seconds;
};

// The local port of the last connection this thread dialed, for the report.
thread_local uint16_t last_client_port = 0;

net::Fd soak_dial(uint16_t port) {
    net::Fd fd = dial(port, AF_INET, 10000ms);
    net::SockAddr local;
    last_client_port = fd && net::local_address(fd.get(), local) ? local.port() : 0;
    return fd;
}

std::string describe_errno(const char* what) { return std::string(what) + ": " + strerror(errno); }

void hard_close(net::Fd& fd) {
    linger hard{1, 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    fd.reset();
}

// Sends `size` bytes and reads the echo at the same time (non-blocking, one
// poll loop), checking every byte as it arrives. Half-closes after the last
// byte; complete = exactly `size` bytes back, then EOF.
enum class Result { complete, incomplete, corrupt };

Result echo_exchange(uint16_t port, const char* data, size_t size, uint64_t& moved, std::string& why) {
    net::Fd fd = soak_dial(port);
    if (!fd) {
        why = describe_errno("connect");
        return Result::incomplete;
    }
    int flags = fcntl(fd.get(), F_GETFL);
    fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK);
    size_t sent = 0, got = 0;
    bool shut = false;
    std::unique_ptr<char[]> buf(new char[65536]);
    Clock::time_point deadline = Clock::now() + 15000ms;
    for (;;) {
        if (sent == size && !shut) {
            ::shutdown(fd.get(), SHUT_WR);
            shut = true;
        }
        long left = std::chrono::duration_cast<Ms>(deadline - Clock::now()).count();
        if (left <= 0) {
            why = "timed out after " + std::to_string(got) + " of " + std::to_string(size) + " bytes";
            return Result::incomplete;
        }
        pollfd p{fd.get(), static_cast<short>(POLLIN | (sent < size ? POLLOUT : 0)), 0};
        int ready = ::poll(&p, 1, static_cast<int>(std::min<long>(left, 1000)));
        if (ready < 0 && errno != EINTR) {
            why = describe_errno("poll");
            return Result::incomplete;
        }
        if (ready <= 0) continue;
        if ((p.revents & POLLOUT) && sent < size) {
            ssize_t n = ::send(fd.get(), data + sent, std::min<size_t>(size - sent, 256 * 1024), MSG_NOSIGNAL);
            if (n > 0) sent += static_cast<size_t>(n);
            else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                why = describe_errno("send") + " after " + std::to_string(sent) + " of " + std::to_string(size);
                return Result::incomplete;
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = ::recv(fd.get(), buf.get(), 65536, 0);
            if (n == 0) {
                if (got == size) return Result::complete;
                why = "EOF after " + std::to_string(got) + " of " + std::to_string(size) + " bytes";
                return Result::incomplete;
            }
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
                why = describe_errno("recv") + " after " + std::to_string(got) + " of " + std::to_string(size);
                return Result::incomplete;
            }
            size_t k = static_cast<size_t>(n);
            if (got + k > size || memcmp(buf.get(), data + got, k) != 0) {
                why = "wrong bytes at offset " + std::to_string(got) + " (" + std::to_string(k) + " read, " +
                      std::to_string(size) + " sent)";
                return Result::corrupt;
            }
            got += k;
            moved += k;
        }
    }
}

// Sends `size` bytes, half-closes, expects "<bytes> <checksum>\n" then EOF.
Result digest_exchange(uint16_t port, const char* data, size_t size, const std::string& want, std::string& why) {
    net::Fd fd = soak_dial(port);
    if (!fd) {
        why = describe_errno("connect");
        return Result::incomplete;
    }
    if (!send_all(fd.get(), data, size)) {
        why = describe_errno("send");
        return Result::incomplete;
    }
    ::shutdown(fd.get(), SHUT_WR);
    std::string reply;
    bool eof = read_to_eof(fd.get(), reply, 256);
    if (reply == want && eof) return Result::complete;
    if (want.compare(0, reply.size(), reply) == 0) {  // nothing or a prefix: cut short, not wrong
        why = std::string(eof ? "EOF" : describe_errno("recv")) + " after " + std::to_string(reply.size()) +
              " reply bytes";
        return Result::incomplete;
    }
    why = "reply \"" + reply + "\" for " + std::to_string(size) + " bytes, want \"" + want + "\"";
    return Result::corrupt;
}

size_t pick_size(std::mt19937_64& rng) {
    uint64_t r = rng() % 100;
    if (r < 50) return 1 + rng() % (16 << 10);
    if (r < 85) return 1 + rng() % (256 << 10);
    return 1 + rng() % (4 << 20);
}

void client_loop(Soak& s, uint64_t seed) {
    std::mt19937_64 rng(seed);
    while (s.running.load()) {
        uint64_t r = rng() % 100;
        Kind kind = r < 35 ? k_echo : r < 60 ? k_digest : r < 75 ? k_reset : r < 85 ? k_abort_dial
                  : r < 92 ? k_refused : k_hole;
        Tally& t = s.tally[kind];
        t.started.fetch_add(1);
        const uint64_t kills_before = s.kills.load();
        const long started_ms = s.ms();
        last_client_port = 0;
        std::string why;
        Result result = Result::complete;
        size_t size = pick_size(rng);
        const char* data = s.blob.data() + rng() % (s.blob.size() - size);
        switch (kind) {
            case k_echo: {
                uint64_t moved = 0;
                result = echo_exchange(s.echo_port, data, size, moved, why);
                t.bytes.fetch_add(moved);
                break;
            }
            case k_digest: {
                Checksum sum;
                sum.add(data, size);
                char want[64];
                snprintf(want, sizeof want, "%llu %016llx\n", static_cast<unsigned long long>(size),
                         static_cast<unsigned long long>(sum.value()));
                result = digest_exchange(s.digest_port, data, size, want, why);
                if (result == Result::complete) t.bytes.fetch_add(size);
                break;
            }
            case k_reset: {
                // Part of a transfer, maybe part of the echo, then RST.
                net::Fd fd = soak_dial(rng() % 2 ? s.echo_port : s.digest_port);
                if (!fd) {
                    result = Result::incomplete;
                    why = describe_errno("connect");
                    break;
                }
                int flags = fcntl(fd.get(), F_GETFL);
                fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK);
                size_t part = size / 2 + 1;
                ssize_t n = ::send(fd.get(), data, part, MSG_NOSIGNAL);
                (void)n;  // nothing comes back to check: these bytes are not counted
                std::this_thread::sleep_for(Ms(rng() % 20));
                char buf[4096];
                while (::recv(fd.get(), buf, sizeof buf, 0) > 0) {
                }
                hard_close(fd);
                break;
            }
            case k_abort_dial: {
                // The daemon is dialing the black hole (dial_deadline) when we go.
                net::Fd fd = soak_dial(s.hole_port);
                if (!fd) {
                    result = Result::incomplete;
                    why = describe_errno("connect");
                    break;
                }
                if (rng() % 2) send_all(fd.get(), data, std::min<size_t>(size, 1024));
                std::this_thread::sleep_for(Ms(rng() % 150));
                if (rng() % 2) hard_close(fd);
                break;
            }
            case k_refused:
            case k_hole: {
                // The daemon must give up and close us: at once for a refused
                // upstream, after -t (dial_deadline) for the black hole.
                net::Fd fd = soak_dial(kind == k_refused ? s.refused_port : s.hole_port);
                if (!fd) {
                    result = Result::incomplete;
                    why = describe_errno("connect");
                    break;
                }
                Clock::time_point start = Clock::now();
                if (!closed_by_peer(fd.get(), 5 * dial_deadline)) {
                    result = Result::incomplete;
                    why = "not closed by the daemon within " + std::to_string(5 * dial_deadline.count()) + " ms";
                } else if (kind == k_hole && Clock::now() - start < dial_deadline * 3 / 4) {
                    // Closed before the dial deadline: fine only if a kill did it.
                    result = Result::incomplete;
                    why = "closed after " + std::to_string(std::chrono::duration_cast<Ms>(Clock::now() - start).count()) +
                          " ms, before the " + std::to_string(dial_deadline.count()) + " ms dial deadline";
                }
                break;
            }
            case k_count: break;
        }
        if (result == Result::complete) {
            t.completed.fetch_add(1);
        } else if (result == Result::corrupt) {
            s.fail(kind, why, true, last_client_port, started_ms);
        } else if (s.kills.load() != kills_before) {
            t.excused.fetch_add(1);  // a worker was killed while this ran
        } else {
            s.fail(kind, why, false, last_client_port, started_ms);
        }
    }
}

// The rules file; `variant` changes upstream order and policy, never the
// listeners, so a reload keeps every socket.
std::string soak_rules(const Soak& s, const std::string& echo, const std::string& digest,
                       const std::string& refused, const std::string& hole, int variant) {
    auto from = [](uint16_t port) { return "\"127.0.0.1:" + std::to_string(port) + "\""; };
    std::string text = "version: 0.1\n";
    text += variant % 2 ? "defaults:\n  fail_timeout: 1s\n  strategy: round-robin\n"
                        : "defaults:\n  fail_timeout: 2s\n";
    text += "rules:\n";
    text += "- name: echo\n  from: " + from(s.echo_port) + "\n  to: [" +
            (variant % 2 ? hole + ", " + echo + ", " + refused : echo + ", " + refused + ", " + hole) + "]\n";
    text += "- name: digest\n  from: " + from(s.digest_port) + "\n  to: [" +
            (variant % 2 ? refused + ", " + digest : digest + ", " + refused) + "]\n";
    text += "- name: hole\n  from: " + from(s.hole_port) + "\n  to: [" + hole + "]\n";
    text += "- name: refused\n  from: " + from(s.refused_port) + "\n  to: [" + refused + "]\n";
    return text;
}

// Loads for `length` with `threads` clients; returns when all have stopped.
void run_load(Soak& s, int threads, Ms length, uint64_t seed) {
    s.running = true;
    std::vector<std::thread> clients;
    for (int i = 0; i < threads; ++i) clients.emplace_back([&s, seed, i] { client_loop(s, seed * 1000 + static_cast<uint64_t>(i)); });
    std::this_thread::sleep_for(length);
    s.running = false;
    for (std::thread& t : clients) t.join();
}

// True when the process runs with AddressSanitizer (gcc links libasan.so;
// clang's static runtime is recognised by the ASAN_OPTIONS the sanitize
// target always sets).
bool sanitized(pid_t pid) {
    if (getenv("ASAN_OPTIONS")) return true;
    std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
    std::string line;
    while (std::getline(maps, line))
        if (line.find("libasan") != std::string::npos) return true;
    return false;
}

long max_rss(const std::vector<pid_t>& pids) {
    long peak = 0;
    for (pid_t p : pids) peak = std::max(peak, rss_kib(p));
    return peak;
}

std::string join_ints(const std::vector<int>& values) {
    std::string out;
    for (int v : values) out += (out.empty() ? "" : " ") + std::to_string(v);
    return out;
}

void run_soak() {
    raise_own_fd_limit();
    const char* env_seconds = getenv("SOAK_SECONDS");
    const int chaos_seconds = env_seconds && atoi(env_seconds) > 0 ? atoi(env_seconds) : 36;
    const int threads = 16;
    // A worker's relay keeps at most 64 spare 32 KiB buffers (2 MiB); the
    // parent allocates per reload and must give it back. Under ASan freed
    // memory sits in a quarantine for a while: four times the margin.
    long worker_rss_margin_kib = 2 * 1024, parent_rss_margin_kib = 1024;

    SoakServer echo_up(echo), digest_up(digest);
    RefusedPort refused;
    BlackHole hole;
    REQUIRE(echo_up.port() != 0);
    REQUIRE(digest_up.port() != 0);
    REQUIRE(refused.port() != 0);
    REQUIRE(hole.port() != 0);
    REQUIRE(hole.swallows());

    Soak s;
    s.blob = pattern(8 << 20, 2024);
    s.echo_port = free_port();
    s.digest_port = free_port();
    s.hole_port = free_port();
    s.refused_port = free_port();
    REQUIRE(std::set<uint16_t>{s.echo_port, s.digest_port, s.hole_port, s.refused_port}.size() == 4);
    auto rules = [&](int variant) {
        return soak_rules(s, echo_up.address(), digest_up.address(), refused.address(), hole.address(), variant);
    };

    // -v: one line per connection, so a failed exchange can be found in the log.
    Daemon d(rules(0), {"-w", "2", "-t", std::to_string(dial_deadline.count()) + "ms"});
    REQUIRE(d.port("echo") == s.echo_port);
    REQUIRE(d.port("refused") == s.refused_port);
    std::vector<pid_t> first = d.workers(2);
    REQUIRE(first.size() == 2);
    if (sanitized(d.pid())) {
        worker_rss_margin_kib *= 4;
        parent_rss_margin_kib *= 4;
    }
    const int parent_fds = settled_fd_count(d.pid());
    const int worker_fds = settled_fd_count(first[0]);
    CHECK(settled_fd_count(first[1]) == worker_fds);

    // ---- warm-up: the same load, no chaos; then the baselines --------------
    run_load(s, threads, 3000ms, 1);
    CHECK(d.workers(2) == first);
    const long worker_rss = max_rss(first);
    const long parent_rss = rss_kib(d.pid());

    // ---- chaos ---------------------------------------------------------------
    // Reloads rewrite the file atomically (rename) and expect the parent's
    // "reloaded FILE: ..." line (issue 5) after each SIGHUP.
    int reloads_done = 0, reload_failures = 0;
    std::vector<pid_t> killed;
    std::thread chaos([&] {
        std::mt19937_64 rng(7);
        Clock::time_point start = Clock::now(), end = start + std::chrono::seconds(chaos_seconds);
        Clock::time_point next_kill = start + 1500ms, next_reload = start + 4000ms;
        int variant = 0;
        while (Clock::now() < end) {
            std::this_thread::sleep_for(20ms);
            Clock::time_point now = Clock::now();
            if (now >= next_kill) {
                next_kill = now + 3000ms;
                std::vector<pid_t> kids = children(d.pid());  // ours: the daemon's workers
                if (!kids.empty()) {
                    pid_t victim = kids[rng() % kids.size()];
                    s.kills.fetch_add(1);
                    s.event("SIGKILL worker " + std::to_string(victim));
                    if (::kill(victim, SIGKILL) == 0) killed.push_back(victim);
                }
            }
            if (now >= next_reload) {
                next_reload = now + 8000ms;
                std::string tmp = d.dir().write("rules.yaml.new", rules(++variant));
                if (::rename(tmp.c_str(), d.file().c_str()) != 0) continue;
                size_t before = d.count("reloaded ");
                s.reloads.fetch_add(1);
                s.event("SIGHUP (variant " + std::to_string(variant % 2) + ")");
                d.signal(SIGHUP);
                if (d.wait_log("reloaded ", 5000ms, before + 1)) ++reloads_done;
                else ++reload_failures;
                s.event("reload logged");
            }
        }
    });
    run_load(s, threads, std::chrono::seconds(chaos_seconds), 2);
    chaos.join();

    // ---- calm: load without chaos; every exchange must complete -------------
    const uint64_t kills_before_calm = s.kills.load();
    std::vector<pid_t> now_workers;
    bool settled = wait_until([&] { return (now_workers = children(d.pid())).size() == 2; }, 15000ms);
    run_load(s, threads, 4000ms, 3);
    CHECK(s.kills.load() == kills_before_calm);

    // ---- audit -----------------------------------------------------------------
    // Retired workers of earlier generations are gone; two fresh ones remain.
    CHECK(settled);
    CHECK(wait_until([&] { return (now_workers = children(d.pid())).size() == 2; }, 15000ms));
    std::vector<int> end_worker_fds;
    for (pid_t w : now_workers) {
        wait_until([&] { return fd_count(w) == worker_fds; }, 5000ms);
        end_worker_fds.push_back(fd_count(w));
    }
    wait_until([&] { return fd_count(d.pid()) == parent_fds; }, 5000ms);
    const int end_parent_fds = fd_count(d.pid());
    const long end_worker_rss = max_rss(now_workers);
    const long end_parent_rss = rss_kib(d.pid());

    std::set<unsigned long> inodes = socket_inodes(d.pid());
    for (pid_t w : now_workers) {
        std::set<unsigned long> more = socket_inodes(w);
        inodes.insert(more.begin(), more.end());
    }
    std::string close_wait_detail, listen_detail;
    const int close_wait = tcp_state_among(inodes, "08", close_wait_detail);
    // The same parse must find the daemon's four listeners, or the
    // CLOSE_WAIT count above proves nothing.
    const int listening = tcp_state_among(inodes, "0A", listen_detail);

    uint64_t total = 0, completed = 0, excused = 0, failed = 0, corrupted = 0, bytes = 0;
    std::ostringstream per_kind;
    for (int k = 0; k < k_count; ++k) {
        const Tally& t = s.tally[k];
        total += t.started;
        completed += t.completed;
        excused += t.excused;
        failed += t.failed;
        corrupted += t.corrupted;
        bytes += t.bytes;
        per_kind << "  " << kind_names[k] << ": " << t.started << " started, " << t.completed << " completed, "
                 << t.excused << " cut by a worker kill, " << t.failed << " failed, " << t.corrupted
                 << " corrupted" << (t.bytes ? ", " + std::to_string(t.bytes / 1024) + " KiB checked" : "") << "\n";
    }
    // For each failure: what the daemon logged about that client (-v is on:
    // one "Closed ... (127.0.0.1:PORT) ..." line per connection), and the
    // kills and reloads around it.
    std::string failures;
    if (!s.failures.empty()) {
        for (const std::string& f : s.failures) failures += "  " + f + "\n";
        std::string log = d.log();
        // Client ports are reused: only lines from the seconds the exchange ran.
        for (size_t i = 0; i < s.failed_ports.size(); ++i) {
            if (s.failed_ports[i] == 0) continue;
            std::string needle = "127.0.0.1:" + std::to_string(s.failed_ports[i]);
            std::istringstream lines(log);
            std::string line;
            while (std::getline(lines, line))
                if (line.find(needle) != std::string::npos &&
                    (line.find(s.failed_seconds[i].first) != std::string::npos ||
                     line.find(s.failed_seconds[i].second) != std::string::npos))
                    failures += "  daemon: " + line + "\n";
        }
        std::string saved = "/tmp/mixctl-soak-" + std::to_string(getpid()) + ".log";
        std::ofstream(saved) << log;
        failures += "  the daemon's whole log: " + saved + "\n";
        failures += "  events:\n";
        for (const std::string& e : s.events) failures += "    " + e + "\n";
        // Dial errors other than the expected ones (refused, black-hole
        // timeouts), e.g. "cannot assign requested address".
        {
            size_t n = 0;
            std::istringstream lines(log);
            std::string line;
            while (std::getline(lines, line) && n < 10)
                if (line.find("error dialing") != std::string::npos &&
                    line.find("connection refused") == std::string::npos &&
                    line.find("i/o timeout") == std::string::npos) {
                    failures += "  unexpected dial error: " + line + "\n";
                    ++n;
                }
        }
        for (const char* word : {"exited", "error:", "reload", "grace"}) {
            size_t n = 0;
            std::istringstream lines(log);
            std::string line;
            while (std::getline(lines, line) && n < 30)
                if (line.find(word) != std::string::npos && line.find("error dialing") == std::string::npos &&
                    line.find("no upstream of") == std::string::npos) {
                    failures += "  log: " + line + "\n";
                    ++n;
                }
        }
    }

    WARN("soak figures (" << chaos_seconds << " s chaos, " << threads << " client threads):\n"
         << "  connections: " << total << " (" << completed << " completed, " << excused
         << " cut by worker kills, " << failed << " failed, " << corrupted << " corrupted)\n"
         << "  bytes checked: " << (bytes >> 20) << " MiB; upstream accepts: echo " << echo_up.accepted()
         << ", digest " << digest_up.accepted() << "\n"
         << per_kind.str() << "  worker kills: " << killed.size() << "; reloads: " << reloads_done << " ok, "
         << reload_failures << " without a \"reloaded\" line\n"
         << "  fds: parent " << parent_fds << " -> " << end_parent_fds << "; fresh worker " << worker_fds
         << " -> workers at end " << join_ints(end_worker_fds) << "\n"
         << "  RSS KiB" << (parent_rss_margin_kib > 1024 ? " (ASan)" : "") << ": parent " << parent_rss << " -> " << end_parent_rss << "; workers (max) " << worker_rss
         << " warmed up -> " << end_worker_rss << " at end\n"
         << "  daemon sockets in CLOSE_WAIT: " << close_wait << " (listening: " << listening << ")\n"
         << close_wait_detail << (failures.empty() ? "" : "  failures:\n" + failures));

    CHECK(corrupted == 0);
    CHECK(failed == 0);
    CHECK(completed > 0);
    CHECK(excused * 20 <= total);  // kills cut a few exchanges, not a twentieth of them
    CHECK(s.tally[k_echo].completed > 0);
    CHECK(s.tally[k_digest].completed > 0);
    CHECK(killed.size() >= static_cast<size_t>(chaos_seconds / 3 - 1));
    CHECK(reload_failures == 0);
    CHECK(reloads_done >= chaos_seconds / 8 - 1);
    CHECK(d.count("reload of") == 0);  // "reload of FILE failed"
    CHECK(end_parent_fds == parent_fds);
    for (int n : end_worker_fds) CHECK(n == worker_fds);
    CHECK(end_worker_rss > 0);
    CHECK(end_worker_rss <= worker_rss + worker_rss_margin_kib);
    CHECK(end_parent_rss <= parent_rss + parent_rss_margin_kib);
    CHECK(close_wait == 0);
    CHECK(listening == 4);

    d.signal(SIGTERM);
    Exit e = d.wait_exit(15000ms);
    INFO(d.log().substr(d.log().size() > 4000 ? d.log().size() - 4000 : 0));
    CHECK(e.code == 0);
    CHECK(e.signal == 0);
}

}  // namespace soak

TEST_CASE("soak: a minute of mixed transfers, resets, aborts, dead upstreams, worker kills and reloads",
          "[soak]") {
    soak::run_soak();
}
