// Timeouts, limits, access lists and privilege drop, on the real binary.
#include <catch2/catch.hpp>

#include <atomic>
#include <csignal>
#include <thread>

#include <pwd.h>

#include "harness.hpp"

using namespace harness;

namespace {

// Holds every connection open without a word until the test ends.
void hold(int fd) {
    char c;
    while (::recv(fd, &c, 1, 0) > 0) {
    }
}

std::string rule_with(const std::string& settings, const std::vector<std::string>& to) {
    std::string text = "rules:\n- name: r\n  from: 127.0.0.1:0\n" + settings + "  to:\n";
    for (const std::string& t : to) text += "    - \"" + t + "\"\n";
    return text;
}

// Real and effective uid of a process, from /proc.
long uid_of(pid_t pid) {
    std::string path = "/proc/" + std::to_string(pid) + "/status";
    net::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    std::string text = drain_fd(fd.get());
    size_t at = text.find("Uid:");
    return at == std::string::npos ? -1 : atol(text.c_str() + at + 4);
}

}  // namespace

TEST_CASE("a rule's connect_timeout overrides -t", "[limits]") {
    BlackHole hole;
    REQUIRE(hole.swallows());
    Daemon d(rule_with("  connect_timeout: 200ms\n", {hole.address()}), {"-w", "1", "-t", "10s"});
    uint16_t port = d.port("r");
    net::Fd fd = dial(port);
    REQUIRE(fd);
    Clock::time_point t0 = Clock::now();
    CHECK(closed_by_peer(fd.get(), 3000ms));
    CHECK(elapsed_ms(t0) < 2000);
    CHECK(d.wait_log("i/o timeout after 200ms"));
}

TEST_CASE("idle_timeout closes a silent connection and spares a busy one", "[limits]") {
    Server up(echo);
    Daemon d(rule_with("  idle_timeout: 300ms\n", {up.address()}), {"-w", "1"});
    uint16_t port = d.port("r");
    net::Fd silent = dial(port), busy = dial(port);
    REQUIRE(silent);
    REQUIRE(busy);
    Clock::time_point t0 = Clock::now();
    // The busy one talks every 100 ms for 1.2 s: four idle periods' worth.
    for (int i = 0; i < 12; ++i) {
        std::string echoed;
        REQUIRE(send_all(busy.get(), std::string("x")));
        REQUIRE(read_exact(busy.get(), echoed, 1));
        std::this_thread::sleep_for(100ms);
    }
    CHECK(closed_by_peer(silent.get(), 100ms));  // long gone by now
    CHECK(d.wait_log("error=\"idle timeout\""));
    std::string echoed;
    REQUIRE(send_all(busy.get(), std::string("y")));
    CHECK(read_exact(busy.get(), echoed, 1));
    CHECK(elapsed_ms(t0) >= 1200);
}

TEST_CASE("halfclose_timeout ends a connection left half-closed", "[limits]") {
    // Reads the request to its end, then neither answers nor closes.
    std::atomic<bool> done{false};
    Server up([&](int fd) {
        hold(fd);
        wait_until([&] { return done.load(); }, 5000ms);
    });
    Daemon d(rule_with("  halfclose_timeout: 300ms\n", {up.address()}), {"-w", "1"});
    net::Fd fd = dial(d.port("r"));
    REQUIRE(fd);
    REQUIRE(send_all(fd.get(), std::string("request")));
    ::shutdown(fd.get(), SHUT_WR);
    Clock::time_point t0 = Clock::now();
    CHECK(closed_by_peer(fd.get(), 3000ms));
    CHECK(elapsed_ms(t0) >= 250);
    CHECK(elapsed_ms(t0) < 2000);
    CHECK(d.wait_log("error=\"half-close timeout\""));
    done = true;
}

TEST_CASE("max_conns holds across workers: extra clients wait in the backlog, not dropped", "[limits]") {
    Server up(echo);
    Daemon d(rule_with("  max_conns: 3\n", {up.address()}), {"-w", "2", "-v=false"});
    uint16_t port = d.port("r");
    std::vector<net::Fd> clients;
    for (int i = 0; i < 5; ++i) {
        clients.push_back(dial(port));
        REQUIRE(clients.back());
    }
    CHECK(wait_until([&] { return up.active() == 3; }, 3000ms));
    std::this_thread::sleep_for(300ms);
    CHECK(up.active() == 3);  // the other two are queued, not relayed and not closed
    for (size_t i = 3; i < 5; ++i) CHECK_FALSE(closed_by_peer(clients[i].get(), 0ms));
    clients[0].reset();
    clients[1].reset();
    // Room for two: the queued clients get through and are served.
    for (size_t i = 3; i < 5; ++i) {
        std::string echoed;
        REQUIRE(send_all(clients[i].get(), std::string("q")));
        CHECK(read_exact(clients[i].get(), echoed, 1));
    }
    CHECK(up.accepted() == 5);
}

TEST_CASE("allow and deny lists admit and refuse clients by address", "[limits]") {
    Server up(banner("ok"));
    Daemon d(rule_with("  allow: [127.0.0.0/8]\n  deny: [127.0.0.3]\n", {up.address()}), {"-w", "1"});
    uint16_t port = d.port("r");
    auto served_from = [&](const char* source) {
        net::Fd fd = dial(port, AF_INET, 3000ms, source);
        std::string line;
        return fd && read_exact(fd.get(), line, 3) && line == "ok\n";
    };
    CHECK(served_from("127.0.0.2"));
    CHECK_FALSE(served_from("127.0.0.3"));
    CHECK(d.wait_log("denied 127.0.0.3:"));
    CHECK(up.accepted() == 1);  // a denied client never reaches an upstream
    // Counted; and the served connection is over once its upstream is done.
    CHECK(wait_until([&] {
        d.signal(SIGUSR1);
        return d.wait_log("stats clients rule=r active=0 denied=1", 300ms);
    }, 5000ms));
}

TEST_CASE("an allow list without the client's family refuses it", "[limits][ipv6]") {
    Server up(banner("ok"));
    Daemon d("rules:\n- name: r\n  from: '[::1]:0'\n  allow: ['127.0.0.1']\n  to: ['" + up.address() + "']\n");
    net::Fd fd = dial(d.port("r"), AF_INET6);
    REQUIRE(fd);
    CHECK(closed_by_peer(fd.get(), 3000ms));
    CHECK(up.accepted() == 0);
}

TEST_CASE("denied clients are logged a few times, then summarised", "[limits]") {
    Server up(echo);
    Daemon d(rule_with("  deny: [127.0.0.0/8]\n", {up.address()}), {"-w", "1"});
    uint16_t port = d.port("r");
    for (int i = 0; i < 30; ++i) {
        net::Fd fd = dial(port);
        if (fd) closed_by_peer(fd.get(), 2000ms);
    }
    std::this_thread::sleep_for(100ms);
    CHECK(d.count("denied 127.0.0.1:") == 5);
}

TEST_CASE("bad CIDRs and limits are config errors with their line", "[limits]") {
    TempDir dir;
    std::string file = dir.write("x.yaml",
                                 "rules:\n- from: 127.0.0.1:1\n  allow: [10.0.0.0/33, nonsense]\n  max_conns: -1\n"
                                 "  idle_timeout: soon\n  to: [127.0.0.1:2]\n");
    RunResult r = run({"-check", "-f", file});
    CHECK(r.exit.code == 1);
    CHECK(r.err.find(file + ":3: allow: \"10.0.0.0/33\": prefix length must be 0 to 32") != std::string::npos);
    CHECK(r.err.find(file + ":3: allow: \"nonsense\": not an IPv4 or IPv6 address") != std::string::npos);
    CHECK(r.err.find(file + ":4: max_conns:") != std::string::npos);
    CHECK(r.err.find(file + ":5: idle_timeout: \"soon\" is not a duration") != std::string::npos);
}

TEST_CASE("-u nobody runs the workers as nobody after binding, the parent keeps root", "[limits][root]") {
    if (geteuid() != 0) {
        WARN("not root: -u cannot be tested here");
        return;
    }
    Server up(banner("ok"));
    Daemon d(rule_with("", {up.address()}), {"-w", "2", "-u", "nobody"});
    uint16_t port = d.port("r");
    std::vector<pid_t> workers = d.workers(2);
    REQUIRE(workers.size() == 2);
    const passwd* nobody = getpwnam("nobody");
    REQUIRE(nobody);
    // Each worker drops root right after its fork: wait for both, not one.
    for (pid_t w : workers)
        CHECK(wait_until([&] { return uid_of(w) == static_cast<long>(nobody->pw_uid); }));
    CHECK(uid_of(d.pid()) == 0);
    net::Fd fd = dial(port);
    std::string line;
    CHECK((fd && read_exact(fd.get(), line, 3) && line == "ok\n"));
}

TEST_CASE("-u with an unknown user refuses to start", "[limits]") {
    Server up(banner("ok"));
    TempDir dir;
    std::string file = dir.write("x.yaml", rule_with("", {up.address()}));
    RunResult r = run({"-f", file, "-u", "no-such-user-here"});
    CHECK(r.exit.code == 1);
    CHECK(r.err.find("-u no-such-user-here: no user \"no-such-user-here\"") != std::string::npos);
}
