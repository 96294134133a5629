// The PROXY header reader (proxy_receive.hpp): what HAProxy's spec says,
// and truncated, oversized and lying headers.
#include <catch2/catch.hpp>

#include "proxy_protocol.hpp"
#include "proxy_receive.hpp"

using proxy_receive::Status;

namespace {

const std::string sig("\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A", 12);

std::string u16(size_t v) { return std::string{static_cast<char>(v >> 8), static_cast<char>(v & 0xff)}; }

net::SockAddr address(const char* text) {
    net::HostPort hp;
    std::string why;
    REQUIRE(net::parse_host_port(text, false, hp, why));
    std::vector<net::SockAddr> found;
    REQUIRE(net::resolve(hp, false, found, why));
    return found.at(0);
}

}  // namespace

TEST_CASE("PROXY v1 TCP4 and TCP6 give source and destination and the header's length", "[proxy_receive]") {
    std::string v4 = "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n";
    std::string with_data = v4 + "GET /";
    proxy_receive::Header h = proxy_receive::parse(with_data.data(), with_data.size());
    REQUIRE(h.status == Status::done);
    CHECK(h.length == v4.size());
    CHECK(h.has_address);
    CHECK(h.source.text() == "192.0.2.1:56324");
    CHECK(h.destination.text() == "198.51.100.1:443");

    std::string v6 = "PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
    h = proxy_receive::parse(v6.data(), v6.size());
    REQUIRE(h.status == Status::done);
    CHECK(h.source.text() == "[2001:db8::1]:1");
    CHECK(h.destination.text() == "[::1]:65535");
}

TEST_CASE("PROXY v1 UNKNOWN and v2 LOCAL keep the connection's own address", "[proxy_receive]") {
    for (std::string text : {std::string("PROXY UNKNOWN\r\n"), std::string("PROXY UNKNOWN ffff::1 ::1 1 2\r\n"),
                             sig + std::string("\x20\x00", 2) + u16(0), sig + "\x20\x11" + u16(12) + std::string(12, '\x01')}) {
        proxy_receive::Header h = proxy_receive::parse(text.data(), text.size());
        CHECK(h.status == Status::done);
        CHECK(h.length == text.size());
        CHECK_FALSE(h.has_address);
    }
}

TEST_CASE("headers written by proxy_protocol.hpp read back the same addresses", "[proxy_receive]") {
    for (auto pair : {std::make_pair("192.0.2.7:4000", "127.0.0.1:80"), std::make_pair("[2001:db8::7]:9", "[::1]:443")}) {
        net::SockAddr client = address(pair.first), local = address(pair.second);
        for (auto version : {proxy_protocol::Version::v1, proxy_protocol::Version::v2}) {
            std::string header = proxy_protocol::header(version, client, local);
            proxy_receive::Header h = proxy_receive::parse(header.data(), header.size());
            REQUIRE(h.status == Status::done);
            CHECK(h.length == header.size());
            CHECK(h.source.text() == client.text());
            CHECK(h.destination.text() == local.text());
        }
    }
}

TEST_CASE("PROXY v2 TLVs are skipped and the bytes after the header are not part of it", "[proxy_receive]") {
    std::string tlvs = std::string("\x04\x00\x03" "abc", 6) + std::string("\x20\x00\x00", 3);
    std::string header = sig + "\x21\x11" + u16(12 + tlvs.size()) + std::string("\xC0\x00\x02\x01\x7F\x00\x00\x01", 8) +
                         u16(40000) + u16(443) + tlvs;
    std::string bytes = header + "\x16\x03\x01";
    proxy_receive::Header h = proxy_receive::parse(bytes.data(), bytes.size());
    REQUIRE(h.status == Status::done);
    CHECK(h.length == header.size());
    CHECK(h.source.text() == "192.0.2.1:40000");
    CHECK(h.destination.text() == "127.0.0.1:443");
    for (size_t n = 1; n < header.size(); ++n) {
        INFO("prefix " << n);
        REQUIRE(proxy_receive::parse(header.data(), n).status == Status::need_more);
    }
}

TEST_CASE("truncated, oversized and lying PROXY headers are refused", "[proxy_receive]") {
    std::string addr4 = std::string(8, '\x01') + u16(1) + u16(2);
    struct Case {
        const char* what;
        std::string bytes;
        Status want;
    } cases[] = {
        {"no header", "GET / HTTP/1.0\r\n", Status::invalid},
        {"TLS instead", "\x16\x03\x01\x02", Status::invalid},
        {"v1 prefix only", "PROXY TCP4 1.2.3.4", Status::need_more},
        {"v1 over 107 bytes", "PROXY TCP4 " + std::string(120, '1'), Status::invalid},
        {"v1 bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", Status::invalid},
        {"v1 NUL inside an address (fuzz, 2026-12-06)", std::string("PROXY TCP4 192.0.2.1\0 1.2.3.4 1 2\r\n", 35), Status::invalid},
        {"v1 TCP5", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", Status::invalid},
        {"v1 v6 address under TCP4", "PROXY TCP4 ::1 ::1 1 2\r\n", Status::invalid},
        {"v1 port 65536", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", Status::invalid},
        {"v1 port with sign", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", Status::invalid},
        {"v1 missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", Status::invalid},
        {"v1 extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", Status::invalid},
        {"v1 two spaces", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", Status::invalid},
        {"v1 lowercase", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", Status::invalid},
        {"v2 signature only", sig, Status::need_more},
        {"v2 version 1", sig + "\x11\x11" + u16(12) + addr4, Status::invalid},
        {"v2 command 2", sig + "\x22\x11" + u16(12) + addr4, Status::invalid},
        {"v2 family 4", sig + "\x21\x41" + u16(12) + addr4, Status::invalid},
        {"v2 length shorter than TCP4 addresses", sig + "\x21\x11" + u16(8) + addr4, Status::invalid},
        {"v2 length shorter than TCP6 addresses", sig + "\x21\x21" + u16(12) + addr4, Status::invalid},
        {"v2 TLV longer than the header", sig + "\x21\x11" + u16(15) + addr4 + std::string("\x01\x00\x09", 3), Status::invalid},
        {"v2 TLV header cut", sig + "\x21\x11" + u16(14) + addr4 + std::string("\x01\x00", 2), Status::invalid},
        {"v2 over 4 KiB", sig + "\x21\x11" + u16(5000) + addr4, Status::invalid},
        {"v2 announced but not all sent", sig + "\x21\x11" + u16(12) + addr4.substr(0, 5), Status::need_more},
    };
    for (const Case& c : cases) {
        INFO(c.what);
        proxy_receive::Header h = proxy_receive::parse(c.bytes.data(), c.bytes.size());
        CHECK(h.status == c.want);
        CHECK_FALSE(h.has_address);
    }
}
