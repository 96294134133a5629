// config.hpp - turns a yaml_lite tree into validated rules, policies, routes and top-level settings.
// Owns every key's meaning, default and error; never touches the network (names are resolved by the caller).
//
// Why long: one Builder reads every key of the file, and each key's checks sit beside it so an
// error names its own line; the readers (read_int, read_duration, ...) are shared by all of them.
//
// Every problem in the file is collected (not only the first) as
// "file:line: message", so a user fixes them all in one pass. Nothing here
// touches the network: names are resolved later, by the caller.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <sys/un.h>
#include <unistd.h>

#include "flags.hpp"
#include "net.hpp"
#include "proxy_protocol.hpp"
#include "yaml_lite.hpp"

namespace config {

using Duration = flags::Duration;

enum class Strategy { random, round_robin, least_conn, source_hash };

inline const char* strategy_name(Strategy s) {
    switch (s) {
        case Strategy::random: return "random";
        case Strategy::round_robin: return "round-robin";
        case Strategy::least_conn: return "least-conn";
        case Strategy::source_hash: return "source-hash";
    }
    return "?";
}

struct HealthCheck {
    bool enabled = false;
    Duration interval = std::chrono::seconds(5);
    Duration timeout = std::chrono::seconds(1);
    int rise = 2;
    int fall = 3;
    // Deeper checks: after the connect, `send` goes out and the reply must
    // start with `expect`; or, with `tls`, a ClientHello (with `sni` when set)
    // must be answered by a TLS handshake record.
    std::string send, expect;
    bool tls = false;
    std::string sni;
};

// How a rule picks and judges its upstreams. Set per rule, or once under
// `defaults:`; a rule's own key wins.
struct Policy {
    Strategy strategy = Strategy::random;
    int max_fails = 1;
    Duration fail_timeout = std::chrono::seconds(10);
    HealthCheck health;
    Duration resolve_interval = std::chrono::seconds(30);
    proxy_protocol::Version proxy = proxy_protocol::Version::off;
    // Timeouts: zero means "not set" (connect_timeout then falls back to -t).
    Duration connect_timeout{};
    Duration idle_timeout{};
    Duration halfclose_timeout{};
    int max_conns = 0;  // across all workers; 0: no limit
    int retries = -1;   // further upstreams a failed connect moves on to; -1: all of them
    std::vector<net::Cidr> allow, deny;
    // Listener settings (a route can not have its own: they act before one is chosen).
    int max_conns_per_client = 0;  // per client address, across all workers; 0: no limit
    bool accept_proxy = false;     // every connection starts with a PROXY v1/v2 header
    std::vector<net::Cidr> proxy_trusted;  // who may send one; empty: anyone
    // How long a client has to send its PROXY header and TLS ClientHello.
    Duration preread_timeout = std::chrono::seconds(5);
};

// Keys that belong to the listener, not to a route's pool.
inline bool listener_key(const std::string& key) {
    return key == "allow" || key == "deny" || key == "max_conns" || key == "max_conns_per_client" ||
           key == "accept_proxy" || key == "proxy_trusted" || key == "preread_timeout";
}

struct Upstream {
    std::string text;     // as written, for logs
    net::HostPort where;
    int line = 0;
    int weight = 1;
    bool backup = false;  // gets traffic only while no primary is up
    int max_conns = 0;    // live connections across all workers; 0: no limit
};

struct Rule;

// `*.example.com` matches one label in front of example.com, as a
// certificate wildcard does; anything else matches itself. Lowercase.
struct SniName {
    std::string name;
    bool wildcard = false;  // name holds ".example.com" then
    int line = 0;
};

struct Rule {
    std::string name;     // defaults to the `from` text
    std::string route;    // a route's own pool: its name (a rule's default pool: empty)
    std::vector<SniName> sni;    // a route's names
    std::vector<Rule> routes;    // SNI routes, tried before the default pool (`to`)
    std::string from_text;
    net::HostPort from;
    int line = 0;         // where the rule starts
    int from_line = 0;
    std::vector<Upstream> to;
    Policy policy;
    // Reads the first bytes of a connection before dialing.
    bool prereads() const { return policy.accept_proxy || !routes.empty(); }
};

// The route for a TLS server name (lowercase), or -1 for the default pool.
// An exact name wins over a wildcard (names are unique across routes).
inline int match_route(const Rule& rule, const std::string& name) {
    if (name.empty()) return -1;
    for (size_t r = 0; r < rule.routes.size(); ++r)
        for (const SniName& n : rule.routes[r].sni)
            if (!n.wildcard && n.name == name) return static_cast<int>(r);
    size_t dot = name.find('.');
    if (dot == std::string::npos || dot == 0) return -1;
    for (size_t r = 0; r < rule.routes.size(); ++r)
        for (const SniName& n : rule.routes[r].sni)
            if (n.wildcard && name.compare(dot, std::string::npos, n.name) == 0) return static_cast<int>(r);
    return -1;
}

struct Config {
    std::vector<Rule> rules;
    // Optional Prometheus endpoint (top-level `metrics: 127.0.0.1:9100`).
    bool has_metrics = false;
    net::HostPort metrics;
    int metrics_line = 0;
    // Optional control socket (top-level `control: /run/mixctl.sock`).
    std::string control;
    int control_line = 0;
};

// Every pool, in the order the shared state lays them out: each rule's own
// (its `to`, the default pool), then its routes'.
inline std::vector<const Rule*> pools(const Config& cfg) {
    std::vector<const Rule*> out;
    for (const Rule& rule : cfg.rules) {
        out.push_back(&rule);
        for (const Rule& route : rule.routes) out.push_back(&route);
    }
    return out;
}

struct Diagnostics {
    std::vector<std::string> errors;    // "file:line: message"
    std::vector<std::string> warnings;  // "file:line: warning: message"
};

namespace detail {

class Builder {
public:
    Builder(const std::string& file, Diagnostics& diag) : file_(file), diag_(diag) {}

    void error(int line, const std::string& message) { diag_.errors.push_back(where(line) + message); }
    void warn(int line, const std::string& message) { diag_.warnings.push_back(where(line) + "warning: " + message); }

    bool build(const yaml_lite::Node& root, Config& out) {
        size_t errors_before = diag_.errors.size();
        if (root.kind == yaml_lite::Kind::Null) {
            error(1, "no rules: the file is empty (want a \"rules:\" list)");
            return false;
        }
        if (root.kind != yaml_lite::Kind::Mapping) {
            error(root.line, "the top level must be a mapping with a \"rules:\" key");
            return false;
        }
        const yaml_lite::Node* rules = nullptr;
        for (const yaml_lite::Entry& entry : root.entries) {
            if (entry.key == "rules") rules = &entry.value;
            else if (entry.key == "defaults") parse_defaults(entry.value);
            else if (entry.key == "metrics") parse_metrics(entry.value, out);
            else if (entry.key == "control") parse_control(entry.value, out);
            else if (entry.key != "version") warn(entry.line, "unknown key \"" + entry.key + "\" ignored");
        }
        if (!rules) {
            error(root.line, "missing \"rules:\" list");
            return false;
        }
        build_rules(*rules, out);
        check_duplicate_listeners();
        return diag_.errors.size() == errors_before;
    }

private:
    std::string where(int line) const { return file_ + ":" + std::to_string(line < 1 ? 1 : line) + ": "; }

    void build_rules(const yaml_lite::Node& rules, Config& out) {
        if (rules.kind != yaml_lite::Kind::Sequence) {
            error(rules.line, "rules: must be a list of rules");
            return;
        }
        if (rules.items.empty()) {
            error(rules.line, "rules: the list is empty; at least one rule is required");
            return;
        }
        for (const yaml_lite::Node& item : rules.items) {
            Rule rule;
            bool ok = build_rule(item, rule);
            // A rule with other errors still claims its listener, so a clash
            // with it is reported in the same pass.
            if (rule.from_line) listeners_.push_back({rule.from, rule.from_text, rule.from_line, rule.name});
            if (ok) out.rules.push_back(std::move(rule));
        }
    }

    bool build_rule(const yaml_lite::Node& node, Rule& rule) {
        if (node.kind != yaml_lite::Kind::Mapping) {
            error(node.line, "a rule must be a mapping with from: and to:");
            return false;
        }
        size_t errors_before = diag_.errors.size();
        rule.line = node.line;
        rule.policy = defaults_;
        const yaml_lite::Node* name = nullptr;
        const yaml_lite::Node* from = nullptr;
        const yaml_lite::Node* to = nullptr;
        const yaml_lite::Node* routes = nullptr;
        for (const yaml_lite::Entry& entry : node.entries) {
            if (entry.key == "name") name = &entry.value;
            else if (entry.key == "from") from = &entry.value;
            else if (entry.key == "to") to = &entry.value;
            else if (entry.key == "routes") routes = &entry.value;
            else if (!policy_key(entry, rule.policy)) warn(entry.line, "unknown key \"" + entry.key + "\" ignored");
        }
        if (!from) error(node.line, "rule: missing \"from:\"");
        else parse_from(*from, rule);
        // With routes, `to` is optional: without it a connection that
        // matches no route is closed.
        if (!to && !routes) error(node.line, "rule: missing \"to:\"");
        else if (to) parse_to(*to, rule);
        if (name) {
            if (name->kind == yaml_lite::Kind::Scalar) rule.name = name->scalar;
            else if (name->kind != yaml_lite::Kind::Null) error(name->line, "name: must be a string");
        }
        if (rule.name.empty()) rule.name = rule.from_text;
        if (routes) parse_routes(*routes, rule);  // after the name: a route's pool carries it
        return diag_.errors.size() == errors_before;
    }

    // routes: [{sni: [names], to: [...], name: label, <pool settings>}]
    void parse_routes(const yaml_lite::Node& node, Rule& rule) {
        if (node.kind != yaml_lite::Kind::Sequence || node.items.empty()) {
            error(node.line, "routes: must be a non-empty list like [{sni: [app.example.com], to: [127.0.0.1:8443]}]");
            return;
        }
        for (const yaml_lite::Node& item : node.items) {
            if (item.kind != yaml_lite::Kind::Mapping) {
                error(item.line, "routes: each route must be a mapping with sni: and to:");
                continue;
            }
            Rule route;
            route.line = item.line;
            route.name = rule.name;
            route.policy = rule.policy;
            const yaml_lite::Node *sni = nullptr, *to = nullptr, *name = nullptr;
            for (const yaml_lite::Entry& entry : item.entries) {
                if (entry.key == "sni") sni = &entry.value;
                else if (entry.key == "to") to = &entry.value;
                else if (entry.key == "name") name = &entry.value;
                else if (listener_key(entry.key))
                    error(entry.line, entry.key + ": is a setting of the rule (its listener), not of a route");
                else if (!policy_key(entry, route.policy)) warn(entry.line, "unknown key \"" + entry.key + "\" ignored");
            }
            if (!sni) error(item.line, "route: missing \"sni:\"");
            else parse_sni(*sni, rule, route);
            if (!to) error(item.line, "route: missing \"to:\"");
            else parse_to(*to, route);
            if (name && name->kind == yaml_lite::Kind::Scalar && !name->scalar.empty()) route.route = name->scalar;
            else if (name) error(name->line, "name: must be a string");
            else if (!route.sni.empty()) route.route = (route.sni[0].wildcard ? "*" : "") + route.sni[0].name;
            for (const Rule& other : rule.routes)
                if (!route.route.empty() && other.route == route.route)
                    error(name ? name->line : item.line, "route: name \"" + route.route +
                                                               "\" is already used by the route at line " +
                                                               std::to_string(other.line));
            rule.routes.push_back(std::move(route));
        }
    }

    void parse_sni(const yaml_lite::Node& node, const Rule& rule, Rule& route) {
        std::vector<const yaml_lite::Node*> items;
        if (node.kind == yaml_lite::Kind::Scalar) items.push_back(&node);
        else if (node.kind == yaml_lite::Kind::Sequence)
            for (const yaml_lite::Node& item : node.items) items.push_back(&item);
        if (items.empty()) {
            error(node.line, "sni: must be a non-empty list of names like [app.example.com, \"*.example.org\"]");
            return;
        }
        for (const yaml_lite::Node* item : items) {
            SniName n;
            n.line = item->line;
            std::string why;
            if (item->kind != yaml_lite::Kind::Scalar || !parse_sni_name(item->scalar, n, why)) {
                error(item->line, "sni: \"" + item->scalar + "\": " + why);
                continue;
            }
            auto same = [&](const SniName& o) { return o.wildcard == n.wildcard && o.name == n.name; };
            bool duplicate = false;
            for (const Rule& other : rule.routes)
                for (const SniName& o : other.sni)
                    if (!duplicate && same(o)) {
                        error(item->line, "sni: \"" + item->scalar + "\" is already routed by the route at line " +
                                              std::to_string(other.line));
                        duplicate = true;
                    }
            for (const SniName& o : route.sni)
                if (!duplicate && same(o)) {
                    error(item->line, "sni: \"" + item->scalar + "\" is listed twice");
                    duplicate = true;
                }
            if (!duplicate) route.sni.push_back(n);
        }
    }

    // A DNS name (letters, digits, '-', '_', dots between labels), or "*."
    // followed by one. Stored lowercase.
    static bool parse_sni_name(const std::string& text, SniName& out, std::string& why) {
        std::string name = lowercase(text);
        out.wildcard = name.compare(0, 2, "*.") == 0;
        if (out.wildcard) name.erase(0, 1);  // keep the dot: ".example.com"
        const size_t first = out.wildcard ? 1 : 0;
        if (name.size() <= first || name.size() > 253) {
            why = "want a host name like app.example.com or *.example.com";
            return false;
        }
        for (size_t i = first; i < name.size(); ++i) {
            char c = name[i];
            if (c == '*') {
                why = "a wildcard must be the whole first label, like *.example.com";
                return false;
            }
            bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
            if (!ok || (c == '.' && (i == first || name[i - 1] == '.' || i + 1 == name.size()))) {
                why = "not a host name (letters, digits, '-', '_', and dots between labels)";
                return false;
            }
        }
        out.name = name;
        return true;
    }

    void parse_from(const yaml_lite::Node& node, Rule& rule) {
        rule.from_line = node.line;
        if (node.kind != yaml_lite::Kind::Scalar || node.scalar.empty()) {
            error(node.line, "from: must be an address like 127.0.0.1:8080");
            return;
        }
        std::string why;
        if (!net::parse_host_port(node.scalar, true, rule.from, why)) {
            error(node.line, "from: \"" + node.scalar + "\": " + why);
            return;
        }
        rule.from_text = node.scalar;
    }

    void parse_to(const yaml_lite::Node& node, Rule& rule) {
        if (node.kind == yaml_lite::Kind::Scalar) {
            add_upstream(node, rule);
            return;
        }
        if (node.kind != yaml_lite::Kind::Sequence) {
            error(node.line, "to: must be a list of addresses like [127.0.0.1:8080]");
            return;
        }
        if (node.items.empty()) {
            error(node.line, "to: the list is empty; at least one upstream is required");
            return;
        }
        for (const yaml_lite::Node& item : node.items) add_upstream(item, rule);
    }

    void add_upstream(const yaml_lite::Node& node, Rule& rule) {
        if (node.kind == yaml_lite::Kind::Mapping) {
            add_upstream_mapping(node, rule);
            return;
        }
        if (node.kind != yaml_lite::Kind::Scalar || node.scalar.empty()) {
            error(node.line, "to: each upstream must be an address like 127.0.0.1:8080");
            return;
        }
        add_upstream_address(node, rule, Upstream());
    }

    // - {address: 10.0.0.5:6443, weight: 3, backup: true}
    void add_upstream_mapping(const yaml_lite::Node& node, Rule& rule) {
        Upstream upstream;
        const yaml_lite::Node* address = nullptr;
        for (const yaml_lite::Entry& entry : node.entries) {
            if (entry.key == "address") address = &entry.value;
            else if (entry.key == "weight") read_int(entry, 1, 1000000, upstream.weight);
            else if (entry.key == "backup") read_bool(entry, upstream.backup);
            else if (entry.key == "max_conns") read_int(entry, 0, 10000000, upstream.max_conns);
            else warn(entry.line, "unknown key \"" + entry.key + "\" ignored");
        }
        if (!address || address->kind != yaml_lite::Kind::Scalar || address->scalar.empty()) {
            error(node.line, "to: an upstream mapping needs \"address: host:port\"");
            return;
        }
        add_upstream_address(*address, rule, upstream);
    }

    void add_upstream_address(const yaml_lite::Node& node, Rule& rule, Upstream upstream) {
        std::string why;
        if (!net::parse_host_port(node.scalar, false, upstream.where, why)) {
            error(node.line, "to: \"" + node.scalar + "\": " + why);
            return;
        }
        if (upstream.where.host.empty()) {
            error(node.line, "to: \"" + node.scalar + "\": missing host (want host:port)");
            return;
        }
        upstream.text = node.scalar;
        upstream.line = node.line;
        rule.to.push_back(std::move(upstream));
    }

    void parse_metrics(const yaml_lite::Node& node, Config& out) {
        std::string why;
        if (node.kind != yaml_lite::Kind::Scalar || !net::parse_host_port(node.scalar, true, out.metrics, why)) {
            error(node.line, "metrics: \"" + node.scalar + "\": " + (why.empty() ? "must be an address like 127.0.0.1:9100" : why));
            return;
        }
        out.has_metrics = true;
        out.metrics_line = node.line;
    }

    void parse_control(const yaml_lite::Node& node, Config& out) {
        if (node.kind != yaml_lite::Kind::Scalar || node.scalar.empty() || node.scalar[0] != '/') {
            error(node.line, "control: \"" + node.scalar + "\" must be an absolute path like /run/mixctl.sock");
            return;
        }
        if (node.scalar.size() >= sizeof(sockaddr_un{}.sun_path)) {
            error(node.line, "control: \"" + node.scalar + "\" is too long for a Unix socket path (max " +
                                 std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes)");
            return;
        }
        out.control = node.scalar;
        out.control_line = node.line;
    }

    void parse_defaults(const yaml_lite::Node& node) {
        if (node.kind != yaml_lite::Kind::Mapping) {
            error(node.line, "defaults: must be a mapping of rule settings");
            return;
        }
        for (const yaml_lite::Entry& entry : node.entries)
            if (!policy_key(entry, defaults_)) warn(entry.line, "unknown key \"" + entry.key + "\" ignored");
    }

    // Returns false for keys that are not policy settings.
    bool policy_key(const yaml_lite::Entry& entry, Policy& policy) {
        const std::string& key = entry.key;
        if (key == "strategy") read_strategy(entry, policy.strategy);
        else if (key == "max_fails") read_int(entry, 1, 1000000, policy.max_fails);
        else if (key == "fail_timeout") read_duration(entry, false, policy.fail_timeout);
        else if (key == "resolve_interval") read_duration(entry, false, policy.resolve_interval);
        else if (key == "health_check") read_health(entry.value, policy.health);
        else if (key == "proxy_protocol") read_proxy(entry, policy.proxy);
        else if (key == "connect_timeout") read_duration(entry, false, policy.connect_timeout);
        else if (key == "idle_timeout") read_duration(entry, true, policy.idle_timeout);
        else if (key == "halfclose_timeout") read_duration(entry, true, policy.halfclose_timeout);
        else if (key == "max_conns") read_int(entry, 0, 10000000, policy.max_conns);
        else if (key == "retries") read_int(entry, 0, 1000, policy.retries);
        else if (key == "allow") read_cidrs(entry, policy.allow);
        else if (key == "deny") read_cidrs(entry, policy.deny);
        else if (key == "max_conns_per_client") read_int(entry, 0, 65535, policy.max_conns_per_client);
        else if (key == "accept_proxy") read_bool(entry, policy.accept_proxy);
        else if (key == "proxy_trusted") read_cidrs(entry, policy.proxy_trusted);
        else if (key == "preread_timeout") read_duration(entry, false, policy.preread_timeout);
        else return false;
        return true;
    }

    void read_strategy(const yaml_lite::Entry& entry, Strategy& out) {
        static const Strategy all[] = {Strategy::random, Strategy::round_robin, Strategy::least_conn,
                                       Strategy::source_hash};
        if (entry.value.kind == yaml_lite::Kind::Scalar)
            for (Strategy s : all)
                if (entry.value.scalar == strategy_name(s)) {
                    out = s;
                    return;
                }
        error(entry.value.line, "strategy: unknown strategy \"" + entry.value.scalar +
                                    "\" (want random, round-robin, least-conn or source-hash)");
    }

    void read_cidrs(const yaml_lite::Entry& entry, std::vector<net::Cidr>& out) {
        out.clear();
        std::vector<const yaml_lite::Node*> items;
        if (entry.value.kind == yaml_lite::Kind::Scalar) items.push_back(&entry.value);
        else if (entry.value.kind == yaml_lite::Kind::Sequence)
            for (const yaml_lite::Node& item : entry.value.items) items.push_back(&item);
        else error(entry.value.line, entry.key + ": must be a list of addresses or networks like 10.0.0.0/8");
        for (const yaml_lite::Node* item : items) {
            net::Cidr cidr;
            std::string why;
            if (item->kind != yaml_lite::Kind::Scalar || !net::parse_cidr(item->scalar, cidr, why)) {
                error(item->line, entry.key + ": \"" + item->scalar + "\": " +
                                      (why.empty() ? "want an address or network like 10.0.0.0/8" : why));
                continue;
            }
            out.push_back(cidr);
        }
    }

    void read_proxy(const yaml_lite::Entry& entry, proxy_protocol::Version& out) {
        const std::string& t = entry.value.scalar;
        if (entry.value.kind == yaml_lite::Kind::Scalar && (t == "v1" || t == "v2" || t == "off")) {
            out = t == "v1" ? proxy_protocol::Version::v1
                            : t == "v2" ? proxy_protocol::Version::v2 : proxy_protocol::Version::off;
            return;
        }
        error(entry.value.line, "proxy_protocol: \"" + t + "\" must be v1, v2 or off");
    }

    void read_int(const yaml_lite::Entry& entry, int low, int high, int& out) {
        const yaml_lite::Node& v = entry.value;
        long long value = 0;
        bool digits = v.kind == yaml_lite::Kind::Scalar && !v.scalar.empty() && v.scalar.size() < 12;
        for (size_t i = 0; digits && i < v.scalar.size(); ++i) {
            char c = v.scalar[i];
            if (i == 0 && c == '-' && v.scalar.size() > 1) continue;
            digits = c >= '0' && c <= '9';
        }
        if (digits) value = std::stoll(v.scalar);
        if (!digits || value < low || value > high) {
            error(v.line, entry.key + ": \"" + v.scalar + "\" must be a whole number from " + std::to_string(low) +
                              " to " + std::to_string(high));
            return;
        }
        out = static_cast<int>(value);
    }

    void read_bool(const yaml_lite::Entry& entry, bool& out) {
        const std::string& t = entry.value.scalar;
        if (entry.value.kind == yaml_lite::Kind::Scalar && (t == "true" || t == "false")) {
            out = t == "true";
            return;
        }
        error(entry.value.line, entry.key + ": \"" + t + "\" must be true or false");
    }

    void read_duration(const yaml_lite::Entry& entry, bool zero_ok, Duration& out) {
        const yaml_lite::Node& v = entry.value;
        Duration d{};
        std::string why;
        if (v.kind != yaml_lite::Kind::Scalar || !flags::parse_duration(v.scalar, d, why)) {
            error(v.line, entry.key + ": \"" + v.scalar + "\" is not a duration like 500ms, 10s or 1m");
            return;
        }
        if (d.count() < 0 || (!zero_ok && d.count() == 0)) {
            error(v.line, entry.key + ": \"" + v.scalar + "\" must be " + (zero_ok ? "0 or more" : "more than 0"));
            return;
        }
        out = d;
    }

    void read_health(const yaml_lite::Node& node, HealthCheck& health) {
        if (node.kind != yaml_lite::Kind::Mapping) {
            error(node.line, "health_check: must be a mapping like {interval: 5s, timeout: 1s, rise: 2, fall: 3}");
            return;
        }
        health.enabled = true;
        for (const yaml_lite::Entry& entry : node.entries) {
            if (entry.key == "interval") read_duration(entry, false, health.interval);
            else if (entry.key == "timeout") read_duration(entry, false, health.timeout);
            else if (entry.key == "rise") read_int(entry, 1, 1000, health.rise);
            else if (entry.key == "fall") read_int(entry, 1, 1000, health.fall);
            else if (entry.key == "send") read_text(entry, health.send);
            else if (entry.key == "expect") read_text(entry, health.expect);
            else if (entry.key == "tls") read_bool(entry, health.tls);
            else if (entry.key == "sni") read_text(entry, health.sni);
            else warn(entry.line, "unknown key \"" + entry.key + "\" ignored");
        }
        if (health.tls && (!health.send.empty() || !health.expect.empty()))
            error(node.line, "health_check: tls: true sends its own hello; it can not be combined with send/expect");
        if (!health.sni.empty() && !health.tls) error(node.line, "health_check: sni: needs tls: true");
        if (health.sni.size() > 255) error(node.line, "health_check: sni: longer than 255 bytes");
        for (char c : health.sni)
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) {
                error(node.line, "health_check: sni: \"" + health.sni + "\" is not a host name");
                break;
            }
    }

    // A string value; send/expect take YAML's double-quoted escapes ("\r\n").
    void read_text(const yaml_lite::Entry& entry, std::string& out) {
        if (entry.value.kind != yaml_lite::Kind::Scalar || entry.value.scalar.size() > 4096) {
            error(entry.value.line, entry.key + ": must be a string of at most 4096 bytes");
            return;
        }
        out = entry.value.scalar;
    }

    // Two rules on one address would fail at bind time with a vaguer message.
    void check_duplicate_listeners() {
        for (size_t i = 0; i < listeners_.size(); ++i) {
            const Claim& later = listeners_[i];
            if (later.where.port == 0) continue;  // each port 0 binds its own ephemeral port
            for (size_t j = 0; j < i; ++j) {
                const Claim& earlier = listeners_[j];
                if (same_listener(earlier.where, later.where)) {
                    error(later.line, "from: \"" + later.text + "\" is already used by rule \"" + earlier.rule +
                                          "\" at line " + std::to_string(earlier.line));
                    break;
                }
            }
        }
    }

    static bool same_listener(const net::HostPort& a, const net::HostPort& b) {
        if (a.port != b.port) return false;
        return lowercase(a.host) == lowercase(b.host);
    }

    static std::string lowercase(std::string text) {
        for (char& c : text)
            if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        return text;
    }

    const std::string& file_;
    Diagnostics& diag_;
    Policy defaults_;
    struct Claim {
        net::HostPort where;
        std::string text;
        int line;
        std::string rule;
    };
    std::vector<Claim> listeners_;  // every parsed from:, valid rule or not
};

}  // namespace detail

inline bool parse_text(std::string_view text, const std::string& file, Config& out, Diagnostics& diag) {
    yaml_lite::Result tree = yaml_lite::parse(text);
    if (!tree.ok()) {
        for (const yaml_lite::Error& e : tree.errors)
            diag.errors.push_back(file + ":" + std::to_string(e.line < 1 ? 1 : e.line) + ": " + e.message);
        return false;
    }
    out = Config();
    return detail::Builder(file, diag).build(tree.root, out);
}

// Config files are small; anything over this is not a rules file.
constexpr size_t max_file_size = 16 * 1024 * 1024;

inline bool read_file(const std::string& path, std::string& text, std::string& error) {
    net::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        error = "open " + path + ": " + net::errno_text(errno);
        return false;
    }
    text.clear();
    char chunk[8192];
    for (;;) {
        ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            error = "read " + path + ": " + net::errno_text(errno);
            return false;
        }
        if (n == 0) return true;
        text.append(chunk, static_cast<size_t>(n));
        if (text.size() > max_file_size) {
            error = "read " + path + ": file is larger than 16 MiB";
            return false;
        }
    }
}

inline bool load_file(const std::string& path, Config& out, Diagnostics& diag) {
    std::string text, error;
    if (!read_file(path, text, error)) {
        diag.errors.push_back(error);
        return false;
    }
    return parse_text(text, path, out, diag);
}

}  // namespace config
