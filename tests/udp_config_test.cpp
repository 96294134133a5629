// Config keys of issue 19: protocol, responses, max_sessions, source, port
// ranges in from: and to:, and which keys fit which protocol.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>

#include "config.hpp"
#include "config_helpers.hpp"

using namespace std::chrono_literals;
using namespace config_helpers;

TEST_CASE("udp config: a udp rule gets the documented session defaults", "[config][udp]") {
    Loaded l = load("rules:\n- from: 127.0.0.1:53\n  protocol: udp\n  to: [127.0.0.1:5353]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const config::Policy& p = l.cfg.rules[0].policy;
    CHECK(p.protocol == config::Protocol::udp);
    CHECK(p.idle_timeout == 60s);
    CHECK(p.max_sessions == 4096);
    CHECK(p.responses == config::responses_unlimited);
    CHECK(l.diag.warnings.empty());
}

TEST_CASE("udp config: a tcp rule stays tcp with idle_timeout off", "[config][udp]") {
    Loaded l = load("rules:\n- from: 127.0.0.1:53\n  to: [127.0.0.1:5353]\n");
    REQUIRE(l.ok);
    CHECK(l.cfg.rules[0].policy.protocol == config::Protocol::tcp);
    CHECK(l.cfg.rules[0].policy.idle_timeout == 0s);
}

TEST_CASE("udp config: the issue's example loads with every key", "[config][udp]") {
    Loaded l = load(
        "rules:\n"
        "- name: dns\n"
        "  from: \":53\"\n"
        "  protocol: udp\n"
        "  to: [127.0.0.1:5353, 127.0.0.1:5354]\n"
        "  strategy: round-robin\n"
        "  idle_timeout: 30s\n"
        "  responses: 1\n"
        "  max_sessions: 10000\n"
        "  source: 127.0.0.2\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const config::Policy& p = l.cfg.rules[0].policy;
    CHECK(p.idle_timeout == 30s);
    CHECK(p.responses == 1);
    CHECK(p.max_sessions == 10000);
    CHECK(p.source == "127.0.0.2");
    CHECK(l.cfg.rules[0].source_of(1) == "127.0.0.2");
}

TEST_CASE("udp config: a source on one upstream overrides the rule's", "[config][udp]") {
    Loaded l = load(
        "rules:\n- from: 127.0.0.1:1\n  source: 127.0.0.2\n  to:\n"
        "    - {address: 127.0.0.1:2, source: 127.0.0.3}\n    - 127.0.0.1:3\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    CHECK(l.cfg.rules[0].source_of(0) == "127.0.0.3");
    CHECK(l.cfg.rules[0].source_of(1) == "127.0.0.2");
}

TEST_CASE("udp config: port ranges in from and to", "[config][udp][range]") {
    Loaded l = load(
        "rules:\n"
        "- name: ftp\n  from: \":30000-30100\"\n  to: [127.0.0.1]\n"
        "- name: shifted\n  from: \"127.0.0.1:40000-40009\"\n  to: [\"127.0.0.1:50000-50009\", \"[::1]\"]\n"
        "- name: fixed\n  from: \"127.0.0.1:41000-41001\"\n  to: [\"127.0.0.1:8080\"]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const config::Rule& ftp = l.cfg.rules[0];
    CHECK(ftp.from.port == 30000);
    CHECK(ftp.from_last == 30100);
    CHECK(ftp.ports() == 101);
    CHECK(ftp.to[0].ranged);
    CHECK(ftp.to[0].where.port == 30000);  // port N goes to port N
    const config::Rule& shifted = l.cfg.rules[1];
    CHECK(shifted.to[0].ranged);
    CHECK(shifted.to[0].where.port == 50000);
    CHECK(shifted.to[1].where.host == "::1");
    CHECK(shifted.to[1].where.port == 40000);
    CHECK_FALSE(l.cfg.rules[2].to[0].ranged);
}

TEST_CASE("udp config: each decided error is reported on its own line", "[config][udp]") {
    struct BadCase {
        const char* what;
        const char* yaml;
        const char* message;
    };
    const BadCase cases[] = {
        {"unknown protocol", "rules:\n- from: h:1\n  protocol: sctp\n  to: [h:2]\n",
         "rules.yaml:3: protocol: \"sctp\" must be tcp or udp"},
        {"responses on tcp", "rules:\n- from: h:1\n  to: [h:2]\n  responses: 1\n",
         "rules.yaml:4: responses: means nothing for a tcp rule"},
        {"max_sessions on tcp", "rules:\n- from: h:1\n  max_sessions: 5\n  to: [h:2]\n",
         "rules.yaml:3: max_sessions: means nothing for a tcp rule"},
        {"proxy_protocol on udp", "rules:\n- from: h:1\n  protocol: udp\n  proxy_protocol: v1\n  to: [h:2]\n",
         "rules.yaml:4: proxy_protocol: means nothing for a udp rule"},
        {"max_conns on udp", "rules:\n- from: h:1\n  max_conns: 5\n  protocol: udp\n  to: [h:2]\n",
         "rules.yaml:3: max_conns: means nothing for a udp rule"},
        {"routes on udp", "rules:\n- from: h:1\n  protocol: udp\n  to: [h:2]\n  routes:\n    - {sni: a.example, to: [h:3]}\n",
         "rules.yaml:5: routes: means nothing for a udp rule"},
        {"accept_proxy on udp", "rules:\n- from: h:1\n  protocol: udp\n  accept_proxy: true\n  to: [h:2]\n",
         "rules.yaml:4: accept_proxy: means nothing for a udp rule"},
        {"proxy_trusted on udp", "rules:\n- from: h:1\n  protocol: udp\n  proxy_trusted: [127.0.0.1]\n  to: [h:2]\n",
         "rules.yaml:4: proxy_trusted: means nothing for a udp rule"},
        {"preread_timeout on udp", "rules:\n- from: h:1\n  protocol: udp\n  preread_timeout: 2s\n  to: [h:2]\n",
         "rules.yaml:4: preread_timeout: means nothing for a udp rule"},
        {"max_conns_per_client on udp", "rules:\n- from: h:1\n  protocol: udp\n  max_conns_per_client: 3\n  to: [h:2]\n",
         "rules.yaml:4: max_conns_per_client: means nothing for a udp rule"},
        {"retries on udp", "rules:\n- from: h:1\n  protocol: udp\n  retries: 1\n  to: [h:2]\n",
         "rules.yaml:4: retries: means nothing for a udp rule"},
        {"udp check without send", "rules:\n- from: h:1\n  protocol: udp\n  to: [h:2]\n  health_check: {expect: x}\n",
         "rules.yaml:5: health_check: a udp rule's check needs send: (a datagram the upstream answers, e.g. a DNS "
         "query); a UDP \"connect\" sends nothing and proves nothing"},
        {"udp check with tls", "rules:\n- from: h:1\n  protocol: udp\n  to: [h:2]\n  health_check:\n    interval: 1s\n"
         "    tls: true\n",
         "rules.yaml:7: health_check: tls: means nothing for a udp rule (a TLS handshake needs TCP)"},
        {"responses in a route", "rules:\n- from: h:1\n  to: [h:2]\n  routes:\n    - sni: a.example\n      responses: 1\n      to: [h:3]\n",
         "rules.yaml:6: responses: means nothing for a tcp rule"},
        {"protocol in a route", "rules:\n- from: h:1\n  to: [h:2]\n  routes:\n    - sni: a.example\n      protocol: udp\n      to: [h:3]\n",
         "rules.yaml:6: protocol: is a setting of the rule (its listener), not of a route"},
        {"route range of another length", "rules:\n- from: h:10-19\n  to: [h]\n  routes:\n    - sni: a.example\n      to: [h:20-22]\n",
         "rules.yaml:6: to: \"h:20-22\": a range of 3 ports needs a from: range of the same length (from: has 10)"},
        {"max_sessions 0", "rules:\n- from: h:1\n  protocol: udp\n  max_sessions: 0\n  to: [h:2]\n",
         "rules.yaml:4: max_sessions: \"0\" must be a whole number from 1"},
        {"negative responses", "rules:\n- from: h:1\n  protocol: udp\n  responses: -1\n  to: [h:2]\n",
         "rules.yaml:4: responses: \"-1\" must be a whole number from 0"},
        {"idle 0 on udp", "rules:\n- from: h:1\n  protocol: udp\n  idle_timeout: 0s\n  to: [h:2]\n",
         "rules.yaml:4: idle_timeout: 0 would keep udp sessions forever"},
        {"source is a name", "rules:\n- from: h:1\n  source: localhost\n  to: [h:2]\n",
         "rules.yaml:3: source: \"localhost\" must be an IPv4 or IPv6 address"},
        {"upstream source is bad", "rules:\n- from: h:1\n  to:\n    - {address: h:2, source: 1.2.3}\n",
         "rules.yaml:4: source: \"1.2.3\" must be an IPv4 or IPv6 address"},
        {"range backwards", "rules:\n- from: h:20-10\n  to: [h:2]\n", "rules.yaml:2: from: \"h:20-10\": port range 20-10 runs backwards"},
        {"range end bad", "rules:\n- from: h:20-x\n  to: [h:2]\n", "rules.yaml:2: from: \"h:20-x\": invalid port \"x\""},
        {"range from 0", "rules:\n- from: h:0-5\n  to: [h:2]\n", "rules.yaml:2: from: \"h:0-5\": port 0 cannot start a range"},
        {"unequal lengths", "rules:\n- from: h:10-19\n  to:\n    - h:20-25\n",
         "rules.yaml:4: to: \"h:20-25\": a range of 6 ports needs a from: range of the same length (from: has 10)"},
        {"to range on single from", "rules:\n- from: h:10\n  to: [h:20-25]\n",
         "rules.yaml:3: to: \"h:20-25\": a range of 6 ports needs a from: range"},
        {"no port without range", "rules:\n- from: h:10\n  to: [h]\n",
         "rules.yaml:3: to: \"h\": missing port in address (want host:port); only a rule whose from: is a port range"},
        {"overlap of ranges", "rules:\n- name: a\n  from: h:10-19\n  to: [h:1]\n- name: b\n  from: h:19-30\n  to: [h:1]\n",
         "rules.yaml:6: from: \"h:19-30\" overlaps rule \"a\" (from: \"h:10-19\" at line 3)"},
        {"wildcard overlaps specific", "rules:\n- name: a\n  from: 127.0.0.1:15\n  to: [h:1]\n- name: b\n  from: \":10-19\"\n  to: [h:1]\n",
         "rules.yaml:6: from: \":10-19\" overlaps rule \"a\""},
        {"same udp port twice", "rules:\n- name: a\n  protocol: udp\n  from: h:53\n  to: [h:1]\n- name: b\n  protocol: udp\n  from: h:53\n  to: [h:1]\n",
         "rules.yaml:8: from: \"h:53\" is already used by rule \"a\""},
    };
    for (const BadCase& c : cases) {
        INFO(c.what);
        Loaded l = load(c.yaml);
        INFO(all(l.diag.errors));
        CHECK_FALSE(l.ok);
        CHECK(has_message(l.diag.errors, c.message));
    }
}

TEST_CASE("udp config: SNI routes take source and ranged upstreams like their rule", "[config][udp][range][routes]") {
    Loaded l = load(
        "rules:\n- from: h:10-19\n  source: 127.0.0.2\n  to: [h]\n  routes:\n"
        "    - sni: a.example\n      source: 127.0.0.3\n      to: [h:20-29]\n"
        "    - sni: b.example\n      to: [h]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const config::Rule& rule = l.cfg.rules[0];
    REQUIRE(rule.routes.size() == 2);
    CHECK(rule.routes[0].to[0].ranged);
    CHECK(rule.routes[0].to[0].where.port == 20);
    CHECK(rule.routes[0].source_of(0) == "127.0.0.3");
    CHECK(rule.routes[1].to[0].ranged);
    CHECK(rule.routes[1].to[0].where.port == 10);
    CHECK(rule.routes[1].source_of(0) == "127.0.0.2");
    const std::vector<const config::Rule*> pools = config::pools(l.cfg);
    REQUIRE(pools.size() == 3);
    CHECK(pools[1] == &rule.routes[0]);
}

TEST_CASE("udp config: tcp and udp on the same port do not overlap", "[config][udp]") {
    Loaded l = load(
        "rules:\n- name: t\n  from: \":53\"\n  to: [h:1]\n"
        "- name: u\n  protocol: udp\n  from: \":53\"\n  to: [h:1]\n");
    INFO(all(l.diag.errors));
    CHECK(l.ok);
}

TEST_CASE("udp config: keys under defaults apply only to the rules they fit", "[config][udp]") {
    Loaded l = load(
        "defaults:\n  responses: 1\n  max_sessions: 7\n  proxy_protocol: v2\n  max_conns: 9\n  source: 127.0.0.2\n"
        "rules:\n"
        "- name: t\n  from: h:1\n  to: [h:2]\n"
        "- name: u\n  protocol: udp\n  from: h:1\n  to: [h:2]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const config::Policy& t = l.cfg.rules[0].policy;
    const config::Policy& u = l.cfg.rules[1].policy;
    CHECK(t.responses == config::responses_unlimited);
    CHECK(t.max_sessions == config::udp_default_max_sessions);
    CHECK(t.proxy == proxy_protocol::Version::v2);
    CHECK(t.max_conns == 9);
    CHECK(u.responses == 1);
    CHECK(u.max_sessions == 7);
    CHECK(u.proxy == proxy_protocol::Version::off);
    CHECK(u.max_conns == 0);
    CHECK(t.source == "127.0.0.2");
    CHECK(u.source == "127.0.0.2");
}

TEST_CASE("udp config: a udp health check sends binary datagrams byte for byte", "[config][udp][health]") {
    // A DNS query for localhost/A; the reply must start with the same ID
    // and the flags QR|RD|RA (\x81\x80): bytes above \x7f stay one byte.
    Loaded l = load(
        "rules:\n- protocol: udp\n  from: h:1\n  to: [h:2]\n"
        "  health_check:\n"
        "    send: \"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x09localhost\\x00\\x00\\x01\\x00\\x01\"\n"
        "    expect: \"\\x12\\x34\\x81\\x80\"\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const config::HealthCheck& hc = l.cfg.rules[0].policy.health;
    CHECK(hc.enabled);
    CHECK(hc.send == std::string("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x09localhost\x00\x00\x01\x00\x01", 27));
    CHECK(hc.expect == std::string("\x12\x34\x81\x80", 4));
}

TEST_CASE("udp config: a health check under defaults reaches the udp rules it can serve", "[config][udp][health]") {
    Loaded l = load(
        "defaults:\n  health_check: {interval: 2s, send: \"ping\"}\n"
        "rules:\n- {name: t, from: h:1, to: [h:2]}\n- {name: u, protocol: udp, from: h:3, to: [h:2]}\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    CHECK(l.cfg.rules[1].policy.health.enabled);
    CHECK(l.cfg.rules[1].policy.health.send == "ping");
    // A connect-only or TLS check has nothing to say over UDP: left out there.
    for (const char* check : {"{interval: 2s}", "{tls: true}"}) {
        Loaded m = load(std::string("defaults:\n  health_check: ") + check +
                        "\nrules:\n- {name: t, from: h:1, to: [h:2]}\n- {name: u, protocol: udp, from: h:3, to: [h:2]}\n");
        INFO(check << "\n" << all(m.diag.errors));
        REQUIRE(m.ok);
        CHECK(m.cfg.rules[0].policy.health.enabled);
        CHECK_FALSE(m.cfg.rules[1].policy.health.enabled);
    }
}

TEST_CASE("udp config: protocol and idle_timeout under defaults", "[config][udp]") {
    Loaded l = load("defaults:\n  protocol: udp\n  idle_timeout: 5s\nrules:\n- from: h:1\n  to: [h:2]\n"
                    "- from: h:3\n  protocol: tcp\n  to: [h:2]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    CHECK(l.cfg.rules[0].policy.protocol == config::Protocol::udp);
    CHECK(l.cfg.rules[0].policy.idle_timeout == 5s);
    CHECK(l.cfg.rules[1].policy.protocol == config::Protocol::tcp);
    CHECK(l.cfg.rules[1].policy.idle_timeout == 5s);
}

TEST_CASE("udp config: endpoint parsing table", "[config][udp][range]") {
    struct Case {
        const char* text;
        bool no_port_ok;
        bool ok;
        const char* host;
        uint16_t first, last;
        bool has_port;
    };
    const Case cases[] = {
        {"127.0.0.1:80", false, true, "127.0.0.1", 80, 80, true},
        {":1-65535", false, true, "", 1, 65535, true},
        {"[::1]:5-6", false, true, "::1", 5, 6, true},
        {"[::1]", true, true, "::1", 0, 0, false},
        {"[::1]", false, false, "", 0, 0, true},
        {"host", true, true, "host", 0, 0, false},
        {"host", false, false, "", 0, 0, true},
        {"h:5-", false, false, "", 0, 0, true},
        {"h:-5", false, false, "", 0, 0, true},
        {"h:5-65536", false, false, "", 0, 0, true},
        {"h:1-2-3", false, false, "", 0, 0, true},
        {"h b", true, false, "", 0, 0, true},
    };
    for (const Case& c : cases) {
        INFO(c.text);
        net::HostPort hp;
        uint16_t last = 0;
        bool has_port = true;
        std::string why;
        bool ok = config::parse_endpoint(c.text, false, c.no_port_ok, hp, last, has_port, why);
        INFO(why);
        REQUIRE(ok == c.ok);
        if (!ok) {
            CHECK_FALSE(why.empty());
            continue;
        }
        CHECK(hp.host == c.host);
        CHECK(hp.port == c.first);
        CHECK(last == c.last);
        CHECK(has_port == c.has_port);
    }
}
