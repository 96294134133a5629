// Config keys of issue 14: SNI `routes`, `accept_proxy`, `proxy_trusted`,
// `preread_timeout`, `max_conns_per_client`; every bad value a file:line
// error, all of them reported in one pass.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>

#include "config.hpp"
#include "config_helpers.hpp"

using namespace std::chrono_literals;
using namespace config_helpers;

TEST_CASE("routes: each route is a pool with its names, upstreams and settings", "[config][routes]") {
    Loaded l = load(
        "rules:\n"
        "- name: https\n"
        "  from: 127.0.0.1:443\n"
        "  strategy: round-robin\n"
        "  preread_timeout: 2s\n"
        "  to: [127.0.0.1:7443]\n"
        "  routes:\n"
        "    - sni: [App.Example.com, other.example.com]\n"
        "      to: [127.0.0.1:8443]\n"
        "    - sni: [\"*.git.example.com\"]\n"
        "      name: git\n"
        "      to: [127.0.0.1:9443, {address: 127.0.0.1:9444, weight: 3}]\n"
        "      strategy: least-conn\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const config::Rule& rule = l.cfg.rules[0];
    CHECK(rule.prereads());
    CHECK(rule.policy.preread_timeout == 2s);
    REQUIRE(rule.routes.size() == 2);
    CHECK(rule.routes[0].route == "app.example.com");
    CHECK(rule.routes[0].name == "https");
    CHECK(rule.routes[0].policy.strategy == config::Strategy::round_robin);  // from the rule
    CHECK(rule.routes[1].route == "git");
    CHECK(rule.routes[1].policy.strategy == config::Strategy::least_conn);
    CHECK(rule.routes[1].to[1].weight == 3);
    CHECK(config::match_route(rule, "app.example.com") == 0);
    CHECK(config::match_route(rule, "other.example.com") == 0);
    CHECK(config::match_route(rule, "a.git.example.com") == 1);
    CHECK(config::match_route(rule, "git.example.com") == -1);
    CHECK(config::match_route(rule, "a.b.git.example.com") == -1);
    CHECK(config::match_route(rule, "example.com") == -1);
    CHECK(config::match_route(rule, "") == -1);
}

TEST_CASE("routes: an exact name wins over a wildcard, whatever the order", "[config][routes]") {
    Loaded l = load(
        "rules:\n- from: 127.0.0.1:443\n  routes:\n"
        "    - {sni: \"*.example.com\", to: 127.0.0.1:1}\n"
        "    - {sni: app.example.com, to: 127.0.0.1:2}\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    CHECK(l.cfg.rules[0].to.empty());  // routes without a default pool
    CHECK(config::match_route(l.cfg.rules[0], "app.example.com") == 1);
    CHECK(config::match_route(l.cfg.rules[0], "www.example.com") == 0);
}

TEST_CASE("listener settings: accept_proxy, proxy_trusted, max_conns_per_client, defaults", "[config][routes]") {
    Loaded l = load(
        "defaults:\n  max_conns_per_client: 4\nrules:\n"
        "- from: 127.0.0.1:8080\n  accept_proxy: true\n  proxy_trusted: [127.0.0.0/8, \"::1\"]\n"
        "  to: [127.0.0.1:3000]\n"
        "- from: 127.0.0.1:8081\n  max_conns_per_client: 0\n  to: [127.0.0.1:3000]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    CHECK(l.cfg.rules[0].policy.accept_proxy);
    CHECK(l.cfg.rules[0].prereads());
    CHECK(l.cfg.rules[0].policy.proxy_trusted.size() == 2);
    CHECK(l.cfg.rules[0].policy.max_conns_per_client == 4);
    CHECK(l.cfg.rules[0].policy.preread_timeout == 5s);
    CHECK(l.cfg.rules[1].policy.max_conns_per_client == 0);
    CHECK_FALSE(l.cfg.rules[1].prereads());
}

TEST_CASE("routes and listener settings: every mistake is a file:line error, all reported", "[config][routes]") {
    Loaded l = load(
        "rules:\n"
        "- from: 127.0.0.1:443\n"                       // 2
        "  accept_proxy: yes please\n"                  // 3
        "  max_conns_per_client: -1\n"                  // 4
        "  preread_timeout: 0s\n"                       // 5
        "  proxy_trusted: [10.0.0.0/33]\n"              // 6
        "  routes:\n"                                   // 7
        "    - to: [127.0.0.1:1]\n"                     // 8  no sni
        "    - sni: []\n"                               // 9  empty
        "      to: [127.0.0.1:1]\n"                     // 10
        "    - sni: [a.*.com]\n"                        // 11 bad wildcard
        "      to: [127.0.0.1:1]\n"                     // 12
        "    - sni: [x.example.com]\n"                  // 13
        "      to: [127.0.0.1:1]\n"                     // 14
        "    - sni: [X.example.com, \"*\"]\n"           // 15 duplicate across routes, bare *
        "      to: [127.0.0.1:1]\n"                     // 16
        "      allow: [127.0.0.1]\n"                    // 17 listener key in a route
        "    - sni: [y.example.com]\n"                  // 18 no to
        "- from: 127.0.0.1:444\n"                       // 19
        "  routes: []\n");                              // 20
    CHECK_FALSE(l.ok);
    INFO(all(l.diag.errors));
    CHECK(has_message(l.diag.errors, "rules.yaml:3: accept_proxy: \"yes please\" must be true or false"));
    CHECK(has_message(l.diag.errors, "rules.yaml:4: max_conns_per_client:"));
    CHECK(has_message(l.diag.errors, "rules.yaml:5: preread_timeout:"));
    CHECK(has_message(l.diag.errors, "rules.yaml:6: proxy_trusted:"));
    CHECK(has_message(l.diag.errors, "rules.yaml:8: route: missing \"sni:\""));
    CHECK(has_message(l.diag.errors, "rules.yaml:9: sni: must be a non-empty list"));
    CHECK(has_message(l.diag.errors, "rules.yaml:11: sni: \"a.*.com\": a wildcard must be the whole first label"));
    CHECK(has_message(l.diag.errors, "rules.yaml:15: sni: \"X.example.com\" is already routed by the route at line 13"));
    CHECK(has_message(l.diag.errors, "rules.yaml:15: sni: \"*\":"));
    CHECK(has_message(l.diag.errors, "rules.yaml:17: allow: is a setting of the rule (its listener), not of a route"));
    CHECK(has_message(l.diag.errors, "rules.yaml:18: route: missing \"to:\""));
    CHECK(has_message(l.diag.errors, "rules.yaml:20: routes: must be a non-empty list"));
}
