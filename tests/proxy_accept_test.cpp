// accept_proxy: a PROXY v1/v2 header in front of every connection names the
// client, and that client is the one in logs, allow/deny, source-hash, the
// per-client limit and the header sent on. Hand-made headers first, then
// real senders: HAProxy (send-proxy, send-proxy-v2) and nginx stream
// (proxy_protocol on) in front of mixctl, on loopback.
#include <catch2/catch.hpp>

#include <set>

#include "peers.hpp"

using namespace harness;
using namespace peers;

namespace {

const std::string sig("\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A", 12);

std::string u16(size_t v) { return std::string{static_cast<char>(v >> 8), static_cast<char>(v & 0xff)}; }

// v2 PROXY TCP4 from a.b.c.d:sport, with a TLV to skip.
std::string v2_tcp4(const unsigned char ip[4], uint16_t sport) {
    std::string tlv("\x04\x00\x02xy", 5);
    return sig + "\x21\x11" + u16(12 + tlv.size()) + std::string(reinterpret_cast<const char*>(ip), 4) +
           std::string("\x7F\x00\x00\x01", 4) + u16(sport) + u16(80) + tlv;
}

// An upstream that answers with the first line it got (the PROXY v1 header
// mixctl sends on), then echoes the rest.
void first_line(int fd) {
    std::string line;
    char c;
    while (line.size() < 200 && ::read(fd, &c, 1) == 1) {
        line += c;
        if (c == '\n') break;
    }
    if (!send_all(fd, line)) return;
    echo(fd);
}

std::string ask(uint16_t port, const std::string& header, const std::string& payload = "hello",
                const char* source = nullptr) {
    net::Fd fd = dial(port, AF_INET, 5000ms, source);
    if (!fd || !send_all(fd.get(), header + payload)) return "";
    ::shutdown(fd.get(), SHUT_WR);
    std::string reply;
    read_to_eof(fd.get(), reply, 4096);
    return reply;
}

std::string accept_rule(const std::string& extra, const std::string& to) {
    return "rules:\n- name: p\n  from: 127.0.0.1:0\n  accept_proxy: true\n  proxy_protocol: v1\n" + extra +
           "  to: [" + to + "]\n";
}

}  // namespace

TEST_CASE("accept_proxy: the header's client is the client in the log and in the header sent on", "[accept_proxy]") {
    Server up(first_line);
    Daemon d(accept_rule("", up.address()));
    uint16_t port = d.port("p");
    REQUIRE(port != 0);
    INFO(d.log());
    std::string v1 = "PROXY TCP4 192.0.2.7 127.0.0.1 4444 80\r\n";
    CHECK(ask(port, v1) == "PROXY TCP4 192.0.2.7 127.0.0.1 4444 80\r\nhello");
    CHECK(d.wait_log("(192.0.2.7:4444)"));
    const unsigned char ip[4] = {198, 51, 100, 9};
    CHECK(ask(port, v2_tcp4(ip, 5555)) == "PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\nhello");
    std::string v6 = "PROXY TCP6 2001:db8::5 ::1 6666 443\r\n";
    CHECK(ask(port, v6) == "PROXY TCP6 2001:db8::5 ::1 6666 443\r\nhello");
    CHECK(d.wait_log("Connected") );
    // LOCAL and UNKNOWN: the connection's own addresses stand.
    std::string unknown = ask(port, "PROXY UNKNOWN\r\n");
    CHECK(unknown.compare(0, 21, "PROXY TCP4 127.0.0.1 ") == 0);
    std::string local = ask(port, sig + std::string("\x20\x00\x00\x00", 4));
    CHECK(local.compare(0, 21, "PROXY TCP4 127.0.0.1 ") == 0);
    CHECK(local.substr(local.size() - 5) == "hello");
}

TEST_CASE("accept_proxy: no header, a bad one, or none in time is closed, counted, forwards nothing",
          "[accept_proxy]") {
    Server up(first_line);
    Daemon d(accept_rule("  preread_timeout: 1s\n", up.address()));
    uint16_t port = d.port("p");
    REQUIRE(port != 0);
    INFO(d.log());
    for (std::string bad : {std::string("GET / HTTP/1.0\r\n\r\n"), std::string("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
                            std::string("PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n"), sig + "\x21\x11" + u16(4) + "abcd",
                            std::string("PROXY TCP4 ") + std::string(200, '1')}) {
        CHECK(ask(port, bad, "") == "");
    }
    Clock::time_point began = Clock::now();
    net::Fd silent = dial(port);
    REQUIRE(send_all(silent.get(), std::string("PROXY TCP4 1.2")));
    CHECK(closed_by_peer(silent.get(), 5000ms));
    CHECK(elapsed_ms(began) >= 900);
    CHECK(d.wait_log("no complete PROXY header in time"));
    CHECK(up.accepted() == 0);
    d.signal(SIGUSR1);
    CHECK(d.wait_log("bad_preread=6"));
}

TEST_CASE("accept_proxy: allow/deny and source-hash judge the header's client", "[accept_proxy]") {
    Server a(banner("a")), b(banner("b"));
    Daemon d("rules:\n- name: p\n  from: 127.0.0.1:0\n  accept_proxy: true\n  deny: [192.0.2.0/24]\n"
             "  strategy: source-hash\n  to: [" + a.address() + ", " + b.address() + "]\n");
    uint16_t port = d.port("p");
    REQUIRE(port != 0);
    INFO(d.log());
    CHECK(ask(port, "PROXY TCP4 192.0.2.1 127.0.0.1 1000 80\r\n") == "");
    CHECK(d.wait_log("denied 192.0.2.1:1000"));
    std::set<std::string> seen;
    for (int i = 0; i < 30; ++i) {
        // One client, many ports and real connections: one upstream.
        std::string header = "PROXY TCP4 198.51.100.1 127.0.0.1 " + std::to_string(2000 + i) + " 80\r\n";
        seen.insert(ask(port, header, "").substr(0, 2));
    }
    CHECK(seen.size() == 1);
    seen.clear();
    for (int i = 1; i <= 30; ++i)
        seen.insert(ask(port, "PROXY TCP4 203.0.113." + std::to_string(i) + " 127.0.0.1 3000 80\r\n", "").substr(0, 2));
    CHECK(seen.size() == 2);  // 30 clients spread over both
}

TEST_CASE("proxy_trusted: a sender outside it is closed before anything is read", "[accept_proxy]") {
    Server up(first_line);
    Daemon d(accept_rule("  proxy_trusted: [127.0.0.2]\n", up.address()));
    uint16_t port = d.port("p");
    REQUIRE(port != 0);
    INFO(d.log());
    std::string v1 = "PROXY TCP4 192.0.2.7 127.0.0.1 4444 80\r\n";
    CHECK(ask(port, v1, "hello", "127.0.0.1") == "");
    CHECK(d.wait_log("closed 127.0.0.1:"));
    CHECK(d.wait_log("not in proxy_trusted"));
    CHECK(ask(port, v1, "hello", "127.0.0.2") == v1 + "hello");
    CHECK(up.accepted() == 1);
}

TEST_CASE("max_conns_per_client: the N+1-th connection of one client is refused at once, across workers",
          "[accept_proxy][limits]") {
    Server up(echo);
    Daemon d("rules:\n- name: r\n  from: 127.0.0.1:0\n  max_conns_per_client: 2\n  to: [" + up.address() + "]\n"
             "- name: p\n  from: 127.0.0.1:0\n  accept_proxy: true\n  max_conns_per_client: 1\n  to: [" +
                 up.address() + "]\n",
             {"-w", "2"});
    uint16_t port = d.port("r"), proxied = d.port("p");
    REQUIRE(port != 0);
    REQUIRE(proxied != 0);
    INFO(d.log());
    auto served = [](net::Fd& fd) {
        std::string reply;
        return fd && send_all(fd.get(), std::string("ping")) && read_exact(fd.get(), reply, 4) && reply == "ping";
    };
    // Enough connections in between that both workers take some.
    std::vector<net::Fd> held;
    for (int i = 0; i < 2; ++i) {
        held.push_back(dial(port, AF_INET, 5000ms, "127.0.0.1"));
        REQUIRE(served(held.back()));
    }
    for (int i = 0; i < 3; ++i) {
        net::Fd extra = dial(port, AF_INET, 5000ms, "127.0.0.1");
        Clock::time_point began = Clock::now();
        CHECK(closed_by_peer(extra.get(), 3000ms));
        CHECK(elapsed_ms(began) < 2000);
        net::Fd other = dial(port, AF_INET, 5000ms, "127.0.0.3");  // another client is unaffected
        CHECK(served(other));
        // Its close is counted (by whichever worker held it) before the next
        // one of 127.0.0.3 comes: otherwise that one may meet the limit.
        other.reset();
        CHECK(wait_until([&] { return d.count("Closed 127.0.0.1:" + std::to_string(port) + " ") >= size_t(i) + 1; }));
    }
    CHECK(d.wait_log("max_conns_per_client 2 reached"));
    held.pop_back();  // one closes: there is room again
    CHECK(wait_until([&] {
        net::Fd again = dial(port, AF_INET, 5000ms, "127.0.0.1");
        return served(again);
    }));

    // Behind accept_proxy the limit counts the header's client.
    net::Fd first = dial(proxied);
    REQUIRE(send_all(first.get(), std::string("PROXY TCP4 192.0.2.50 127.0.0.1 1 80\r\n")));
    REQUIRE(served(first));
    net::Fd same = dial(proxied);
    REQUIRE(send_all(same.get(), std::string("PROXY TCP4 192.0.2.50 127.0.0.1 2 80\r\n")));
    CHECK(closed_by_peer(same.get(), 3000ms));
    net::Fd different = dial(proxied);
    REQUIRE(send_all(different.get(), std::string("PROXY TCP4 192.0.2.51 127.0.0.1 1 80\r\n")));
    CHECK(served(different));
    // Counted: r refused 3 (more if a retry above came before the close
    // was seen), p refused 1.
    d.signal(SIGUSR1);
    REQUIRE(d.wait_log("stats clients rule=p "));
    auto refused = [&](const std::string& rule) {
        std::string text = d.log();
        size_t at = text.find("stats clients rule=" + rule + " ");
        at = text.find("over_client_limit=", at);
        return at == std::string::npos ? -1 : atoi(text.c_str() + at + 18);
    };
    CHECK(refused("r") >= 3);
    CHECK(refused("p") == 1);
}

// ---- real senders ----------------------------------------------------------

namespace {

// HAProxy or nginx stream on a free port, passing to mixctl with a header.
struct Sender {
    TempDir dir;
    uint16_t port = 0;
    std::unique_ptr<Child> child;

    Sender(const std::string& kind, const std::string& option, uint16_t mixctl_port) {
        port = free_port();
        std::string p = std::to_string(port), m = std::to_string(mixctl_port), d = dir.path();
        if (kind == "haproxy") {
            std::string cfg = dir.write("h.cfg", "global\n    nbthread 1\ndefaults\n    mode tcp\n    timeout connect 2s\n"
                                                 "    timeout client 5s\n    timeout server 5s\nlisten in\n"
                                                 "    bind 127.0.0.1:" + p + "\n    server m 127.0.0.1:" + m + " " +
                                                     option + "\n");
            child.reset(new Child({find_program("haproxy"), "-f", cfg, "-db"}, d + "/log"));
        } else {
            std::string cfg = dir.write(
                "n.conf", "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\ndaemon off;\nmaster_process off;\n"
                          "worker_processes 1;\npid " + d + "/n.pid;\nerror_log " + d + "/log info;\n"
                          "events { worker_connections 64; }\nstream {\n    server {\n        listen 127.0.0.1:" + p +
                          ";\n        proxy_pass 127.0.0.1:" + m + ";\n        proxy_protocol on;\n    }\n}\n");
            child.reset(new Child({find_program("nginx"), "-e", d + "/log", "-c", cfg}, d + "/log"));
        }
    }
    std::string log() const { return file_text(dir.path() + "/log"); }
};

}  // namespace

TEST_CASE("HAProxy send-proxy / send-proxy-v2 and nginx proxy_protocol in front: the upstream learns the real client",
          "[accept_proxy][peers]") {
    Server up(first_line);
    Daemon d(accept_rule("", up.address()));
    uint16_t port = d.port("p");
    REQUIRE(port != 0);
    struct Case {
        const char* kind;
        const char* option;
    } cases[] = {{"haproxy", "send-proxy"}, {"haproxy", "send-proxy-v2"}, {"nginx", ""}};
    for (const Case& c : cases) {
        if (find_program(c.kind).empty() ||
            (std::string(c.kind) == "nginx" && ::access("/usr/lib/nginx/modules/ngx_stream_module.so", R_OK) != 0)) {
            WARN(c.kind << " (Debian package haproxy / nginx + libnginx-mod-stream) is not installed: not checked");
            continue;
        }
        Sender s(c.kind, c.option, port);
        INFO(c.kind << " " << c.option << "\n" << s.log() << "\n" << d.log());
        REQUIRE(listening(s.port));
        // The client comes from 127.0.0.5: only the header can tell mixctl.
        net::Fd fd = dial(s.port, AF_INET, 5000ms, "127.0.0.5");
        REQUIRE(fd);
        REQUIRE(send_all(fd.get(), std::string("hello")));
        // The whole echo (header line, then "hello") before the half-close:
        // nginx without proxy_half_close ends the session at the client's FIN.
        std::string reply;
        REQUIRE(read_exact(fd.get(), reply, 11 + 10));
        std::string rest;
        while (reply.find('\n') == std::string::npos && read_exact(fd.get(), rest, 1)) reply += rest;
        if (read_exact(fd.get(), rest, 5)) reply += rest;
        std::string more;
        set_timeouts(fd.get(), 2000ms);
        ::shutdown(fd.get(), SHUT_WR);
        read_to_eof(fd.get(), more, 4096);
        reply += more;
        CHECK(reply.compare(0, 21, "PROXY TCP4 127.0.0.5 ") == 0);
        CHECK(reply.substr(reply.size() - 5) == "hello");
        CHECK(d.wait_log("(127.0.0.5:"));
    }
}
