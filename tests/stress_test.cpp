// Load and abuse: slow peers with big transfers (memory stays bounded),
// thousands of idle connections, a burst of resets. The real mixctl between
// real sockets on loopback; every wait has a deadline.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <thread>

#include <sys/resource.h>

#include "harness.hpp"

using namespace harness;

namespace {

// Samples a process's RSS every few milliseconds while alive; keeps the peak.
class RssSampler {
public:
    explicit RssSampler(pid_t pid) : pid_(pid), thread_([this] { loop(); }) {}
    ~RssSampler() { stop(); }
    void stop() {
        running_ = false;
        if (thread_.joinable()) thread_.join();
    }
    long peak() const { return peak_.load(); }

private:
    void loop() {
        while (running_) {
            long kib = rss_kib(pid_);
            if (kib > peak_.load()) peak_ = kib;
            std::this_thread::sleep_for(5ms);
        }
    }
    pid_t pid_;
    std::atomic<bool> running_{true};
    std::atomic<long> peak_{0};
    std::thread thread_;
};

// A single-threaded poll() echo server, for thousands of connections that a
// thread-per-connection server would turn into thousands of threads.
class PollEcho {
public:
    PollEcho() {
        listener_ = net::Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        int one = 1;
        setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        net::SockAddr at = loopback(0);
        if (::bind(listener_.get(), at.get(), at.length) < 0 || ::listen(listener_.get(), 4096) < 0) {
            listener_.reset();
            return;
        }
        net::SockAddr bound;
        net::local_address(listener_.get(), bound);
        port_ = bound.port();
        if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) < 0) return;
        thread_ = std::thread([this] { loop(); });
    }
    ~PollEcho() {
        running_ = false;
        if (wake_[1] >= 0) {
            ssize_t n = ::write(wake_[1], "x", 1);
            (void)n;
        }
        if (thread_.joinable()) thread_.join();
        for (int fd : conns_) ::close(fd);
        for (int fd : wake_)
            if (fd >= 0) ::close(fd);
    }
    bool ok() const { return port_ != 0 && thread_.joinable(); }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
    int accepted() const { return accepted_.load(); }
    int active() const { return active_.load(); }

private:
    void loop() {
        std::vector<pollfd> fds;
        char buf[4096];
        while (running_) {
            fds.clear();
            fds.push_back(pollfd{wake_[0], POLLIN, 0});
            fds.push_back(pollfd{listener_.get(), POLLIN, 0});
            for (int fd : conns_) fds.push_back(pollfd{fd, POLLIN, 0});
            int ready = ::poll(fds.data(), fds.size(), 200);
            if (ready <= 0) continue;
            if (fds[1].revents) {
                for (;;) {
                    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
                    if (fd < 0) break;
                    conns_.push_back(fd);
                    accepted_.fetch_add(1);
                    active_.fetch_add(1);
                }
            }
            std::vector<int> gone;
            for (size_t i = 2; i < fds.size(); ++i) {
                if (!fds[i].revents) continue;
                int fd = fds[i].fd;
                ssize_t n = ::recv(fd, buf, sizeof buf, 0);
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
                // Echo replies are tiny: the socket buffer always has room.
                if (n <= 0 || ::send(fd, buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) gone.push_back(fd);
            }
            for (int fd : gone) {
                ::close(fd);
                conns_.erase(std::find(conns_.begin(), conns_.end(), fd));
                active_.fetch_sub(1);
            }
        }
    }

    net::Fd listener_;
    uint16_t port_ = 0;
    int wake_[2] = {-1, -1};
    std::thread thread_;
    std::atomic<bool> running_{true};
    std::atomic<int> accepted_{0}, active_{0};
    std::vector<int> conns_;  // the loop thread's own
};

// Reads `size` bytes at about `per_ms` bytes per millisecond.
bool read_paced(int fd, Checksum& sum, uint64_t size, size_t per_ms) {
    std::unique_ptr<char[]> buf(new char[per_ms]);
    uint64_t got = 0;
    while (got < size) {
        size_t want = static_cast<size_t>(std::min<uint64_t>(per_ms, size - got));
        ssize_t n = ::recv(fd, buf.get(), want, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        sum.add(buf.get(), static_cast<size_t>(n));
        got += static_cast<uint64_t>(n);
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

constexpr uint64_t big = 200ull << 20;   // 200 MiB
constexpr long rss_slack_kib = 4 * 1024; // the relay parks at most 32 KiB per direction

// Room for n clients' descriptors, a -w 2 daemon in front of a PollEcho
// upstream, and both workers up: the setup of the tests below.
struct TwoWorkersOverEcho {
    explicit TwoWorkersOverEcho(int n)
        : fd_room(raise_own_fd_limit() >= static_cast<rlim_t>(2 * n + 200)),
          d(one_rule({up.address()}), {"-w", "2", "-v=false"}) {
        REQUIRE(fd_room);
        REQUIRE(up.ok());
        port = d.ready_port(2);
        workers = d.workers(2);
    }
    bool fd_room;
    PollEcho up;
    Daemon d;
    uint16_t port = 0;
    std::vector<pid_t> workers;
};

// mixctl -w 1 with rule "r" to `up` and rule "warm" to a digest server; the
// worker's RSS once 4 MiB went through "warm" (buffers, allocator) is the
// baseline a stream through "r" must stay near.
struct WarmedWorker {
    explicit WarmedWorker(const Server& up)
        : d(rules_yaml({rule_yaml("r", "127.0.0.1:0", {up.address()}),
                        rule_yaml("warm", "127.0.0.1:0", {warm_up.address()})}),
            {"-w", "1", "-v=false"}),
          port(d.ready_port(1)), worker(d.workers(1)[0]) {
        std::string reply;
        REQUIRE(exchange(d.ready_port(1, "warm"), pattern(4 << 20, 1), reply));
        baseline = rss_kib(worker);
        REQUIRE(baseline > 0);
    }
    Server warm_up{digest};
    Daemon d;
    uint16_t port;
    pid_t worker;
    long baseline = 0;
};

}  // namespace

TEST_CASE("a slow reader gets all 200 MB from a fast upstream while the worker's memory stays flat", "[stress]") {
    std::atomic<uint64_t> sent_sum{0};
    std::atomic<bool> sent_all{false};
    Server up([&](int fd) {
        set_timeouts(fd, 30000ms);
        Checksum sum;
        if (send_pattern(fd, big, 11, &sum)) {
            sent_sum = sum.value();
            sent_all = true;
        }
        ::shutdown(fd, SHUT_WR);
        char c;
        while (::recv(fd, &c, 1, 0) > 0) {
        }
    });
    WarmedWorker f(up);
    const uint16_t port = f.port;
    const long baseline = f.baseline;

    Clock::time_point start = Clock::now();
    RssSampler rss(f.worker);
    net::Fd fd = dial(port, AF_INET, 30000ms);
    REQUIRE(fd);
    std::this_thread::sleep_for(1000ms);                          // reads nothing at first
    Checksum got;
    REQUIRE(read_paced(fd.get(), got, 8ull << 20, 16 * 1024));    // then slowly: 8 MiB at ~16 MB/s
    std::this_thread::sleep_for(300ms);                           // stalls again
    bool eof = read_to_eof(fd.get(), got);                        // then as fast as it can
    rss.stop();
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    INFO("baseline RSS " << baseline << " KiB, peak " << rss.peak() << " KiB, " << seconds << " s");
    CHECK(eof);
    CHECK(wait_until([&] { return sent_all.load(); }));
    CHECK(got.bytes() == big);
    CHECK(got.value() == sent_sum.load());
    CHECK(rss.peak() > 0);
    CHECK(rss.peak() <= baseline + rss_slack_kib);
}

TEST_CASE("a client sending 200 MB to a slow upstream delivers every byte while the worker's memory stays flat", "[stress]") {
    // The upstream reads nothing for a second, then slowly, then stalls
    // again, then reads at full speed; it answers with a digest at EOF.
    Server up([](int fd) {
        set_timeouts(fd, 30000ms);
        std::this_thread::sleep_for(1000ms);
        Checksum sum;
        if (!read_paced(fd, sum, 8ull << 20, 16 * 1024)) return;
        std::this_thread::sleep_for(300ms);
        if (!read_to_eof(fd, sum)) return;
        send_all(fd, digest_line(sum));
        ::shutdown(fd, SHUT_WR);
    });
    WarmedWorker f(up);
    const uint16_t port = f.port;
    const long baseline = f.baseline;

    Clock::time_point start = Clock::now();
    RssSampler rss(f.worker);
    net::Fd fd = dial(port, AF_INET, 30000ms);
    REQUIRE(fd);
    // The client writes in bursts with pauses: 8 MiB, then 20 ms of nothing.
    const std::string chunk = pattern(1 << 20, 77);
    Checksum sent;
    bool ok = true;
    for (uint64_t done = 0; ok && done < big; done += chunk.size()) {
        sent.add(chunk.data(), chunk.size());
        ok = send_all(fd.get(), chunk);
        if ((done / chunk.size()) % 8 == 7) std::this_thread::sleep_for(20ms);
    }
    REQUIRE(ok);
    ::shutdown(fd.get(), SHUT_WR);
    std::string reply;
    bool eof = read_to_eof(fd.get(), reply);
    rss.stop();
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    INFO("baseline RSS " << baseline << " KiB, peak " << rss.peak() << " KiB, " << seconds << " s");
    CHECK(eof);
    CHECK(reply == digest_line(sent));
    CHECK(rss.peak() > 0);
    CHECK(rss.peak() <= baseline + rss_slack_kib);
}

TEST_CASE("a burst of 500 connections through 2 workers reaches the upstream within seconds", "[stress]") {
    // The workers share the listener; however they take turns, a burst
    // must not wait on timers: 500 connects on loopback take milliseconds.
    const int n = 500;
    TwoWorkersOverEcho f(n);
    PollEcho& up = f.up;
    const uint16_t port = f.port;
    std::vector<net::Fd> clients;
    Clock::time_point start = Clock::now();
    for (int i = 0; i < n; ++i) {
        clients.push_back(dial(port, AF_INET, 10000ms));
        REQUIRE(clients.back());
    }
    bool all_up = wait_until([&] { return up.active() == n; }, 5000ms);
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    INFO("upstream has " << up.active() << " of " << n << " after " << seconds << " s");
    REQUIRE(all_up);
    for (net::Fd& fd : clients) REQUIRE(send_all(fd.get(), std::string("x")));
    int good = 0;
    for (net::Fd& fd : clients) {
        std::string echoed;
        if (read_exact(fd.get(), echoed, 1) && echoed == "x") ++good;
    }
    CHECK(good == n);
}

TEST_CASE("2,000 idle connections are held open at once, all still work, and every descriptor is freed", "[stress]") {
    const int n = 2000;
    TwoWorkersOverEcho f(n);
    PollEcho& up = f.up;
    Daemon& d = f.d;
    const uint16_t port = f.port;
    const std::vector<pid_t> workers = f.workers;
    std::vector<int> baseline;
    for (pid_t w : workers) baseline.push_back(settled_fd_count(w));
    const int parent_baseline = fd_count(d.pid());

    std::vector<net::Fd> clients;
    clients.reserve(n);
    for (int i = 0; i < n; ++i) {
        clients.push_back(dial(port, AF_INET, 10000ms));
        if (!clients.back()) FAIL("connect " << i << " failed: " << strerror(errno));
    }
    // Every one reaches the upstream and stays there, idle.
    Clock::time_point start = Clock::now();
    bool all_up = wait_until([&] { return up.active() == n; }, 15000ms);
    INFO("upstream active " << up.active() << ", accepted " << up.accepted() << " after "
                            << std::chrono::duration<double>(Clock::now() - start).count() << " s");
    REQUIRE(all_up);
    int held = 0;
    for (size_t i = 0; i < workers.size(); ++i) held += fd_count(workers[i]) - baseline[i];
    CHECK(held == 2 * n);  // a client and an upstream socket per connection
    std::this_thread::sleep_for(500ms);  // idle for a moment
    CHECK(up.active() == n);

    // Each still works: one byte out, the same byte back.
    for (int i = 0; i < n; ++i) {
        char c = static_cast<char>('a' + i % 26);
        REQUIRE(send_all(clients[static_cast<size_t>(i)].get(), &c, 1));
    }
    int good = 0;
    for (int i = 0; i < n; ++i) {
        std::string echoed;
        if (read_exact(clients[static_cast<size_t>(i)].get(), echoed, 1) && echoed[0] == static_cast<char>('a' + i % 26))
            ++good;
    }
    CHECK(good == n);

    clients.clear();  // closes them all
    CHECK(wait_until([&] { return up.active() == 0; }, 15000ms));
    for (size_t i = 0; i < workers.size(); ++i) {
        INFO("worker " << i);
        CHECK(wait_until([&] { return fd_count(workers[i]) == baseline[i]; }, 10000ms));
    }
    CHECK(fd_count(d.pid()) == parent_baseline);
    CHECK(d.workers(2) == workers);  // no worker died on the way
    INFO(d.log());
    CHECK(d.count("exited") == 0);
}

TEST_CASE("500 clients resetting at once leave the daemon serving and no descriptor behind", "[stress]") {
    const int n = 500;
    TwoWorkersOverEcho f(n);
    PollEcho& up = f.up;
    Daemon& d = f.d;
    const uint16_t port = f.port;
    const std::vector<pid_t> workers = f.workers;
    std::vector<int> baseline;
    for (pid_t w : workers) baseline.push_back(settled_fd_count(w));

    std::vector<net::Fd> clients;
    clients.reserve(n);
    for (int i = 0; i < n; ++i) {
        clients.push_back(dial(port, AF_INET, 10000ms));
        REQUIRE(clients.back());
    }
    const std::string hello = "hello, then gone";
    for (net::Fd& fd : clients) send_all(fd.get(), hello);
    for (net::Fd& fd : clients) {
        linger hard{1, 0};
        setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    }
    clients.clear();  // 500 RSTs, back to back

    // Still alive, and serves a normal connection right away.
    CHECK(::kill(d.pid(), 0) == 0);
    CHECK_FALSE(d.wait_exit(200ms).exited());
    {
        net::Fd fd = dial(port, AF_INET, 10000ms);
        REQUIRE(fd);
        REQUIRE(send_all(fd.get(), std::string("ping")));
        std::string echoed;
        REQUIRE(read_exact(fd.get(), echoed, 4));
        CHECK(echoed == "ping");
    }
    CHECK(wait_until([&] { return up.active() == 0; }, 10000ms));
    for (size_t i = 0; i < workers.size(); ++i) {
        INFO("worker " << i << " fds " << fd_count(workers[i]) << " baseline " << baseline[i]);
        CHECK(wait_until([&] { return fd_count(workers[i]) == baseline[i]; }, 10000ms));
    }
    CHECK(d.workers(2) == workers);
    INFO(d.log());
    CHECK(d.count("exited") == 0);
}

namespace {

long wakeups(pid_t pid) {  // context switches the process asked for: each blocking poll() that returned
    net::Fd fd(::open(("/proc/" + std::to_string(pid) + "/status").c_str(), O_RDONLY | O_CLOEXEC));
    std::string text = fd ? drain_fd(fd.get()) : "";
    size_t at = text.find("voluntary_ctxt_switches:");
    return at == std::string::npos ? -1 : std::stol(text.substr(at + 24));
}

}  // namespace

TEST_CASE("idle workers holding 1,000 connections sleep: a held-back one wakes a few times a second, the other not at all", "[stress]") {
    // One worker is stopped while 1,000 clients connect, so the other takes
    // them all (the stopped one goes stale after a second). Resumed, the
    // stopped worker looks alive again and the busy one is far ahead: held
    // back, it rechecks the board on a timer, and each wakeup makes poll()
    // look at its 2,000 sockets. Paced, that is a few wakeups a second, not
    // one every 5 ms.
    const int n = 1000;
    TwoWorkersOverEcho f(n);
    PollEcho& up = f.up;
    const uint16_t port = f.port;
    const std::vector<pid_t> workers = f.workers;
    REQUIRE(::kill(workers[1], SIGSTOP) == 0);
    std::vector<net::Fd> clients;
    for (int i = 0; i < n; ++i) {
        clients.push_back(dial(port, AF_INET, 10000ms));
        REQUIRE(clients.back());
    }
    REQUIRE(wait_until([&] { return up.active() == n; }, 20000ms));
    REQUIRE(::kill(workers[1], SIGCONT) == 0);
    std::this_thread::sleep_for(500ms);
    long before = wakeups(workers[0]), other_before = wakeups(workers[1]);
    std::this_thread::sleep_for(3000ms);
    long woke = wakeups(workers[0]) - before, other_woke = wakeups(workers[1]) - other_before;
    INFO("the busy worker woke " << woke << " times in 3 s, the other " << other_woke);
    CHECK(before >= 0);
    CHECK(woke <= 60);
    CHECK(other_woke <= 3);  // not held back, idle: nothing to wake it
    // Still serves: a held-back worker only stops accepting.
    const std::string ping = "still here";
    REQUIRE(send_all(clients[0].get(), ping));
    std::string echoed;
    CHECK((read_exact(clients[0].get(), echoed, ping.size()) && echoed == ping));
}
