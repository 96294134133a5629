// harness.hpp - drives the real mixctl binary against real servers on loopback, for the tests.
// Owns the processes, sockets and files it makes; never dials off loopback, never waits without a bound.
//
// Waits poll for a condition with a deadline, sockets carry receive/send
// timeouts, and every process the harness starts is killed by pid when its
// owner goes out of scope.
//
// Why long: one toolbox shared by every integration test (servers, clients, checksums, the daemon);
// its parts are small and independent, and one include keeps each test file short.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "net.hpp"

namespace harness {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;

// Set by the Catch2 listener in tests/harness_test.cpp when an assertion of
// the running test case fails; a Daemon that goes away then prints its log.
inline std::atomic<bool>& test_failed() {
    static std::atomic<bool> failed{false};
    return failed;
}

inline std::string mixctl_path() {
    const char* env = getenv("MIXCTL");
    return env && *env ? env : "./mixctl";
}

// How long a wait for something that must happen may take by default: far
// more than it needs on an idle machine, so a machine whose cores are busy
// with other work (CI, other tests) only makes it slower, never failed.
// Waits return as soon as the state holds, so passing tests do not pay it.
constexpr Ms patience = 20000ms;

// Polls `done` until it holds or `limit` passes.
inline bool wait_until(const std::function<bool()>& done, Ms limit = patience) {
    Clock::time_point end = Clock::now() + limit;
    for (;;) {
        if (done()) return true;
        if (Clock::now() >= end) return false;
        std::this_thread::sleep_for(5ms);
    }
}

// Milliseconds since `since`.
inline long elapsed_ms(Clock::time_point since) {
    return static_cast<long>(std::chrono::duration_cast<Ms>(Clock::now() - since).count());
}

// ---- text -------------------------------------------------------------------------

// The lines of `text`, without their '\n'; a last line without one counts.
inline std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    size_t at = 0;
    while (at < text.size()) {
        size_t end = text.find('\n', at);
        if (end == std::string::npos) end = text.size();
        lines.push_back(text.substr(at, end - at));
        at = end + 1;
    }
    return lines;
}

inline bool starts_with(const std::string& text, const std::string& prefix) {
    return text.compare(0, prefix.size(), prefix) == 0;
}

// ---- data with checksums ----------------------------------------------------

inline std::string pattern(size_t size, uint64_t seed) {
    std::string out(size, '\0');
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < size; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = static_cast<char>(x);
    }
    return out;
}

// FNV-1a, 64 bit: cheap, and any lost, duplicated or reordered byte shows.
class Checksum {
public:
    void add(const char* data, size_t size) {
        for (size_t i = 0; i < size; ++i) {
            value_ ^= static_cast<unsigned char>(data[i]);
            value_ *= 0x100000001b3ULL;
        }
        bytes_ += size;
    }
    uint64_t value() const { return value_; }
    uint64_t bytes() const { return bytes_; }

private:
    uint64_t value_ = 0xcbf29ce484222325ULL;
    uint64_t bytes_ = 0;
};

inline uint64_t checksum(const std::string& data) {
    Checksum c;
    c.add(data.data(), data.size());
    return c.value();
}

// ---- sockets ------------------------------------------------------------------

inline void set_timeouts(int fd, Ms limit) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(limit.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((limit.count() % 1000) * 1000);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

inline net::SockAddr loopback(uint16_t port, int family = AF_INET, const char* v4 = "127.0.0.1") {
    net::SockAddr a;
    if (family == AF_INET6) {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_loopback;
        in6->sin6_port = htons(port);
        a.length = sizeof(sockaddr_in6);
    } else {
        auto* in = reinterpret_cast<sockaddr_in*>(&a.storage);
        in->sin_family = AF_INET;
        inet_pton(AF_INET, v4, &in->sin_addr);
        in->sin_port = htons(port);
        a.length = sizeof(sockaddr_in);
    }
    return a;
}

// An IP literal (v4, v6, or v4-mapped "::ffff:a.b.c.d") and a port as a
// socket address, for tests that build addresses rather than dial them.
inline net::SockAddr ip_port(const std::string& ip, uint16_t port) {
    net::SockAddr a;
    net::parse_ip(ip, port, a);
    return a;
}

// A blocking client socket with timeouts; invalid Fd on failure.
inline net::Fd dial(uint16_t port, int family = AF_INET, Ms limit = 5000ms, const char* source_v4 = nullptr) {
    net::Fd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return fd;
    set_timeouts(fd.get(), limit);
    if (source_v4) {
        net::SockAddr src = loopback(0, AF_INET, source_v4);
        if (::bind(fd.get(), src.get(), src.length) < 0) return net::Fd();
    }
    net::SockAddr to = loopback(port, family);
    if (::connect(fd.get(), to.get(), to.length) < 0) return net::Fd();
    return fd;
}

inline bool send_all(int fd, const char* data, size_t size) {
    while (size > 0) {
        ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data += n;
        size -= static_cast<size_t>(n);
    }
    return true;
}
inline bool send_all(int fd, const std::string& data) { return send_all(fd, data.data(), data.size()); }

// Reads until EOF (true), an error or the socket's timeout (false).
inline bool read_to_eof(int fd, std::string& out, size_t limit = SIZE_MAX) {
    char buf[65536];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n == 0) return true;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return false;
        if (out.size() + static_cast<size_t>(n) > limit) return false;
        out.append(buf, static_cast<size_t>(n));
    }
}

// Streams to EOF into a checksum, for transfers too big to keep.
inline bool read_to_eof(int fd, Checksum& sum) {
    std::unique_ptr<char[]> buf(new char[65536]);
    for (;;) {
        ssize_t n = ::recv(fd, buf.get(), 65536, 0);
        if (n == 0) return true;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return false;
        sum.add(buf.get(), static_cast<size_t>(n));
    }
}

inline bool read_exact(int fd, std::string& out, size_t size) {
    out.resize(size);
    size_t got = 0;
    while (got < size) {
        ssize_t n = ::recv(fd, &out[got], size - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        got += static_cast<size_t>(n);
    }
    return true;
}

// Sends `size` pattern bytes with the given seed, in chunks, keeping a checksum.
inline bool send_pattern(int fd, uint64_t size, uint64_t seed, Checksum* sum = nullptr) {
    const std::string chunk = pattern(1 << 20, seed);
    uint64_t sent = 0;
    while (sent < size) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), size - sent));
        if (sum) sum->add(chunk.data(), n);
        if (!send_all(fd, chunk.data(), n)) return false;
        sent += n;
    }
    return true;
}

// "true" when the peer reset the connection (read fails with ECONNRESET) or
// closed it, within `limit`.
inline bool closed_by_peer(int fd, Ms limit = 5000ms) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) return false;
    char c;
    ssize_t n = ::recv(fd, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

// One whole exchange through the daemon: sends `request`, half-closes, reads
// the reply to EOF.
inline bool exchange(uint16_t port, const std::string& request, std::string& reply, int family = AF_INET,
                     Ms limit = 5000ms) {
    net::Fd fd = dial(port, family, limit);
    if (!fd || !send_all(fd.get(), request)) return false;
    ::shutdown(fd.get(), SHUT_WR);
    return read_to_eof(fd.get(), reply);
}

// `times` exchanges through `port`, each REQUIREd: the workers serve and
// have made what they keep (pools, buffers).
inline void warm_up(uint16_t port, int times, const std::string& request) {
    for (int i = 0; i < times; ++i) {
        std::string reply;
        REQUIRE(exchange(port, request, reply));
    }
}

// A loopback port that was free a moment ago (bound to port 0, then
// released), for a listener that must have a known number.
inline uint16_t free_port(int family = AF_INET) {
    net::Fd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    net::SockAddr at = loopback(0, family);
    if (!fd || ::bind(fd.get(), at.get(), at.length) < 0) return 0;
    net::SockAddr bound;
    net::local_address(fd.get(), bound);
    return bound.port();
}

// ---- upstream servers ----------------------------------------------------------

// A loopback TCP server: one thread accepts, one thread per connection runs
// the handler. Counts connections so tests can tell where traffic went.
class Server {
public:
    using Handler = std::function<void(int fd)>;

    // host_v4: another loopback address to listen on (e.g. "127.0.0.2"); IPv4 only.
    explicit Server(Handler handler, int family = AF_INET, uint16_t port = 0, int backlog = 1024,
                    const char* host_v4 = "127.0.0.1")
        : handler_(std::move(handler)), host_v4_(host_v4 ? host_v4 : "127.0.0.1") {
        listener_ = net::Fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
        int one = 1;
        setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        net::SockAddr at = loopback(port, family, host_v4_.c_str());
        if (::bind(listener_.get(), at.get(), at.length) < 0 || ::listen(listener_.get(), backlog) < 0) {
            listener_.reset();
            return;
        }
        net::SockAddr bound;
        net::local_address(listener_.get(), bound);
        port_ = bound.port();
        acceptor_ = std::thread([this] { accept_loop(); });
    }
    ~Server() { stop(); }

    bool ok() const { return port_ != 0; }
    uint16_t port() const { return port_; }
    std::string address() const { return (family() == AF_INET6 ? "[::1]:" : host_v4_ + ":") + std::to_string(port_); }
    int accepted() const { return accepted_.load(); }
    int active() const { return active_.load(); }

    // Stops listening at once (new connects are refused) and waits for the
    // handlers, which see their sockets shut down.
    void stop() {
        if (stopped_.exchange(true)) return;
        ::shutdown(listener_.get(), SHUT_RDWR);
        if (acceptor_.joinable()) acceptor_.join();
        listener_.reset();
        std::vector<Handled> handlers;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            for (int fd : open_)
                if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
            handlers.swap(handlers_);
        }
        for (Handled& h : handlers) h.thread.join();
    }

private:
    int family() const {
        net::SockAddr a;
        if (!listener_ || !net::local_address(listener_.get(), a)) return AF_INET;
        return a.family();
    }

    void accept_loop() {
        for (;;) {
            int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED) continue;
                return;
            }
            set_timeouts(fd, 30000ms);
            accepted_.fetch_add(1);
            join_finished();
            std::lock_guard<std::mutex> lock(mutex_);
            open_.push_back(fd);
            auto finished = std::make_shared<std::atomic<bool>>(false);
            handlers_.push_back(Handled{std::thread([this, fd, finished] {
                                            active_.fetch_add(1);
                                            handler_(fd);
                                            active_.fetch_sub(1);
                                            {
                                                std::lock_guard<std::mutex> inner(mutex_);
                                                for (int& open : open_)
                                                    if (open == fd) open = -1;
                                                ::close(fd);
                                            }
                                            finished->store(true);
                                        }),
                                        finished});
        }
    }

    // A finished handler's thread keeps its stack mapped until it is joined:
    // a test making tens of thousands of short connections would otherwise
    // run into vm.max_map_count and fail to start threads (EAGAIN).
    void join_finished() {
        std::vector<std::thread> done;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            auto ended = std::stable_partition(handlers_.begin(), handlers_.end(),
                                               [](const Handled& h) { return !h.finished->load(); });
            for (auto it = ended; it != handlers_.end(); ++it) done.push_back(std::move(it->thread));
            handlers_.erase(ended, handlers_.end());
            open_.erase(std::remove(open_.begin(), open_.end(), -1), open_.end());
        }
        for (std::thread& t : done) t.join();
    }

    Handler handler_;
    std::string host_v4_;
    net::Fd listener_;
    uint16_t port_ = 0;
    std::thread acceptor_;
    std::atomic<int> accepted_{0}, active_{0};
    std::atomic<bool> stopped_{false};
    std::mutex mutex_;
    std::vector<int> open_;
    struct Handled {
        std::thread thread;
        std::shared_ptr<std::atomic<bool>> finished;
    };
    std::vector<Handled> handlers_;
};

// Echoes every byte, then ends its side when the client does.
inline void echo(int fd) {
    char buf[65536];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        if (!send_all(fd, buf, static_cast<size_t>(n))) return;
    }
    ::shutdown(fd, SHUT_WR);
}

// "<bytes> <checksum>\n" of what `sum` has seen: the digest server's reply.
inline std::string digest_line(const Checksum& sum) {
    char line[64];
    snprintf(line, sizeof line, "%llu %016llx\n", static_cast<unsigned long long>(sum.bytes()),
             static_cast<unsigned long long>(sum.value()));
    return line;
}

inline std::string digest_line(const std::string& data) {
    Checksum sum;
    sum.add(data.data(), data.size());
    return digest_line(sum);
}

// Reads to EOF, then answers digest_line(): the reply only exists if the
// request's end (a half-close) got through.
inline void digest(int fd) {
    Checksum sum;
    if (!read_to_eof(fd, sum)) return;
    send_all(fd, digest_line(sum));
    ::shutdown(fd, SHUT_WR);
}

// Says its name first (server-speaks-first, like SSH), then echoes.
inline Server::Handler banner(std::string name) {
    return [name](int fd) {
        if (!send_all(fd, name + "\n")) return;
        echo(fd);
    };
}

// An upstream that never answers a SYN: a loopback listener with backlog 0
// whose one accept-queue place is taken by a connection nobody accepts, so
// the kernel drops every further SYN. The connecting side sees nothing
// until its own deadline.
class BlackHole {
public:
    BlackHole() {
        listener_ = net::Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        net::SockAddr at = loopback(0);
        if (!listener_ || ::bind(listener_.get(), at.get(), at.length) < 0 || ::listen(listener_.get(), 0) < 0) return;
        net::SockAddr bound;
        net::local_address(listener_.get(), bound);
        port_ = bound.port();
        // The first filler completes its handshake and fills the queue; the
        // second one's SYN is already dropped.
        for (int i = 0; i < 2; ++i) {
            net::Fd f = start_connect();
            if (!f) return;
            if (i == 0) {
                pollfd p{f.get(), POLLOUT, 0};
                if (::poll(&p, 1, 2000) != 1 || net::pending_error(f.get()) != 0) return;
            }
            net::SockAddr local;
            net::local_address(f.get(), local);
            filler_ports_.push_back(local.port());
            fillers_.push_back(std::move(f));
        }
    }

    uint16_t port() const { return port_; }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

    // True when a fresh connect gets no answer within `limit`.
    bool swallows(Ms limit = 300ms) const {
        if (!port_ || fillers_.size() != 2) return false;
        net::Fd probe = start_connect();
        if (!probe) return false;
        pollfd p{probe.get(), POLLOUT, 0};
        return ::poll(&p, 1, static_cast<int>(limit.count())) == 0;
    }

    // Accepts whatever completes a handshake until `until`, and returns
    // the peer ports of connections that are not our own fillers.
    std::vector<uint16_t> drain_strangers(Clock::time_point until) {
        std::vector<uint16_t> strangers;
        for (;;) {
            long left = std::chrono::duration_cast<Ms>(until - Clock::now()).count();
            if (left <= 0) break;
            pollfd p{listener_.get(), POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
            net::SockAddr peer;
            net::Fd got = net::accept_client(listener_.get(), peer);
            if (!got) continue;
            if (std::find(filler_ports_.begin(), filler_ports_.end(), peer.port()) == filler_ports_.end())
                strangers.push_back(peer.port());
            accepted_.push_back(std::move(got));
        }
        return strangers;
    }

private:
    net::Fd start_connect() const {
        net::Fd f(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        net::SockAddr to = loopback(port_);
        if (!f) return f;
        if (::connect(f.get(), to.get(), to.length) < 0 && errno != EINPROGRESS) return net::Fd();
        return f;
    }

    net::Fd listener_;
    uint16_t port_ = 0;
    std::vector<net::Fd> fillers_, accepted_;
    std::vector<uint16_t> filler_ports_;
};

// A port that had a listener a moment ago and has none now: connects to it
// are refused (until someone else binds it).
inline uint16_t closed_port() {
    Server gone(echo);
    uint16_t port = gone.port();
    gone.stop();
    return port;
}

// A loopback port that refuses: bound (so nobody else takes it) but not
// listening, so a SYN is answered with RST. A test may listen on fd() later.
class RefusedPort {
public:
    RefusedPort() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
        net::SockAddr at = loopback(0);
        if (!fd_ || ::bind(fd_.get(), at.get(), at.length) < 0) return;
        net::SockAddr bound;
        net::local_address(fd_.get(), bound);
        port_ = bound.port();
    }
    uint16_t port() const { return port_; }
    int fd() const { return fd_.get(); }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

private:
    net::Fd fd_;
    uint16_t port_ = 0;
};

// ---- the daemon ----------------------------------------------------------------

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/mixctl-test-XXXXXX";
        path_ = mkdtemp(tmpl) ? tmpl : "/tmp";
    }
    ~TempDir() {
        if (path_ != "/tmp") {
            std::string cmd = "rm -rf '" + path_ + "'";
            int rc = system(cmd.c_str());
            (void)rc;
        }
    }
    const std::string& path() const { return path_; }
    std::string write(const std::string& name, const std::string& text) const {
        std::string file = path_ + "/" + name;
        net::Fd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        if (fd) {
            ssize_t n = ::write(fd.get(), text.data(), text.size());
            (void)n;
        }
        return file;
    }

private:
    std::string path_;
};

struct Exit {
    int code = -1;    // exit status, or -1
    int signal = 0;   // killing signal, or 0
    bool exited() const { return code >= 0 || signal != 0; }
};

inline Exit decode(int status) {
    Exit e;
    if (WIFEXITED(status)) e.code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) e.signal = WTERMSIG(status);
    return e;
}

// Runs mixctl to completion (for -h, -check, bad flags); stdout and stderr
// are captured separately.
struct RunResult {
    Exit exit;
    std::string out, err;
};

inline std::string drain_fd(int fd) {
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
    return text;
}

// In a forked child: becomes mixctl with `args`; exit 127 if it cannot.
[[noreturn]] inline void exec_program(const std::string& path, const std::vector<std::string>& args) {
    std::vector<std::string> all{path};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : all) argv.push_back(&a[0]);
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
}

[[noreturn]] inline void exec_mixctl(const std::vector<std::string>& args) { exec_program(mixctl_path(), args); }

// Runs `path` with `args` to its end (killed after `limit`), collecting
// stdout, stderr and how it ended.
inline RunResult run_program(const std::string& path, const std::vector<std::string>& args, Ms limit = 10000ms) {
    RunResult result;
    TempDir dir;
    std::string out_file = dir.path() + "/out", err_file = dir.path() + "/err";
    pid_t pid = fork();
    if (pid == 0) {
        int out = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(out, 1);
        dup2(err, 2);
        exec_program(path, args);
    }
    int status = 0;
    bool done = wait_until([&] { return waitpid(pid, &status, WNOHANG) == pid; }, limit);
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    result.exit = decode(status);
    net::Fd o(::open(out_file.c_str(), O_RDONLY)), e(::open(err_file.c_str(), O_RDONLY));
    result.out = drain_fd(o.get());
    result.err = drain_fd(e.get());
    return result;
}

inline RunResult run(const std::vector<std::string>& args, Ms limit = 10000ms) {
    return run_program(mixctl_path(), args, limit);
}

// This test binary again, e.g. with a hidden test's name.
inline RunResult run_self(const std::vector<std::string>& args, Ms limit = 30000ms) {
    char self[4096];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return RunResult{};
    return run_program(std::string(self, static_cast<size_t>(n)), args, limit);
}

// Raises this process's soft descriptor limit to its hard limit; returns the
// soft limit now in force (0 if it cannot be read).
inline rlim_t raise_own_fd_limit() {
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return 0;
    if (lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
        getrlimit(RLIMIT_NOFILE, &lim);
    }
    return lim.rlim_cur;
}

inline int fd_count(pid_t pid) {
    std::string path = "/proc/" + std::to_string(pid) + "/fd";
    DIR* dir = opendir(path.c_str());
    if (!dir) return -1;
    int n = 0;
    while (dirent* e = readdir(dir))
        if (e->d_name[0] != '.') ++n;
    closedir(dir);
    return n - 1;  // the DIR's own descriptor is not ours to count
}

// The fd count of a process once it has not changed for 300 ms: a freshly
// forked worker is still opening and closing descriptors for a moment.
inline int settled_fd_count(pid_t pid, Ms limit = 3000ms) {
    int last = fd_count(pid);
    Clock::time_point stable_since = Clock::now(), end = Clock::now() + limit;
    while (Clock::now() < end) {
        std::this_thread::sleep_for(20ms);
        int now = fd_count(pid);
        if (now != last) {
            last = now;
            stable_since = Clock::now();
        } else if (Clock::now() - stable_since >= 300ms) {
            break;
        }
    }
    return last;
}

// The descriptor numbers a process holds.
inline std::set<int> fd_numbers(pid_t pid) {
    std::set<int> out;
    std::string path = "/proc/" + std::to_string(pid) + "/fd";
    DIR* dir = opendir(path.c_str());
    if (!dir) return out;
    while (dirent* e = readdir(dir))
        if (e->d_name[0] != '.') out.insert(atoi(e->d_name));
    closedir(dir);
    return out;
}

// The soft limit under which exactly `room` descriptor numbers are free
// (the kernel hands out the lowest free number and refuses numbers at or
// above the limit); with room 0, the lowest number the process does not hold.
inline rlim_t limit_with_room(pid_t pid, int room) {
    std::set<int> held = fd_numbers(pid);
    int n = 0;
    for (int free_seen = 0;; ++n) {
        if (held.count(n)) continue;
        if (++free_seen > room) break;
    }
    return static_cast<rlim_t>(n);
}

// Lowers only the soft descriptor limit of a running process (root cannot
// raise a lowered hard limit again) and puts it back when it goes.
class SoftFdLimit {
public:
    SoftFdLimit(pid_t pid, rlim_t soft) : pid_(pid) {
        if (::prlimit(pid_, RLIMIT_NOFILE, nullptr, &before_) != 0) return;
        rlimit lowered = before_;
        lowered.rlim_cur = soft;
        ok_ = ::prlimit(pid_, RLIMIT_NOFILE, &lowered, nullptr) == 0;
    }
    ~SoftFdLimit() {
        if (ok_) ::prlimit(pid_, RLIMIT_NOFILE, &before_, nullptr);
    }
    SoftFdLimit(const SoftFdLimit&) = delete;
    SoftFdLimit& operator=(const SoftFdLimit&) = delete;
    bool ok() const { return ok_; }

private:
    pid_t pid_;
    rlimit before_{};
    bool ok_ = false;
};

// Direct children of pid (the workers of a mixctl parent).
inline std::vector<pid_t> children(pid_t pid) {
    std::vector<pid_t> out;
    std::string path = "/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children";
    net::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return out;
    std::string text = drain_fd(fd.get());
    size_t i = 0;
    while (i < text.size()) {
        size_t end = text.find(' ', i);
        if (end == std::string::npos) end = text.size();
        if (end > i) out.push_back(static_cast<pid_t>(atoi(text.substr(i, end - i).c_str())));
        i = end + 1;
    }
    return out;
}

// CPU time (user + system) of one process, in clock ticks.
inline long cpu_ticks(pid_t pid) {
    std::string path = "/proc/" + std::to_string(pid) + "/stat";
    net::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return -1;
    std::string text = drain_fd(fd.get());
    size_t paren = text.rfind(')');
    if (paren == std::string::npos) return -1;
    // Fields after ") ": state is field 3; utime and stime are 14 and 15.
    const char* p = text.c_str() + paren + 2;
    long utime = 0, stime = 0;
    int field = 3;
    while (*p && field < 14) {
        if (*p++ == ' ') ++field;
    }
    if (sscanf(p, "%ld %ld", &utime, &stime) != 2) return -1;
    return utime + stime;
}

inline long rss_kib(pid_t pid) {
    std::string path = "/proc/" + std::to_string(pid) + "/status";
    net::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return -1;
    std::string text = drain_fd(fd.get());
    size_t at = text.find("VmRSS:");
    return at == std::string::npos ? -1 : atol(text.c_str() + at + 6);
}

// A running mixctl with a generated rules file. Its stderr is collected by a
// thread; the process group is killed when the Daemon goes away.
class Daemon {
public:
    Daemon(const std::string& rules_yaml, std::vector<std::string> args = {"-w", "1"},
           std::function<void()> in_child = nullptr) {
        file_ = dir_.write("rules.yaml", rules_yaml);
        int pipe_ends[2];
        if (::pipe2(pipe_ends, O_CLOEXEC) < 0) return;
        pid_ = fork();
        if (pid_ == 0) {
            setpgid(0, 0);
            dup2(pipe_ends[1], 2);
            dup2(pipe_ends[1], 1);
            if (in_child) in_child();
            args.insert(args.begin(), {"-f", file_});
            exec_mixctl(args);
        }
        setpgid(pid_, pid_);
        ::close(pipe_ends[1]);
        log_fd_.reset(pipe_ends[0]);
        reader_ = std::thread([this] { collect(); });
    }

    ~Daemon() {
        if (pid_ > 0 && !exit_.exited()) {
            kill(-pid_, SIGKILL);
            kill(pid_, SIGKILL);
            int status;
            waitpid(pid_, &status, 0);
        }
        if (reader_.joinable()) reader_.join();
        if (test_failed()) {
            // The last 64 KiB: a verbose soak logs megabytes.
            std::string text = log();
            size_t size = text.size(), keep = 64 * 1024;
            if (size > keep) {
                size_t cut = text.find('\n', size - keep);
                text = "[...]" + text.substr(cut == std::string::npos ? size - keep : cut);
            }
            fprintf(stderr, "---- the failed test's mixctl (pid %d, %s) logged %zu bytes:\n%s%s---- end of log\n",
                    static_cast<int>(pid_), file_.c_str(), size, text.c_str(),
                    text.empty() || text.back() == '\n' ? "" : "\n");
        }
    }

    pid_t pid() const { return pid_; }
    const std::string& file() const { return file_; }
    const TempDir& dir() const { return dir_; }

    std::string log() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return log_;
    }

    size_t count(const std::string& needle) const {
        std::string text = log();
        size_t n = 0;
        for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
        return n;
    }

    bool wait_log(const std::string& needle, Ms limit = patience, size_t times = 1) const {
        return wait_until([&] { return count(needle) >= times; }, limit);
    }

    // Waits for the "Forwarding (name) from: ADDR to:" line and returns the
    // port actually bound (rules may ask for port 0). 0 if it never came.
    uint16_t port(const std::string& rule_name, Ms limit = patience) const {
        std::string needle = "Forwarding (" + rule_name + ") from: ";
        if (!wait_log(needle, limit)) return 0;
        std::string text = log();
        size_t at = text.find(needle) + needle.size();
        size_t end = text.find(" to:", at);
        size_t colon = text.rfind(':', end);
        return static_cast<uint16_t>(atoi(text.substr(colon + 1, end - colon - 1).c_str()));
    }

    // Waits until `n` workers run; returns them.
    std::vector<pid_t> workers(size_t n, Ms limit = patience) const {
        std::vector<pid_t> found;
        wait_until([&] { return (found = children(pid_)).size() == n; }, limit);
        return found;
    }

    // The start most integration tests share: REQUIREs that rule `rule`
    // listens and that `n` workers run; returns the rule's port.
    uint16_t ready_port(size_t n, const std::string& rule = "r") const {
        uint16_t bound = port(rule);
        REQUIRE(bound != 0);
        REQUIRE(workers(n).size() == n);
        return bound;
    }

    void signal(int number) const { kill(pid_, number); }

    // Once the daemon has exited, its last lines may still be in the pipe:
    // wait (bounded) for the reader to reach the end, so log() has them all.
    Exit wait_exit(Ms limit = 10000ms) {
        if (exit_.exited()) return exit_;
        int status = 0;
        if (wait_until([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, limit)) {
            exit_ = decode(status);
            wait_until([&] { return log_done_.load(); }, 5000ms);
        }
        return exit_;
    }

private:
    void collect() {
        char buf[4096];
        for (;;) {
            ssize_t n = ::read(log_fd_.get(), buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                log_done_ = true;
                return;
            }
            std::lock_guard<std::mutex> lock(mutex_);
            log_.append(buf, static_cast<size_t>(n));
        }
    }

    TempDir dir_;
    std::string file_;
    pid_t pid_ = -1;
    Exit exit_;
    net::Fd log_fd_;
    std::thread reader_;
    mutable std::mutex mutex_;
    std::string log_;
    std::atomic<bool> log_done_{false};
};

// The daemon's parent is still running.
inline bool alive(Daemon& d) { return !d.wait_exit(0ms).exited() && kill(d.pid(), 0) == 0; }

// One rule, in the Go tool's block style.
inline std::string rule_yaml(const std::string& name, const std::string& from,
                             const std::vector<std::string>& to) {
    std::string text = "- name: " + name + "\n  from: \"" + from + "\"\n  to:\n";
    for (const std::string& t : to) text += "    - \"" + t + "\"\n";
    return text;
}

inline std::string rules_yaml(const std::vector<std::string>& rules) {
    std::string text = "version: 0.1\nrules:\n";
    for (const std::string& r : rules) text += r;
    return text;
}

// A rules file with one rule "r" from `from` (an ephemeral loopback port by
// default) to the upstreams `to`.
inline std::string one_rule(const std::vector<std::string>& to, const std::string& from = "127.0.0.1:0") {
    return rules_yaml({rule_yaml("r", from, to)});
}

inline std::string one_rule(const Server& up, const std::string& from = "127.0.0.1:0") {
    return one_rule({up.address()}, from);
}

// ---- UDP --------------------------------------------------------------------------

// A loopback UDP server on its own thread. The handler gets each datagram
// and the sender, and returns the reply (nullopt-like: `reply = false` sends
// nothing). Counts datagrams so tests can tell where traffic went.
class UdpServer {
public:
    using Handler = std::function<std::string(const std::string& data, const net::SockAddr& from, bool& reply)>;

    explicit UdpServer(Handler handler, const char* host_v4 = "127.0.0.1", uint16_t port = 0)
        : handler_(std::move(handler)) {
        fd_ = net::Fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        net::SockAddr at = loopback(port, AF_INET, host_v4);
        if (!fd_ || ::bind(fd_.get(), at.get(), at.length) < 0) {
            fd_.reset();
            return;
        }
        net::local_address(fd_.get(), bound_);
        thread_ = std::thread([this] { loop(); });
    }
    ~UdpServer() { stop(); }

    void stop() {
        if (stopped_.exchange(true)) return;
        if (thread_.joinable()) thread_.join();
        fd_.reset();
    }
    bool ok() const { return fd_.valid(); }
    uint16_t port() const { return bound_.port(); }
    std::string address() const { return bound_.text(); }
    int received() const { return received_.load(); }

private:
    void loop() {
        std::vector<char> buf(70000);
        while (!stopped_) {
            pollfd p{fd_.get(), POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            net::SockAddr from;
            from.length = sizeof from.storage;
            ssize_t n = ::recvfrom(fd_.get(), buf.data(), buf.size(), 0, from.get(), &from.length);
            if (n < 0) continue;
            received_.fetch_add(1);
            bool reply = true;
            std::string out = handler_(std::string(buf.data(), static_cast<size_t>(n)), from, reply);
            if (reply) ::sendto(fd_.get(), out.data(), out.size(), 0, from.get(), from.length);
        }
    }

    Handler handler_;
    net::Fd fd_;
    net::SockAddr bound_;
    std::thread thread_;
    std::atomic<bool> stopped_{false};
    std::atomic<int> received_{0};
};

inline std::string udp_echo(const std::string& data, const net::SockAddr&, bool&) { return data; }

// Replies "NAME PEER": which upstream answered and from which address the
// relay's socket came.
inline UdpServer::Handler udp_who(std::string name) {
    return [name](const std::string&, const net::SockAddr& from, bool&) { return name + " " + from.text(); };
}

// A UDP client socket connected to `host:port`: the kernel then drops any
// reply that does not come from exactly that address.
inline net::Fd udp_client(uint16_t port, const char* host = "127.0.0.1", Ms limit = 2000ms, int family = AF_INET,
                          const char* source_v4 = nullptr) {
    net::Fd fd(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) return fd;
    set_timeouts(fd.get(), limit);
    if (source_v4) {
        net::SockAddr src = loopback(0, AF_INET, source_v4);
        if (::bind(fd.get(), src.get(), src.length) < 0) return net::Fd();
    }
    net::SockAddr to = family == AF_INET6 ? loopback(port, AF_INET6) : loopback(port, AF_INET, host);
    if (::connect(fd.get(), to.get(), to.length) < 0) return net::Fd();
    return fd;
}

// Sends one datagram and waits for one reply; false on timeout or error.
inline bool udp_ask(int fd, const std::string& request, std::string& reply, size_t max = 70000) {
    if (::send(fd, request.data(), request.size(), 0) != static_cast<ssize_t>(request.size())) return false;
    std::vector<char> buf(max);
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) return false;
    reply.assign(buf.data(), static_cast<size_t>(n));
    return true;
}

}  // namespace harness
