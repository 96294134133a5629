// mixctl -probe: the real binary probing a real mixctl, upstreams on
// loopback. Every failure must come back as exit 1 with one line, within
// the probe's own deadline.
#include <catch2/catch.hpp>

#include <signal.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace harness;

namespace {

// An upstream that reads the probe's request, keeps it, and answers the way
// a Go TLS server answers plain HTTP.
struct Recorder {
    std::atomic<int> requests{0};
    std::mutex mutex;
    std::string last;
    Server::Handler handler() {
        return [this](int fd) {
            char buf[256];
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) return;
            {
                std::lock_guard<std::mutex> lock(mutex);
                last.assign(buf, static_cast<size_t>(n));
            }
            ++requests;
            send_all(fd, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n");
        };
    }
};

// Reads nothing, says nothing, holds the connection until the test ends.
void silent(int fd) {
    char buf[256];
    while (::recv(fd, buf, sizeof buf, 0) > 0) {
    }
}

struct Probe {
    RunResult result;
    long took_ms = 0;
    std::string line() const { return result.out + result.err; }
};

Probe probe(const std::string& file, const std::string& what, const std::string& deadline = "1s") {
    Probe p;
    Clock::time_point t0 = Clock::now();
    p.result = run({"-f", file, "-t", deadline, "-probe", what}, 10000ms);
    p.took_ms = elapsed_ms(t0);
    return p;
}

// One line, ending in a newline, on the stream that fits the outcome.
void check_one_line(const Probe& p) {
    INFO("probe said: " << p.line());
    bool ok = p.result.exit.code == 0;
    const std::string& text = ok ? p.result.out : p.result.err;
    CHECK((ok ? p.result.err : p.result.out).empty());
    CHECK(lines_of(text).size() == 1);
    CHECK(!text.empty());
    CHECK(text.back() == '\n');
}

std::string fixed_port_rule(const std::string& name, const std::string& host, uint16_t port,
                            const std::vector<std::string>& to) {
    return rule_yaml(name, host + ":" + std::to_string(port), to);
}

// A mixctl with one rule on a port that was free a moment ago. On a busy
// machine another process may take it first (a wildcard bind collides even
// with a connected socket on that port): then another port is tried.
std::unique_ptr<Daemon> daemon_on_free_port(const std::string& name, const std::string& host,
                                            const std::vector<std::string>& to, const std::vector<std::string>& args,
                                            uint16_t& port, const std::string& rule_extra = "") {
    for (int attempt = 0; attempt < 5; ++attempt) {
        port = free_port();
        auto d = std::make_unique<Daemon>(rules_yaml({fixed_port_rule(name, host, port, to) + rule_extra}), args);
        if (d->port(name) == port) return d;
    }
    return nullptr;
}

// Every process of the daemon (parent and workers) has really stopped:
// kill() returns before a signal takes effect.
bool all_stopped(const std::vector<pid_t>& pids) {
    for (pid_t pid : pids) {
        net::Fd f(::open(("/proc/" + std::to_string(pid) + "/stat").c_str(), O_RDONLY | O_CLOEXEC));
        std::string stat = drain_fd(f.get());
        size_t paren = stat.rfind(')');
        if (paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'T') return false;
    }
    return true;
}

}  // namespace

TEST_CASE("probe passes when an upstream replies through the listener", "[probe]") {
    Recorder rec;
    Server up(rec.handler());
    uint16_t port = 0;
    std::unique_ptr<Daemon> daemon = daemon_on_free_port("api", "127.0.0.1", {up.address()}, {"-w", "1", "-v=false"}, port);
    REQUIRE(daemon);
    Daemon& d = *daemon;
    Probe p = probe(d.file(), "api");
    INFO(d.log());
    CHECK(p.result.exit.code == 0);
    CHECK(starts_with(p.result.out, "probe ok: (api) 127.0.0.1:" + std::to_string(port) + ": upstream replied in "));
    CHECK(p.result.out.find("\"HTTP/1.0 400 Bad Request\"") != std::string::npos);
    check_one_line(p);
    // The request went through the worker to the upstream, whole.
    CHECK(rec.requests == 1);
    std::lock_guard<std::mutex> lock(rec.mutex);
    CHECK(rec.last == "HEAD / HTTP/1.0\r\n\r\n");
}

// An upstream that answers "PING" with `answer`, and records what it got.
struct Pinged {
    std::string answer;
    std::atomic<int> pings{0};
    Server::Handler handler() {
        return [this](int fd) {
            char buf[64];
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n < 6 || std::string(buf, 6) != "PING\r\n") return;  // the checker's bare connects, or noise
            ++pings;
            send_all(fd, answer);
        };
    }
};

TEST_CASE("probe of a rule whose health check talks sends its send and judges its expect", "[probe]") {
    const std::string check = "  health_check: {interval: 1s, timeout: 500ms, send: \"PING\\r\\n\", expect: \"+PONG\"}\n";
    Pinged good{"+PONG\r\n"}, bad{"-LOADING Redis is loading\r\n"};
    Server good_up(good.handler()), bad_up(bad.handler());
    uint16_t port = 0;
    std::unique_ptr<Daemon> answers =
        daemon_on_free_port("redis", "127.0.0.1", {good_up.address()}, {"-w", "1", "-v=false"}, port, check);
    REQUIRE(answers);
    Probe ok = probe(answers->file(), "redis");
    INFO(answers->log());
    CHECK(ok.result.exit.code == 0);
    CHECK(ok.result.out.find("upstream replied in ") != std::string::npos);
    CHECK(ok.result.out.find("\"+PONG\"") != std::string::npos);
    check_one_line(ok);
    CHECK(good.pings >= 1);

    std::unique_ptr<Daemon> loading =
        daemon_on_free_port("redis", "127.0.0.1", {bad_up.address()}, {"-w", "1", "-v=false"}, port, check);
    REQUIRE(loading);
    Probe fail = probe(loading->file(), "redis");
    INFO(loading->log());
    CHECK(fail.result.exit.code == 1);
    CHECK(fail.result.err.find("expected \"+PONG\", got \"-LOADING") != std::string::npos);
    check_one_line(fail);
}

TEST_CASE("probe finds a wildcard listener by name and by address", "[probe]") {
    std::string host = GENERATE(as<std::string>(), "", "0.0.0.0");  // ":6443" as the K3s recipe writes it
    INFO("from: \"" << host << ":PORT\"");
    Recorder rec;
    Server up(rec.handler());
    uint16_t port = 0;
    std::unique_ptr<Daemon> daemon = daemon_on_free_port("k3s-api", host, {up.address()}, {"-w", "1", "-v=false"}, port);
    REQUIRE(daemon);
    Daemon& d = *daemon;
    Probe by_name = probe(d.file(), "k3s-api");
    CHECK(by_name.result.exit.code == 0);
    CHECK(starts_with(by_name.result.out, "probe ok: (k3s-api) 127.0.0.1:" + std::to_string(port) + ": "));
    Probe by_address = probe(d.file(), "127.0.0.1:" + std::to_string(port));
    CHECK(by_address.result.exit.code == 0);
    CHECK(starts_with(by_address.result.out, "probe ok: (k3s-api) 127.0.0.1:" + std::to_string(port) + ": "));
    CHECK(rec.requests == 2);
}

TEST_CASE("probe fails on a SIGSTOPped mixctl within its deadline, and passes after SIGCONT", "[probe]") {
    // An IPv4 listener, and a dual-stack one (its connections are IPv4-mapped IPv6).
    std::string host = GENERATE(as<std::string>(), "127.0.0.1", "");
    INFO("from: \"" << host << ":PORT\"");
    Recorder rec;
    Server up(rec.handler());
    uint16_t port = 0;
    std::unique_ptr<Daemon> daemon = daemon_on_free_port("api", host, {up.address()}, {"-w", "2", "-v=false"}, port);
    REQUIRE(daemon);
    Daemon& d = *daemon;
    std::vector<pid_t> processes = d.workers(2);
    REQUIRE(processes.size() == 2);
    processes.push_back(d.pid());
    REQUIRE(probe(d.file(), "api").result.exit.code == 0);
    // Wedged: parent and workers stopped (the Daemon is its own process
    // group). The kernel still completes the probe's connect.
    REQUIRE(kill(-d.pid(), SIGSTOP) == 0);
    REQUIRE(wait_until([&] { return all_stopped(processes); }, 5000ms));
    net::Fd plain = dial(port);
    CHECK(plain.valid());
    Probe p = probe(d.file(), "api", "500ms");
    kill(-d.pid(), SIGCONT);
    INFO(p.line());
    CHECK(p.result.exit.code == 1);
    CHECK(starts_with(p.result.err, "probe failed: (api) 127.0.0.1:" + std::to_string(port) + ": no reply within 500ms: "));
    // "not even accepted ...", unless /proc/net/tcp could not be read in the
    // deadline's last fifth (a machine with very many sockets).
    CHECK(p.result.err.find("mixctl is stopped or wedged") != std::string::npos);
    CHECK(p.took_ms < 3000);
    check_one_line(p);
    CHECK(wait_until([&] { return probe(d.file(), "api").result.exit.code == 0; }, 5000ms));
}

TEST_CASE("probe fails when the upstream black-holes SYNs, within its deadline", "[probe]") {
    BlackHole hole;
    REQUIRE(hole.swallows());
    // mixctl waits 5 s for the dial: the probe's own 500 ms must end first.
    uint16_t port = 0;
    std::unique_ptr<Daemon> daemon = daemon_on_free_port("api", "127.0.0.1", {hole.address()}, {"-w", "1", "-v=false", "-t", "5s"}, port);
    REQUIRE(daemon);
    Daemon& d = *daemon;
    Probe p = probe(d.file(), "api", "500ms");
    INFO(p.line());
    CHECK(p.result.exit.code == 1);
    // mixctl accepted and is still dialing the hole.
    CHECK(p.result.err.find("no reply within 500ms: ") != std::string::npos);
    CHECK(p.result.err.find("no upstream answered\n") != std::string::npos);
    CHECK(p.took_ms < 3000);
    check_one_line(p);
}

TEST_CASE("probe of a listener that black-holes SYNs fails at its deadline", "[probe]") {
    BlackHole hole;
    REQUIRE(hole.swallows());
    TempDir dir;
    Probe p = probe(dir.path() + "/none.yaml", hole.address(), "400ms");
    INFO(p.line());
    CHECK(p.result.exit.code == 1);
    CHECK(p.result.err == "probe failed: " + hole.address() + ": connect " + hole.address() +
                              ": no answer within 400ms (a listener that drops SYNs, or a full backlog)\n");
    CHECK(p.took_ms < 3000);
}

TEST_CASE("probe of a listener that does not exist: refused, exit 1", "[probe]") {
    uint16_t port = closed_port();
    Recorder rec;
    Server up(rec.handler());
    Daemon d(rules_yaml({rule_yaml("api", "127.0.0.1:0", {up.address()})}), {"-w", "1", "-v=false"});
    REQUIRE(d.port("api") != 0);
    std::string address = "127.0.0.1:" + std::to_string(port);
    Probe p = probe(d.file(), address);
    CHECK(p.result.exit.code == 1);
    CHECK(p.result.err == "probe failed: " + address + ": connect " + address +
                              ": connection refused (no listener: is mixctl running?)\n");
    check_one_line(p);
    CHECK(rec.requests == 0);
}

TEST_CASE("probe of a rule name that does not exist names the rules there are", "[probe]") {
    TempDir dir;
    std::string file = dir.write("rules.yaml", rules_yaml({rule_yaml("api", "127.0.0.1:6443", {"127.0.0.1:16443"}),
                                                           rule_yaml("join", "127.0.0.1:9345", {"127.0.0.1:19345"})}));
    Probe p = probe(file, "apiserver");
    CHECK(p.result.exit.code == 1);
    CHECK(p.result.err == "probe failed: no rule named \"apiserver\" in " + file + " (rules: api, join)\n");
    Probe missing = probe(dir.path() + "/missing.yaml", "api");
    CHECK(missing.result.exit.code == 1);
    CHECK(missing.result.err == "probe failed: open " + dir.path() + "/missing.yaml: no such file or directory\n");
}

TEST_CASE("probe of a udp rule without a send check says what it needs; by address it finds the TCP rule",
          "[probe][udp]") {
    TempDir dir;
    const std::string port = std::to_string(closed_port());
    std::string file = dir.write("rules.yaml", "rules:\n- name: dns\n  protocol: udp\n  from: 127.0.0.1:" + port +
                                                   "\n  to: [127.0.0.1:5353]\n- name: dns-tcp\n  from: 127.0.0.1:" +
                                                   port + "\n  to: [127.0.0.1:5353]\n");
    Probe by_name = probe(file, "dns");
    CHECK(by_name.result.exit.code == 1);
    CHECK(by_name.result.err == "probe failed: rule (dns) is protocol: udp without a health_check send: -probe needs "
                                "the datagram to send (and expect: to judge the reply)\n");
    Probe by_address = probe(file, "127.0.0.1:" + port);  // nothing listens: refused, but named for the TCP rule
    CHECK(by_address.result.exit.code == 1);
    CHECK(starts_with(by_address.result.err, "probe failed: (dns-tcp) 127.0.0.1:" + port + ": "));
}

TEST_CASE("probe of a udp rule sends its check's datagram through the listener and judges the reply",
          "[probe][udp]") {
    UdpServer pong([](const std::string& data, const net::SockAddr&, bool&) {
        return data == "PING" ? std::string("PONG\n") : std::string("what?");
    });
    UdpServer loading([](const std::string&, const net::SockAddr&, bool&) { return std::string("LOADING"); });
    REQUIRE(pong.ok());
    REQUIRE(loading.ok());
    auto udp_port = [] {
        net::Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        net::SockAddr at = loopback(0);
        net::SockAddr bound;
        if (fd && ::bind(fd.get(), at.get(), at.length) == 0) net::local_address(fd.get(), bound);
        return bound.port();
    };
    auto rules = [](uint16_t good, uint16_t bad, const std::string& up_good, const std::string& up_bad) {
        const std::string check = "  health_check: {interval: 5s, send: \"PING\", expect: \"PONG\"}\n";
        return rules_yaml({rule_yaml("good", "127.0.0.1:" + std::to_string(good), {up_good}) + "  protocol: udp\n" + check,
                           rule_yaml("bad", "127.0.0.1:" + std::to_string(bad), {up_bad}) + "  protocol: udp\n" + check});
    };
    std::unique_ptr<Daemon> daemon;
    uint16_t good = 0, bad = 0;
    for (int attempt = 0; attempt < 5 && !daemon; ++attempt) {
        good = udp_port();
        bad = udp_port();
        auto d = std::make_unique<Daemon>(rules(good, bad, pong.address(), loading.address()),
                                          std::vector<std::string>{"-w", "1", "-v=false"});
        if (d->port("good") == good && d->port("bad") == bad && good != bad) daemon = std::move(d);
    }
    REQUIRE(daemon);
    Daemon& d = *daemon;
    INFO(d.log());
    Probe ok = probe(d.file(), "good");
    INFO(ok.line());
    CHECK(ok.result.exit.code == 0);
    CHECK(starts_with(ok.result.out, "probe ok: (good) 127.0.0.1:" + std::to_string(good) + ": upstream replied in "));
    CHECK(ok.result.out.find(": \"PONG\"\n") != std::string::npos);
    check_one_line(ok);
    Probe wrong = probe(d.file(), "bad");
    CHECK(wrong.result.exit.code == 1);
    CHECK(wrong.result.err == "probe failed: (bad) 127.0.0.1:" + std::to_string(bad) +
                                  ": expected \"PONG\", got \"LOADING\"\n");
    check_one_line(wrong);
    // Stopped: the datagram waits in the socket, no reply comes.
    std::vector<pid_t> processes = d.workers(2);  // the worker and the checker
    REQUIRE(processes.size() == 2);
    processes.push_back(d.pid());
    REQUIRE(kill(-d.pid(), SIGSTOP) == 0);  // the Daemon is its own process group
    REQUIRE(wait_until([&] { return all_stopped(processes); }, 5000ms));
    Probe stopped = probe(d.file(), "good", "300ms");
    kill(-d.pid(), SIGCONT);
    CHECK(stopped.result.exit.code == 1);
    CHECK(stopped.result.err == "probe failed: (good) 127.0.0.1:" + std::to_string(good) +
                                    ": no reply within 300ms: mixctl is stopped or wedged, or no upstream answered\n");
    CHECK(wait_until([&] { return probe(d.file(), "good").result.exit.code == 0; }, 5000ms));
    // Not running at all: ICMP port unreachable.
    TempDir dir;
    const uint16_t closed = udp_port();
    Probe gone = probe(dir.write("rules.yaml", rules(closed, static_cast<uint16_t>(closed + 1), pong.address(),
                                                     loading.address())),
                       "good");
    CHECK(gone.result.exit.code == 1);
    CHECK(gone.result.err == "probe failed: (good) 127.0.0.1:" + std::to_string(closed) +
                                 ": port unreachable (no listener: is mixctl running?)\n");
}

TEST_CASE("probe fails when no upstream is reachable: mixctl closes without a reply", "[probe]") {
    uint16_t dead = closed_port();
    uint16_t port = 0;
    std::unique_ptr<Daemon> daemon = daemon_on_free_port("api", "127.0.0.1", {"127.0.0.1:" + std::to_string(dead)}, {"-w", "1", "-v=false"}, port);
    REQUIRE(daemon);
    Daemon& d = *daemon;
    Probe p = probe(d.file(), "api");
    INFO(p.line());
    CHECK(p.result.exit.code == 1);
    CHECK(p.result.err.find("no upstream") != std::string::npos);
    check_one_line(p);
}

TEST_CASE("probe fails when the upstream accepts and never answers", "[probe]") {
    Server up(silent);
    uint16_t port = 0;
    std::unique_ptr<Daemon> daemon = daemon_on_free_port("api", "127.0.0.1", {up.address()}, {"-w", "1", "-v=false"}, port);
    REQUIRE(daemon);
    Daemon& d = *daemon;
    Probe p = probe(d.file(), "api", "300ms");
    CHECK(p.result.exit.code == 1);
    CHECK(p.result.err.find("no reply within 300ms: ") != std::string::npos);
    CHECK(p.result.err.find("no upstream answered\n") != std::string::npos);
    CHECK(up.accepted() == 1);
    CHECK(p.took_ms < 3000);
    up.stop();
}

TEST_CASE("probe refuses to run without a deadline or a target", "[probe]") {
    RunResult no_deadline = run({"-t", "0", "-probe", "127.0.0.1:1"});
    CHECK(no_deadline.exit.code == 1);
    CHECK(no_deadline.err == "probe failed: -probe needs a deadline: -t 0 means none\n");
    RunResult empty = run({"-probe", ""});
    CHECK(empty.exit.code == 2);
    CHECK(starts_with(empty.err, "invalid value \"\" for flag -probe: want a rule name or a listen address\n"));
}
