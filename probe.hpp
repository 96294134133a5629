// probe.hpp - `mixctl -probe RULE`: one request through a running mixctl's
// listener, judged by the reply, for keepalived's vrrp_script. Owns finding
// the listener in the rules file and the one exchange; it never signals or
// inspects the daemon's processes and never dials an upstream itself.
//
// Why a reply and not a connect: the kernel completes a TCP handshake into a
// listener's backlog whether or not any worker is running, so a connect to a
// SIGSTOPped (wedged) mixctl succeeds. mixctl itself never writes a byte to a
// client; a byte coming back can only have come from an upstream, through a
// worker that accepted, dialed and relayed. A close without a byte is a
// failure too: it is what a worker does when no upstream is reachable.
//
// What is sent: a HEAD request line, which HTTP servers answer, which Go TLS
// servers (K3s, RKE2, the Kubernetes API) answer with "HTTP/1.0 400 Bad
// Request", and which servers that speak first (SSH, SMTP) answer with their
// banner anyway. The whole probe, name lookup included, ends by the deadline.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <poll.h>
#include <sys/socket.h>

#include "config.hpp"
#include "flags.hpp"
#include "net.hpp"

namespace probe {

using Clock = std::chrono::steady_clock;

struct Exchange {
    std::string send = "HEAD / HTTP/1.0\r\n\r\n";
    std::string expect;  // the reply must start with this; empty: any byte will do
};

struct Target {
    std::string label;  // "(rule) 127.0.0.1:6443", or the address alone
    net::HostPort where;
    Exchange exchange;
};

struct Outcome {
    bool ok = false;
    std::string line;  // one line, no newline
};

inline bool is_wildcard(const std::string& host) { return host.empty() || host == "0.0.0.0" || host == "::"; }

// A wildcard listener is probed on the loopback address of its family.
inline net::HostPort dial_address(const net::HostPort& from) {
    net::HostPort to = from;
    if (from.host == "::") to.host = "::1";
    else if (is_wildcard(from.host)) to.host = "127.0.0.1";
    return to;
}

inline bool serves(const config::Rule& rule, const net::HostPort& asked) {
    return rule.from.port == asked.port && (rule.from.host == asked.host || is_wildcard(rule.from.host));
}

// RULE is a rule name, or an address: a rule's `from`, or any listener (the
// rules file is then optional).
inline bool find_target(const std::string& what, const std::string& file, Target& out, std::string& why) {
    config::Config cfg;
    config::Diagnostics diag;
    bool loaded = config::load_file(file, cfg, diag);
    net::HostPort asked;
    std::string not_address;
    bool is_address = net::parse_host_port(what, false, asked, not_address);
    const config::Rule* found = nullptr;
    for (const config::Rule& rule : cfg.rules)
        if (!found && rule.name == what) found = &rule;
    for (const config::Rule& rule : cfg.rules)
        if (!found && is_address && serves(rule, asked)) found = &rule;
    if (found) {
        if (found->from.port == 0) {
            why = "rule (" + found->name + ") listens on port 0 (chosen at start): probe the address it bound";
            return false;
        }
        out.label = "(" + found->name + ") ";
        out.where = is_address && !is_wildcard(asked.host) ? asked : dial_address(found->from);
        out.label += out.where.text();
        return true;
    }
    if (is_address) {
        out.where = dial_address(asked);
        out.label = out.where.text();
        return true;
    }
    if (!loaded) {
        why = diag.errors.empty() ? "cannot read " + file : diag.errors.front();
        return false;
    }
    std::string names;
    for (const config::Rule& rule : cfg.rules) names += (names.empty() ? "" : ", ") + rule.name;
    why = "no rule named \"" + what + "\" in " + file + " (rules: " + names + ")";
    return false;
}

namespace detail {

inline long ms_left(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left < 0 ? 0 : left;
}

// Waits for `events` on fd until the deadline (EINTR restarts the wait).
inline short wait_for(int fd, short events, Clock::time_point deadline) {
    for (;;) {
        pollfd p{fd, events, 0};
        int rc = ::poll(&p, 1, static_cast<int>(ms_left(deadline)));
        if (rc > 0) return p.revents;
        if (rc == 0 || errno != EINTR) return 0;
    }
}

// The first line of a reply, printable ASCII only, at most 60 characters.
inline std::string first_line(const std::string& reply) {
    std::string out;
    for (char c : reply) {
        if (c == '\r' || c == '\n' || out.size() >= 60) break;
        out += (c >= 0x20 && c < 0x7f) ? c : '.';
    }
    return "\"" + out + "\"";
}

inline std::string millis(Clock::time_point since) {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count()) + "ms";
}

// Connects to one address; returns 0 or the errno (ETIMEDOUT at the deadline).
inline int connect_by(const net::SockAddr& addr, Clock::time_point deadline, net::Fd& fd) {
    int rc = net::dial_start(addr, fd);
    if (rc != EINPROGRESS) return rc;
    short ready = wait_for(fd.get(), POLLOUT, deadline);
    if (!ready) return ETIMEDOUT;
    return net::pending_error(fd.get());
}

}  // namespace detail

inline Outcome run(const Target& target, flags::Duration limit) {
    const Clock::time_point start = Clock::now();
    const Clock::time_point deadline = start + std::chrono::duration_cast<Clock::duration>(limit);
    const std::string budget = flags::format_duration(limit);
    auto fail = [&](const std::string& why) { return Outcome{false, target.label + ": " + why}; };

    std::vector<net::SockAddr> addresses;
    std::string why;
    if (!net::resolve(target.where, false, addresses, why)) return fail(why);
    net::Fd fd;
    int err = ETIMEDOUT;
    std::string tried = addresses.front().text();
    for (const net::SockAddr& addr : addresses) {
        if (detail::ms_left(deadline) == 0) break;
        tried = addr.text();
        err = detail::connect_by(addr, deadline, fd);
        if (err == 0) break;
        fd.reset();
    }
    if (err == ECONNREFUSED) return fail("connect " + tried + ": connection refused (no listener: is mixctl running?)");
    if (err == ETIMEDOUT)
        return fail("connect " + tried + ": no answer within " + budget + " (a listener that drops SYNs, or a full backlog)");
    if (err != 0) return fail("connect " + tried + ": " + net::errno_text(err));

    const Exchange& ex = target.exchange;
    size_t sent = 0;
    while (sent < ex.send.size()) {
        ssize_t n = ::send(fd.get(), ex.send.data() + sent, ex.send.size() - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return fail("send: " + net::errno_text(errno));
        if (!detail::wait_for(fd.get(), POLLOUT, deadline))
            return fail("could not send the request within " + budget + ": mixctl is stopped or wedged");
    }

    std::string reply;
    for (;;) {
        if (!detail::wait_for(fd.get(), POLLIN, deadline)) {
            if (reply.empty())
                return fail("no reply within " + budget +
                            ": mixctl is stopped or wedged, or no upstream answers (connected, request sent)");
            return fail("expected " + detail::first_line(ex.expect) + ", got " + detail::first_line(reply) +
                        " and then nothing within " + budget);
        }
        char buf[512];
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (n < 0) {
            int e = errno;
            return fail(reply.empty() ? "reset without a reply (" + net::errno_text(e) + "): no upstream answered"
                                      : "reset after " + detail::first_line(reply) + ": " + net::errno_text(e));
        }
        if (n == 0) {
            if (reply.empty()) return fail("closed without a reply: no upstream reachable, or it hung up at once");
            return fail("expected " + detail::first_line(ex.expect) + ", got " + detail::first_line(reply));
        }
        reply.append(buf, static_cast<size_t>(n));
        size_t need = ex.expect.size();
        if (reply.compare(0, std::min(need, reply.size()), ex.expect, 0, std::min(need, reply.size())) != 0)
            return fail("expected " + detail::first_line(ex.expect) + ", got " + detail::first_line(reply));
        if (reply.size() >= need)
            return Outcome{true, target.label + ": upstream replied in " + detail::millis(start) + ": " +
                                     detail::first_line(reply)};
    }
}

// `mixctl -probe RULE`: prints one line (stdout when it passes, stderr when
// not) and returns the exit status, 0 or 1.
inline int main(const std::string& what, const std::string& file, flags::Duration limit) {
    if (limit.count() <= 0) {
        fprintf(stderr, "probe failed: -probe needs a deadline: -t 0 means none\n");
        return 1;
    }
    Target target;
    std::string why;
    if (!find_target(what, file, target, why)) {
        fprintf(stderr, "probe failed: %s\n", why.c_str());
        return 1;
    }
    Outcome outcome = run(target, limit);
    fprintf(outcome.ok ? stdout : stderr, "probe %s: %s\n", outcome.ok ? "ok" : "failed", outcome.line.c_str());
    return outcome.ok ? 0 : 1;
}

}  // namespace probe
