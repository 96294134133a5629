// The pre-dial read phase (preread.hpp): which pool a connection gets, who
// its client is, and that the bytes to forward are exactly the client's.
#include <catch2/catch.hpp>

#include "config_helpers.hpp"
#include "hello_bytes.hpp"
#include "preread.hpp"

using namespace config_helpers;
using preread::Step;

namespace {

config::Config rules(bool accept_proxy, bool with_default) {
    std::string text = "rules:\n- from: 127.0.0.1:443\n";
    if (accept_proxy) text += "  accept_proxy: true\n";
    if (with_default) text += "  to: [127.0.0.1:1]\n";
    text += "  routes:\n    - {sni: app.example.com, to: 127.0.0.1:2}\n    - {sni: \"*.git.example.com\", to: 127.0.0.1:3}\n";
    Loaded l = load(text);
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    return l.cfg;
}

Step feed_bytewise(preread::Reader& r, const std::string& bytes) {
    for (char c : bytes)
        if (r.feed(&c, 1) != Step::need_more) break;
    return r.step();
}

}  // namespace

TEST_CASE("preread: a ClientHello picks its route and is kept whole for the upstream", "[preread]") {
    config::Config cfg = rules(false, true);
    std::string hello = hello_bytes::hello("x.git.example.com", 3);
    preread::Reader r(cfg.rules[0]);
    REQUIRE(feed_bytewise(r, hello) == Step::done);
    CHECK(r.route() == 1);
    CHECK(r.bytes() == hello);
    CHECK_FALSE(r.has_address());

    preread::Reader other(cfg.rules[0]);
    REQUIRE(other.feed(hello_bytes::hello("nomatch.example.com").data(), hello_bytes::hello("nomatch.example.com").size()) == Step::done);
    CHECK(other.route() == -1);
}

TEST_CASE("preread: a PROXY header gives the client, then the ClientHello the route", "[preread]") {
    config::Config cfg = rules(true, true);
    std::string header = "PROXY TCP4 192.0.2.9 127.0.0.1 5555 443\r\n";
    std::string hello = hello_bytes::hello("app.example.com");
    preread::Reader r(cfg.rules[0]);
    REQUIRE(feed_bytewise(r, header + hello) == Step::done);
    CHECK(r.has_address());
    CHECK(r.client().text() == "192.0.2.9:5555");
    CHECK(r.route() == 0);
    CHECK(r.bytes() == hello);  // the header is not forwarded
}

TEST_CASE("preread: what goes to the default pool and what is refused", "[preread]") {
    config::Config with = rules(false, true), without = rules(false, false), proxied = rules(true, true);
    struct Case {
        const char* what;
        const config::Rule& rule;
        std::string bytes;
        bool time_out;
        Step want;
        preread::Refusal refusal;
    } cases[] = {
        {"not TLS, with a default pool", with.rules[0], "GET / HTTP/1.0\r\n", false, Step::done, preread::Refusal::none},
        {"not TLS, no default pool", without.rules[0], "GET /", false, Step::reject, preread::Refusal::unrouted},
        {"no server_name, default pool", with.rules[0], hello_bytes::hello(""), false, Step::done, preread::Refusal::none},
        {"silent client, default pool", with.rules[0], "", true, Step::done, preread::Refusal::none},
        {"silent client, no default pool", without.rules[0], "", true, Step::reject, preread::Refusal::unrouted},
        {"half a hello at the deadline", with.rules[0], hello_bytes::hello("a.b").substr(0, 20), true, Step::reject,
         preread::Refusal::bad_preread},
        {"lying hello", with.rules[0], std::string("\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00", 13), false, Step::reject,
         preread::Refusal::bad_preread},
        {"no PROXY header", proxied.rules[0], hello_bytes::hello("app.example.com"), false, Step::reject,
         preread::Refusal::bad_preread},
        {"half a PROXY header at the deadline", proxied.rules[0], "PROXY TCP4 1.2", true, Step::reject,
         preread::Refusal::bad_preread},
    };
    for (const Case& c : cases) {
        INFO(c.what);
        preread::Reader r(c.rule);
        if (!c.bytes.empty()) r.feed(c.bytes.data(), c.bytes.size());
        if (c.time_out) r.timed_out();
        CHECK(r.step() == c.want);
        CHECK(r.refusal() == c.refusal);
        if (c.want == Step::done) {
            CHECK(r.route() == -1);
            CHECK(r.bytes() == c.bytes);
        }
    }
}

TEST_CASE("preread: the buffer never grows past max_bytes", "[preread]") {
    config::Config cfg = rules(true, true);
    preread::Reader r(cfg.rules[0]);
    std::string header = "PROXY TCP4 192.0.2.9 127.0.0.1 5555 443\r\n";
    r.feed(header.data(), header.size());
    std::string endless = hello_bytes::records("\x01" + hello_bytes::u24(17 * 1024) + std::string(17 * 1024, 'x'), 1);
    size_t at = 0;
    while (r.step() == Step::need_more && at < endless.size()) {
        size_t n = std::min<size_t>(r.room(), 1000);
        REQUIRE(n > 0);
        r.feed(endless.data() + at, std::min(n, endless.size() - at));
        at += n;
    }
    CHECK(r.step() == Step::reject);
    CHECK(r.bytes().size() <= preread::max_bytes);
}
