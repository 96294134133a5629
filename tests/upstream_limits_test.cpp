// Per-upstream max_conns, a rule's retries and least-conn's tie-break, end
// to end: the real mixctl in front of loopback servers that say their name.
#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace harness;

namespace {

std::string rule_with(const std::string& policy, const std::vector<std::string>& to) {
    std::string text = "rules:\n- name: r\n  from: \"127.0.0.1:0\"\n" + policy + "  to:\n";
    for (const std::string& t : to) text += "    - " + t + "\n";
    return text;
}

std::string q(const std::string& address) { return "\"" + address + "\""; }

// The banner of a new connection, which stays open in `keep` if given.
std::string who(uint16_t port, net::Fd* keep = nullptr, Ms limit = 5000ms) {
    net::Fd fd = dial(port, AF_INET, limit);
    if (!fd) return "";
    std::string line;
    char c;
    while (line.size() < 64) {
        ssize_t n = ::recv(fd.get(), &c, 1, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return "";
        if (c == '\n') break;
        line += c;
    }
    if (keep) *keep = std::move(fd);
    return line;
}

}  // namespace

TEST_CASE("least-conn: ten sequential connections to two idle upstreams go 5 and 5, over two workers",
          "[least-conn][integration]") {
    Server a(banner("a")), b(banner("b"));
    TempDir dir;
    std::string sock = dir.path() + "/ctl.sock";
    Daemon d("control: " + sock + "\n" + rule_with("  strategy: least-conn\n", {q(a.address()), q(b.address())}),
             {"-w", "2"});
    uint16_t port = d.port("r");
    REQUIRE(port);
    INFO(d.log());
    // Idle as mixctl sees it: both upstreams at active=0 in `show`.
    auto idle = [&] {
        RunResult r = run({"-f", d.file(), "-ctl", "show"});
        size_t at = 0, zeros = 0;
        while ((at = r.out.find(" active=0 ", at)) != std::string::npos) ++zeros, ++at;
        return zeros == 2;
    };
    std::map<std::string, int> went;
    for (int i = 0; i < 10; ++i) {
        REQUIRE(wait_until(idle, 5000ms));  // sequential: the last one is closed and counted out
        ++went[who(port)];
    }
    CHECK(went["a"] == 5);
    CHECK(went["b"] == 5);
}

TEST_CASE("max_conns: a full upstream is skipped, the backup takes over, and when all are full clients wait",
          "[max_conns][integration]") {
    Server a(banner("a")), b(banner("b"));
    Daemon d(rule_with("  strategy: round-robin\n",
                       {"{address: " + q(a.address()) + ", max_conns: 2}",
                        "{address: " + q(b.address()) + ", backup: true, max_conns: 1}"}),
             {"-w", "2"});
    uint16_t port = d.port("r");
    REQUIRE(port);
    INFO(d.log());
    net::Fd a1, a2, b1;
    CHECK(who(port, &a1) == "a");
    CHECK(who(port, &a2) == "a");
    CHECK(who(port, &b1) == "b");  // a is full: the backup serves
    // Everything full: the next client is not refused; it waits in the
    // backlog and is served as soon as a place frees up.
    std::string late;
    std::thread waiter([&] { late = who(port, nullptr, 15000ms); });
    std::this_thread::sleep_for(500ms);  // long enough for a wrong answer to show up
    CHECK(late.empty());
    CHECK(a.accepted() == 2);
    a1.reset();
    waiter.join();
    CHECK(late == "a");
    CHECK(d.count("refus") == 0);
}

TEST_CASE("retries: 0 tries one upstream only; the default fails over to every one", "[retries][integration]") {
    RefusedPort dead1, dead2;
    Server alive_one(banner("alive"));
    SECTION("retries: 0") {
        Daemon d(rule_with("  strategy: round-robin\n  retries: 0\n",
                           {q(dead1.address()), q(dead2.address()), q(alive_one.address())}));
        uint16_t port = d.port("r");
        REQUIRE(port);
        INFO(d.log());
        std::map<std::string, int> went;
        for (int i = 0; i < 6; ++i) ++went[who(port)];
        // Round-robin over three with no failover: the dead ones' turns fail
        // (each once: then they are marked down and skipped).
        CHECK(went["alive"] >= 3);
        CHECK(went[""] >= 1);
        CHECK(d.wait_log("1 attempts failed"));
        CHECK(d.count("2 attempts failed") == 0);
    }
    SECTION("default") {
        Daemon d(rule_with("  strategy: round-robin\n", {q(dead1.address()), q(dead2.address()), q(alive_one.address())}));
        uint16_t port = d.port("r");
        REQUIRE(port);
        INFO(d.log());
        for (int i = 0; i < 6; ++i) CHECK(who(port) == "alive");
    }
}
