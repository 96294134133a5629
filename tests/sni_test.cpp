// SNI routes against real TLS peers: `openssl s_server` upstreams with
// throwaway certificates made here, reached through mixctl by `openssl
// s_client -servername` and `curl --resolve`. The client must see the
// certificate of the route's upstream: proof that mixctl chose by the name
// and did not terminate TLS. Then hand-made ClientHellos: one byte per
// segment, stalled, lying, and a rule with no default pool.
#include <catch2/catch.hpp>

#include <map>
#include <memory>

#include <netinet/tcp.h>

#include "hello_bytes.hpp"
#include "peers.hpp"

using namespace harness;
using namespace peers;

namespace {

// Three TLS upstreams, each with its own self-signed certificate
// (CN=<name>.upstream.test), on free loopback ports.
struct TlsUpstreams {
    TempDir dir;
    std::vector<std::unique_ptr<Child>> servers;
    std::map<std::string, uint16_t> port;
    bool ok = true;

    explicit TlsUpstreams(const std::vector<std::string>& names) {
        for (const std::string& n : names) {
            std::string key = dir.path() + "/" + n + ".key", crt = dir.path() + "/" + n + ".crt";
            shell("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=" + n + ".upstream.test -keyout " +
                  key + " -out " + crt);
            port[n] = free_port();
            servers.emplace_back(new Child({find_program("openssl"), "s_server", "-accept",
                                            "127.0.0.1:" + std::to_string(port[n]), "-cert", crt, "-key", key,
                                            "-www", "-quiet"},
                                           dir.path() + "/" + n + ".log"));
        }
        for (const std::string& n : names) ok = ok && listening(port[n]);
    }
    std::string address(const std::string& n) { return "127.0.0.1:" + std::to_string(port[n]); }
};

// The subject of the certificate s_client was shown ("" when none).
std::string s_client_subject(uint16_t port, const std::string& name) {
    std::string option = name.empty() ? "-noservername" : "-servername " + name;
    std::string out = shell("echo | openssl s_client -connect 127.0.0.1:" + std::to_string(port) + " " + option, 15);
    size_t at = out.find("subject=");
    if (at == std::string::npos) return "";
    return out.substr(at, out.find('\n', at) - at);
}

net::Fd nodelay_dial(uint16_t port) {
    net::Fd fd = dial(port);
    int one = 1;
    if (fd) setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

}  // namespace

TEST_CASE("SNI routes: s_client and curl see the certificate of the route's upstream", "[sni][peers]") {
    if (find_program("openssl").empty()) {
        WARN("openssl is not installed: nothing checked");
        return;
    }
    TlsUpstreams up({"default", "app", "git"});
    REQUIRE(up.ok);
    Daemon d("rules:\n- name: https\n  from: 127.0.0.1:0\n  to: [" + up.address("default") +
             "]\n  routes:\n    - sni: [app.example.com]\n      to: [" + up.address("app") +
             "]\n    - sni: [\"*.git.example.com\"]\n      to: [" + up.address("git") + "]\n");
    uint16_t port = d.port("https");
    REQUIRE(port != 0);
    INFO(d.log());
    CHECK(s_client_subject(port, "app.example.com") == "subject=CN = app.upstream.test");
    CHECK(s_client_subject(port, "APP.Example.com") == "subject=CN = app.upstream.test");
    CHECK(s_client_subject(port, "x.git.example.com") == "subject=CN = git.upstream.test");
    CHECK(s_client_subject(port, "a.b.git.example.com") == "subject=CN = default.upstream.test");
    CHECK(s_client_subject(port, "git.example.com") == "subject=CN = default.upstream.test");
    CHECK(s_client_subject(port, "") == "subject=CN = default.upstream.test");

    if (find_program("curl").empty()) {
        WARN("curl is not installed: s_client only");
        return;
    }
    for (auto pair : {std::make_pair("app.example.com", "app"), std::make_pair("www.git.example.com", "git"),
                      std::make_pair("other.example.com", "default")}) {
        std::string p = std::to_string(port), host = pair.first;
        std::string out = shell("curl -skv --max-time 10 --resolve " + host + ":" + p + ":127.0.0.1 https://" + host +
                                ":" + p + "/");
        INFO(host << "\n" << out);
        CHECK(out.find("subject: CN=" + std::string(pair.second) + ".upstream.test") != std::string::npos);
        CHECK(out.find("s_server") != std::string::npos);  // the page s_server -www served
    }
}

TEST_CASE("SNI: a ClientHello sent one byte per segment over 1-byte records reaches its route unchanged", "[sni]") {
    Server app(banner("app")), other(banner("default"));
    Daemon d("rules:\n- name: https\n  from: 127.0.0.1:0\n  to: [" + other.address() +
             "]\n  routes:\n    - {sni: app.example.com, to: " + app.address() + "}\n");
    uint16_t port = d.port("https");
    REQUIRE(port != 0);
    std::string hello = hello_bytes::hello("app.example.com", 1);  // 1-byte records
    REQUIRE(hello.size() > 300);
    net::Fd fd = nodelay_dial(port);
    REQUIRE(fd);
    for (char c : hello) {
        REQUIRE(send_all(fd.get(), &c, 1));
        if (&c - hello.data() < 40) std::this_thread::sleep_for(2ms);  // separate segments for a start
    }
    std::string reply;
    REQUIRE(read_exact(fd.get(), reply, 4 + hello.size()));
    CHECK(reply.substr(0, 4) == "app\n");
    CHECK(reply.substr(4) == hello);  // echoed: every byte arrived, unchanged
    CHECK(other.accepted() == 0);
}

TEST_CASE("SNI: a stalled ClientHello is closed at the deadline, forwards nothing, and holds up no one", "[sni]") {
    Server app(banner("app"));
    Daemon d("rules:\n- name: https\n  from: 127.0.0.1:0\n  preread_timeout: 1s\n  routes:\n"
             "    - {sni: app.example.com, to: " + app.address() + "}\n",
             {"-w", "1"});
    uint16_t port = d.port("https");
    REQUIRE(port != 0);
    std::string hello = hello_bytes::hello("app.example.com");
    net::Fd stalled = dial(port);
    REQUIRE(send_all(stalled.get(), hello.substr(0, 30)));
    Clock::time_point began = Clock::now();
    // Meanwhile, on the same single worker, others are served at once.
    for (int i = 0; i < 5; ++i) {
        net::Fd fd = dial(port);
        REQUIRE(send_all(fd.get(), hello));
        std::string reply;
        REQUIRE(read_exact(fd.get(), reply, 4));
        CHECK(reply == "app\n");
    }
    CHECK(elapsed_ms(began) < 900);
    CHECK(closed_by_peer(stalled.get(), 5000ms));
    long took = elapsed_ms(began);
    CHECK(took >= 900);
    CHECK(took < 4000);
    CHECK(app.accepted() == 5);  // the stalled client's bytes went nowhere
    CHECK(d.wait_log("incomplete TLS ClientHello in time"));
}

TEST_CASE("SNI: lying or unroutable hellos are closed and logged, nothing forwarded", "[sni]") {
    Server app(banner("app"));
    Daemon d("rules:\n- name: https\n  from: 127.0.0.1:0\n  routes:\n"
             "    - {sni: app.example.com, to: " + app.address() + "}\n");
    uint16_t port = d.port("https");
    REQUIRE(port != 0);
    INFO(d.log());
    struct Case {
        const char* what;
        std::string bytes;
        const char* logged;
    } cases[] = {
        {"no route for the name", hello_bytes::hello("nope.example.com"), "no route: no route for server_name (nope.example.com)"},
        {"no server_name", hello_bytes::hello(""), "no route: no server_name"},
        {"not TLS", "GET / HTTP/1.0\r\n\r\n", "no route: not TLS"},
        {"handshake longer than its record says",
         std::string("\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00", 13), "ClientHello shorter than its fixed fields"},
        {"a 16 MiB hello", std::string("\x16\x03\x01\x00\x04\x01\xff\xff\xff", 9), "TLS ClientHello over 18 KiB"},
    };
    for (const Case& c : cases) {
        INFO(c.what);
        net::Fd fd = dial(port);
        REQUIRE(send_all(fd.get(), c.bytes));
        CHECK(closed_by_peer(fd.get(), 5000ms));
        CHECK(d.wait_log(c.logged));
    }
    CHECK(app.accepted() == 0);
    // A good one still works after all that.
    net::Fd fd = dial(port);
    REQUIRE(send_all(fd.get(), hello_bytes::hello("app.example.com")));
    std::string reply;
    REQUIRE(read_exact(fd.get(), reply, 4));
    CHECK(reply == "app\n");
}

TEST_CASE("SNI: routes have their own strategy, stats and metrics labelled by route", "[sni][metrics]") {
    Server a1(banner("a1")), a2(banner("a2")), other(banner("default"));
    uint16_t metrics_port = free_port();
    Daemon d("metrics: 127.0.0.1:" + std::to_string(metrics_port) + "\nrules:\n- name: https\n  from: 127.0.0.1:0\n  to: [" +
             other.address() + "]\n  routes:\n    - sni: [app.example.com]\n      name: app\n      strategy: round-robin\n"
             "      to: [" + a1.address() + ", " + a2.address() + "]\n");
    uint16_t port = d.port("https");
    REQUIRE(port != 0);
    for (int i = 0; i < 4; ++i) {
        net::Fd fd = dial(port);
        REQUIRE(send_all(fd.get(), hello_bytes::hello("app.example.com")));
        std::string reply;
        REQUIRE(read_exact(fd.get(), reply, 3));
    }
    CHECK(a1.accepted() == 2);  // round-robin within the route
    CHECK(a2.accepted() == 2);
    CHECK(other.accepted() == 0);
    std::string text;
    REQUIRE(wait_until([&] {
        net::Fd m = dial(metrics_port);
        if (!m) return false;
        send_all(m.get(), std::string("GET /metrics HTTP/1.0\r\n\r\n"));
        text.clear();
        read_to_eof(m.get(), text);
        return text.find("route=\"app\",upstream=\"" + a1.address() + "\"} 2") != std::string::npos;
    }));
    INFO(text);
    CHECK(text.find("mixctl_upstream_connections_total{rule=\"https\",route=\"app\",upstream=\"" + a2.address() +
                    "\"} 2") != std::string::npos);
    CHECK(text.find("mixctl_upstream_connections_total{rule=\"https\",upstream=\"" + other.address() + "\"} 0") !=
          std::string::npos);
    CHECK(text.find("mixctl_rule_refused_total{rule=\"https\",reason=\"no_route\"} 0") != std::string::npos);
    d.signal(SIGUSR1);
    CHECK(d.wait_log("stats rule=https route=app upstream=" + a1.address()));
}

TEST_CASE("SNI: a reload that adds a route sends its name there; counters of kept routes stay", "[sni][reload]") {
    Server app(banner("app")), api(banner("api")), other(banner("default"));
    uint16_t port = free_port();
    auto rules = [&](bool with_api) {
        std::string text = "rules:\n- name: https\n  from: 127.0.0.1:" + std::to_string(port) + "\n  to: [" +
                           other.address() + "]\n  routes:\n    - {sni: app.example.com, to: " + app.address() + "}\n";
        if (with_api) text += "    - {sni: api.example.com, to: " + api.address() + "}\n";
        return text;
    };
    Daemon d(rules(false), {"-w", "2"});
    REQUIRE(d.port("https") == port);
    auto who = [&](const std::string& name) {
        net::Fd fd = dial(port);
        std::string reply;
        if (!fd || !send_all(fd.get(), hello_bytes::hello(name)) || !read_exact(fd.get(), reply, 4)) return std::string();
        return reply.substr(0, 3);
    };
    CHECK(who("api.example.com") == "def");
    CHECK(who("app.example.com") == "app");
    size_t before = d.count("reloaded ");
    d.dir().write("rules.yaml", rules(true));
    d.signal(SIGHUP);
    REQUIRE(d.wait_log("reloaded ", 5000ms, before + 1));
    CHECK(d.log().find("1 changed") != std::string::npos);
    CHECK(wait_until([&] { return who("api.example.com") == "api"; }));
    CHECK(who("app.example.com") == "app");
    // Counted across the reload; asked again until the last close is counted too.
    const std::string line = "stats rule=https route=app.example.com upstream=" + app.address() + " state=up active=0 total=2";
    CHECK(wait_until([&] {
        d.signal(SIGUSR1);
        return d.wait_log(line, 300ms);
    }));
}
