// Failover: upstreams that refuse, upstreams that never answer, clients that
// give up while a dial is pending. The real mixctl against loopback sockets.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace harness;

TEST_CASE("one refused upstream of three: 100 of 100 connections served byte-exact", "[failover]") {
    Server a(digest), b(digest);
    uint16_t refused = closed_port();
    REQUIRE(refused != 0);
    std::string refused_address = "127.0.0.1:" + std::to_string(refused);
    Daemon d(one_rule({a.address(), refused_address, b.address()}), {"-w", "1", "-v=false"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    int good = 0;
    for (int i = 0; i < 100; ++i) {
        std::string request = pattern(static_cast<size_t>(200 + i * 37), static_cast<uint64_t>(i + 1)), reply;
        if (exchange(port, request, reply) && reply == digest_line(request)) ++good;
    }
    CHECK(good == 100);
    CHECK(a.accepted() + b.accepted() == 100);
    // A uniform first pick meets the dead one soon; passive health may then
    // skip it, so one line is all that is certain.
    CHECK(d.wait_log("error dialing " + refused_address + ": connection refused"));
    CHECK(d.count("no upstream of") == 0);
    CHECK(alive(d));
}

TEST_CASE("an upstream that never answers the SYN: every connection fails over within 3 s", "[failover]") {
    BlackHole hole;
    REQUIRE(hole.swallows());
    Server healthy(digest);
    Daemon d(one_rule({hole.address(), healthy.address()}), {"-w", "1", "-v=false", "-t", "300ms"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    // Go on until a connection met the hole first (passive health may skip
    // it after that).
    int served = 0, tried = 0;
    long slowest = 0;
    while (tried < 40 && (tried < 10 || d.count("i/o timeout") < 1)) {
        ++tried;
        std::string request = pattern(500, static_cast<uint64_t>(tried)), reply;
        Clock::time_point t0 = Clock::now();
        bool ok = exchange(port, request, reply, AF_INET, 5000ms) && reply == digest_line(request);
        long took = elapsed_ms(t0);
        slowest = std::max(slowest, took);
        if (ok && took < 3000) ++served;
    }
    INFO("slowest connection took " << slowest << " ms");
    CHECK(served == tried);
    CHECK(healthy.accepted() == tried);
    CHECK(d.count("error dialing " + hole.address() + ": i/o timeout") >= 1);
    CHECK(d.count("no upstream of") == 0);
    CHECK(alive(d));
}

TEST_CASE("only a black-hole upstream: the client is closed within 3 s and the daemon lives on", "[failover]") {
    BlackHole hole;
    REQUIRE(hole.swallows());
    Daemon d(one_rule({hole.address()}), {"-w", "1", "-t", "300ms"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    std::vector<pid_t> workers = d.workers(1);
    REQUIRE(workers.size() == 1);
    for (int round = 0; round < 2; ++round) {
        net::Fd fd = dial(port);
        REQUIRE(fd);
        Clock::time_point t0 = Clock::now();
        CHECK(closed_by_peer(fd.get(), 3000ms));
        long took = elapsed_ms(t0);
        CHECK(took >= 200);  // not before the 300ms deadline
        CHECK(took < 3000);
    }
    CHECK(d.wait_log("no upstream of (r) reachable", 3000ms, 2));
    CHECK(d.count("error dialing " + hole.address() + ": i/o timeout") == 2);
    CHECK(alive(d));
    CHECK(children(d.pid()) == workers);
}

TEST_CASE("all upstreams down: the client is closed at once, and service returns with the upstream", "[failover]") {
    uint16_t first = closed_port(), second = closed_port();
    REQUIRE(first != 0);
    REQUIRE(second != 0);
    Daemon d(one_rule({"127.0.0.1:" + std::to_string(first), "127.0.0.1:" + std::to_string(second)}), {"-w", "1"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    for (int i = 0; i < 3; ++i) {
        net::Fd fd = dial(port);
        REQUIRE(fd);
        Clock::time_point t0 = Clock::now();
        CHECK(closed_by_peer(fd.get(), 3000ms));
        CHECK(elapsed_ms(t0) < 3000);
    }
    CHECK(d.wait_log("no upstream of (r) reachable", 3000ms, 3));
    CHECK(d.wait_log("2 attempts failed", 3000ms, 3));
    CHECK(d.count("error dialing 127.0.0.1:" + std::to_string(first) + ": connection refused") == 3);
    CHECK(d.count("error dialing 127.0.0.1:" + std::to_string(second) + ": connection refused") == 3);
    CHECK(alive(d));

    Server back(digest, AF_INET, second);
    REQUIRE(back.ok());
    for (int i = 0; i < 10; ++i) {
        std::string request = pattern(300, static_cast<uint64_t>(i + 50)), reply;
        CHECK(exchange(port, request, reply));
        CHECK(reply == digest_line(request));
    }
    CHECK(back.accepted() == 10);
    CHECK(alive(d));
}

TEST_CASE("every up upstream refuses but a down-marked one listens: the client is served by it",
          "[failover][health]") {
    Server first(digest);
    REQUIRE(first.ok());
    uint16_t second_port = closed_port();
    REQUIRE(second_port != 0);
    const std::string second = "127.0.0.1:" + std::to_string(second_port);
    Daemon d(rules_yaml({rule_yaml("r", "127.0.0.1:0", {first.address(), second}) +
                         "  strategy: round-robin\n  fail_timeout: 60s\n"}),
             {"-w", "1"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    // Round-robin meets `second` within two connections: refused, so it is
    // marked down for a minute; `first` serves both.
    for (int i = 0; i < 2; ++i) {
        std::string request = pattern(300, static_cast<uint64_t>(i + 1)), reply;
        CHECK(exchange(port, request, reply));
        CHECK(reply == digest_line(request));
    }
    REQUIRE(d.wait_log("upstream " + second + " of (r) is DOWN"));
    CHECK(first.accepted() == 2);
    // `second` comes back while still marked down, and `first` goes away:
    // the one up upstream refuses, the down-marked one is tried last.
    Server back(digest, AF_INET, second_port);
    REQUIRE(back.ok());
    first.stop();
    std::string request = pattern(4000, 77), reply;
    CHECK(exchange(port, request, reply));
    CHECK(reply == digest_line(request));
    CHECK(back.accepted() == 1);
    CHECK(d.count("error dialing " + first.address() + ": connection refused") == 1);
    CHECK(d.count("trying them anyway") == 0);  // `first` was up: not fail open
    CHECK(d.count("no upstream of") == 0);
    CHECK(alive(d));
}

TEST_CASE("a client that resets while its dial is pending cancels the dial at once", "[failover]") {
    BlackHole hole;
    REQUIRE(hole.swallows());
    Daemon d(one_rule({hole.address()}), {"-w", "1", "-t", "5s"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    std::vector<pid_t> workers = d.workers(1);
    REQUIRE(workers.size() == 1);
    const pid_t worker = workers[0];
    const int baseline = settled_fd_count(worker);
    REQUIRE(baseline > 0);

    for (int round = 0; round < 3; ++round) {
        net::Fd fd = dial(port);
        REQUIRE(fd);
        // Client socket + pending upstream socket.
        REQUIRE(wait_until([&] { return fd_count(worker) == baseline + 2; }, 3000ms));
        net::set_abortive_close(fd.get());
        Clock::time_point t0 = Clock::now();
        fd.reset();  // RST
        CHECK(wait_until([&] { return fd_count(worker) == baseline; }, 3000ms));
        CHECK(elapsed_ms(t0) < 3000);
    }
    CHECK(d.wait_log("client went away while dialing", 2000ms, 3));
    CHECK(d.count("i/o timeout") == 0);
    CHECK(d.count("no upstream of") == 0);
    CHECK(alive(d));
}

TEST_CASE("dials that time out leave no descriptor behind and are never completed later", "[failover][leak]") {
    BlackHole hole;
    REQUIRE(hole.swallows());
    Daemon d(one_rule({hole.address()}), {"-w", "1", "-v=false", "-t", "200ms"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    std::vector<pid_t> workers = d.workers(1);
    REQUIRE(workers.size() == 1);
    const pid_t worker = workers[0];
    const int baseline = settled_fd_count(worker);
    REQUIRE(baseline > 0);

    const int n = 20;
    Clock::time_point t0 = Clock::now();
    std::vector<net::Fd> clients;
    for (int i = 0; i < n; ++i) {
        clients.push_back(dial(port));
        REQUIRE(clients.back());
    }
    int closed = 0;
    for (net::Fd& c : clients) closed += closed_by_peer(c.get(), 3000ms);
    CHECK(closed == n);
    CHECK(d.wait_log("no upstream of (r) reachable", 3000ms, n));
    // Identical dial errors are rate-limited (5 lines per 10 s per upstream).
    CHECK(d.count("error dialing " + hole.address() + ": i/o timeout") == 5);
    CHECK(wait_until([&] { return fd_count(worker) == baseline; }, 3000ms));

    // Make room in the hole. A dial socket kept past its deadline would
    // retransmit its SYN about 1 s after it started and land here.
    std::vector<uint16_t> strangers = hole.drain_strangers(t0 + 1700ms);
    CHECK(strangers.empty());
    CHECK(fd_count(worker) == baseline);
    CHECK(alive(d));
}
