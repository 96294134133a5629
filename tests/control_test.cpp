// The control socket (issue 15): the command parser (table), the answers
// over a mapped shared state, and the real mixctl driven through its socket
// with `mixctl -ctl` while a client loop keeps connecting.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "control.hpp"
#include "harness.hpp"

using namespace harness;

namespace {

// ---- parser, as a table ------------------------------------------------------

struct Case {
    std::string line;
    bool ok;
    std::string expect;  // for ok: "verb rule|upstream|weight"; else a part of the error
};

std::string describe(const control::Command& c) {
    static const char* verbs[] = {"show", "disable", "enable", "weight", "help"};
    return std::string(verbs[static_cast<int>(c.verb)]) + " " + c.rule + "|" + c.upstream + "|" +
           std::to_string(c.weight);
}

struct Mapped {
    config::Config cfg;
    config::Diagnostics diag;
    upstreams::Shared shared;
    bool ok = false;
    explicit Mapped(const std::string& yaml) {
        if (!config::parse_text(yaml, "rules.yaml", cfg, diag)) return;
        std::vector<std::vector<std::vector<net::SockAddr>>> resolved;
        for (const config::Rule& r : cfg.rules) {
            resolved.emplace_back();
            for (size_t u = 0; u < r.to.size(); ++u) resolved.back().push_back({ip_port("127.0.0.1", 1)});
        }
        ok = shared.map(cfg, resolved);
    }
};

// ---- the live daemon ----------------------------------------------------------

// Connects again and again, reading each upstream's banner; counts where
// connections went and every one that was not served.
class ClientLoop {
public:
    explicit ClientLoop(uint16_t port) : port_(port), thread_([this] { run(); }) {}
    ~ClientLoop() { stop(); }
    void stop() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }
    int failed() const { return failed_.load(); }
    int served() const { return served_.load(); }
    std::map<std::string, int> since(size_t mark) const {
        std::lock_guard<std::mutex> lock(mutex_);
        std::map<std::string, int> out;
        for (size_t i = mark; i < names_.size(); ++i) ++out[names_[i]];
        return out;
    }
    size_t mark() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return names_.size();
    }
    std::vector<long> latencies_us() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return latencies_;
    }
    void reset_latencies() {
        std::lock_guard<std::mutex> lock(mutex_);
        latencies_.clear();
    }

private:
    void run() {
        Clock::time_point end = Clock::now() + 120s;  // bounded, whatever the test does
        while (!stop_ && Clock::now() < end) {
            Clock::time_point start = Clock::now();
            net::Fd fd = dial(port_, AF_INET, 5000ms);
            std::string line;
            char buf[64];
            while (fd && line.find('\n') == std::string::npos && line.size() < 64) {
                ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) break;
                line.append(buf, static_cast<size_t>(n));
            }
            if (line.find('\n') == std::string::npos) {
                failed_.fetch_add(1);
                continue;
            }
            long us = static_cast<long>(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count());
            served_.fetch_add(1);
            std::lock_guard<std::mutex> lock(mutex_);
            names_.push_back(line.substr(0, line.find('\n')));
            latencies_.push_back(us);
        }
    }

    uint16_t port_;
    std::atomic<bool> stop_{false};
    std::atomic<int> failed_{0}, served_{0};
    mutable std::mutex mutex_;
    std::vector<std::string> names_;
    std::vector<long> latencies_;
    std::thread thread_;
};

RunResult ctl(const Daemon& d, const std::string& command) { return run({"-f", d.file(), "-ctl", command}); }

// Sends raw bytes to a Unix socket and reads the answer to EOF.
net::Fd unix_dial(const std::string& path, Ms limit = 5000ms) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof addr.sun_path - 1);
    net::Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    set_timeouts(fd.get(), limit);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fd.reset();
    return fd;
}

// With `half_close`, the line is ended by EOF instead of a newline.
std::string raw_ask(const std::string& path, const std::string& bytes, Ms limit = 5000ms, bool half_close = false) {
    net::Fd fd = unix_dial(path, limit);
    if (!fd) return "connect failed";
    if (!bytes.empty()) send_all(fd.get(), bytes);
    if (half_close) ::shutdown(fd.get(), SHUT_WR);
    std::string reply;
    read_to_eof(fd.get(), reply);
    return reply;
}

std::string with_control(const std::string& path, const std::string& rules) { return "control: " + path + "\n" + rules; }

std::string two_upstreams(const Server& a, const Server& b, const std::string& policy = "  strategy: round-robin\n") {
    return "rules:\n- name: r\n  from: \"127.0.0.1:0\"\n" + policy + "  to:\n    - \"" + a.address() +
           "\"\n    - \"" + b.address() + "\"\n";
}

// The `show` line of one upstream.
std::string show_line(const Daemon& d, const std::string& upstream) {
    RunResult r = ctl(d, "show");
    for (const std::string& line : lines_of(r.out))
        if (line.find(" upstream=" + upstream + " ") != std::string::npos) return line;
    return "";
}

}  // namespace

TEST_CASE("control parser: every command, quoting and every kind of bad line", "[control][parser]") {
    const std::vector<Case> cases = {
        {"show", true, "show ||0"},
        {"show\r", true, "show ||0"},
        {"  show  ", true, "show ||0"},
        {"help", true, "help ||0"},
        {"disable web 10.0.0.1:80", true, "disable web|10.0.0.1:80|0"},
        {"enable\tweb  10.0.0.1:80", true, "enable web|10.0.0.1:80|0"},
        {"weight web 10.0.0.1:80 5", true, "weight web|10.0.0.1:80|5"},
        {"weight web 10.0.0.1:80 1000000", true, "weight web|10.0.0.1:80|1000000"},
        {"disable \"my rule\" [::1]:80", true, "disable my rule|[::1]:80|0"},
        {"disable \"a \\\"q\\\" \\\\ b\" x:1", true, "disable a \"q\" \\ b|x:1|0"},
        {"disable \"\" x:1", true, "disable |x:1|0"},
        {"", false, "empty command"},
        {"   ", false, "empty command"},
        {"SHOW", false, "unknown command \"SHOW\""},
        {"drain web x:1", false, "unknown command \"drain\" (want show, disable, enable, weight or help)"},
        {"show all", false, "usage: show"},
        {"disable web", false, "usage: disable RULE ADDRESS"},
        {"enable web a b", false, "usage: enable RULE ADDRESS"},
        {"weight web x:1", false, "usage: weight RULE ADDRESS N"},
        {"weight web x:1 0", false, "weight: \"0\" must be a whole number from 1 to 1000000"},
        {"weight web x:1 1000001", false, "must be a whole number from 1 to 1000000"},
        {"weight web x:1 -1", false, "must be a whole number"},
        {"weight web x:1 2.5", false, "must be a whole number"},
        {"weight web x:1 99999999999999999999", false, "must be a whole number"},
        {"disable \"web x:1", false, "unterminated quote"},
        {std::string("disable we\x01 x:1"), false, "control character"},
        {std::string(513, 'a'), false, "line too long (at most 512 bytes)"},
    };
    for (const Case& c : cases) {
        control::Command cmd;
        std::string error;
        INFO("line: " << c.line);
        bool ok = control::parse(c.line, cmd, error);
        INFO("error: " << error);
        REQUIRE(ok == c.ok);
        if (ok) CHECK(describe(cmd) == c.expect);
        else CHECK(error.find(c.expect) != std::string::npos);
    }
}

TEST_CASE("control parser: random bytes never crash it and always get ok or an error", "[control][parser]") {
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    const char alphabet[] = "showdisablenweight \"\\\t\r\x01\x7f" "0123456789:.[]";
    for (int i = 0; i < 20000; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::string line;
        size_t n = x % 40;
        for (size_t k = 0; k < n; ++k) line += alphabet[(x >> (k % 50)) % (sizeof alphabet - 1)];
        control::Command cmd;
        std::string error;
        bool ok = control::parse(line, cmd, error);
        CHECK(ok == error.empty());
    }
}

TEST_CASE("control answers: show, disable, enable, weight and the errors name what is unknown", "[control]") {
    Mapped m("rules:\n- name: web\n  from: 127.0.0.1:0\n  to: [127.0.0.1:1, {address: 127.0.0.1:2, max_conns: 4}]\n"
             "- name: my rule\n  from: 127.0.0.1:0\n  to: [127.0.0.1:3]\n");
    REQUIRE(m.ok);
    const int64_t now = 1000000;
    CHECK(control::answer("show", m.shared, now, nullptr) ==
          "ok\n"
          "rule=web upstream=127.0.0.1:1 state=up weight=1 max_conns=0 active=0 total=0 failed=0 bytes_in=0 bytes_out=0\n"
          "rule=web upstream=127.0.0.1:2 state=up weight=1 max_conns=4 active=0 total=0 failed=0 bytes_in=0 bytes_out=0\n"
          "rule=\"my rule\" upstream=127.0.0.1:3 state=up weight=1 max_conns=0 active=0 total=0 failed=0 bytes_in=0 "
          "bytes_out=0\n");
    CHECK(control::answer("disable web 127.0.0.1:2", m.shared, now, nullptr) == "ok: 127.0.0.1:2 of web disabled\n");
    CHECK(m.shared.pool(0).at(1).disabled.load() == 1);
    m.shared.pool(0).at(1).active = 3;
    CHECK(control::answer("show", m.shared, now, nullptr).find("upstream=127.0.0.1:2 state=draining") != std::string::npos);
    m.shared.pool(0).at(1).active = 0;
    CHECK(control::answer("show", m.shared, now, nullptr).find("upstream=127.0.0.1:2 state=disabled") != std::string::npos);
    CHECK(control::answer("enable web 127.0.0.1:2", m.shared, now, nullptr) == "ok: 127.0.0.1:2 of web enabled\n");
    CHECK(m.shared.pool(0).at(1).disabled.load() == 0);
    CHECK(control::answer("weight \"my rule\" 127.0.0.1:3 9", m.shared, now, nullptr) ==
          "ok: 127.0.0.1:3 of \"my rule\" weight 9 (was 1)\n");
    CHECK(m.shared.pool(1).at(0).weight.load() == 9);
    CHECK(m.shared.pool(1).at(0).weight_changed.load() == 1);
    CHECK(control::answer("disable nope 127.0.0.1:1", m.shared, now, nullptr) == "error: unknown rule \"nope\"\n");
    CHECK(control::answer("disable web 127.0.0.1:9", m.shared, now, nullptr) ==
          "error: unknown upstream \"127.0.0.1:9\" in rule \"web\"\n");
    CHECK(control::answer("frobnicate", m.shared, now, nullptr).rfind("error: unknown command", 0) == 0);
    CHECK(control::answer("help", m.shared, now, nullptr).rfind("ok\n", 0) == 0);
}

TEST_CASE("control socket: mode 0600, show through mixctl -ctl, and a bad command exits 1", "[control][integration]") {
    Server a(banner("a")), b(banner("b"));
    TempDir dir;
    std::string sock = dir.path() + "/ctl.sock";
    Daemon d(with_control(sock, two_upstreams(a, b)));
    REQUIRE(d.port("r"));
    INFO(d.log());
    struct stat st {};
    REQUIRE(::lstat(sock.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 0777) == 0600);
    RunResult r = ctl(d, "show");
    INFO(r.err);
    CHECK(r.exit.code == 0);
    CHECK(r.out.rfind("ok\n", 0) == 0);
    CHECK(r.out.find("rule=r upstream=" + a.address() + " state=up weight=1") != std::string::npos);
    RunResult bad = ctl(d, "disable r 127.0.0.1:1");
    CHECK(bad.exit.code == 1);
    CHECK(bad.out == "error: unknown upstream \"127.0.0.1:1\" in rule \"r\"\n");
    CHECK(raw_ask(sock, std::string(600, 'x') + "\n").rfind("error: line too long", 0) == 0);
    CHECK(raw_ask(sock, "show", 5000ms, true).rfind("ok\n", 0) == 0);  // EOF ends a line too (printf show | nc -U)
    // A client that says nothing is closed after the deadline (3 s).
    Clock::time_point start = Clock::now();
    std::string silent = raw_ask(sock, "", 10000ms);
    CHECK(silent.rfind("error: no command within", 0) == 0);
    CHECK(elapsed_ms(start) < 9000);
    CHECK(alive(d));
}

TEST_CASE("disable drains an upstream with no refused connection; enable brings it back; weight steers",
          "[control][integration]") {
    Server a(banner("a")), b(banner("b"));
    TempDir dir;
    std::string sock = dir.path() + "/ctl.sock";
    Daemon d(with_control(sock, two_upstreams(a, b)), {"-w", "2"});
    uint16_t port = d.port("r");
    REQUIRE(port);
    INFO(d.log());
    REQUIRE(wait_until([&] { return ::access(sock.c_str(), F_OK) == 0; }));
    // A live connection to a, held across the disable: it must keep flowing.
    net::Fd held;
    std::string first;
    for (int i = 0; i < 4 && first != "a"; ++i) {
        held = dial(port);
        std::string line;
        REQUIRE(read_exact(held.get(), line, 2));
        first = line.substr(0, 1);
    }
    REQUIRE(first == "a");
    ClientLoop loop(port);
    REQUIRE(wait_until([&] { return loop.served() > 20; }, 10000ms));

    RunResult r = ctl(d, "disable r " + a.address());
    CHECK(r.exit.code == 0);
    CHECK(r.out == "ok: " + a.address() + " of r disabled\n");
    size_t after_disable = loop.mark();
    REQUIRE(wait_until([&] { return loop.mark() >= after_disable + 40; }, 15000ms));
    std::map<std::string, int> went = loop.since(after_disable);
    CHECK(went["a"] == 0);
    CHECK(went["b"] >= 40);
    CHECK(show_line(d, a.address()).find("state=draining active=") == std::string::npos);  // state= comes first
    CHECK(show_line(d, a.address()).find("state=draining") != std::string::npos);
    // The held connection still relays both ways.
    REQUIRE(send_all(held.get(), "still here\n"));
    std::string echoed;
    REQUIRE(read_exact(held.get(), echoed, 11));
    CHECK(echoed == "still here\n");
    held.reset();
    CHECK(wait_until([&] { return show_line(d, a.address()).find("state=disabled") != std::string::npos; }));

    r = ctl(d, "enable r " + a.address());
    CHECK(r.out == "ok: " + a.address() + " of r enabled\n");
    size_t after_enable = loop.mark();
    REQUIRE(wait_until([&] { return loop.mark() >= after_enable + 40; }, 15000ms));
    went = loop.since(after_enable);
    CHECK(went["a"] >= 15);
    CHECK(went["b"] >= 15);

    r = ctl(d, "weight r " + b.address() + " 3");
    CHECK(r.out == "ok: " + b.address() + " of r weight 3 (was 1)\n");
    size_t after_weight = loop.mark();
    REQUIRE(wait_until([&] { return loop.mark() >= after_weight + 200; }, 30000ms));
    went = loop.since(after_weight);
    double share_b = static_cast<double>(went["b"]) / (went["a"] + went["b"]);
    CHECK(share_b > 0.68);  // 0.75 expected with round-robin 1:3
    CHECK(share_b < 0.82);
    loop.stop();
    CHECK(loop.failed() == 0);
    CHECK(d.wait_log("control: upstream " + a.address() + " of (r): disabled"));
}

TEST_CASE("control changes survive SIGHUP for upstreams still in the file and show in SIGUSR1 stats and /metrics",
          "[control][integration]") {
    Server a(banner("a")), b(banner("b")), c(banner("c"));
    TempDir dir;
    std::string sock = dir.path() + "/ctl.sock";
    uint16_t metrics_port = free_port();
    std::string head = "metrics: 127.0.0.1:" + std::to_string(metrics_port) + "\n";
    Daemon d(with_control(sock, head + two_upstreams(a, b)));
    uint16_t port = d.port("r");
    REQUIRE(port);
    INFO(d.log());
    REQUIRE(wait_until([&] { return ::access(sock.c_str(), F_OK) == 0; }));
    REQUIRE(ctl(d, "disable r " + a.address()).exit.code == 0);
    REQUIRE(ctl(d, "weight r " + b.address() + " 5").exit.code == 0);
    d.signal(SIGUSR1);
    CHECK(d.wait_log("stats rule=r upstream=" + a.address() + " state=disabled"));
    CHECK(d.wait_log("upstream=" + b.address() + " state=up active=0"));
    CHECK(d.wait_log("weight=5"));
    std::string reply;
    REQUIRE(exchange(metrics_port, "GET /metrics HTTP/1.0\r\n\r\n", reply));
    CHECK(reply.find("mixctl_upstream_state{rule=\"r\",upstream=\"" + a.address() + "\",state=\"disabled\"} 1") !=
          std::string::npos);
    CHECK(reply.find("mixctl_upstream_state{rule=\"r\",upstream=\"" + a.address() + "\",state=\"up\"} 0") !=
          std::string::npos);
    CHECK(reply.find("mixctl_upstream_weight{rule=\"r\",upstream=\"" + b.address() + "\"} 5") != std::string::npos);

    // Reload with c added: a stays disabled, b keeps weight 5, c is new and enabled.
    std::string next = with_control(sock, head + "rules:\n- name: r\n  from: \"127.0.0.1:" + std::to_string(port) +
                                              "\"\n  strategy: round-robin\n  to:\n    - \"" + a.address() +
                                              "\"\n    - \"" + b.address() + "\"\n    - \"" + c.address() + "\"\n");
    dir.write("unused", "");
    net::Fd f(::open(d.file().c_str(), O_WRONLY | O_TRUNC));
    REQUIRE(::write(f.get(), next.data(), next.size()) == static_cast<ssize_t>(next.size()));
    f.reset();
    d.signal(SIGHUP);
    REQUIRE(d.wait_log("reloaded"));
    REQUIRE(wait_until([&] { return show_line(d, c.address()).find("state=up") != std::string::npos; }));
    CHECK(show_line(d, a.address()).find("state=disabled") != std::string::npos);
    CHECK(show_line(d, b.address()).find("weight=5") != std::string::npos);
    std::map<std::string, int> went;
    for (int i = 0; i < 30; ++i) {
        net::Fd fd = dial(port);
        std::string line;
        REQUIRE(read_exact(fd.get(), line, 2));
        ++went[line.substr(0, 1)];
    }
    CHECK(went["a"] == 0);
    CHECK(went["b"] == 25);  // round-robin 5:1 over b and c
    CHECK(went["c"] == 5);
    d.signal(SIGTERM);
    CHECK(d.wait_exit().code == 0);
    CHECK(::access(sock.c_str(), F_OK) != 0);  // the socket file goes with the daemon
}

TEST_CASE("control socket: a stale file is replaced, a live socket and a regular file are refused",
          "[control][integration]") {
    Server a(banner("a"));
    TempDir dir;
    std::string sock = dir.path() + "/ctl.sock";
    SECTION("stale socket left by a dead process") {
        {
            sockaddr_un addr{};
            addr.sun_family = AF_UNIX;
            sock.copy(addr.sun_path, sizeof addr.sun_path - 1);
            net::Fd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
            REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        }  // closed, file left behind: nobody listens
        Daemon d(with_control(sock, one_rule(a)));
        REQUIRE(d.port("r"));
        INFO(d.log());
        CHECK(ctl(d, "show").exit.code == 0);
    }
    SECTION("another daemon listening on it") {
        Daemon first(with_control(sock, one_rule(a)));
        REQUIRE(first.port("r"));
        Daemon second(with_control(sock, one_rule(a)));
        CHECK(second.wait_exit().code == 1);
        CHECK(second.wait_log("error: control: " + sock + ": another process listens on it"));
        INFO(second.log());
        CHECK(ctl(first, "show").exit.code == 0);  // the first one's socket is untouched
    }
    SECTION("a regular file") {
        dir.write("ctl.sock", "precious\n");
        Daemon d(with_control(sock, one_rule(a)));
        CHECK(d.wait_exit().code == 1);
        CHECK(d.wait_log("error: control: " + sock + " exists and is not a socket: refusing to replace it"));
        INFO(d.log());
        char kept[32] = {};
        net::Fd fd(::open(sock.c_str(), O_RDONLY));
        CHECK(::read(fd.get(), kept, sizeof kept - 1) == 9);
        CHECK(std::string(kept) == "precious\n");
    }
}

TEST_CASE("a burst of 1,000 control connections leaks no descriptor and refuses no client", "[control][integration][burst]") {
    raise_own_fd_limit();
    Server a(banner("a"));
    TempDir dir;
    std::string sock = dir.path() + "/ctl.sock";
    Daemon d(with_control(sock, one_rule(a)));
    uint16_t port = d.port("r");
    REQUIRE(port);
    INFO(d.log());
    REQUIRE(wait_until([&] { return ::access(sock.c_str(), F_OK) == 0; }));
    std::vector<pid_t> kids = d.workers(2);
    REQUIRE(kids.size() == 2);
    auto fds = [&] {
        int n = settled_fd_count(d.pid());
        for (pid_t k : kids) n += settled_fd_count(k);
        return n;
    };
    int before = fds();
    ClientLoop loop(port);
    REQUIRE(wait_until([&] { return loop.served() > 50; }, 10000ms));

    // 1,000 connections that stay open and say nothing: the oldest are let
    // go to make room, and a real command still gets its answer.
    std::vector<net::Fd> silent;
    for (int i = 0; i < 1000; ++i) {
        net::Fd fd = unix_dial(sock, 5000ms);
        if (fd) silent.push_back(std::move(fd));
    }
    CHECK(silent.size() == 1000);
    CHECK(raw_ask(sock, "show\n").rfind("ok\n", 0) == 0);
    silent.clear();

    auto median = [](std::vector<long> v) {
        if (v.empty()) return 0L;
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    // Relaying while the socket is quiet (1 s), then during 1,000 commands
    // from 8 clients at once (all answered), then for 1 s of a continuous
    // stream of commands (bounded: 100,000).
    loop.reset_latencies();
    std::this_thread::sleep_for(1000ms);
    std::vector<long> quiet = loop.latencies_us();
    loop.reset_latencies();
    std::atomic<int> ok{0}, other{0};
    std::vector<std::thread> senders;
    Clock::time_point burst_start = Clock::now();
    for (int t = 0; t < 8; ++t)
        senders.emplace_back([&] {
            for (int i = 0; i < 125; ++i) (raw_ask(sock, "show\n").rfind("ok\n", 0) == 0 ? ok : other).fetch_add(1);
        });
    for (std::thread& t : senders) t.join();
    long burst_ms = elapsed_ms(burst_start);
    std::vector<long> during = loop.latencies_us();
    CHECK(ok == 1000);
    printf("control burst: 1,000 commands in %ld ms; relay connect+banner median %ld us quiet (%zu in 1 s), %ld us "
           "during the burst (%zu): %.2fx\n",
           burst_ms, median(quiet), quiet.size(), median(during), during.size(),
           median(quiet) ? static_cast<double>(median(during)) / static_cast<double>(median(quiet)) : 0.0);
    loop.reset_latencies();
    std::atomic<int> commands{0};
    senders.clear();
    Clock::time_point end = Clock::now() + 1000ms;
    for (int t = 0; t < 4; ++t)
        senders.emplace_back([&] {
            while (Clock::now() < end && commands.load() < 100000) {
                raw_ask(sock, "show\n");
                commands.fetch_add(1);
            }
        });
    for (std::thread& t : senders) t.join();
    std::vector<long> busy = loop.latencies_us();
    loop.stop();
    printf("control flood: relay connect+banner in 1 s quiet: %zu connections, median %ld us; in 1 s under %d "
           "control commands: %zu connections, median %ld us (connections ratio %.2f)\n",
           quiet.size(), median(quiet), commands.load(), busy.size(), median(busy),
           quiet.empty() ? 0.0 : static_cast<double>(busy.size()) / static_cast<double>(quiet.size()));
    CHECK(loop.failed() == 0);
    CHECK(busy.size() > 0);
    CHECK(fds() == before);
    CHECK(alive(d));
}

TEST_CASE("mixctl -ctl says why it can not ask: no control key, nobody listening", "[control][cli]") {
    TempDir dir;
    std::string plain = dir.write("plain.yaml", one_rule({"127.0.0.1:1"}));
    RunResult r = run({"-f", plain, "-ctl", "show"});
    CHECK(r.exit.code == 1);
    CHECK(r.err.find("error: -ctl: " + plain + " has no \"control:\" socket") != std::string::npos);
    std::string sock = dir.path() + "/nobody.sock";
    std::string with = dir.write("with.yaml", with_control(sock, one_rule({"127.0.0.1:1"})));
    r = run({"-f", with, "-ctl", "show"});
    CHECK(r.exit.code == 1);
    CHECK(r.err.find("error: -ctl: connect " + sock + ": ") != std::string::npos);
    CHECK(r.out.empty());
}
