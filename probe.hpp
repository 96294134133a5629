// probe.hpp - `mixctl -probe RULE`: one request through a running mixctl's listener, judged by the reply.
// Owns finding the listener and the one exchange; never signals the daemon or dials an upstream itself.
//
// Why long: a TCP and a UDP exchange, each with the reasons it tells apart (stopped, not accepted,
// no upstream, wrong reply), which is the whole point of the probe for keepalived.
//
// For keepalived's vrrp_script: it catches a wedged mixctl, which pidof and killall -0 cannot.
//
// Why a reply and not a connect: the kernel completes a TCP handshake into a
// listener's backlog whether or not any worker is running, so a connect to a
// SIGSTOPped (wedged) mixctl succeeds. mixctl itself never writes a byte to a
// client; a byte coming back can only have come from an upstream, through a
// worker that accepted, dialed and relayed. A close without a byte is a
// failure too: it is what a worker does when no upstream is reachable. When
// no reply comes, /proc/net/tcp tells whether a worker accepted at all.
//
// What is sent: a HEAD request line, which HTTP servers answer, which Go TLS
// servers (K3s, RKE2, the Kubernetes API) answer with "HTTP/1.0 400 Bad
// Request", and which servers that speak first (SSH, SMTP) answer with their
// banner anyway. A rule whose health_check talks (send/expect, or tls) is
// probed with that exchange instead, so the probe asks what the checker asks.
// A UDP rule (named) is probed with its health_check's datagram, which it
// must have: a reply datagram can only come from an upstream through a
// worker, as with TCP; without a check there is nothing an upstream is sure to answer.
// The whole probe, name lookup included, ends by the deadline.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include "config.hpp"
#include "flags.hpp"
#include "net.hpp"
#include "tls_hello.hpp"

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
    bool udp = false;
};

struct Outcome {
    bool ok = false;
    std::string line;  // one line, no newline
};

// The rule's own health check, when it says more than "connect": a TLS
// ClientHello must be answered by a handshake record; send/expect as written.
inline Exchange exchange_for(const config::Rule& rule) {
    Exchange ex;
    const config::HealthCheck& check = rule.policy.health;
    if (!check.enabled) return ex;
    if (check.tls) {
        ex.send = tls_hello::client_hello(check.sni, static_cast<uint64_t>(Clock::now().time_since_epoch().count()));
        ex.expect = std::string("\x16\x03", 2);
    } else if (!check.send.empty() || !check.expect.empty()) {
        ex.send = check.send;
        ex.expect = check.expect;
    }
    return ex;
}

inline bool is_wildcard(const std::string& host) { return host.empty() || host == "0.0.0.0" || host == "::"; }

// A wildcard listener is probed on the loopback address of its family.
inline net::HostPort dial_address(const net::HostPort& from) {
    net::HostPort to = from;
    if (from.host == "::") to.host = "::1";
    else if (is_wildcard(from.host)) to.host = "127.0.0.1";
    return to;
}

// A TCP listener only (a UDP rule on the same port is not what a connect
// reaches); any port of a range.
inline bool serves(const config::Rule& rule, const net::HostPort& asked) {
    return rule.policy.protocol == config::Protocol::tcp && rule.from.port <= asked.port &&
           asked.port <= rule.from_last && (rule.from.host == asked.host || is_wildcard(rule.from.host));
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
        const config::HealthCheck& hc = found->policy.health;
        if (found->policy.protocol == config::Protocol::udp && (!hc.enabled || hc.send.empty())) {
            why = "rule (" + found->name + ") is protocol: udp without a health_check send: -probe needs the "
                  "datagram to send (and expect: to judge the reply)";
            return false;
        }
        out.udp = found->policy.protocol == config::Protocol::udp;
        if (found->from.port == 0) {
            why = "rule (" + found->name + ") listens on port 0 (chosen at start): probe the address it bound";
            return false;
        }
        out.label = "(" + found->name + ") ";
        out.where = is_address && !is_wildcard(asked.host) ? asked : dial_address(found->from);
        out.label += out.where.text();
        out.exchange = exchange_for(*found);
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

// One address as /proc/net/tcp{,6} prints it: each 32-bit word of the
// address in host byte order, %08X, then ":" and the port, %04X.
inline std::string proc_net_text(const unsigned char* ip, size_t size, uint16_t port) {
    std::string out;
    char word[16];
    for (size_t at = 0; at < size; at += 4) {
        uint32_t w;
        memcpy(&w, ip + at, 4);
        snprintf(word, sizeof word, "%08X", w);
        out += word;
    }
    snprintf(word, sizeof word, ":%04X", port);
    return out + word;
}

// An address in both tables' forms: [0] for /proc/net/tcp (IPv4 only), [1]
// for /proc/net/tcp6 (IPv6, or IPv4 mapped, as a dual-stack listener's
// connections show).
inline void proc_net_forms(const net::SockAddr& a, std::string forms[2]) {
    if (a.family() == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&a.storage);
        unsigned char mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(mapped + 12, &in->sin_addr, 4);
        forms[0] = proc_net_text(reinterpret_cast<const unsigned char*>(&in->sin_addr), 4, a.port());
        forms[1] = proc_net_text(mapped, 16, a.port());
    } else if (a.family() == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a.storage);
        forms[1] = proc_net_text(in6->sin6_addr.s6_addr, 16, a.port());
    }
}

// Reads a /proc table, giving up at the deadline: with tens of thousands
// of sockets on the machine, reading /proc/net/tcp takes the kernel a while.
inline bool read_by(const char* path, Clock::time_point deadline, std::string& text) {
    net::Fd fd(::open(path, O_RDONLY | O_CLOEXEC));
    if (!fd) return false;
    char chunk[16384];
    for (;;) {
        if (Clock::now() >= deadline) return false;
        ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return false;
        if (n == 0) return true;
        text.append(chunk, static_cast<size_t>(n));
    }
}

// Whether our connection is still in the listener's accept queue: Linux
// shows the server's end of it in /proc/net/tcp{,6} with inode 0 until a
// process accepts it. 1: waiting, 0: accepted, -1: cannot tell (no /proc,
// or no answer by the deadline).
inline int waiting_to_be_accepted(int fd, Clock::time_point deadline) {
    net::SockAddr ours, theirs;
    theirs.length = sizeof theirs.storage;
    if (!net::local_address(fd, ours) || getpeername(fd, theirs.get(), &theirs.length) != 0) return -1;
    std::string local[2], remote[2];  // the server end's: its local is our peer
    proc_net_forms(theirs, local);
    proc_net_forms(ours, remote);
    const char* tables[2] = {"/proc/net/tcp", "/proc/net/tcp6"};
    int answer = -1;
    for (int t = 0; t < 2; ++t) {
        if (local[t].empty() || remote[t].empty()) continue;
        std::string text;
        if (!read_by(tables[t], deadline, text)) {
            if (Clock::now() >= deadline) return -1;
            continue;
        }
        answer = 0;
        const std::string key = " " + local[t] + " " + remote[t] + " ";
        size_t at = text.find(key);
        if (at == std::string::npos) continue;
        // After the addresses: st tx:rx tr:when retrnsmt uid timeout inode.
        size_t end = text.find('\n', at);
        std::string rest = text.substr(at + key.size(), end == std::string::npos ? std::string::npos : end - at - key.size());
        std::vector<std::string> fields;  // no sscanf: it would add 35 KiB to a static binary
        for (size_t i = 0; i < rest.size();) {
            size_t j = rest.find(' ', i);
            if (j == std::string::npos) j = rest.size();
            if (j > i) fields.push_back(rest.substr(i, j - i));
            i = j + 1;
        }
        if (fields.size() >= 7) return fields[6] == "0" ? 1 : 0;
    }
    return answer;
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

// A UDP rule: one datagram through the listener, one reply datagram judged.
// No reply tells less than over TCP (a stopped mixctl and a silent upstream
// look alike); an ICMP port unreachable means nothing listens.
inline Outcome run_udp(const Target& target, flags::Duration limit) {
    const Clock::time_point start = Clock::now();
    const Clock::time_point deadline = start + std::chrono::duration_cast<Clock::duration>(limit);
    auto fail = [&](const std::string& why) { return Outcome{false, target.label + ": " + why}; };
    std::vector<net::SockAddr> addresses;
    std::string why;
    if (!net::resolve(target.where, false, addresses, why)) return fail(why);
    const net::SockAddr& to = addresses.front();
    net::Fd fd(::socket(to.family(), SOCK_DGRAM, 0));
    if (!fd || !net::set_nonblock_cloexec(fd.get())) return fail("socket: " + net::errno_text(errno));
    if (::connect(fd.get(), to.get(), to.length) < 0) return fail("connect " + to.text() + ": " + net::errno_text(errno));
    const Exchange& ex = target.exchange;
    if (::send(fd.get(), ex.send.data(), ex.send.size(), 0) < 0) return fail("send: " + net::errno_text(errno));
    for (;;) {
        if (!detail::wait_for(fd.get(), POLLIN, deadline))
            return fail("no reply within " + flags::format_duration(limit) +
                        ": mixctl is stopped or wedged, or no upstream answered");
        char buf[4096];
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (n < 0 && errno == ECONNREFUSED)
            return fail("port unreachable (no listener: is mixctl running?)");
        if (n < 0) return fail("read: " + net::errno_text(errno));
        std::string reply(buf, static_cast<size_t>(n));
        if (reply.compare(0, ex.expect.size(), ex.expect) != 0)
            return fail("expected " + detail::first_line(ex.expect) + ", got " + detail::first_line(reply));
        return Outcome{true, target.label + ": upstream replied in " + detail::millis(start) + ": " +
                                 detail::first_line(reply)};
    }
}

inline Outcome run(const Target& target, flags::Duration limit) {
    if (target.udp) return run_udp(target, limit);
    const Clock::time_point start = Clock::now();
    const Clock::time_point deadline = start + std::chrono::duration_cast<Clock::duration>(limit);
    const std::string budget = flags::format_duration(limit);
    // The last fifth of the deadline (at most 200 ms) is kept for telling a
    // stopped mixctl from a silent upstream when no reply comes.
    const Clock::duration reserve = std::min<Clock::duration>(
        std::chrono::duration_cast<Clock::duration>(limit) / 5, std::chrono::milliseconds(200));
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
        if (!detail::wait_for(fd.get(), POLLIN, deadline - reserve)) {
            if (reply.empty()) {
                int waiting = detail::waiting_to_be_accepted(fd.get(), deadline);
                if (waiting == 1)
                    return fail("no reply within " + budget +
                                ": not even accepted (connected into the backlog): mixctl is stopped or wedged");
                if (waiting == 0)
                    return fail("no reply within " + budget + ": accepted, but no upstream answered");
                return fail("no reply within " + budget + ": mixctl is stopped or wedged, or no upstream answered");
            }
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
