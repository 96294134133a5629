// The relay, end to end: the real mixctl between real sockets on loopback,
// every byte checked.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>

#include "harness.hpp"

using namespace harness;

TEST_CASE("a small request and its reply pass byte-exact", "[relay]") {
    Server up(digest);
    Daemon d(one_rule(up));
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    std::string request = pattern(1000, 1), reply;
    REQUIRE(exchange(port, request, reply));
    CHECK(reply == digest_line(request));
    CHECK(d.wait_log("Connected 127.0.0.1:" + std::to_string(port) + " => " + up.address()));
    CHECK(d.wait_log("Closed 127.0.0.1:" + std::to_string(port) + " => " + up.address()));
    CHECK(d.wait_log("bytes_in=1000 bytes_out=" + std::to_string(digest_line(request).size())));
}

TEST_CASE("half-close delivers the reply", "[relay]") {
    // The client's request ends with shutdown(SHUT_WR), as `echo req | nc`
    // does; the server answers only after seeing that EOF.
    Server up(digest);
    Daemon d(one_rule(up));
    uint16_t port = d.port("r");
    for (int i = 0; i < 20; ++i) {
        std::string request = pattern(static_cast<size_t>(1 + i * 997), static_cast<uint64_t>(i)), reply;
        REQUIRE(exchange(port, request, reply));
        CHECK(reply == digest_line(request));
    }
}

TEST_CASE("the upstream's half-close reaches the client while the client keeps sending", "[relay]") {
    // The server speaks first and ends its side at once; the client then
    // sends, and the server must still receive everything.
    std::atomic<uint64_t> received{0};
    Server up([&](int fd) {
        send_all(fd, std::string("hello\n"));
        ::shutdown(fd, SHUT_WR);
        Checksum sum;
        read_to_eof(fd, sum);
        received = sum.bytes();
    });
    Daemon d(one_rule(up));
    net::Fd fd = dial(d.port("r"));
    REQUIRE(fd);
    std::string greeting;
    REQUIRE(read_to_eof(fd.get(), greeting));  // EOF arrives: the upstream's half-close was relayed
    CHECK(greeting == "hello\n");
    REQUIRE(send_pattern(fd.get(), 1 << 20, 7));
    ::shutdown(fd.get(), SHUT_WR);
    CHECK(wait_until([&] { return received.load() == (1u << 20); }));
}

TEST_CASE("the upstream can speak first", "[relay]") {
    Server up(banner("SSH-2.0-test"));
    Daemon d(one_rule(up));
    net::Fd fd = dial(d.port("r"));
    REQUIRE(fd);
    std::string line;
    REQUIRE(read_exact(fd.get(), line, 13));
    CHECK(line == "SSH-2.0-test\n");
    REQUIRE(send_all(fd.get(), std::string("ping")));
    std::string echoed;
    REQUIRE(read_exact(fd.get(), echoed, 4));
    CHECK(echoed == "ping");
}

TEST_CASE("50 MB each way pass byte-exact at the same time", "[relay][big]") {
    Server up(echo);
    Daemon d(one_rule(up));
    net::Fd fd = dial(d.port("r"), AF_INET, 30000ms);
    REQUIRE(fd);
    const uint64_t size = 50ull << 20;
    Checksum sent;
    std::thread writer([&] {
        send_pattern(fd.get(), size, 42, &sent);
        ::shutdown(fd.get(), SHUT_WR);
    });
    Checksum got;
    bool ok = read_to_eof(fd.get(), got);
    writer.join();
    CHECK(ok);
    CHECK(got.bytes() == size);
    CHECK(got.value() == sent.value());
}

TEST_CASE("200 concurrent connections all get their own bytes back", "[relay]") {
    Server up(digest);
    Daemon d(one_rule(up), {"-w", "2", "-v=false"});
    uint16_t port = d.port("r");
    std::vector<net::Fd> fds;
    std::vector<std::string> requests;
    for (int i = 0; i < 200; ++i) {
        fds.push_back(dial(port));
        REQUIRE(fds.back());
        requests.push_back(pattern(static_cast<size_t>(100 + i * 50), static_cast<uint64_t>(i + 100)));
    }
    for (int i = 0; i < 200; ++i) {
        REQUIRE(send_all(fds[static_cast<size_t>(i)].get(), requests[static_cast<size_t>(i)]));
        ::shutdown(fds[static_cast<size_t>(i)].get(), SHUT_WR);
    }
    int good = 0;
    for (int i = 0; i < 200; ++i) {
        std::string reply;
        if (read_to_eof(fds[static_cast<size_t>(i)].get(), reply) && reply == digest_line(requests[static_cast<size_t>(i)])) ++good;
    }
    CHECK(good == 200);
}

TEST_CASE("several rules relay at once, each to its own upstream", "[relay]") {
    Server a(banner("A")), b(banner("B")), c(banner("C"));
    Daemon d(rules_yaml({rule_yaml("a", "127.0.0.1:0", {a.address()}), rule_yaml("b", "127.0.0.1:0", {b.address()}),
                         rule_yaml("c", "127.0.0.1:0", {c.address()})}));
    for (const char* name : {"a", "b", "c"}) {
        net::Fd fd = dial(d.port(name));
        REQUIRE(fd);
        std::string line;
        REQUIRE(read_exact(fd.get(), line, 2));
        CHECK(line == std::string(1, static_cast<char>(name[0] - 'a' + 'A')) + "\n");
    }
}

TEST_CASE("connections spread over three upstreams", "[relay]") {
    Server a(echo), b(echo), c(echo);
    Daemon d(one_rule({a.address(), b.address(), c.address()}), {"-w", "1", "-v=false"});
    uint16_t port = d.port("r");
    for (int i = 0; i < 150; ++i) {
        std::string reply;
        REQUIRE(exchange(port, "x", reply));
        CHECK(reply == "x");
    }
    // Uniform random: 50 expected each; 20 is over 6 standard deviations out.
    CHECK(a.accepted() > 20);
    CHECK(b.accepted() > 20);
    CHECK(c.accepted() > 20);
    CHECK(a.accepted() + b.accepted() + c.accepted() == 150);
}

TEST_CASE("IPv6 listeners and upstreams work, and v4 to v6 and back", "[relay][ipv6]") {
    Server v6(digest, AF_INET6), v4(digest, AF_INET);
    REQUIRE(v6.ok());
    Daemon d(rules_yaml({rule_yaml("six-six", "[::1]:0", {v6.address()}), rule_yaml("four-six", "127.0.0.1:0", {v6.address()}),
                         rule_yaml("six-four", "[::1]:0", {v4.address()})}));
    std::string request = pattern(5000, 3);
    std::string reply;
    REQUIRE(exchange(d.port("six-six"), request, reply, AF_INET6));
    CHECK(reply == digest_line(request));
    reply.clear();
    REQUIRE(exchange(d.port("four-six"), request, reply, AF_INET));
    CHECK(reply == digest_line(request));
    reply.clear();
    REQUIRE(exchange(d.port("six-four"), request, reply, AF_INET6));
    CHECK(reply == digest_line(request));
    CHECK(d.wait_log("([::1]:"));  // the client shown in IPv6 form
}

TEST_CASE("a localhost upstream is found whichever family it listens on", "[relay]") {
    Server up(digest, AF_INET);
    Daemon d(rules_yaml({rule_yaml("r", "127.0.0.1:0", {"localhost:" + std::to_string(up.port())})}));
    std::string request = pattern(777, 9), reply;
    REQUIRE(exchange(d.port("r"), request, reply));
    CHECK(reply == digest_line(request));
}

TEST_CASE("no descriptor is left behind after connections end", "[relay][leak]") {
    Server up(digest);
    Daemon d(one_rule(up), {"-w", "1", "-v=false"});
    uint16_t port = d.port("r");
    std::vector<pid_t> workers = d.workers(1);
    REQUIRE(workers.size() == 1);
    int parent_before = fd_count(d.pid());
    int worker_before = settled_fd_count(workers[0]);
    for (int i = 0; i < 50; ++i) {
        std::string reply;
        REQUIRE(exchange(port, "abc", reply));
    }
    CHECK(wait_until([&] { return fd_count(workers[0]) == worker_before; }));
    CHECK(fd_count(d.pid()) == parent_before);
}
