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

#include <algorithm>
#include <cerrno>
#include <chrono>
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

enum class Protocol { tcp, udp };

inline const char* protocol_name(Protocol p) { return p == Protocol::udp ? "udp" : "tcp"; }

// UDP defaults (documented in README and mixctl.8): a session with no
// datagram either way for a minute ends. That outlasts the keepalives that
// hold NAT state open (WireGuard 25 s, SIP 30 s) yet lets the sockets of
// one-off clients go well before conntrack would (120 s).
constexpr std::chrono::seconds udp_default_idle{60};
// Sessions per UDP rule in each worker (each holds one socket).
constexpr int udp_default_max_sessions = 4096;
constexpr int responses_unlimited = -1;

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
    int line = 0, tls_line = 0;  // of the mapping and its tls: key, for errors that need the protocol
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
    Protocol protocol = Protocol::tcp;
    int responses = responses_unlimited;  // UDP: replies that end a session
    int max_sessions = udp_default_max_sessions;  // UDP: per rule and worker
    std::string source;                   // local address for upstream sockets; empty: the kernel's choice
    int source_line = 0;
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
           key == "accept_proxy" || key == "proxy_trusted" || key == "preread_timeout" || key == "protocol";
}

struct Upstream {
    std::string text;     // as written, for logs
    net::HostPort where;
    int line = 0;
    int weight = 1;
    bool backup = false;  // gets traffic only while no primary is up
    int max_conns = 0;    // live connections across all workers; 0: no limit
    // The port follows the listener's: upstream port = where.port + (the
    // port the client reached - the rule's first port). Set for a port range
    // (`to: [h:50000-50009]`) and for `to: [h]` without a port.
    bool ranged = false;
    std::string source;   // overrides the rule's source
    int source_line = 0;
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
    net::HostPort from;   // a range starts at from.port
    uint16_t from_last = 0;  // last port of the range (== from.port for one port)
    int line = 0;         // where the rule starts
    int from_line = 0;
    size_t ports() const { return static_cast<size_t>(from_last - from.port) + 1; }
    // The source address upstream `u` binds to before connecting, or "".
    const std::string& source_of(size_t u) const { return to[u].source.empty() ? policy.source : to[u].source; }
    int source_line_of(size_t u) const { return to[u].source.empty() ? policy.source_line : to[u].source_line; }
    std::vector<Upstream> to;
    Policy policy;
    // What the file says for this rule, with the `defaults:` it inherits, as
    // one canonical text (yaml_lite::canonical): a reload compares these, so
    // a change to any key, present or future, counts as a change (an edit
    // to an ignored unknown key too). Empty for a route's pool.
    std::string fingerprint;
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

// What a reload did to the rules, for its log line: "2 rules (1 added, 0
// removed, 1 changed)". Rules are matched by name; one whose fingerprint
// differs counts as changed.
inline std::string reload_summary(const Config& now, const Config& before) {
    size_t added = 0, removed = 0, changed = 0;
    for (const Rule& r : now.rules) {
        const Rule* old = nullptr;
        for (const Rule& o : before.rules)
            if (o.name == r.name) old = &o;
        if (!old) ++added;
        else if (old->fingerprint != r.fingerprint) ++changed;
    }
    for (const Rule& o : before.rules) {
        bool kept = false;
        for (const Rule& r : now.rules) kept = kept || r.name == o.name;
        removed += !kept;
    }
    return std::to_string(now.rules.size()) + " rules (" + std::to_string(added) + " added, " +
           std::to_string(removed) + " removed, " + std::to_string(changed) + " changed)";
}

struct Diagnostics {
    std::vector<std::string> errors;    // "file:line: message"
    std::vector<std::string> warnings;  // "file:line: warning: message"
};

// "host:port", "host:first-last" and, when allow_no_port, a bare "host" or
// "[v6]" (then has_port is false). On failure `error` says what is wrong.
inline bool parse_endpoint(std::string_view text, bool allow_port_zero, bool allow_no_port, net::HostPort& out,
                           uint16_t& last, bool& has_port, std::string& error) {
    bool bracketed = !text.empty() && text.front() == '[';
    size_t port_colon = std::string_view::npos;
    if (bracketed) {
        size_t close = text.find(']');
        if (close != std::string_view::npos && close + 1 < text.size() && text[close + 1] == ':') port_colon = close + 1;
        else if (close != std::string_view::npos && close + 1 == text.size()) port_colon = std::string_view::npos;
        else return net::parse_host_port(text, allow_port_zero, out, error);  // its message
    } else {
        port_colon = text.rfind(':');
    }
    if (port_colon == std::string_view::npos) {
        if (!allow_no_port) return net::parse_host_port(text, allow_port_zero, out, error);
        std::string_view host = bracketed ? text.substr(1, text.size() - 2) : text;
        net::HostPort probe;
        // The host is checked by parsing it with a placeholder port.
        std::string with_port = (bracketed ? "[" + std::string(host) + "]" : std::string(host)) + ":1";
        if (!net::parse_host_port(with_port, false, probe, error)) return false;
        out.host = probe.host;
        out.port = 0;
        last = 0;
        has_port = false;
        return true;
    }
    has_port = true;
    std::string_view head = text.substr(0, port_colon + 1);
    std::string_view ports = text.substr(port_colon + 1);
    size_t dash = ports.find('-');
    if (!net::parse_host_port(std::string(head) + std::string(ports.substr(0, dash)), allow_port_zero, out, error))
        return false;
    last = out.port;
    if (dash == std::string_view::npos) return true;
    net::HostPort end;
    if (out.port == 0 || !net::parse_host_port(std::string(head) + std::string(ports.substr(dash + 1)), false, end, error)) {
        if (out.port == 0) error = "port 0 cannot start a range";
        return false;
    }
    if (end.port < out.port) {
        error = "port range " + std::string(ports) + " runs backwards";
        return false;
    }
    last = end.port;
    return true;
}

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
            if (rule.from_line)
                listeners_.push_back({rule.from, rule.from_last, rule.policy.protocol, rule.from_text, rule.from_line,
                                      rule.name});
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
        std::vector<SetKey> own;  // policy keys written on this rule
        const yaml_lite::Node* routes = nullptr;
        int routes_line = 0;
        for (const yaml_lite::Entry& entry : node.entries) {
            if (entry.key == "name") name = &entry.value;
            else if (entry.key == "from") from = &entry.value;
            else if (entry.key == "to") to = &entry.value;
            else if (entry.key == "routes") {
                routes = &entry.value;
                routes_line = entry.line;
            } else if (policy_key(entry, rule.policy)) own.push_back({entry.key, entry.line});
            else warn(entry.line, "unknown key \"" + entry.key + "\" ignored");
        }
        fit_protocol(rule.policy, own);
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
        if (routes && rule.policy.protocol == Protocol::udp)
            error(routes_line, "routes: means nothing for a udp rule (SNI routes are chosen by a TCP ClientHello)");
        else if (routes) parse_routes(*routes, rule);  // after the name: a route's pool carries it
        rule.fingerprint = fingerprint_of(node);
        return diag_.errors.size() == errors_before;
    }

    std::string fingerprint_of(const yaml_lite::Node& rule) const {
        yaml_lite::Node effective = rule;
        if (defaults_node_)
            for (const yaml_lite::Entry& entry : defaults_node_->entries)
                if (!rule.find(entry.key)) effective.entries.push_back(entry);
        std::string out;
        yaml_lite::canonical(effective, out);
        return out;
    }

    struct SetKey {
        std::string key;
        int line;
    };

    // Keys that mean something for one protocol only. Written on a rule of
    // the other protocol they are an error on their own line; inherited from
    // `defaults:` they are left out for that rule.
    static bool fits(const std::string& key, Protocol protocol) {
        // max_conns_per_client is counted per TCP connection only: UDP
        // sessions do not take places in the client table (yet).
        static const std::vector<std::string> tcp_only = {
            "connect_timeout", "halfclose_timeout", "proxy_protocol",  "max_conns",           "retries",
            "accept_proxy",    "proxy_trusted",     "preread_timeout", "max_conns_per_client"};
        static const std::vector<std::string> udp_only = {"responses", "max_sessions"};
        const std::vector<std::string>& other = protocol == Protocol::udp ? tcp_only : udp_only;
        return std::find(other.begin(), other.end(), key) == other.end();
    }

    void fit_protocol(Policy& policy, const std::vector<SetKey>& own) {
        const Protocol protocol = policy.protocol;
        auto written = [&](const std::string& key) {
            for (const SetKey& k : own)
                if (k.key == key) return true;
            return false;
        };
        for (const SetKey& k : own)
            if (!fits(k.key, protocol))
                error(k.line, k.key + ": means nothing for a " + protocol_name(protocol) + " rule (only for protocol: " +
                                  (protocol == Protocol::udp ? "tcp" : "udp") + ")");
        for (const SetKey& k : defaults_keys_)
            if (!fits(k.key, protocol) && !written(k.key)) reset_key(policy, k.key);
        if (protocol == Protocol::udp) fit_udp_check(policy.health, written("health_check"));
        if (protocol == Protocol::udp && !written("idle_timeout")) {
            bool from_defaults = false;
            for (const SetKey& k : defaults_keys_) from_defaults = from_defaults || k.key == "idle_timeout";
            if (!from_defaults || policy.idle_timeout.count() == 0) policy.idle_timeout = udp_default_idle;
        }
        if (protocol == Protocol::udp && policy.idle_timeout.count() == 0)
            for (const SetKey& k : own)
                if (k.key == "idle_timeout")
                    error(k.line, "idle_timeout: 0 would keep udp sessions forever; want more than 0 (default " +
                                      flags::format_duration(udp_default_idle) + ")");
    }

    // A UDP check is a datagram and its answer: there is no handshake to
    // prove anything by itself, and no TLS over a bare datagram. A rule's own
    // check that cannot work is an error; one from `defaults:` is left out.
    void fit_udp_check(HealthCheck& health, bool own) {
        if (!health.enabled) return;
        if (health.tls) {
            if (own)
                error(health.tls_line ? health.tls_line : health.line,
                      "health_check: tls: means nothing for a udp rule (a TLS handshake needs TCP)");
            else health = HealthCheck{};
            return;
        }
        if (health.send.empty()) {
            if (own)
                error(health.line,
                      "health_check: a udp rule's check needs send: (a datagram the upstream answers, "
                      "e.g. a DNS query); a UDP \"connect\" sends nothing and proves nothing");
            else health = HealthCheck{};
        }
    }

    static void reset_key(Policy& policy, const std::string& key) {
        const Policy fresh;
        if (key == "connect_timeout") policy.connect_timeout = fresh.connect_timeout;
        else if (key == "halfclose_timeout") policy.halfclose_timeout = fresh.halfclose_timeout;
        else if (key == "proxy_protocol") policy.proxy = fresh.proxy;
        else if (key == "max_conns") policy.max_conns = fresh.max_conns;
        else if (key == "health_check") policy.health = fresh.health;
        else if (key == "responses") policy.responses = fresh.responses;
        else if (key == "max_sessions") policy.max_sessions = fresh.max_sessions;
        else if (key == "retries") policy.retries = fresh.retries;
        else if (key == "accept_proxy") policy.accept_proxy = fresh.accept_proxy;
        else if (key == "proxy_trusted") policy.proxy_trusted = fresh.proxy_trusted;
        else if (key == "preread_timeout") policy.preread_timeout = fresh.preread_timeout;
        else if (key == "max_conns_per_client") policy.max_conns_per_client = fresh.max_conns_per_client;
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
            // A route's ports follow its rule's listener: a ranged upstream
            // (`to: [h]`, `to: [h:50000-50009]`) means the same in a route.
            route.from = rule.from;
            route.from_last = rule.from_last;
            route.from_line = rule.from_line;
            route.from_text = rule.from_text;
            const yaml_lite::Node *sni = nullptr, *to = nullptr, *name = nullptr;
            for (const yaml_lite::Entry& entry : item.entries) {
                if (entry.key == "sni") sni = &entry.value;
                else if (entry.key == "to") to = &entry.value;
                else if (entry.key == "name") name = &entry.value;
                else if (listener_key(entry.key))
                    error(entry.line, entry.key + ": is a setting of the rule (its listener), not of a route");
                else if (!policy_key(entry, route.policy)) warn(entry.line, "unknown key \"" + entry.key + "\" ignored");
                else if (!fits(entry.key, Protocol::tcp))
                    error(entry.line, entry.key + ": means nothing for a tcp rule (only for protocol: udp)");
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
        bool has_port = true;
        if (!parse_endpoint(node.scalar, true, false, rule.from, rule.from_last, has_port, why)) {
            error(node.line, "from: \"" + node.scalar + "\": " + why);
            rule.from_line = 0;  // claims no listener
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

    // - {address: 10.0.0.5:6443, weight: 3, backup: true, source: 10.0.0.1}
    void add_upstream_mapping(const yaml_lite::Node& node, Rule& rule) {
        Upstream upstream;
        const yaml_lite::Node* address = nullptr;
        for (const yaml_lite::Entry& entry : node.entries) {
            if (entry.key == "address") address = &entry.value;
            else if (entry.key == "weight") read_int(entry, 1, 1000000, upstream.weight);
            else if (entry.key == "backup") read_bool(entry, upstream.backup);
            else if (entry.key == "max_conns") read_int(entry, 0, 10000000, upstream.max_conns);
            else if (entry.key == "source") read_source(entry, upstream.source, upstream.source_line);
            else warn(entry.line, "unknown key \"" + entry.key + "\" ignored");
        }
        if (!address || address->kind != yaml_lite::Kind::Scalar || address->scalar.empty()) {
            error(node.line, "to: an upstream mapping needs \"address: host:port\"");
            return;
        }
        add_upstream_address(*address, rule, upstream);
    }

    // Needs the rule's from: parsed first (a range decides what a port-less
    // or ranged upstream means).
    void add_upstream_address(const yaml_lite::Node& node, Rule& rule, Upstream upstream) {
        std::string why;
        uint16_t last = 0;
        bool has_port = true;
        const bool from_range = rule.from_line && rule.from_last != rule.from.port;
        if (!parse_endpoint(node.scalar, false, from_range, upstream.where, last, has_port, why)) {
            if (!from_range && rule.from_line && why.find("missing port") != std::string::npos)
                why += "; only a rule whose from: is a port range may leave the port out";
            error(node.line, "to: \"" + node.scalar + "\": " + why);
            return;
        }
        if (upstream.where.host.empty()) {
            error(node.line, "to: \"" + node.scalar + "\": missing host (want host:port)");
            return;
        }
        if (!has_port) {
            upstream.where.port = rule.from.port;  // the port the client reached
            upstream.ranged = true;
        } else if (last != upstream.where.port) {
            size_t length = static_cast<size_t>(last - upstream.where.port) + 1;
            if (!rule.from_line || length != rule.ports()) {
                error(node.line, "to: \"" + node.scalar + "\": a range of " + std::to_string(length) +
                                     " ports needs a from: range of the same length (from: has " +
                                     std::to_string(rule.from_line ? rule.ports() : 1) + ")");
                return;
            }
            upstream.ranged = true;
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
        defaults_node_ = &node;
        for (const yaml_lite::Entry& entry : node.entries) {
            if (policy_key(entry, defaults_)) defaults_keys_.push_back({entry.key, entry.line});
            else warn(entry.line, "unknown key \"" + entry.key + "\" ignored");
        }
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
        else if (key == "protocol") read_protocol(entry, policy.protocol);
        else if (key == "responses") read_int(entry, 0, 1000000000, policy.responses);
        else if (key == "max_sessions") read_int(entry, 1, 10000000, policy.max_sessions);
        else if (key == "source") read_source(entry, policy.source, policy.source_line);
        else if (key == "max_conns_per_client") read_int(entry, 0, 65535, policy.max_conns_per_client);
        else if (key == "accept_proxy") read_bool(entry, policy.accept_proxy);
        else if (key == "proxy_trusted") read_cidrs(entry, policy.proxy_trusted);
        else if (key == "preread_timeout") read_duration(entry, false, policy.preread_timeout);
        else return false;
        return true;
    }

    void read_protocol(const yaml_lite::Entry& entry, Protocol& out) {
        const std::string& t = entry.value.scalar;
        if (entry.value.kind == yaml_lite::Kind::Scalar && (t == "tcp" || t == "udp")) {
            out = t == "udp" ? Protocol::udp : Protocol::tcp;
            return;
        }
        error(entry.value.line, "protocol: \"" + t + "\" must be tcp or udp");
    }

    // An IP address (not a name: the source must be one of this host's own
    // addresses, which the start-up checks by binding to it).
    void read_source(const yaml_lite::Entry& entry, std::string& out, int& line) {
        const std::string& t = entry.value.scalar;
        unsigned char ip[16];
        if (entry.value.kind == yaml_lite::Kind::Scalar &&
            (inet_pton(AF_INET, t.c_str(), ip) == 1 || inet_pton(AF_INET6, t.c_str(), ip) == 1)) {
            out = t;
            line = entry.value.line;
            return;
        }
        error(entry.value.line, "source: \"" + t + "\" must be an IPv4 or IPv6 address of this host, like 127.0.0.2");
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
        health.line = node.line;
        for (const yaml_lite::Entry& entry : node.entries) {
            if (entry.key == "interval") read_duration(entry, false, health.interval);
            else if (entry.key == "timeout") read_duration(entry, false, health.timeout);
            else if (entry.key == "rise") read_int(entry, 1, 1000, health.rise);
            else if (entry.key == "fall") read_int(entry, 1, 1000, health.fall);
            else if (entry.key == "send") read_text(entry, health.send);
            else if (entry.key == "expect") read_text(entry, health.expect);
            else if (entry.key == "tls") {
                read_bool(entry, health.tls);
                health.tls_line = entry.line;
            }
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

    // A string value; send/expect take YAML's double-quoted escapes
    // ("\r\n"), and there \xNN is the byte NN (binary payloads: a DNS query).
    void read_text(const yaml_lite::Entry& entry, std::string& out) {
        if (entry.value.kind != yaml_lite::Kind::Scalar || entry.value.bytes().size() > 4096) {
            error(entry.value.line, entry.key + ": must be a string of at most 4096 bytes");
            return;
        }
        out = entry.value.bytes();
    }

    // Two rules on one address would fail at bind time with a vaguer
    // message. Port ranges overlap when they share a port; a wildcard host
    // overlaps every address; TCP and UDP on one port do not clash (DNS uses both).
    void check_duplicate_listeners() {
        for (size_t i = 0; i < listeners_.size(); ++i) {
            const Claim& later = listeners_[i];
            if (later.where.port == 0) continue;  // each port 0 binds its own ephemeral port
            for (size_t j = 0; j < i; ++j) {
                const Claim& earlier = listeners_[j];
                if (earlier.protocol != later.protocol || earlier.where.port == 0) continue;
                if (later.where.port > earlier.last || earlier.where.port > later.last) continue;
                if (same_listener(earlier.where, later.where)) {
                    error(later.line, "from: \"" + later.text + "\" is already used by rule \"" + earlier.rule +
                                          "\" at line " + std::to_string(earlier.line));
                    break;
                }
                if (wildcard(earlier.where.host) || wildcard(later.where.host)) {
                    error(later.line, "from: \"" + later.text + "\" overlaps rule \"" + earlier.rule + "\" (from: \"" +
                                          earlier.text + "\" at line " + std::to_string(earlier.line) + ")");
                    break;
                }
                if (earlier.last != earlier.where.port || later.last != later.where.port) {
                    if (lowercase(earlier.where.host) == lowercase(later.where.host))
                        error(later.line, "from: \"" + later.text + "\" overlaps rule \"" + earlier.rule +
                                              "\" (from: \"" + earlier.text + "\" at line " +
                                              std::to_string(earlier.line) + ")");
                }
            }
        }
    }

    static bool wildcard(const std::string& host) { return host.empty() || host == "0.0.0.0" || host == "::"; }

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
    std::vector<SetKey> defaults_keys_;
    const yaml_lite::Node* defaults_node_ = nullptr;  // in the tree being built
    struct Claim {
        net::HostPort where;
        uint16_t last;
        Protocol protocol;
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
