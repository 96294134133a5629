// metrics.hpp - the Prometheus text format on GET /metrics, from the shared upstream counters.
// Owns the endpoint's HTTP exchange; only reads the counters, and never runs in a worker.
//
// Served by the checker process, so a scraper can not slow a relay loop down.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "request_server.hpp"
#include "upstreams.hpp"

namespace metrics {

// Label values escape backslash, double quote and newline (the text format).
inline std::string label(const std::string& value) {
    std::string out;
    for (char c : value) {
        if (c == '\\' || c == '"') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

inline std::string render(const upstreams::Shared& shared, int64_t now_ms) {
    struct Family {
        const char* name;
        const char* type;
        const char* help;
    };
    static const Family families[] = {
        {"mixctl_upstream_up", "gauge", "1 while the upstream is considered up, 0 while it is down."},
        {"mixctl_upstream_active_connections", "gauge", "Connections to the upstream now: being relayed or being dialed."},
        {"mixctl_upstream_connections_total", "counter", "Connections established to the upstream."},
        {"mixctl_upstream_connect_failures_total", "counter", "Connect attempts to the upstream that failed."},
        {"mixctl_upstream_bytes_in_total", "counter", "Bytes relayed from clients to the upstream."},
        {"mixctl_upstream_bytes_out_total", "counter", "Bytes relayed from the upstream to clients."},
        {"mixctl_upstream_resets_by_client_total", "counter",
         "Relayed connections the client aborted (reset or socket error), passed on to the upstream as a reset."},
        {"mixctl_upstream_resets_by_upstream_total", "counter",
         "Relayed connections the upstream aborted (reset or socket error), passed on to the client as a reset."},
        {"mixctl_upstream_weight", "gauge", "The upstream's weight now (the control socket may have changed it)."},
        {"mixctl_upstream_state", "gauge",
         "1 for the upstream's state now (up, down, disabled, draining), 0 for the others."},
        {"mixctl_upstream_datagrams_in_total", "counter", "UDP datagrams relayed from clients to the upstream."},
        {"mixctl_upstream_datagrams_out_total", "counter", "UDP datagrams relayed from the upstream to clients."},
    };
    static const char* const states[] = {"up", "down", "disabled", "draining"};
    std::string out;
    char value[32];
    for (size_t f = 0; f < sizeof families / sizeof families[0]; ++f) {
        out += std::string("# HELP ") + families[f].name + " " + families[f].help + "\n";
        out += std::string("# TYPE ") + families[f].name + " " + families[f].type + "\n";
        for (size_t r = 0; r < shared.pools(); ++r) {
            const upstreams::Pool& pool = shared.pool(r);
            // A route's upstreams carry its name too (a rule's own pool has no route label).
            std::string route = pool.rule->route.empty() ? "" : "\",route=\"" + label(pool.rule->route);
            for (size_t u = 0; u < pool.size(); ++u) {
                const upstreams::UpstreamState& s = pool.at(u);
                std::string labels = "{rule=\"" + label(pool.rule->name) + route + "\",upstream=\"" +
                                     label(pool.rule->to[u].text) + "\"";
                if (f == 9) {  // one series per state, so a query can sum or alert on any of them
                    std::string now = upstreams::state_name(s, now_ms);
                    for (const char* state : states)
                        out += std::string(families[f].name) + labels + ",state=\"" + state + "\"} " +
                               (now == state ? "1" : "0") + "\n";
                    continue;
                }
                unsigned long long v = 0;
                switch (f) {
                    case 0: v = upstreams::is_up(s, now_ms) ? 1 : 0; break;
                    case 1: v = s.active.load(); break;
                    case 2: v = s.total.load(); break;
                    case 3: v = s.failed.load(); break;
                    case 4: v = s.bytes_in.load(); break;
                    case 5: v = s.bytes_out.load(); break;
                    case 6: v = s.client_resets.load(); break;
                    case 7: v = s.upstream_resets.load(); break;
                    case 8: v = s.weight.load(); break;
                    case 10: v = s.datagrams_in.load(); break;
                    default: v = s.datagrams_out.load(); break;
                }
                snprintf(value, sizeof value, "%llu", v);
                out += std::string(families[f].name) + labels + "} " + value + "\n";
            }
        }
    }
    // Connections a rule's listener closed before dialing, by reason.
    out += "# HELP mixctl_rule_refused_total Connections closed before dialing, by reason.\n"
           "# TYPE mixctl_rule_refused_total counter\n";
    for (size_t r = 0; r < shared.rules(); ++r) {
        const upstreams::Pool& pool = shared.rule_pool(r);
        const std::pair<const char*, unsigned long long> reasons[] = {
            {"deny", pool.state->denied.load()},
            {"max_conns_per_client", pool.state->over_client_limit.load()},
            {"preread", pool.state->bad_preread.load()},
            {"no_route", pool.state->unrouted.load()},
        };
        for (const auto& reason : reasons) {
            snprintf(value, sizeof value, "%llu", reason.second);
            out += "mixctl_rule_refused_total{rule=\"" + label(pool.rule->name) + "\",reason=\"" + reason.first + "\"} " +
                   value + "\n";
        }
    }
    // Per UDP rule: what its bounded session table and full buffers cost.
    static const Family rule_families[] = {
        {"mixctl_rule_sessions_evicted_total", "counter", "UDP sessions ended to make room under max_sessions."},
        {"mixctl_rule_datagrams_dropped_total", "counter", "UDP datagrams not relayed (no socket, full buffer, too big)."},
        {"mixctl_rule_sessions_lost_total", "counter", "UDP sessions of a worker that died without ending them."},
    };
    for (size_t f = 0; f < sizeof rule_families / sizeof rule_families[0]; ++f) {
        bool any = false;
        for (size_t r = 0; r < shared.rules(); ++r) {
            const upstreams::Pool& pool = shared.rule_pool(r);
            if (pool.rule->policy.protocol != config::Protocol::udp) continue;
            if (!any) {
                out += std::string("# HELP ") + rule_families[f].name + " " + rule_families[f].help + "\n";
                out += std::string("# TYPE ") + rule_families[f].name + " " + rule_families[f].type + "\n";
                any = true;
            }
            unsigned long long v = f == 0 ? pool.state->evicted.load() : f == 1 ? pool.state->dropped.load()
                                                                               : pool.state->lost.load();
            snprintf(value, sizeof value, "%llu", v);
            out += std::string(rule_families[f].name) + "{rule=\"" + label(pool.rule->name) + "\"} " + value + "\n";
        }
    }
    return out;
}

// The answer to a whole request: the metrics for GET /metrics, else 404.
inline std::string http_reply(const std::string& request, const upstreams::Shared& shared, int64_t now_ms) {
    bool wanted = request.compare(0, 13, "GET /metrics ") == 0 || request.compare(0, 13, "GET /metrics?") == 0;
    std::string body = wanted ? render(shared, now_ms) : "not found: try GET /metrics\n";
    char head[160];
    snprintf(head, sizeof head,
             "HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n",
             wanted ? "200 OK" : "404 Not Found", body.size());
    return head + body;
}

// A tiny HTTP/1.0-style server: one request per connection, then close;
// a client gets `patience` to send its request (request_server.hpp).
class Server : public request_server::Server {
public:
    Server(int listener, const upstreams::Shared& shared)
        : request_server::Server(listener, {max_clients, patience, 2048}, judge(shared)) {}

    using request_server::Server::accept_all;
    void accept_all(int64_t) { accept_all(); }

private:
    static constexpr size_t max_clients = 32;
    static constexpr std::chrono::seconds patience{5};
    static constexpr size_t max_request = 8192;  // a longer one is dropped unanswered

    static request_server::Judge judge(const upstreams::Shared& shared) {
        return [&shared](std::string& request, bool, int64_t now_ms, std::string& reply) {
            if (request.size() > max_request) return request_server::Verdict::drop;
            if (request.find("\r\n\r\n") == std::string::npos && request.find("\n\n") == std::string::npos)
                return request_server::Verdict::more;
            reply = http_reply(request, shared, now_ms);
            return request_server::Verdict::answer;
        };
    }
};

}  // namespace metrics
