// checker.hpp - the checker process: active health probes, DNS
// re-resolution and the metrics endpoint, all off the relay path.
//
// Probes are nonblocking TCP connects to every address of an upstream (up if
// any answers); `fall` failures in a row mark it down, `rise` successes bring
// it back, and only changes are logged. Names are looked up again every
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
#include "log.hpp"
#include "metrics.hpp"
#include "net.hpp"
#include "upstreams.hpp"

namespace checker {

using Clock = std::chrono::steady_clock;

// Whether a config needs a checker at all.
inline bool is_name(const std::string& host) {
    unsigned char buf[sizeof(in6_addr)];
    return inet_pton(AF_INET, host.c_str(), buf) != 1 && inet_pton(AF_INET6, host.c_str(), buf) != 1;
}

inline bool needed(const config::Config& cfg) {
    for (const config::Rule* pool : config::pools(cfg)) {
        const config::Rule& rule = *pool;
        if (rule.policy.health.enabled) return true;
        for (const config::Upstream& up : rule.to)
            if (is_name(up.where.host)) return true;
    }
    return false;
}

class Checker {
public:
    // metrics_fd: a bound listener for GET /metrics, or -1.
    Checker(const upstreams::Shared& shared, const mixlog::Logger& log, int parent_fd, int metrics_fd)
        : shared_(shared), log_(log), parent_fd_(parent_fd), metrics_(metrics_fd, shared) {
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
        std::vector<std::pair<size_t, size_t>> owners;  // (watch, socket) of each probe's pollfd
        std::vector<short> clients_ready;
        for (;;) {
            Clock::time_point now = Clock::now();
            for (Watch& w : watches_) {
                if (w.probes && w.sockets.empty() && now >= w.next_probe) start_probe(w, now);
                if (w.name && resolve_due(w, now)) resolve(w, now);
            }
            // Layout: [parent pipe, metrics listener, probes..., metrics clients...]
            fds.assign({pollfd{parent_fd_, POLLIN, 0}, pollfd{metrics_.listener(), POLLIN, 0}});
            owners.clear();
            for (size_t i = 0; i < watches_.size(); ++i)
                for (size_t k = 0; k < watches_[i].sockets.size(); ++k) {
                    fds.push_back(pollfd{watches_[i].sockets[k].get(), POLLOUT, 0});
                    owners.emplace_back(i, k);
                }
            const size_t first_client = fds.size();
            metrics_.want(fds);
            int ready = ::poll(fds.data(), fds.size(), timeout_ms(now));
            if (ready < 0 && errno != EINTR) return 1;
            if (fds[0].revents) return 0;  // the parent is gone
            now = Clock::now();
            int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
            for (size_t i = first_client; i-- > 2;)
                if (fds[i].revents) on_socket(watches_[owners[i - 2].first], owners[i - 2].second, now);
            for (Watch& w : watches_)
                if (!w.sockets.empty() && now >= w.probe_deadline) probe_done(w, false, "i/o timeout", now);
            clients_ready.clear();
            for (size_t i = first_client; i < fds.size(); ++i) clients_ready.push_back(fds[i].revents);
            metrics_.serve(clients_ready, now_ms);
            if (fds[1].revents) metrics_.accept_all(now_ms);
        }
    }

private:
    struct Watch {
        size_t rule = 0, upstream = 0;
        bool probes = false, name = false;
        Clock::time_point next_probe{}, probe_deadline{}, next_resolve{}, last_resolve{};
        std::vector<net::Fd> sockets;  // connects in flight, one per address
        std::string probe_error;
        int ok_streak = 0, fail_streak = 0;
        bool lookup_failing = false;
    };

    const config::Rule& rule_of(const Watch& w) const { return *shared_.pool(w.rule).rule; }
    upstreams::UpstreamState& state_of(const Watch& w) const { return shared_.pool(w.rule).at(w.upstream); }
    const std::string& text_of(const Watch& w) const { return rule_of(w).to[w.upstream].text; }

    int timeout_ms(Clock::time_point now) const {
        Clock::time_point wake = now + std::chrono::seconds(1);  // also the pace of resolve_wanted checks
        for (const Watch& w : watches_) {
            if (w.probes) wake = std::min(wake, w.sockets.empty() ? w.next_probe : w.probe_deadline);
            if (w.name) wake = std::min(wake, w.next_resolve);
        }
        wake = metrics_.next_deadline(wake);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count() + 1;
        return static_cast<int>(std::max<int64_t>(0, ms));
    }

    void start_probe(Watch& w, Clock::time_point now) {
        const config::HealthCheck& hc = rule_of(w).policy.health;
        w.next_probe = now + hc.interval;
        w.probe_deadline = now + hc.timeout;
        w.probe_error = "no address";
        for (const net::SockAddr& addr : upstreams::addresses_of(state_of(w))) {
            net::Fd fd;
            int rc = net::dial_start(addr, fd);
            if (rc == 0) {
                w.sockets.clear();
                probe_done(w, true, "", now);
                return;
            }
            if (rc == EINPROGRESS) w.sockets.push_back(std::move(fd));
            else w.probe_error = net::errno_text(rc);
        }
        if (w.sockets.empty()) probe_done(w, false, w.probe_error, now);
    }

    void on_socket(Watch& w, size_t index, Clock::time_point now) {
        if (index >= w.sockets.size()) return;
        int err = net::pending_error(w.sockets[index].get());
        if (err == 0) {
            probe_done(w, true, "", now);
            return;
        }
        w.probe_error = net::errno_text(err);
        w.sockets[index].reset();
        for (const net::Fd& fd : w.sockets)
            if (fd) return;  // another address may still answer
        probe_done(w, false, w.probe_error, now);
    }

    void probe_done(Watch& w, bool ok, const std::string& why, Clock::time_point now) {
        w.sockets.clear();  // closes whatever is still connecting: a late answer is never used
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
        if (was == upstreams::probe_down || (was == upstreams::probe_up && w.fail_streak < hc.fall)) return;
        state.probe.store(upstreams::probe_down, std::memory_order_relaxed);
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
    std::vector<Watch> watches_;
};

}  // namespace checker
