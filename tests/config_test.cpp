// Config model: YAML tree -> validated rules, every error as file:line.
#include <catch2/catch.hpp>

#include "config.hpp"
#include "config_helpers.hpp"

using namespace config_helpers;

TEST_CASE("a rules file written for the Go tool loads unchanged", "[config]") {
    Loaded l = load(
        "version: 0.1\n"
        "\n"
        "rules:\n"
        "- name: remap-local-ssh-port\n"
        "  from: 127.0.0.1:2222\n"
        "  to:\n"
        "    - 127.0.0.1:22\n"
        "\n"
        "- name: local-web-server   # two upstreams\n"
        "  from: 127.0.0.1:3000\n"
        "  to:\n"
        "    - 127.0.0.1:8080\n"
        "    - \"127.0.0.1:8081\"\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    REQUIRE(l.cfg.rules.size() == 2);
    CHECK(l.cfg.rules[0].name == "remap-local-ssh-port");
    CHECK(l.cfg.rules[0].from.host == "127.0.0.1");
    CHECK(l.cfg.rules[0].from.port == 2222);
    CHECK(l.cfg.rules[0].from_line == 5);
    REQUIRE(l.cfg.rules[1].to.size() == 2);
    CHECK(l.cfg.rules[1].to[1].text == "127.0.0.1:8081");
    CHECK(l.cfg.rules[1].to[1].where.port == 8081);
    CHECK(l.cfg.rules[1].to[1].line == 13);
    CHECK(l.diag.warnings.empty());
}

TEST_CASE("flow style rules, a scalar to and a missing name are accepted", "[config]") {
    Loaded l = load("rules: [{from: \"[::1]:9000\", to: localhost:22}, {name: b, from: ':9001', to: [h:1, h:2]}]\n");
    INFO(all(l.diag.errors));
    REQUIRE(l.ok);
    REQUIRE(l.cfg.rules.size() == 2);
    CHECK(l.cfg.rules[0].name == "[::1]:9000");  // defaults to from
    CHECK(l.cfg.rules[0].from.host == "::1");
    REQUIRE(l.cfg.rules[0].to.size() == 1);
    CHECK(l.cfg.rules[0].to[0].where.host == "localhost");
    CHECK(l.cfg.rules[1].from.host.empty());
    CHECK(l.cfg.rules[1].from.port == 9001);
}

TEST_CASE("port 0 in from binds an ephemeral port and may repeat", "[config]") {
    Loaded l = load("rules:\n- from: 127.0.0.1:0\n  to: [127.0.0.1:1]\n- from: 127.0.0.1:0\n  to: [127.0.0.1:1]\n");
    INFO(all(l.diag.errors));
    CHECK(l.ok);
}

TEST_CASE("unknown keys warn with file and line and are otherwise ignored", "[config]") {
    Loaded l = load("version: 1\nlisten_all: true\nrules:\n- from: 127.0.0.1:1\n  weight: 3\n  to: [127.0.0.1:2]\n");
    REQUIRE(l.ok);
    CHECK(has_message(l.diag.warnings, "rules.yaml:2: warning: unknown key \"listen_all\" ignored"));
    CHECK(has_message(l.diag.warnings, "rules.yaml:5: warning: unknown key \"weight\" ignored"));
}

struct BadCase {
    const char* what;
    const char* yaml;
    const char* message;  // must appear, with its file:line prefix
};

TEST_CASE("bad rules are reported with file:line and the field", "[config]") {
    const BadCase cases[] = {
        {"empty file", "# nothing\n", "rules.yaml:1: no rules"},
        {"top level is a list", "- a\n", "rules.yaml:1: the top level must be a mapping"},
        {"no rules key", "version: 1\n", "rules.yaml:1: missing \"rules:\" list"},
        {"rules is a scalar", "rules: x\n", "rules.yaml:1: rules: must be a list"},
        {"rules is empty", "rules: []\n", "rules.yaml:1: rules: the list is empty"},
        {"rule is a scalar", "rules:\n- x\n", "rules.yaml:2: a rule must be a mapping"},
        {"missing from", "rules:\n- name: a\n  to: [h:1]\n", "rules.yaml:2: rule: missing \"from:\""},
        {"missing to", "rules:\n- from: :1\n", "rules.yaml:2: rule: missing \"to:\""},
        {"empty to", "rules:\n- from: :1\n  to: []\n", "rules.yaml:3: to: the list is empty"},
        {"null to", "rules:\n- from: :1\n  to:\n", "rules.yaml:3: to: must be a list"},
        {"from without port", "rules:\n- from: 127.0.0.1\n  to: [h:1]\n", "rules.yaml:2: from: \"127.0.0.1\": missing port"},
        {"from with bad port", "rules:\n- from: h:http\n  to: [h:1]\n", "rules.yaml:2: from: \"h:http\": invalid port"},
        {"from port too big", "rules:\n- from: h:65536\n  to: [h:1]\n", "rules.yaml:2: from: \"h:65536\": port 65536 out of range"},
        {"to port 0", "rules:\n- from: h:1\n  to: [h:0]\n", "rules.yaml:3: to: \"h:0\": port 0 out of range"},
        {"bare IPv6", "rules:\n- from: h:1\n  to:\n    - \"::1:22\"\n", "rules.yaml:4: to: \"::1:22\": too many colons"},
        {"to without host", "rules:\n- from: h:1\n  to: [\":22\"]\n", "rules.yaml:3: to: \":22\": missing host"},
        {"to item is a list", "rules:\n- from: h:1\n  to: [[h:1]]\n", "rules.yaml:3: to: each upstream must be an address"},
        {"from is a list", "rules:\n- from: [h:1]\n  to: [h:1]\n", "rules.yaml:2: from: must be an address"},
        {"name is a list", "rules:\n- name: [a]\n  from: h:1\n  to: [h:1]\n", "rules.yaml:2: name: must be a string"},
        {"duplicate from", "rules:\n- name: a\n  from: 127.0.0.1:80\n  to: [h:1]\n- name: b\n  from: 127.0.0.1:80\n  to: [h:1]\n",
         "rules.yaml:6: from: \"127.0.0.1:80\" is already used by rule \"a\" at line 3"},
        {"yaml error keeps its line", "rules:\n- from: h:1\n\tto: [h:1]\n", "rules.yaml:3: "},
        {"duplicate key", "rules: []\nrules: []\n", "rules.yaml:2: "},
    };
    for (const BadCase& c : cases) {
        INFO(c.what);
        Loaded l = load(c.yaml);
        INFO(all(l.diag.errors));
        CHECK_FALSE(l.ok);
        CHECK(has_message(l.diag.errors, c.message));
    }
}

TEST_CASE("every error in the file is reported, not only the first", "[config]") {
    Loaded l = load("rules:\n- from: h\n  to: [h:1]\n- from: h:1\n  to: []\n- from: h:2\n  to: [\"::1:2\"]\n");
    REQUIRE_FALSE(l.ok);
    CHECK(l.diag.errors.size() == 3);
    CHECK(has_message(l.diag.errors, "rules.yaml:2:"));
    CHECK(has_message(l.diag.errors, "rules.yaml:5:"));
    CHECK(has_message(l.diag.errors, "rules.yaml:7:"));
}

TEST_CASE("a missing file is an error naming the file", "[config]") {
    config::Config cfg;
    config::Diagnostics diag;
    CHECK_FALSE(config::load_file("/nonexistent/rules.yaml", cfg, diag));
    CHECK(has_message(diag.errors, "open /nonexistent/rules.yaml: no such file or directory"));
}

TEST_CASE("the shipped example file is valid", "[config]") {
    config::Config cfg;
    config::Diagnostics diag;
    bool ok = config::load_file("rules.example.yaml", cfg, diag);
    INFO(all(diag.errors));
    CHECK(ok);
    CHECK(diag.warnings.empty());
    CHECK(cfg.rules.size() >= 2);
}
