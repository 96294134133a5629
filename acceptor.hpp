// acceptor.hpp - taking clients off the shared listeners: when to listen, admission (allow/deny, per-client limits,
// trusted PROXY senders), fairness, shortages. Owns the listeners' wait-set place and accepts; not what comes after.
//
// A listener is watched while this worker may accept (balance.hpp), is not
// out of descriptors, and its rule is under max_conns; otherwise its clients
// wait in the kernel backlog.
//
// Fair across listeners: each turn starts at the listener after the one
// that accepted last, so when accepts are scarce (a worker at its
// descriptor limit gets one now and then) every rule gets its turn instead
// of the first one in the file taking them all.
//
// Out of descriptors (EMFILE...): a level-triggered listener would wake us
// a million times a second, so the listeners are taken out of the wait set.
// They come back as soon as a connection of this worker closes (it frees
// descriptors), or after pause_ms at the latest (a descriptor may also be
// freed by something we do not see, e.g. a pipe pool shrinking). While
// paused (or stopped) the worker is off the balance board's comparison, so
// the other workers take its share at once instead of waiting on it.
#pragma once

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "balance.hpp"
#include "config.hpp"
#include "log.hpp"
#include "net.hpp"
#include "poller.hpp"
#include "upstreams.hpp"

namespace acceptor {

using Clock = std::chrono::steady_clock;

struct Listener {
    net::Fd fd;
    size_t rule = 0;
    std::string address;  // as bound, e.g. "127.0.0.1:41000"
    uint16_t offset = 0;  // port - the rule's first port (port ranges)
    config::Protocol protocol = config::Protocol::tcp;
    int worker = -1;      // a UDP socket's worker (mixctl.cpp gives each its own); -1: shared by all
};

inline int64_t to_ms(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

class Acceptor {
public:
    static constexpr int pause_ms = 200;
    static constexpr int batch = 64;  // accepts per listener per turn

    Acceptor(const upstreams::Shared& shared, std::vector<Listener>& listeners, int worker, const mixlog::Logger& log,
             balance::Board& board, poller::Poller& poller)
        : shared_(shared), listeners_(listeners), worker_(worker), log_(log), board_(board), poller_(poller),
          ready_(listeners.size(), false) {}

    // Puts every listener in the wait set (not yet listening: see arm()).
    // 0 or the errno.
    int watch(uint64_t first_token) {
        for (size_t i = 0; i < listeners_.size(); ++i)
            if (int err = poller_.watch(listeners_[i].fd.get(), first_token + i, poller::silent)) return err;
        return 0;
    }

    bool listening() const { return listening_; }
    bool rules_full() const { return rules_full_; }
    bool paused() const { return paused_; }
    Clock::time_point resume_at() const { return resume_at_; }
    const Listener& listener(size_t index) const { return listeners_[index]; }
    size_t rule_of(size_t listener) const { return listeners_[listener].rule; }

    // Once per turn before waiting: decides which listeners to watch.
    void arm(Clock::time_point now) {
        if (stopped_) return;
        if (paused_ && now >= resume_at_) resume();
        listening_ = !paused_ && may_accept(now);
        rules_full_ = false;
        for (size_t i = 0; i < listeners_.size(); ++i) {
            bool full = rule_full(listeners_[i].rule);
            rules_full_ = rules_full_ || full;
            listen_on(i, listening_ && !full);
        }
    }

    void mark_ready(size_t index) { ready_[index] = true; }

    // Accepts from the listeners that were ready, starting after the one
    // that accepted last. start(fd, peer, listener) takes each admitted client.
    template <class Start>
    void accept_ready(Start&& start, Clock::time_point now) {
        const size_t n = listeners_.size();
        for (size_t k = 0; k < n && !stopped_; ++k) {
            size_t i = (first_ + k) % n;
            if (!ready_[i]) continue;
            ready_[i] = false;
            if (accept_batch(i, start, now)) first_ = (i + 1) % n;
        }
        for (size_t i = 0; i < n; ++i) ready_[i] = false;
    }

    // A connection of this worker closed: its descriptors are free again,
    // so a pause for want of them ends now instead of at its timer.
    // The listeners are tried in this very turn (an accept that finds
    // nothing costs one EAGAIN) rather than after another wait.
    void descriptors_freed() {
        if (!paused_ || stopped_) return;
        resume();
        resume_at_ = Clock::time_point{};
        for (size_t i = 0; i < listeners_.size(); ++i) ready_[i] = true;
    }

    // Our own shortage (accept, or a socket for a dial): stop accepting
    // until a descriptor frees. Logged at most once per shortage_log_every.
    void pause(Clock::time_point now, size_t listener, int err, const char* call = "accept") {
        paused_ = true;
        board_.set_accepting(worker_, false);  // the other workers stop waiting for us now
        resume_at_ = now + std::chrono::milliseconds(pause_ms);
        for (size_t i = 0; i < listeners_.size(); ++i) listen_on(i, false);
        if (now < quiet_shortage_until_) {
            ++quiet_shortages_;
            return;
        }
        char more[48] = "";
        if (quiet_shortages_ > 0) snprintf(more, sizeof more, " (%" PRIu64 " more)", quiet_shortages_);
        log_.print("%s %s: %s; pausing accepts until a connection closes (%dms at most)%s", call,
                   listeners_[listener].address.c_str(), net::errno_text(err).c_str(), pause_ms, more);
        quiet_shortages_ = 0;
        quiet_shortage_until_ = now + shortage_log_every;
    }

    // Stopping: the listeners leave the wait set and are closed; their
    // backlogs stay with the other workers and the next generation.
    void stop() {
        if (stopped_) return;
        stopped_ = true;
        board_.set_accepting(worker_, false);
        for (Listener& l : listeners_) {
            poller_.forget(l.fd.get(), false);  // shared with other processes: never implicit
            l.fd.reset();
        }
    }

    void release_rule_slot(size_t rule) {
        shared_.add_active(static_cast<size_t>(worker_), *shared_.rule_pool(rule).state, -1);
    }

private:
    void resume() {
        paused_ = false;
        board_.set_accepting(worker_, true);
    }

    void listen_on(size_t i, bool on) {
        if (!listeners_[i].fd) return;
        if (int err = poller_.want(listeners_[i].fd.get(), on ? POLLIN : poller::silent)) {
            // The wait set is out of memory: like a descriptor shortage, look
            // again shortly instead of failing the worker.
            if (on) pause(Clock::now(), i, err, "epoll_ctl");
        }
    }

    // Returns whether anything was accepted.
    template <class Start>
    bool accept_batch(size_t index, Start& start, Clock::time_point now) {
        const int listener = listeners_[index].fd.get();
        const size_t rule = listeners_[index].rule;
        bool accepted = false;
        for (int n = 0; n < batch && !paused_; ++n) {
            if (!may_accept(now)) break;
            if (!reserve_rule_slot(rule)) {
                listen_on(index, false);  // full: the backlog holds the rest
                rules_full_ = true;
                break;
            }
            net::SockAddr peer;
            net::Fd client = net::accept_client(listener, peer);
            if (!client) {
                int err = errno;
                release_rule_slot(rule);
                if (err == EAGAIN || err == EWOULDBLOCK) break;
                if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
                if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                    pause(now, index, err);
                    break;
                }
                log_.print("accept %s: %s", listeners_[index].address.c_str(), net::errno_text(err).c_str());
                break;
            }
            accepted = true;
            board_.slot(worker_).accepted.fetch_add(1);
            // Behind accept_proxy the client is who the header says: allow,
            // deny and the per-client limit wait for it (the worker asks).
            const bool proxied = shared_.rule_pool(rule).rule->policy.accept_proxy;
            bool ok = proxied ? trusted_sender(rule, peer, index, now) : admitted(rule, peer, index, now);
            size_t client_slot = SIZE_MAX;
            if (ok && !proxied) ok = take_client_slot(rule, peer, index, now, client_slot);
            if (!ok) {
                release_rule_slot(rule);
                continue;  // closed as `client` goes out of scope
            }
            start(std::move(client), peer, index, client_slot);
        }
        return accepted;
    }

    // The balance board's say (balance.hpp): not too far ahead in accepts,
    // nor in connections held.
    bool may_accept(Clock::time_point now) const {
        int64_t ms = to_ms(now);
        return board_.may_accept(worker_, ms) && !board_.ahead_in_active(worker_, ms);
    }

    bool rule_full(size_t rule) const {
        const upstreams::Pool& pool = shared_.rule_pool(rule);
        int max = pool.rule->policy.max_conns;
        return (max > 0 && pool.state->active.load(std::memory_order_relaxed) >= static_cast<uint32_t>(max)) ||
               !upstreams::has_room(pool);  // every enabled upstream at its own max_conns: wait in the backlog
    }

    // Takes a place under the rule's max_conns before accepting, so the
    // limit holds across workers without ever accepting and dropping.
    bool reserve_rule_slot(size_t rule) {
        const upstreams::Pool& pool = shared_.rule_pool(rule);
        if (!upstreams::has_room(pool)) return false;  // every upstream at its own max_conns: wait too
        int max = pool.rule->policy.max_conns;
        shared_.add_active(static_cast<size_t>(worker_), *pool.state, 1);
        if (max > 0 && pool.state->active.load(std::memory_order_relaxed) > static_cast<uint32_t>(max)) {
            shared_.add_active(static_cast<size_t>(worker_), *pool.state, -1);
            return false;
        }
        return true;
    }

public:
    // allow:/deny: checked right after accept (behind accept_proxy, once the
    // header has named the client). Deny wins; a non-empty allow list admits
    // only what it names.
    bool admitted(size_t rule, const net::SockAddr& peer, size_t listener, Clock::time_point now) {
        const config::Policy& policy = shared_.rule_pool(rule).rule->policy;
        if (policy.allow.empty() && policy.deny.empty()) return true;
        bool ok = policy.allow.empty();
        for (const net::Cidr& c : policy.allow) ok = ok || net::cidr_contains(c, peer);
        for (const net::Cidr& c : policy.deny) ok = ok && !net::cidr_contains(c, peer);
        if (ok) return true;
        shared_.rule_pool(rule).state->denied.fetch_add(1);
        std::string more;
        if (throttle_.allow("denied " + shared_.rule_pool(rule).rule->name, now, more))
            log_.print("denied %s on %s (%s)%s", peer.text().c_str(), listeners_[listener].address.c_str(),
                       shared_.rule_pool(rule).rule->name.c_str(), more.c_str());
        return false;
    }

    // max_conns_per_client, across workers (upstreams::ClientTable). On
    // success `slot` is what release_client_slot() wants back (SIZE_MAX: no
    // limit, or uncounted).
    bool take_client_slot(size_t rule, const net::SockAddr& client, size_t listener, Clock::time_point now,
                          size_t& slot) {
        const upstreams::Pool& pool = shared_.rule_pool(rule);
        int limit = pool.rule->policy.max_conns_per_client;
        if (limit <= 0) return true;
        auto took = shared_.clients().take(static_cast<size_t>(worker_), upstreams::ClientTable::key(rule, client),
                                           limit, slot);
        if (took != upstreams::ClientTable::Take::over_limit) return true;
        pool.state->over_client_limit.fetch_add(1);
        std::string more;
        if (throttle_.allow("per-client " + pool.rule->name, now, more))
            log_.print("refused %s on %s (%s): max_conns_per_client %d reached%s", client.text().c_str(),
                       listeners_[listener].address.c_str(), pool.rule->name.c_str(), limit, more.c_str());
        return false;
    }

    void release_client_slot(size_t slot) {
        if (slot != SIZE_MAX) shared_.clients().release(static_cast<size_t>(worker_), slot);
    }

private:
    // proxy_trusted: who may send a PROXY header. Anyone else is closed at
    // once, before a byte is read (its header could claim any address).
    bool trusted_sender(size_t rule, const net::SockAddr& peer, size_t listener, Clock::time_point now) {
        const upstreams::Pool& pool = shared_.rule_pool(rule);
        if (pool.rule->policy.proxy_trusted.empty()) return true;
        for (const net::Cidr& c : pool.rule->policy.proxy_trusted)
            if (net::cidr_contains(c, peer)) return true;
        pool.state->bad_preread.fetch_add(1);
        std::string more;
        if (throttle_.allow("untrusted " + pool.rule->name, now, more))
            log_.print("closed %s on %s (%s): not in proxy_trusted%s", peer.text().c_str(),
                       listeners_[listener].address.c_str(), pool.rule->name.c_str(), more.c_str());
        return false;
    }

    static constexpr std::chrono::seconds shortage_log_every{10};

    const upstreams::Shared& shared_;
    std::vector<Listener>& listeners_;
    int worker_;
    const mixlog::Logger& log_;
    balance::Board& board_;
    poller::Poller& poller_;
    std::vector<bool> ready_;
    size_t first_ = 0;  // where the next turn starts
    mixlog::Throttle throttle_;
    bool listening_ = false;
    bool rules_full_ = false;
    bool paused_ = false;
    bool stopped_ = false;
    Clock::time_point resume_at_{};
    uint64_t quiet_shortages_ = 0;
    Clock::time_point quiet_shortage_until_{};
};

}  // namespace acceptor
