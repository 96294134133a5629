// Config keys of the upstream policy: strategy, max_fails, fail_timeout,
// health_check, resolve_interval, the top-level `defaults:` mapping, and the
// upstream mapping form {address, weight, backup}. Every bad value is an
// error with file:line.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "config.hpp"
#include "config_helpers.hpp"

using namespace std::chrono_literals;

using namespace config_helpers;

TEST_CASE("policy: without any key a rule gets the documented defaults", "[config][policy]") {
    Loaded l = load("rules:\n- from: 127.0.0.1:1\n  to: [127.0.0.1:2, localhost:3]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const config::Policy& p = l.cfg.rules[0].policy;
    CHECK(p.strategy == config::Strategy::random);
    CHECK(p.max_fails == 1);
    CHECK(p.fail_timeout == 10s);
    CHECK(p.resolve_interval == 30s);
    CHECK_FALSE(p.health.enabled);
    for (const config::Upstream& u : l.cfg.rules[0].to) {
        CHECK(u.weight == 1);
        CHECK_FALSE(u.backup);
    }
    CHECK(l.diag.warnings.empty());
}

TEST_CASE("policy: every key on a rule, block style", "[config][policy]") {
    Loaded l = load(
        "rules:\n"
        "- name: k3s\n"
        "  from: 127.0.0.1:6443\n"
        "  strategy: least-conn\n"
        "  max_fails: 3\n"
        "  fail_timeout: 1m30s\n"
        "  resolve_interval: 500ms\n"
        "  health_check:\n"
        "    interval: 2s\n"
        "    timeout: 250ms\n"
        "    rise: 4\n"
        "    fall: 5\n"
        "  to:\n"
        "    - 127.0.0.1:7001\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const config::Policy& p = l.cfg.rules[0].policy;
    CHECK(p.strategy == config::Strategy::least_conn);
    CHECK(p.max_fails == 3);
    CHECK(p.fail_timeout == 90s);
    CHECK(p.resolve_interval == 500ms);
    CHECK(p.health.enabled);
    CHECK(p.health.interval == 2s);
    CHECK(p.health.timeout == 250ms);
    CHECK(p.health.rise == 4);
    CHECK(p.health.fall == 5);
    CHECK(l.diag.warnings.empty());
}

TEST_CASE("policy: every strategy name is accepted", "[config][policy]") {
    const std::pair<const char*, config::Strategy> names[] = {
        {"random", config::Strategy::random},
        {"round-robin", config::Strategy::round_robin},
        {"least-conn", config::Strategy::least_conn},
        {"source-hash", config::Strategy::source_hash},
    };
    for (const auto& n : names) {
        INFO(n.first);
        Loaded l = load(std::string("rules:\n- from: h:1\n  strategy: ") + n.first + "\n  to: [h:2]\n");
        REQUIRE(l.ok);
        CHECK(l.cfg.rules[0].policy.strategy == n.second);
        CHECK(std::string(config::strategy_name(n.second)) == n.first);
    }
}

TEST_CASE("policy: a health_check mapping in flow style; keys left out keep their defaults", "[config][policy]") {
    Loaded l = load("rules:\n- from: h:1\n  health_check: {interval: 200ms, fall: 2}\n  to: [h:2]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const config::HealthCheck& h = l.cfg.rules[0].policy.health;
    CHECK(h.enabled);
    CHECK(h.interval == 200ms);
    CHECK(h.timeout == 1s);
    CHECK(h.rise == 2);
    CHECK(h.fall == 2);
}

TEST_CASE("policy: an empty health_check mapping turns checks on with the defaults", "[config][policy]") {
    Loaded l = load("rules:\n- from: h:1\n  health_check: {}\n  to: [h:2]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const config::HealthCheck& h = l.cfg.rules[0].policy.health;
    CHECK(h.enabled);
    CHECK(h.interval == 5s);
    CHECK(h.timeout == 1s);
    CHECK(h.rise == 2);
    CHECK(h.fall == 3);
}

TEST_CASE("policy: rules inherit defaults:, and a rule's own key wins", "[config][policy]") {
    Loaded l = load(
        "version: 0.1\n"
        "defaults:\n"
        "  strategy: round-robin\n"
        "  max_fails: 2\n"
        "  fail_timeout: 3s\n"
        "  resolve_interval: 1m\n"
        "  health_check: {interval: 1s, timeout: 300ms, rise: 3, fall: 4}\n"
        "rules:\n"
        "- name: plain\n"
        "  from: h:1\n"
        "  to: [h:2]\n"
        "- name: own\n"
        "  from: h:3\n"
        "  strategy: source-hash\n"
        "  max_fails: 7\n"
        "  fail_timeout: 20s\n"
        "  resolve_interval: 5s\n"
        "  to: [h:4]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    REQUIRE(l.cfg.rules.size() == 2);
    const config::Policy& plain = l.cfg.rules[0].policy;
    CHECK(plain.strategy == config::Strategy::round_robin);
    CHECK(plain.max_fails == 2);
    CHECK(plain.fail_timeout == 3s);
    CHECK(plain.resolve_interval == 60s);
    CHECK(plain.health.enabled);
    CHECK(plain.health.interval == 1s);
    CHECK(plain.health.timeout == 300ms);
    CHECK(plain.health.rise == 3);
    CHECK(plain.health.fall == 4);
    const config::Policy& own = l.cfg.rules[1].policy;
    CHECK(own.strategy == config::Strategy::source_hash);
    CHECK(own.max_fails == 7);
    CHECK(own.fail_timeout == 20s);
    CHECK(own.resolve_interval == 5s);
    CHECK(own.health.enabled);  // not overridden: inherited
    CHECK(own.health.interval == 1s);
    CHECK(l.diag.warnings.empty());
}

TEST_CASE("policy: a rule's health_check key wins over the one in defaults:", "[config][policy]") {
    Loaded l = load(
        "defaults:\n"
        "  health_check: {interval: 1s, rise: 3}\n"
        "rules:\n"
        "- from: h:1\n"
        "  health_check: {interval: 7s, fall: 9}\n"
        "  to: [h:2]\n"
        "- from: h:3\n"
        "  to: [h:4]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const config::HealthCheck& own = l.cfg.rules[0].policy.health;
    CHECK(own.enabled);
    CHECK(own.interval == 7s);
    CHECK(own.fall == 9);
    const config::HealthCheck& inherited = l.cfg.rules[1].policy.health;
    CHECK(inherited.interval == 1s);
    CHECK(inherited.rise == 3);
    CHECK(inherited.fall == 3);
}

TEST_CASE("policy: defaults: written after rules: still applies to every rule", "[config][policy]") {
    Loaded l = load("rules:\n- from: h:1\n  to: [h:2]\ndefaults:\n  strategy: least-conn\n  max_fails: 4\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    CHECK(l.cfg.rules[0].policy.strategy == config::Strategy::least_conn);
    CHECK(l.cfg.rules[0].policy.max_fails == 4);
}

TEST_CASE("policy: upstream mappings with weight and backup mix with plain strings", "[config][policy]") {
    Loaded l = load(
        "rules:\n"
        "- from: 127.0.0.1:6443\n"
        "  to:\n"
        "    - 10.0.0.4:6443\n"
        "    - {address: 10.0.0.5:6443, weight: 3}\n"
        "    - address: \"[::1]:6443\"\n"
        "      backup: true\n"
        "    - {address: \"localhost:6443\", weight: 2, backup: false}\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const std::vector<config::Upstream>& to = l.cfg.rules[0].to;
    REQUIRE(to.size() == 4);
    CHECK(to[0].text == "10.0.0.4:6443");
    CHECK(to[0].weight == 1);
    CHECK_FALSE(to[0].backup);
    CHECK(to[0].line == 4);
    CHECK(to[1].text == "10.0.0.5:6443");
    CHECK(to[1].where.host == "10.0.0.5");
    CHECK(to[1].where.port == 6443);
    CHECK(to[1].weight == 3);
    CHECK_FALSE(to[1].backup);
    CHECK(to[1].line == 5);
    CHECK(to[2].text == "[::1]:6443");
    CHECK(to[2].where.host == "::1");
    CHECK(to[2].weight == 1);
    CHECK(to[2].backup);
    CHECK(to[2].line == 6);
    CHECK(to[3].where.host == "localhost");
    CHECK(to[3].weight == 2);
    CHECK_FALSE(to[3].backup);
    CHECK(l.diag.warnings.empty());
}

TEST_CASE("policy: an unknown key in an upstream mapping or health_check warns with its line", "[config][policy]") {
    Loaded l = load(
        "rules:\n"
        "- from: h:1\n"
        "  health_check:\n"
        "    interval: 1s\n"
        "    path: /healthz\n"
        "  to:\n"
        "    - {address: h:2, priority: 1}\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    CHECK(has_message(l.diag.warnings, "rules.yaml:5: warning: unknown key \"path\" ignored"));
    CHECK(has_message(l.diag.warnings, "rules.yaml:7: warning: unknown key \"priority\" ignored"));
    REQUIRE(l.cfg.rules[0].to.size() == 1);
    CHECK(l.cfg.rules[0].to[0].text == "h:2");
}

TEST_CASE("policy: an unknown key under defaults: warns with its line", "[config][policy]") {
    Loaded l = load("defaults:\n  strategy: random\n  balance: roundrobin\nrules:\n- from: h:1\n  to: [h:2]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    CHECK(has_message(l.diag.warnings, "rules.yaml:3: warning: unknown key \"balance\" ignored"));
}

namespace {

// A rule whose line 3 is the given policy line: "rules:\n- from: h:1\n" + line + "\n  to: [h:2]\n".
std::string on_line_3(const std::string& line) { return "rules:\n- from: h:1\n" + line + "\n  to: [h:2]\n"; }

}  // namespace

TEST_CASE("policy: every bad value is an error with file:line", "[config][policy]") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        // strategy
        {on_line_3("  strategy: fastest"),
         "rules.yaml:3: strategy: unknown strategy \"fastest\" (want random, round-robin, least-conn or source-hash)"},
        {on_line_3("  strategy: roundrobin"), "rules.yaml:3: strategy: unknown strategy \"roundrobin\""},
        {on_line_3("  strategy: [random]"), "rules.yaml:3: strategy: unknown strategy"},
        {on_line_3("  strategy:"), "rules.yaml:3: strategy: unknown strategy"},
        // max_fails
        {on_line_3("  max_fails: 0"), "rules.yaml:3: max_fails: \"0\" must be a whole number from 1 to 1000000"},
        {on_line_3("  max_fails: -1"), "rules.yaml:3: max_fails: \"-1\" must be a whole number"},
        {on_line_3("  max_fails: 2.5"), "rules.yaml:3: max_fails: \"2.5\" must be a whole number"},
        {on_line_3("  max_fails: many"), "rules.yaml:3: max_fails: \"many\" must be a whole number"},
        {on_line_3("  max_fails: 99999999999999999999"), "rules.yaml:3: max_fails: "},
        // fail_timeout and resolve_interval
        {on_line_3("  fail_timeout: -1s"), "rules.yaml:3: fail_timeout: \"-1s\" must be more than 0"},
        {on_line_3("  fail_timeout: 0"), "rules.yaml:3: fail_timeout: \"0\" must be more than 0"},
        {on_line_3("  fail_timeout: 10"), "rules.yaml:3: fail_timeout: \"10\" is not a duration like 500ms, 10s or 1m"},
        {on_line_3("  fail_timeout: ten seconds"), "rules.yaml:3: fail_timeout: \"ten seconds\" is not a duration"},
        {on_line_3("  fail_timeout: 5 s"), "rules.yaml:3: fail_timeout: \"5 s\" is not a duration"},
        {on_line_3("  fail_timeout: 3d"), "rules.yaml:3: fail_timeout: \"3d\" is not a duration"},
        {on_line_3("  fail_timeout: [1s]"), "rules.yaml:3: fail_timeout: "},
        {on_line_3("  resolve_interval: -30s"), "rules.yaml:3: resolve_interval: \"-30s\" must be more than 0"},
        {on_line_3("  resolve_interval: soon"), "rules.yaml:3: resolve_interval: \"soon\" is not a duration"},
        {on_line_3("  resolve_interval: 0s"), "rules.yaml:3: resolve_interval: \"0s\" must be more than 0"},
        // health_check
        {on_line_3("  health_check: yes"),
         "rules.yaml:3: health_check: must be a mapping like {interval: 5s, timeout: 1s, rise: 2, fall: 3}"},
        {on_line_3("  health_check: [1s, 2s]"), "rules.yaml:3: health_check: must be a mapping"},
        {on_line_3("  health_check: {interval: -1s}"), "rules.yaml:3: interval: \"-1s\" must be more than 0"},
        {on_line_3("  health_check: {interval: 0}"), "rules.yaml:3: interval: \"0\" must be more than 0"},
        {on_line_3("  health_check: {interval: often}"), "rules.yaml:3: interval: \"often\" is not a duration"},
        {on_line_3("  health_check: {timeout: -5ms}"), "rules.yaml:3: timeout: \"-5ms\" must be more than 0"},
        {on_line_3("  health_check: {timeout: 1}"), "rules.yaml:3: timeout: \"1\" is not a duration"},
        {on_line_3("  health_check: {rise: 0}"), "rules.yaml:3: rise: \"0\" must be a whole number from 1 to 1000"},
        {on_line_3("  health_check: {rise: -2}"), "rules.yaml:3: rise: \"-2\" must be a whole number"},
        {on_line_3("  health_check: {fall: 0}"), "rules.yaml:3: fall: \"0\" must be a whole number from 1 to 1000"},
        {on_line_3("  health_check: {fall: 1001}"), "rules.yaml:3: fall: \"1001\" must be a whole number"},
        {on_line_3("  health_check:\n    interval: 1s\n    rise: 0"), "rules.yaml:5: rise: \"0\" must be a whole number"},
        // upstream mappings
        {"rules:\n- from: h:1\n  to:\n    - {address: h:2, weight: 0}\n",
         "rules.yaml:4: weight: \"0\" must be a whole number from 1 to 1000000"},
        {"rules:\n- from: h:1\n  to:\n    - {address: h:2, weight: -1}\n", "rules.yaml:4: weight: \"-1\" must be a whole number"},
        {"rules:\n- from: h:1\n  to:\n    - {address: h:2, weight: 1.5}\n", "rules.yaml:4: weight: \"1.5\" must be a whole number"},
        {"rules:\n- from: h:1\n  to:\n    - {address: h:2, weight: heavy}\n", "rules.yaml:4: weight: \"heavy\" must be a whole number"},
        {"rules:\n- from: h:1\n  to:\n    - address: h:2\n      weight: 0\n", "rules.yaml:5: weight: \"0\" must be a whole number"},
        {"rules:\n- from: h:1\n  to:\n    - {address: h:2, backup: maybe}\n", "rules.yaml:4: backup: \"maybe\" must be true or false"},
        {"rules:\n- from: h:1\n  to:\n    - {weight: 2}\n", "rules.yaml:4: to: an upstream mapping needs \"address: host:port\""},
        {"rules:\n- from: h:1\n  to:\n    - h:3\n    - weight: 2\n      backup: true\n",
         "rules.yaml:5: to: an upstream mapping needs \"address: host:port\""},
        {"rules:\n- from: h:1\n  to:\n    - {address: }\n", "rules.yaml:4: to: an upstream mapping needs \"address: host:port\""},
        {"rules:\n- from: h:1\n  to:\n    - {address: [h:2]}\n", "rules.yaml:4: to: an upstream mapping needs \"address: host:port\""},
        {"rules:\n- from: h:1\n  to:\n    - {address: h}\n", "rules.yaml:4: to: \"h\": missing port"},
        {"rules:\n- from: h:1\n  to:\n    - {address: \":22\"}\n", "rules.yaml:4: to: \":22\": missing host"},
        // defaults
        {"defaults: round-robin\nrules:\n- from: h:1\n  to: [h:2]\n", "rules.yaml:1: defaults: must be a mapping"},
        {"defaults: [strategy]\nrules:\n- from: h:1\n  to: [h:2]\n", "rules.yaml:1: defaults: must be a mapping"},
        {"defaults:\n  strategy: best\nrules:\n- from: h:1\n  to: [h:2]\n", "rules.yaml:2: strategy: unknown strategy \"best\""},
        {"defaults:\n  max_fails: 0\nrules:\n- from: h:1\n  to: [h:2]\n", "rules.yaml:2: max_fails: \"0\" must be a whole number"},
        {"defaults:\n  fail_timeout: -2s\nrules:\n- from: h:1\n  to: [h:2]\n", "rules.yaml:2: fail_timeout: \"-2s\" must be more than 0"},
        {"defaults:\n  health_check: 5s\nrules:\n- from: h:1\n  to: [h:2]\n", "rules.yaml:2: health_check: must be a mapping"},
        {"defaults:\n  health_check:\n    fall: 0\nrules:\n- from: h:1\n  to: [h:2]\n", "rules.yaml:3: fall: \"0\" must be a whole number"},
    };
    for (const auto& c : cases) {
        INFO(c.first);
        Loaded l = load(c.first);
        INFO(all(l.diag.errors));
        CHECK_FALSE(l.ok);
        CHECK(has_message(l.diag.errors, c.second));
    }
}

TEST_CASE("policy: all bad policy values in a file are reported in one pass", "[config][policy]") {
    Loaded l = load(
        "defaults:\n"
        "  strategy: fastest\n"
        "rules:\n"
        "- from: h:1\n"
        "  max_fails: 0\n"
        "  fail_timeout: -1s\n"
        "  health_check: {rise: 0, fall: 0}\n"
        "  to:\n"
        "    - {address: h:2, weight: 0}\n"
        "    - {weight: 1}\n");
    REQUIRE_FALSE(l.ok);
    INFO(all(l.diag.errors));
    CHECK(l.diag.errors.size() == 7);
    CHECK(has_message(l.diag.errors, "rules.yaml:2: strategy:"));
    CHECK(has_message(l.diag.errors, "rules.yaml:5: max_fails:"));
    CHECK(has_message(l.diag.errors, "rules.yaml:6: fail_timeout:"));
    CHECK(has_message(l.diag.errors, "rules.yaml:7: rise:"));
    CHECK(has_message(l.diag.errors, "rules.yaml:7: fall:"));
    CHECK(has_message(l.diag.errors, "rules.yaml:9: weight:"));
    CHECK(has_message(l.diag.errors, "rules.yaml:10: to: an upstream mapping needs"));
}

TEST_CASE("policy: upper bounds are accepted where they are documented", "[config][policy]") {
    Loaded l = load(
        "rules:\n- from: h:1\n  max_fails: 1000000\n  health_check: {rise: 1000, fall: 1}\n"
        "  to: [{address: h:2, weight: 1000000}]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    CHECK(l.cfg.rules[0].policy.max_fails == 1000000);
    CHECK(l.cfg.rules[0].policy.health.rise == 1000);
    CHECK(l.cfg.rules[0].to[0].weight == 1000000);
}
