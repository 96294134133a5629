// PROXY protocol: the header bytes, and the header as an upstream sees it.
#include <catch2/catch.hpp>

#include "harness.hpp"
#include "proxy_protocol.hpp"

using namespace harness;

namespace {

std::string hex(const std::string& bytes) {
    std::string out;
    char two[3];
    for (unsigned char c : bytes) {
        snprintf(two, sizeof two, "%02x", c);
        out += two;
    }
    return out;
}

}  // namespace

TEST_CASE("v1 headers follow the spec's text form", "[proxy]") {
    CHECK(proxy_protocol::v1(ip_port("192.0.2.1", 56324), ip_port("198.51.100.1", 443)) ==
          "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n");
    CHECK(proxy_protocol::v1(ip_port("2001:db8::1", 1), ip_port("::1", 65535)) == "PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
    // A v4 client on a dual-stack listener is a v4 client.
    CHECK(proxy_protocol::v1(ip_port("::ffff:127.0.0.2", 4000), ip_port("::ffff:127.0.0.1", 80)) ==
          "PROXY TCP4 127.0.0.2 127.0.0.1 4000 80\r\n");
    CHECK(proxy_protocol::v1(ip_port("127.0.0.1", 1), ip_port("::1", 2)) == "PROXY UNKNOWN\r\n");
    std::string longest = proxy_protocol::v1(ip_port("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
                                             ip_port("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535));
    CHECK(longest.size() <= 107);
}

TEST_CASE("v2 headers carry the signature, family and big-endian fields", "[proxy]") {
    std::string h = proxy_protocol::v2(ip_port("127.0.0.2", 0x1234), ip_port("127.0.0.1", 80));
    CHECK(hex(h) ==
          "0d0a0d0a000d0a515549540a"  // signature
          "21"                        // version 2, PROXY
          "11"                        // TCP over IPv4
          "000c"                      // 12 bytes follow
          "7f000002"
          "7f000001"
          "1234"
          "0050");
    std::string h6 = proxy_protocol::v2(ip_port("::1", 1), ip_port("::2", 2));
    CHECK(h6.size() == 16 + 36);
    CHECK(hex(h6.substr(12, 4)) == "21210024");
}

TEST_CASE("the upstream gets the PROXY header first, even when it speaks first", "[proxy]") {
    // The upstream reads the header before saying anything (as a PROXY
    // receiver does), then greets: the client, which sends nothing, must
    // still get the greeting.
    std::string seen_v1, seen_v2;
    Server up1([&](int fd) {
        std::string line;
        char c;
        while (line.size() < 107 && ::recv(fd, &c, 1, 0) == 1) {
            line += c;
            if (line.size() >= 2 && line.compare(line.size() - 2, 2, "\r\n") == 0) break;
        }
        seen_v1 = line;
        send_all(fd, std::string("SSH-2.0-x\n"));
        echo(fd);
    });
    Server up2([&](int fd) {
        std::string head;
        if (read_exact(fd, head, 16)) {
            std::string rest;
            read_exact(fd, rest, static_cast<size_t>(static_cast<unsigned char>(head[14]) << 8 |
                                                     static_cast<unsigned char>(head[15])));
            seen_v2 = head + rest;
        }
        send_all(fd, std::string("SSH-2.0-x\n"));
        echo(fd);
    });
    Daemon d("rules:\n"
             "- {name: one, from: '127.0.0.1:0', proxy_protocol: v1, to: ['" + up1.address() + "']}\n"
             "- {name: two, from: '127.0.0.1:0', proxy_protocol: v2, to: ['" + up2.address() + "']}\n");
    for (const char* rule : {"one", "two"}) {
        INFO(rule);
        uint16_t port = d.port(rule);
        REQUIRE(port != 0);
        net::Fd fd = dial(port, AF_INET, 5000ms, "127.0.0.3");
        REQUIRE(fd);
        std::string greeting;
        REQUIRE(read_exact(fd.get(), greeting, 10));
        CHECK(greeting == "SSH-2.0-x\n");
        REQUIRE(send_all(fd.get(), std::string("data")));
        std::string echoed;
        REQUIRE(read_exact(fd.get(), echoed, 4));
        CHECK(echoed == "data");  // the header was not relayed back, nor counted as data
        net::SockAddr me;
        net::local_address(fd.get(), me);
        std::string expected = "PROXY TCP4 127.0.0.3 127.0.0.1 " + std::to_string(me.port()) + " " +
                               std::to_string(port) + "\r\n";
        if (std::string(rule) == "one") CHECK(seen_v1 == expected);
        else CHECK(seen_v2 == proxy_protocol::v2(me, loopback(port)));
    }
}

TEST_CASE("an unknown proxy_protocol value is a config error with its line", "[proxy]") {
    RunResult r = run({"-check", "-f", TempDir().write("x.yaml", "rules:\n- from: 127.0.0.1:1\n  proxy_protocol: v3\n  to: [127.0.0.1:2]\n")});
    CHECK(r.exit.code == 1);
    CHECK(r.err.find("x.yaml:3: proxy_protocol: \"v3\" must be v1, v2 or off") != std::string::npos);
}
