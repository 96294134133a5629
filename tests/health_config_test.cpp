// Config keys of issue 15: health_check send/expect/tls/sni, the top-level
// control socket path, an upstream's max_conns and a rule's retries. Every
// bad value is an error with file:line.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "config.hpp"
#include "config_helpers.hpp"

using namespace config_helpers;

TEST_CASE("health_check send/expect take YAML's double-quoted escapes", "[config][health]") {
    Loaded l = load(
        "rules:\n- from: 127.0.0.1:1\n  to: [127.0.0.1:2]\n"
        "  health_check: {interval: 2s, send: \"PING\\r\\n\", expect: \"+PONG\"}\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    const config::HealthCheck& h = l.cfg.rules[0].policy.health;
    CHECK(h.send == "PING\r\n");
    CHECK(h.expect == "+PONG");
    CHECK_FALSE(h.tls);
}

TEST_CASE("health_check tls with and without sni; control, max_conns and retries load", "[config][health]") {
    Loaded l = load(
        "control: /run/mixctl-test.sock\n"
        "rules:\n- from: 127.0.0.1:1\n  retries: 0\n"
        "  to: [{address: 127.0.0.1:2, max_conns: 5}, 127.0.0.1:3]\n"
        "  health_check: {tls: true, sni: k3s.example}\n"
        "- from: 127.0.0.1:4\n  to: [127.0.0.1:5]\n  health_check: {tls: true}\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    CHECK(l.cfg.control == "/run/mixctl-test.sock");
    CHECK(l.cfg.rules[0].policy.retries == 0);
    CHECK(l.cfg.rules[1].policy.retries == -1);
    CHECK(l.cfg.rules[0].to[0].max_conns == 5);
    CHECK(l.cfg.rules[0].to[1].max_conns == 0);
    CHECK(l.cfg.rules[0].policy.health.tls);
    CHECK(l.cfg.rules[0].policy.health.sni == "k3s.example");
    CHECK(l.cfg.rules[1].policy.health.sni.empty());
}

TEST_CASE("bad health check, control, max_conns and retries values are errors with file:line", "[config][health]") {
    const std::string head = "rules:\n- from: 127.0.0.1:1\n  to: [127.0.0.1:2]\n";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {head + "  health_check: {tls: true, send: \"x\"}\n", "rules.yaml:4: health_check: tls: true sends its own hello"},
        {head + "  health_check: {tls: true, expect: x}\n", "rules.yaml:4: health_check: tls: true sends its own hello"},
        {head + "  health_check: {sni: a.b}\n", "rules.yaml:4: health_check: sni: needs tls: true"},
        {head + "  health_check: {tls: true, sni: \"a b\"}\n", "rules.yaml:4: health_check: sni: \"a b\" is not a host name"},
        {head + "  health_check: {tls: yes}\n", "rules.yaml:4: tls: \"yes\" must be true or false"},
        {head + "  health_check: {send: [a]}\n", "rules.yaml:4: send: must be a string"},
        {head + "  retries: -1\n", "rules.yaml:4: retries: \"-1\" must be a whole number from 0 to 1000"},
        {head + "  retries: all\n", "rules.yaml:4: retries: \"all\" must be a whole number"},
        {"rules:\n- from: 127.0.0.1:1\n  to: [{address: 127.0.0.1:2, max_conns: -3}]\n",
         "rules.yaml:3: max_conns: \"-3\" must be a whole number from 0 to 10000000"},
        {"control: run/mixctl.sock\n" + head, "rules.yaml:1: control: \"run/mixctl.sock\" must be an absolute path"},
        {"control: [a]\n" + head, "rules.yaml:1: control: "},
        {"control: /" + std::string(120, 'x') + "\n" + head, "rules.yaml:1: control: "},
    };
    for (const auto& c : cases) {
        Loaded l = load(c.first);
        INFO(c.first);
        INFO(all(l.diag.errors));
        CHECK_FALSE(l.ok);
        CHECK(has_message(l.diag.errors, c.second));
    }
}
