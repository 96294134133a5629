// dialer.hpp - picking an upstream for a client, connecting to it nonblocking, failing over.
// Owns the dial plan of a connection and the upstreams' passive health; not the wait set, timers or relay.
//
// A connection's Dial lists the upstreams to try (upstreams::plan) and where
// it stands: which upstream, which of its addresses. Dialer::next starts the
// next connect and says how it went; a refused or timed-out connect comes
// back through Dialer::failed and the plan moves on, each attempt with its
// own deadline (design note: failover happens inside the dial phase).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "config.hpp"
#include "flags.hpp"
#include "log.hpp"
#include "net.hpp"
#include "upstreams.hpp"

namespace dialer {

using Clock = std::chrono::steady_clock;

inline int64_t to_ms(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// Where one connection's dial stands.
struct Dial {
    std::vector<uint16_t> order;  // upstreams to try, as indexes into the rule's `to`
    uint32_t step = 0, address = 0, attempts = 0;
    std::string last_error;         // of the upstream being tried
    bool only_local_errors = true;  // every failure of this upstream was ours (no ports left)
    net::SockAddr dialed;
    size_t target = 0;
    bool holds_place = false;  // counted in the target's active since its dial began (Dialer::release)
    uint16_t offset = 0;  // the client's port - the rule's first port: where a ranged upstream goes

    // Ready for the next connection, keeping order's capacity.
    void reset() {
        order.clear();
        step = address = attempts = 0;
        last_error.clear();
        only_local_errors = true;
        target = 0;
        holds_place = false;
        offset = 0;
    }
};

// Per pool (config::pools order: a rule's own, then its routes'), per upstream:
// the address upstream sockets bind to (length 0: none).
using Sources = std::vector<std::vector<net::SockAddr>>;

enum class Outcome {
    connected,   // the socket is connected already
    connecting,  // EINPROGRESS: wait for POLLOUT, under the dial deadline
    no_fds,      // our own descriptor shortage (errno in `error`): try the same dial again later
    gave_up,     // every upstream failed; logged
};

class Dialer {
public:
    // worker: this worker's row in the shared active counts.
    Dialer(const upstreams::Shared& shared, const mixlog::Logger& log, Clock::duration default_timeout, size_t worker,
           const Sources* sources = nullptr)
        : shared_(shared), log_(log), default_timeout_(default_timeout), worker_(worker), sources_(sources) {
        random_state_ = static_cast<uint64_t>(getpid()) * 0x9E3779B97F4A7C15ULL ^
                        static_cast<uint64_t>(Clock::now().time_since_epoch().count());
    }

    // `pool_index` names a pool in upstreams::Shared: a rule's own or one of
    // its SNI routes'. Fills d.order for a client of that pool.
    void plan(size_t pool_index, const net::SockAddr& peer, Clock::time_point now, Dial& d) {
        const upstreams::Pool& pool = shared_.pool(pool_index);
        auto random = [this] { return next_random(); };
        if (!upstreams::plan(pool, peer, to_ms(now), random, d.order)) warn_fail_open(pool);
    }

    // Tries the current (upstream, address) and on to the next ones until a
    // connect is under way or has succeeded; with none left, gives up.
    Outcome next(size_t pool_index, Dial& d, net::Fd& upstream, const net::SockAddr& client, Clock::time_point now,
                 int& error) {
        const upstreams::Pool& pool = shared_.pool(pool_index);
        while (d.step < d.order.size()) {
            d.target = d.order[d.step];
            if (!d.holds_place) {
                d.holds_place = shared_.take_place(worker_, pool.at(d.target), pool.rule->to[d.target].max_conns);
                if (!d.holds_place) {  // filled up since the plan: skipped, not failed
                    ++d.step;
                    continue;
                }
            }
            if (!upstreams::address_at(pool.at(d.target), d.address, d.dialed)) {
                upstream_failed(pool_index, d, now);
                release(pool_index, d);
                ++d.step;
                d.address = 0;
                continue;
            }
            ++d.address;
            ++d.attempts;
            if (pool.rule->to[d.target].ranged) d.dialed.set_port(static_cast<uint16_t>(d.dialed.port() + d.offset));
            int rc = net::dial_start(d.dialed, upstream, source_of(pool_index, d.target));
            if (rc == 0) return Outcome::connected;
            if (rc == EINPROGRESS) return Outcome::connecting;
            if (out_of_resources(rc)) {
                // Our own shortage, not the upstream's fault: no other upstream
                // would fare better and none is marked down for it. The client
                // keeps its place and the same dial is tried again.
                --d.address;
                --d.attempts;
                error = rc;
                return Outcome::no_fds;
            }
            log_error(pool_index, d, net::errno_text(rc), now);
            // No free local port is our shortage, not the upstream's fault.
            if (rc != EADDRNOTAVAIL) d.only_local_errors = false;
        }
        if (d.attempts == 0)
            log_.print("error: no upstream of (%s) free for %s: all disabled or at max_conns", pool.rule->name.c_str(),
                       client.text().c_str());
        else
            log_.print("error: no upstream of (%s) reachable for %s: %u attempts failed", pool.rule->name.c_str(),
                       client.text().c_str(), d.attempts);
        return Outcome::gave_up;
    }

    // The connect under way failed (refused, reset, timed out): the caller
    // closes the socket and calls next() again.
    void failed(size_t pool_index, Dial& d, const std::string& why, Clock::time_point now) {
        log_error(pool_index, d, why, now);
        d.only_local_errors = false;
    }

    // The connection is done with its target (closed, or given up): its
    // place in the target's active count (taken when the dial began) goes.
    void release(size_t pool_index, Dial& d) const {
        if (d.holds_place) shared_.add_active(worker_, shared_.pool(pool_index).at(d.target), -1);
        d.holds_place = false;
    }

    // The connect succeeded: the upstream is healthy.
    void succeeded(size_t pool_index, const Dial& d) { upstreams::record_success(shared_.pool(pool_index).at(d.target)); }

    // A rule's connect_timeout, or -t.
    Clock::duration timeout(size_t pool_index) const {
        const flags::Duration per_rule = shared_.pool(pool_index).rule->policy.connect_timeout;
        if (per_rule.count() > 0) return std::chrono::duration_cast<Clock::duration>(per_rule);
        return default_timeout_;
    }

    // A ranged upstream is shown as dialed ("127.0.0.1:30007"), not as written.
    std::string target_text(size_t pool_index, const Dial& d) const {
        const config::Upstream& up = shared_.pool(pool_index).rule->to[d.target];
        return up.ranged ? d.dialed.text() : up.text;
    }

    const net::SockAddr* source_of(size_t pool_index, size_t target) const {
        if (!sources_ || pool_index >= sources_->size() || target >= (*sources_)[pool_index].size()) return nullptr;
        const net::SockAddr& s = (*sources_)[pool_index][target];
        return s.length ? &s : nullptr;
    }

    static bool out_of_resources(int err) {
        return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
    }

private:
    void log_error(size_t pool_index, Dial& d, const std::string& why, Clock::time_point now) {
        d.last_error = why;
        std::string address = d.dialed.text();
        const std::string text = target_text(pool_index, d);
        std::string more;
        if (!throttle_.allow("dial " + text, now, more)) return;
        if (address == text)
            log_.print("error dialing %s: %s%s", text.c_str(), why.c_str(), more.c_str());
        else
            log_.print("error dialing %s (%s): %s%s", text.c_str(), address.c_str(), why.c_str(), more.c_str());
    }

    // Every address of one upstream failed: that counts against its health.
    void upstream_failed(size_t pool_index, Dial& d, Clock::time_point now) {
        bool ours = d.only_local_errors;
        d.only_local_errors = true;  // for the next upstream
        if (d.address == 0 || ours) return;  // nothing dialed, or only our own shortage
        const upstreams::Pool& pool = shared_.pool(pool_index);
        upstreams::UpstreamState& state = pool.at(d.target);
        const config::Policy& policy = pool.rule->policy;
        state.resolve_wanted.store(1, std::memory_order_relaxed);
        // A ranged upstream has one health state for all its ports: the
        // line names the entry as written and the port that failed.
        const config::Upstream& up = pool.rule->to[d.target];
        if (upstreams::record_failure(state, policy, to_ms(now)))
            log_.print("upstream %s of (%s) is DOWN: %s%s (passive: %d failed connects within %s)", up.text.c_str(),
                       pool.rule->name.c_str(), d.last_error.c_str(),
                       up.ranged ? (" at " + d.dialed.text()).c_str() : "", policy.max_fails,
                       flags::format_duration(policy.fail_timeout).c_str());
    }

    void warn_fail_open(const upstreams::Pool& pool) {
        Clock::time_point now = Clock::now();
        if (now < quiet_fail_open_until_) return;
        quiet_fail_open_until_ = now + std::chrono::seconds(1);
        log_.print("all upstreams of (%s) are down; trying them anyway", pool.rule->name.c_str());
    }

    uint64_t next_random() {
        random_state_ ^= random_state_ << 13;
        random_state_ ^= random_state_ >> 7;
        random_state_ ^= random_state_ << 17;
        return random_state_;
    }

    const upstreams::Shared& shared_;
    const mixlog::Logger& log_;
    Clock::duration default_timeout_;
    size_t worker_;
    const Sources* sources_;
    mixlog::Throttle throttle_;
    Clock::time_point quiet_fail_open_until_{};
    uint64_t random_state_;
};

}  // namespace dialer
