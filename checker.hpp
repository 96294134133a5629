// checker.hpp - the checker process: health probes, DNS re-resolution, the metrics endpoint, the control socket.
// Owns everything that may block or wait on the network off the relay path; it never accepts or relays clients.
//
// Why long: one poll loop serves four jobs (probes over TCP, TLS and UDP, lookups, metrics, control) whose
// deadlines it must merge; the probe conversation and its reasons are the bulk, and they read best in one place.
//
// Probes are nonblocking TCP connects to every address of an upstream (up if
// any answers); with `send`/`expect` or `tls` the connection must then also
// answer as told. A UDP rule's probe is a connected datagram socket: `send`
// goes out as one datagram and a reply datagram must start with `expect`
// (any reply when it is empty); an ICMP port unreachable fails it at once. `fall` failures in a row mark it down, `rise` successes
// bring it back, and only changes are logged, with the last failure's reason. Names are looked up again every
// resolve_interval and soon after a worker saw a connect fail; a failed
// lookup keeps the last good addresses. getaddrinfo() may block, which is why
// this runs in its own process and not in a worker or the parent.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <poll.h>

#include "config.hpp"
#include "control.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "net.hpp"
#include "tls_hello.hpp"
#include "upstreams.hpp"

namespace checker {

using Clock = std::chrono::steady_clock;

// Whether a config needs a checker at all.
inline bool is_name(const std::string& host) {
    unsigned char buf[sizeof(in6_addr)];
    return inet_pton(AF_INET, host.c_str(), buf) != 1 && inet_pton(AF_INET6, host.c_str(), buf) != 1;
}

inline bool needed(const config::Config& cfg) {
    if (!cfg.control.empty()) return true;
    for (const config::Rule* pool : config::pools(cfg)) {
        const config::Rule& rule = *pool;
        if (rule.policy.health.enabled) return true;
        for (const config::Upstream& up : rule.to)
            if (is_name(up.where.host)) return true;
    }
    return false;
}

// Up to 40 bytes of a reply, printable, for a log line.
inline std::string quote(const std::string& text) {
    std::string out = "\"";
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < text.size() && i < 40; ++i) {
        unsigned char c = static_cast<unsigned char>(text[i]);
        if (c == '\r') out += "\\r";
        else if (c == '\n') out += "\\n";
        else if (c == '"' || c == '\\') out += std::string("\\") + static_cast<char>(c);
        else if (c < 0x20 || c >= 0x7f) out += std::string("\\x") + hex[c >> 4] + hex[c & 15];
        else out += static_cast<char>(c);
    }
    return out + (text.size() > 40 ? "...\"" : "\"");
}

// send/expect: the reply must start with `expect`. Decided as soon as the
// bytes seen differ or are enough; a close before that fails.
inline tls_hello::Verdict judge_expect(const std::string& expect, const std::string& got, bool closed,
                                       std::string& why) {
    size_t n = std::min(expect.size(), got.size());
    if (got.compare(0, n, expect, 0, n) != 0 || (closed && got.size() < expect.size())) {
        why = "expected " + quote(expect) + ", got " + quote(got) + (closed ? " and the server closed" : "");
        return tls_hello::Verdict::fail;
    }
    return got.size() >= expect.size() ? tls_hello::Verdict::ok : tls_hello::Verdict::more;
}

class Checker {
public:
    // metrics_fd: a bound listener for GET /metrics, or -1.
    // control_fd: a listening control socket, or -1.
    // sources: per pool (config::pools order), per upstream, the address its
    // sockets bind to (length 0: none); probes leave from there too.
    Checker(const upstreams::Shared& shared, const mixlog::Logger& log, int parent_fd, int metrics_fd,
            int control_fd = -1, const std::vector<std::vector<net::SockAddr>>* sources = nullptr)
        : shared_(shared), log_(log), parent_fd_(parent_fd), metrics_(metrics_fd, shared),
          control_(control_fd, shared, log), sources_(sources) {
        Clock::time_point now = Clock::now();
        for (size_t r = 0; r < shared.pools(); ++r) {
            const config::Rule& rule = *shared.pool(r).rule;
            for (size_t u = 0; u < rule.to.size(); ++u) {
                Watch w;
                w.rule = r;
                w.upstream = u;
                w.probes = rule.policy.health.enabled;
                w.name = is_name(rule.to[u].where.host);
                w.next_probe = now;  // first probe at once: a dead upstream is known early
                w.next_resolve = now + rule.policy.resolve_interval;
                if (w.probes || w.name) watches_.push_back(std::move(w));
            }
        }
    }

    int run() {
        std::vector<pollfd> fds;
        std::vector<std::pair<size_t, size_t>> owners;  // (watch, attempt) of each probe's pollfd
        std::vector<short> clients_ready;
        for (;;) {
            Clock::time_point now = Clock::now();
            for (Watch& w : watches_) {
                if (w.probes && w.attempts.empty() && now >= w.next_probe) start_probe(w, now);
                if (w.name && resolve_due(w, now)) resolve(w, now);
            }
            // Layout: [parent pipe, metrics listener, control listener, probes...,
            //          metrics clients..., control clients...]
            fds.assign({pollfd{parent_fd_, POLLIN, 0}, pollfd{metrics_.listener(), POLLIN, 0},
                        pollfd{control_.listener(), POLLIN, 0}});
            owners.clear();
            for (size_t i = 0; i < watches_.size(); ++i)
                for (size_t k = 0; k < watches_[i].attempts.size(); ++k) {
                    const Attempt& a = watches_[i].attempts[k];
                    if (!a.fd) continue;
                    fds.push_back(pollfd{a.fd.get(), static_cast<short>(a.phase == Phase::reading ? POLLIN : POLLOUT), 0});
                    owners.emplace_back(i, k);
                }
            const size_t first_client = fds.size();
            metrics_.want(fds);
            const size_t first_control = fds.size();
            control_.want(fds);
            int ready = ::poll(fds.data(), fds.size(), timeout_ms(now));
            if (ready < 0 && errno != EINTR) return 1;
            if (fds[0].revents) return 0;  // the parent is gone
            now = Clock::now();
            int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
            for (size_t i = first_client; i-- > 3;)
                if (fds[i].revents) on_socket(watches_[owners[i - 3].first], owners[i - 3].second, now);
            for (Watch& w : watches_)
                if (!w.attempts.empty() && now >= w.probe_deadline) probe_done(w, false, timeout_reason(w), now);
            clients_ready.clear();
            for (size_t i = first_client; i < first_control; ++i) clients_ready.push_back(fds[i].revents);
            metrics_.serve(clients_ready, now_ms);
            if (fds[1].revents) metrics_.accept_all(now_ms);
            clients_ready.clear();
            for (size_t i = first_control; i < fds.size(); ++i) clients_ready.push_back(fds[i].revents);
            control_.serve(clients_ready, now_ms);
            if (fds[2].revents) control_.accept_all();
        }
    }

private:
    enum class Phase { connecting, sending, reading };

    // One probe of one address: connect, then (when the check says so)
    // send and read the answer.
    struct Attempt {
        net::Fd fd;
        Phase phase = Phase::connecting;
        std::string out, got;
        size_t sent = 0;
        bool udp = false;  // a datagram sent, one datagram back decides
    };

    struct Watch {
        size_t rule = 0, upstream = 0;
        bool probes = false, name = false;
        Clock::time_point next_probe{}, probe_deadline{}, next_resolve{}, last_resolve{};
        std::vector<Attempt> attempts;  // probes in flight, one per address
        std::string probe_error;
        std::string logged_reason;  // of the last DOWN line, so a new reason is logged once
        int ok_streak = 0, fail_streak = 0;
        bool lookup_failing = false;
    };

    const config::Rule& rule_of(const Watch& w) const { return *shared_.pool(w.rule).rule; }
    upstreams::UpstreamState& state_of(const Watch& w) const { return shared_.pool(w.rule).at(w.upstream); }
    const std::string& text_of(const Watch& w) const { return rule_of(w).to[w.upstream].text; }
    bool udp(const Watch& w) const { return rule_of(w).policy.protocol == config::Protocol::udp; }
    const net::SockAddr* source_of(const Watch& w) const {
        if (!sources_ || w.rule >= sources_->size() || w.upstream >= (*sources_)[w.rule].size()) return nullptr;
        const net::SockAddr& s = (*sources_)[w.rule][w.upstream];
        return s.length ? &s : nullptr;
    }

    int timeout_ms(Clock::time_point now) const {
        Clock::time_point wake = now + std::chrono::seconds(1);  // also the pace of resolve_wanted checks
        for (const Watch& w : watches_) {
            if (w.probes) wake = std::min(wake, w.attempts.empty() ? w.next_probe : w.probe_deadline);
            if (w.name) wake = std::min(wake, w.next_resolve);
        }
        wake = metrics_.next_deadline(wake);
        wake = control_.next_deadline(wake);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count() + 1;
        return static_cast<int>(std::max<int64_t>(0, ms));
    }

    void start_probe(Watch& w, Clock::time_point now) {
        const config::HealthCheck& hc = rule_of(w).policy.health;
        w.next_probe = now + hc.interval;
        w.probe_deadline = now + hc.timeout;
        w.probe_error = "no address";
        for (const net::SockAddr& addr : upstreams::addresses_of(state_of(w))) {
            Attempt a;
            int rc = udp(w) ? send_datagram(addr, source_of(w), hc.send, a) : net::dial_start(addr, a.fd, source_of(w));
            if (rc == 0 || rc == EINPROGRESS) w.attempts.push_back(std::move(a));  // POLLOUT tells either way
            else w.probe_error = udp(w) ? udp_reason(rc, "send") : net::errno_text(rc);
        }
        if (w.attempts.empty()) probe_done(w, false, w.probe_error, now);
    }

    // A UDP probe: a connected socket (so only the upstream's answer, or its
    // ICMP error, reaches it) and the check's datagram, sent at once.
    static int send_datagram(const net::SockAddr& to, const net::SockAddr* source, const std::string& payload,
                             Attempt& a) {
        a.fd.reset(::socket(to.family(), SOCK_DGRAM, 0));
        if (!a.fd || !net::set_nonblock_cloexec(a.fd.get())) return errno;
        if (source) {
            if (int err = net::bind_source(a.fd.get(), *source)) return err;
        }
        if (::connect(a.fd.get(), to.get(), to.length) < 0) return errno;
        ssize_t n;
        do n = ::send(a.fd.get(), payload.data(), payload.size(), 0);
        while (n < 0 && errno == EINTR);
        if (n < 0) return errno;
        a.udp = true;
        a.phase = Phase::reading;
        return 0;
    }

    static std::string udp_reason(int err, const char* call) {
        if (err == ECONNREFUSED) return "port unreachable";  // ICMP: nothing listens on that port
        return std::string(call) + ": " + net::errno_text(err);
    }

    // One reply datagram decides: it is the whole answer.
    static tls_hello::Verdict step_udp(const config::HealthCheck& hc, Attempt& a, std::string& why) {
        char buf[4096];
        ssize_t n = ::recv(a.fd.get(), buf, sizeof buf, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return tls_hello::Verdict::more;
        if (n < 0) {
            why = udp_reason(errno, "read");
            return tls_hello::Verdict::fail;
        }
        a.got.assign(buf, static_cast<size_t>(n));
        if (a.got.compare(0, hc.expect.size(), hc.expect) == 0) return tls_hello::Verdict::ok;
        why = "expected " + quote(hc.expect) + ", got " + quote(a.got);
        return tls_hello::Verdict::fail;
    }

    // The socket of attempt `index` is ready: one step of its conversation.
    void on_socket(Watch& w, size_t index, Clock::time_point now) {
        if (index >= w.attempts.size() || !w.attempts[index].fd) return;
        const config::HealthCheck& hc = rule_of(w).policy.health;
        Attempt& a = w.attempts[index];
        std::string why;
        tls_hello::Verdict verdict = a.udp ? step_udp(hc, a, why) : step(hc, a, why);
        if (verdict == tls_hello::Verdict::more) return;
        if (verdict == tls_hello::Verdict::ok) {
            probe_done(w, true, "", now);
            return;
        }
        w.probe_error = why;
        a.fd.reset();
        for (const Attempt& other : w.attempts)
            if (other.fd) return;  // another address may still answer
        probe_done(w, false, w.probe_error, now);
    }

    tls_hello::Verdict step(const config::HealthCheck& hc, Attempt& a, std::string& why) {
        const bool talks = hc.tls || !hc.send.empty() || !hc.expect.empty();
        if (a.phase == Phase::connecting) {
            if (int err = net::pending_error(a.fd.get())) {
                why = net::errno_text(err);
                return tls_hello::Verdict::fail;
            }
            if (!talks) return tls_hello::Verdict::ok;
            a.out = hc.tls ? tls_hello::client_hello(hc.sni, next_random()) : hc.send;
            a.phase = Phase::sending;
        }
        if (a.phase == Phase::sending) {
            while (a.sent < a.out.size()) {
                ssize_t n = ::send(a.fd.get(), a.out.data() + a.sent, a.out.size() - a.sent, no_sigpipe);
                if (n < 0 && errno == EINTR) continue;
                if (n < 0 && errno == EAGAIN) return tls_hello::Verdict::more;
                if (n < 0) {
                    why = "send: " + net::errno_text(errno);
                    return tls_hello::Verdict::fail;
                }
                a.sent += static_cast<size_t>(n);
            }
            if (!hc.tls && hc.expect.empty()) return tls_hello::Verdict::ok;
            a.phase = Phase::reading;
            return tls_hello::Verdict::more;  // poll for the answer
        }
        char buf[512];
        ssize_t n = ::recv(a.fd.get(), buf, sizeof buf, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return tls_hello::Verdict::more;
        if (n < 0) {
            why = "read: " + net::errno_text(errno) + " after " + std::to_string(a.got.size()) + " bytes";
            return tls_hello::Verdict::fail;
        }
        if (a.got.size() < 4096) a.got.append(buf, static_cast<size_t>(n));
        return hc.tls ? tls_hello::judge_reply(a.got, n == 0, why) : judge_expect(hc.expect, a.got, n == 0, why);
    }

    // Why a probe that ran out of time failed: how far its best attempt got.
    std::string timeout_reason(const Watch& w) const {
        const config::HealthCheck& hc = rule_of(w).policy.health;
        const Attempt* best = nullptr;
        for (const Attempt& a : w.attempts)
            if (a.fd && (!best || a.phase > best->phase)) best = &a;
        std::string limit = flags::format_duration(hc.timeout);
        if (udp(w)) return "timeout: no reply within " + limit;
        if (!best || best->phase == Phase::connecting) return "timeout: no connection within " + limit;
        if (best->phase == Phase::sending) return "timeout: could not send the check within " + limit;
        if (hc.tls) return "timeout: no TLS handshake record within " + limit;
        return "timeout: expected " + quote(hc.expect) + " within " + limit + ", got " + quote(best->got);
    }

#ifdef MSG_NOSIGNAL
    static constexpr int no_sigpipe = MSG_NOSIGNAL;
#else
    static constexpr int no_sigpipe = 0;  // SIGPIPE is ignored by the whole daemon anyway
#endif

    uint64_t next_random() {
        random_ = upstreams::mix64(random_ + 0x9e3779b97f4a7c15ULL +
                                   static_cast<uint64_t>(Clock::now().time_since_epoch().count()));
        return random_;
    }

    void probe_done(Watch& w, bool ok, const std::string& why, Clock::time_point now) {
        w.attempts.clear();  // closes whatever is still connecting: a late answer is never used
        const config::HealthCheck& hc = rule_of(w).policy.health;
        upstreams::UpstreamState& state = state_of(w);
        uint32_t was = state.probe.load(std::memory_order_relaxed);
        if (ok) {
            ++w.ok_streak;
            w.fail_streak = 0;
            if (was == upstreams::probe_up || (was == upstreams::probe_down && w.ok_streak < hc.rise)) return;
            state.down_until_ms.store(0);  // reachable again: forget passive marks
            state.probe.store(upstreams::probe_up, std::memory_order_relaxed);
            if (was == upstreams::probe_down)
                log_.print("upstream %s of (%s) is UP (%d checks)", text_of(w).c_str(), rule_of(w).name.c_str(),
                           w.ok_streak);
            return;
        }
        ++w.fail_streak;
        w.ok_streak = 0;
        if (was == upstreams::probe_down) {
            // Already down, but for another reason now (refused, then a TLS
            // alert): worth one line, as the operator's fix depends on it.
            if (why != w.logged_reason)
                log_.print("upstream %s of (%s) still DOWN: %s", text_of(w).c_str(), rule_of(w).name.c_str(),
                           why.c_str());
            w.logged_reason = why;
            return;
        }
        if (was == upstreams::probe_up && w.fail_streak < hc.fall) return;
        state.probe.store(upstreams::probe_down, std::memory_order_relaxed);
        w.logged_reason = why;
        log_.print("upstream %s of (%s) is DOWN: %s (%d checks)", text_of(w).c_str(), rule_of(w).name.c_str(),
                   why.c_str(), w.fail_streak);
        (void)now;
    }

    bool resolve_due(Watch& w, Clock::time_point now) {
        if (now >= w.next_resolve) return true;
        // A worker saw a connect fail: look again, at most once a second.
        return state_of(w).resolve_wanted.load(std::memory_order_relaxed) &&
               now - w.last_resolve >= std::chrono::seconds(1);
    }

    void resolve(Watch& w, Clock::time_point now) {
        upstreams::UpstreamState& state = state_of(w);
        state.resolve_wanted.store(0, std::memory_order_relaxed);
        w.last_resolve = now;
        w.next_resolve = now + rule_of(w).policy.resolve_interval;
        std::vector<net::SockAddr> found;
        std::string why;
        std::vector<net::SockAddr> known = upstreams::addresses_of(state);
        if (!net::resolve(rule_of(w).to[w.upstream].where, false, found, why)) {
            if (!w.lookup_failing)
                log_.print("error: %s of (%s): %s; keeping %s", text_of(w).c_str(), rule_of(w).name.c_str(),
                           why.c_str(), join(known).c_str());
            w.lookup_failing = true;
            return;
        }
        w.lookup_failing = false;
        if (found.size() > upstreams::max_addresses) found.resize(upstreams::max_addresses);
        if (same(found, known)) return;
        upstreams::Shared::set_addresses(state, found);
        log_.print("upstream %s of (%s) now resolves to %s", text_of(w).c_str(), rule_of(w).name.c_str(),
                   join(found).c_str());
    }

    static bool same(const std::vector<net::SockAddr>& a, const std::vector<net::SockAddr>& b) {
        if (a.size() != b.size()) return false;
        for (size_t i = 0; i < a.size(); ++i)
            if (a[i].text() != b[i].text()) return false;
        return true;
    }

    static std::string join(const std::vector<net::SockAddr>& list) {
        std::string out;
        for (const net::SockAddr& a : list) out += (out.empty() ? "" : " ") + a.text();
        return out.empty() ? "(none)" : out;
    }

    const upstreams::Shared& shared_;
    const mixlog::Logger& log_;
    int parent_fd_;
    metrics::Server metrics_;
    control::Server control_;
    const std::vector<std::vector<net::SockAddr>>* sources_;
    std::vector<Watch> watches_;
    uint64_t random_ = 0x2545f4914f6cdd1dULL;
};

}  // namespace checker
