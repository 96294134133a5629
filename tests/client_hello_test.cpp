// The ClientHello reader (client_hello.hpp): real hellos made by Python's
// ssl module (tests/fuzz/corpus-hello), hand-built ones split every way,
// and truncated, oversized and lying ones.
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <sstream>

#include "client_hello.hpp"
#include "hello_bytes.hpp"

using client_hello::Reader;
using client_hello::Status;
using namespace hello_bytes;

namespace {

std::string file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

Reader read_all(const std::string& bytes, size_t chunk = SIZE_MAX) {
    Reader r;
    for (size_t at = 0; at < bytes.size() && r.status() == Status::need_more; at += chunk)
        r.feed(bytes.data() + at, std::min(chunk, bytes.size() - at));
    return r;
}

}  // namespace

TEST_CASE("real ClientHellos from Python's ssl give their server name", "[client_hello]") {
    struct Case {
        const char* file;
        const char* name;
    } cases[] = {{"tls13_sni.bin", "app.example.com"}, {"tls12_sni.bin", "x.example.org"},
                 {"one_byte_records.bin", "a.git.example.com"}, {"no_sni.bin", ""}};
    for (const Case& c : cases) {
        std::string bytes = file_bytes(std::string("tests/fuzz/corpus-hello/") + c.file);
        REQUIRE(bytes.size() > 100);
        for (size_t chunk : {SIZE_MAX, size_t(1), size_t(7)}) {
            INFO(c.file << " chunk " << chunk);
            Reader r = read_all(bytes, chunk);
            CHECK(r.status() == Status::done);
            CHECK(r.name() == c.name);
        }
    }
}

TEST_CASE("a ClientHello split over records and one byte per feed gives the same name", "[client_hello]") {
    for (size_t per_record : {size_t(1), size_t(2), size_t(5), size_t(100), size_t(16384)}) {
        std::string bytes = hello("App.Example.COM", per_record);
        for (size_t chunk : {size_t(1), size_t(3), SIZE_MAX}) {
            INFO("record " << per_record << " chunk " << chunk);
            Reader r = read_all(bytes, chunk);
            CHECK(r.status() == Status::done);
            CHECK(r.name() == "app.example.com");
        }
    }
}

TEST_CASE("every strict prefix of a ClientHello asks for more", "[client_hello]") {
    std::string bytes = hello("a.example", 50);
    for (size_t n = 1; n < bytes.size(); ++n) {
        Reader r;
        INFO("prefix " << n);
        REQUIRE(r.feed(bytes.data(), n) == Status::need_more);
    }
}

TEST_CASE("a ClientHello without extensions or without server_name is done with no name", "[client_hello]") {
    Reader a = read_all(records(handshake("", false)));
    CHECK(a.status() == Status::done);
    CHECK_FALSE(a.has_name());
    Reader b = read_all(hello(""));
    CHECK(b.status() == Status::done);
    CHECK_FALSE(b.has_name());
}

TEST_CASE("bytes that are not a TLS handshake record are not TLS", "[client_hello]") {
    for (const char* text : {"GET / HTTP/1.1\r\n", "SSH-2.0-x\r\n", "\x80\x2e\x01"}) {
        Reader r;
        CHECK(r.feed(text, strlen(text)) == Status::not_tls);
    }
}

TEST_CASE("lying, malformed and oversized ClientHellos are refused, never misread", "[client_hello]") {
    const std::string good_ext = sni_extension("a.example");
    auto with_ext = [](const std::string& ext) { return records(handshake(ext)); };
    std::string sni_list_lies = u16(0) + u16(8) + u16(50) + std::string(1, '\0') + u16(3) + "abc";
    std::string sni_entry_lies = u16(0) + u16(8) + u16(6) + std::string(1, '\0') + u16(9) + "abc";
    std::string two_hosts = u16(0) + u16(12) + u16(10) + std::string(1, '\0') + u16(2) + "ab" +
                            std::string(1, '\0') + u16(2) + "cd";
    std::string bad_chars = sni_extension(std::string("a\0b", 3));
    std::string empty_label = sni_extension("a..b");
    std::string ext_too_long = u16(0) + u16(500) + "x";
    std::string message = handshake(good_ext);
    std::string alert_first = std::string("\x16\x03\x01", 3) + u16(3) + message.substr(0, 3) +
                              std::string("\x15\x03\x03\x00\x02\x02\x28", 7);
    std::string lying_handshake = records("\x01" + u24(3) + message.substr(4));
    struct Case {
        const char* what;
        std::string bytes;
        Status want;
    } cases[] = {
        {"server_name list longer than its extension", with_ext(sni_list_lies), Status::malformed},
        {"host name longer than its list", with_ext(sni_entry_lies), Status::malformed},
        {"two host names", with_ext(two_hosts), Status::malformed},
        {"NUL in the host name", with_ext(bad_chars), Status::malformed},
        {"empty label", with_ext(empty_label), Status::malformed},
        {"extension longer than the extensions", with_ext(ext_too_long), Status::malformed},
        {"two server_name extensions", with_ext(good_ext + good_ext), Status::malformed},
        {"an alert record in the middle", alert_first, Status::malformed},
        {"handshake shorter than its body", lying_handshake, Status::malformed},
        {"record version 2", std::string("\x16\x02\x00\x00\x05", 5), Status::malformed},
        {"zero-length record", std::string("\x16\x03\x01\x00\x00", 5), Status::malformed},
        {"record over 2^14", std::string("\x16\x03\x01\x40\x01", 5), Status::malformed},
        {"not a ClientHello", records("\x02" + u24(40) + std::string(40, 'x')), Status::malformed},
        {"hello claiming 16 MiB", records("\x01\xff\xff\xff"), Status::too_long},
        {"hello claiming 18 KiB", records("\x01" + u24(18 * 1024)), Status::too_long},
    };
    for (const Case& c : cases) {
        INFO(c.what);
        Reader whole = read_all(c.bytes);
        CHECK(whole.status() == c.want);
        CHECK_FALSE(whole.has_name());
        Reader bytewise = read_all(c.bytes, 1);
        CHECK(bytewise.status() == c.want);
    }
}

TEST_CASE("a ClientHello padded to 16 KiB is still read; endless records stop at 18 KiB", "[client_hello]") {
    std::string ext = sni_extension("big.example") + u16(21) + u16(16000) + std::string(16000, '\0');
    Reader big = read_all(records(handshake(ext), 16384), 1000);
    CHECK(big.status() == Status::done);
    CHECK(big.name() == "big.example");

    // A hello that says 17 KiB but arrives 1 byte per record: its record
    // headers take it past the bound.
    std::string endless = records("\x01" + u24(17 * 1024) + std::string(17 * 1024, 'x'), 1);
    Reader r = read_all(endless, 4096);
    CHECK(r.status() == Status::too_long);
}
