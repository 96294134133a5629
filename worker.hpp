// worker.hpp - one pre-forked worker: accept, dial, relay, all in one poll().
//
// The pollfd array is kept in step with the connections (a slot is added
// when a socket appears and swapped out when it goes), so a turn of the
// loop costs poll() plus the sockets that are ready, not a rebuild.
// Layout of the array: [self-pipe, parent pipe, listeners..., sockets...].
#pragma once

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <poll.h>
#include <unistd.h>

#include "balance.hpp"
#include "log.hpp"
#include "net.hpp"
#include "relay.hpp"
#include "signals.hpp"
#include "udp_relay.hpp"
#include "upstreams.hpp"

namespace worker {

using Clock = std::chrono::steady_clock;

struct Listener {
    net::Fd fd;
    size_t rule = 0;
    std::string address;  // as bound, e.g. "127.0.0.1:41000"
    uint16_t offset = 0;  // port - the rule's first port (port ranges)
    config::Protocol protocol = config::Protocol::tcp;
    int worker = -1;      // a UDP socket's worker; -1: shared by all
};

// Per rule, per upstream: the address upstream sockets bind to (length 0: none).
using Sources = std::vector<std::vector<net::SockAddr>>;

struct Settings {
    int index = 0;                          // slot on the balance board
    Clock::duration dial_timeout{};         // zero: no deadline
    Clock::duration grace{};
    int parent_fd = -1;                     // EOF here means the parent is gone
    const Sources* sources = nullptr;
};

inline int64_t to_ms(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

class Worker : private udp_relay::Loop {
public:
    // udp: this worker's UDP sockets and sessions, or nullptr.
    Worker(const upstreams::Shared& shared, std::vector<Listener>& listeners, const Settings& settings,
           const mixlog::Logger& log, balance::Board& board, udp_relay::Relay* udp = nullptr)
        : shared_(shared), listeners_(listeners), settings_(settings), log_(log), board_(board), udp_(udp),
          scratch_(new char[relay::buffer_size]) {
        if (udp_) udp_->attach(*this);
        random_state_ = static_cast<uint64_t>(getpid()) * 0x9E3779B97F4A7C15ULL ^
                        static_cast<uint64_t>(Clock::now().time_since_epoch().count());
    }

    // Runs until told to stop and the last connection is gone. Returns the
    // process exit status.
    int run() {
        if (!wake_.open()) {
            log_.print("worker: pipe: %s", net::errno_text(errno).c_str());
            return 1;
        }
        add_slot(wake_.fd(), POLLIN, control_owner);
        add_slot(settings_.parent_fd, POLLIN, control_owner);
        for (size_t i = 0; i < listeners_.size(); ++i) add_slot(listeners_[i].fd.get(), POLLIN, control_owner);
        udp_first_slot_ = slots_.size();
        if (udp_)
            for (const udp_relay::Socket& sock : udp_->sockets()) add_slot(sock.fd, POLLIN, control_owner);
        first_conn_slot_ = slots_.size();

        for (;;) {
            check_signals();
            Clock::time_point now = now_ = Clock::now();
            expire_timers(now);
            if (udp_) udp_->expire(now);
            const size_t sessions = udp_ ? udp_->live() : 0;
            if (stopping_ && live_ == 0 && sessions == 0) return 0;
            if (stopping_ && now >= grace_deadline_) {
                log_.print("worker %d: grace period over, closing %zu connections", settings_.index, live_ + sessions);
                abort_all();
                return 0;
            }
            board_.heartbeat(settings_.index, to_ms(now));
            arm_listeners(now);
            int ready = ::poll(pollfds_.data(), pollfds_.size(), poll_timeout(now));
            if (ready < 0) {
                if (errno == EINTR) continue;
                log_.print("worker %d: poll: %s", settings_.index, net::errno_text(errno).c_str());
                return 1;
            }
            if (ready == 0) continue;
            now_ = Clock::now();
            handle_control();
            handle_connections();
            handle_udp_sockets();
            // Handling the ready sockets can take a while on a busy machine;
            // a dial deadline must count from the accept, not from poll().
            now_ = Clock::now();
            handle_listeners();
        }
    }

private:
    static constexpr uint32_t control_owner = UINT32_MAX;
#if defined(POLLRDHUP) && !defined(MIXCTL_POSIX_ONLY)
    // Linux also says when the peer has sent its FIN (see Direction::pump).
    static constexpr short readable = POLLIN | POLLRDHUP;
    static constexpr short source_shut = POLLRDHUP;
#else
    static constexpr short readable = POLLIN;
    static constexpr short source_shut = 0;
#endif
    enum Side : uint8_t { client_side = 0, upstream_side = 1, udp_session = 2 };

    struct Owner {
        uint32_t conn;
        Side side;
    };

    struct Conn {
        net::Fd client, upstream;
        net::SockAddr client_address;
        size_t listener = 0;
        bool connected = false;
        std::vector<uint16_t> order;  // upstreams to try, as indexes into the rule's `to`
        uint32_t step = 0, address = 0, attempts = 0;
        std::string last_error;       // of the upstream being tried
        bool only_local_errors = true;  // every failure of this upstream was ours (no ports left)
        // One timer per connection: the dial deadline while dialing, then the
        // next idle or half-close check.
        Clock::time_point timer_at{};
        bool has_timer = false;
        bool waiting_for_fds = false;   // socket() hit EMFILE: the dial is retried
        bool holds_rule_slot = false;   // counted in the rule's active (max_conns)
        Clock::time_point last_activity{}, half_closed_at{};
        relay::Direction up;    // client -> upstream
        relay::Direction down;  // upstream -> client
        int slot[2] = {-1, -1};
        bool hung_up[2] = {false, false};
        Clock::time_point started{};
        net::SockAddr dialed;
        size_t target = 0;
        uint64_t counted_in = 0, counted_out = 0;  // bytes already added to the shared counters
    };

    // ---- poll slots ---------------------------------------------------

    size_t add_slot(int fd, short events, uint32_t conn, Side side = client_side) {
        pollfd p{};
        p.fd = fd;
        p.events = events;
        pollfds_.push_back(p);
        slots_.push_back(Owner{conn, side});
        return pollfds_.size() - 1;
    }

    // Swap-remove. The slot moved into the hole comes from the end, which
    // this turn's descending scan has already handled, so its revents are
    // cleared to keep it from being handled twice.
    void remove_slot(size_t index) {
        size_t last = pollfds_.size() - 1;
        if (index != last) {
            pollfds_[index] = pollfds_[last];
            pollfds_[index].revents = 0;
            slots_[index] = slots_[last];
            Owner moved = slots_[index];
            if (moved.side == udp_session) udp_->moved(moved.conn, static_cast<int>(index));
            else conns_[moved.conn]->slot[moved.side] = static_cast<int>(index);
        }
        pollfds_.pop_back();
        slots_.pop_back();
    }

    void set_events(Conn& c, Side side, short events) {
        pollfd& p = pollfds_[static_cast<size_t>(c.slot[side])];
        p.events = events;
        int fd = side == client_side ? c.client.get() : c.upstream.get();
        // A socket shut both ways reports POLLHUP forever; with nothing to
        // ask of it, leave it out of poll() instead of spinning on it.
        p.fd = (events == 0 && c.hung_up[side]) ? -1 : fd;
    }

    void update_events(Conn& c) {
        if (!c.connected) {
            set_events(c, client_side, 0);  // still told of POLLERR/POLLHUP: a client that gave up
            return;
        }
        set_events(c, client_side, static_cast<short>((c.up.wants_read() ? readable : 0) |
                                                      (c.down.has_parked() ? POLLOUT : 0)));
        set_events(c, upstream_side, static_cast<short>((c.down.wants_read() ? readable : 0) |
                                                        (c.up.has_parked() ? POLLOUT : 0)));
    }

    // ---- UDP (udp_relay.hpp): the relay's sockets in this loop --------

    int watch(int fd, uint32_t session) override {
        return static_cast<int>(add_slot(fd, POLLIN, session, udp_session));
    }
    void unwatch(int handle) override { remove_slot(static_cast<size_t>(handle)); }

    void handle_udp_sockets() {
        if (!udp_) return;
        for (size_t j = 0; j < udp_->sockets().size(); ++j) {
            pollfd& p = pollfds_[udp_first_slot_ + j];
            if (p.revents & POLLIN) udp_->on_socket(static_cast<uint32_t>(j), now_);
            p.revents = 0;
        }
    }

    // ---- the loop's parts ---------------------------------------------

    int poll_timeout(Clock::time_point now) const {
        Clock::time_point wake = now + std::chrono::hours(1);
        if (!timers_.empty()) wake = std::min(wake, timers_.begin()->first);
        if (udp_) wake = std::min(wake, udp_->next_deadline());
        if (stopping_) wake = std::min(wake, grace_deadline_);
        if (paused_) wake = std::min(wake, resume_accept_);
        const std::chrono::milliseconds recheck(paced(balance::Board::recheck_every_ms));
        if (rules_full_ && !stopping_) wake = std::min(wake, now + recheck);
        // Others' accept counts change without waking us: a worker held back
        // looks again now and then (see balance.hpp).
        if (board_.count() > 1 && !stopping_ && !listening_) wake = std::min(wake, now + recheck);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count();
        if (wake > now + std::chrono::milliseconds(ms)) ++ms;  // round up: never wake before a deadline
        return static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(ms, 3600 * 1000)));
    }

    int paced(int every_ms) const { return balance::Board::paced(every_ms, pollfds_.size()); }

    void handle_control() {
        if (pollfds_[0].revents) wake_.drain();
        if (pollfds_[1].revents) {
            pollfds_[1].fd = -1;  // EOF stays readable: look once
            begin_stop();
        }
    }

    // Checked every turn, not only when the self-pipe is readable: a signal
    // that came before the pipe existed must not wait for the next wakeup.
    // Only the first SIGTERM matters: a second one may just be the parent
    // passing on what the whole process group got, and a stop that must be
    // immediate comes from the parent as SIGKILL.
    void check_signals() {
        if (!signals::arrived.stop) return;
        signals::arrived.stop = 0;
        begin_stop();
    }

    void begin_stop() {
        if (stopping_) return;
        stopping_ = true;
        grace_deadline_ = Clock::now() + settings_.grace;
        for (size_t i = 0; i < listeners_.size(); ++i) {
            pollfds_[2 + i].fd = -1;
            listeners_[i].fd.reset();
        }
        // A UDP socket is no longer read (the next generation's worker reads
        // it), but is kept: live sessions send their replies through it.
        if (udp_)
            for (size_t j = 0; j < udp_->sockets().size(); ++j) pollfds_[udp_first_slot_ + j].fd = -1;
    }

    // A listener is polled while this worker may accept (balance), is not
    // out of descriptors, and its rule is under max_conns; otherwise its
    // connections wait in the kernel backlog.
    void arm_listeners(Clock::time_point now) {
        if (stopping_) return;
        if (paused_ && now >= resume_accept_) paused_ = false;
        listening_ = !paused_ && board_.may_accept(settings_.index, to_ms(now));
        rules_full_ = false;
        for (size_t i = 0; i < listeners_.size(); ++i) {
            bool full = rule_full(listeners_[i].rule);
            rules_full_ = rules_full_ || full;
            pollfds_[2 + i].fd = listening_ && !full ? listeners_[i].fd.get() : -1;
        }
    }

    bool rule_full(size_t rule) const {
        const upstreams::Pool& pool = shared_.pool(rule);
        int max = pool.rule->policy.max_conns;
        return max > 0 && pool.state->active.load(std::memory_order_relaxed) >= static_cast<uint32_t>(max);
    }

    // Takes a place under the rule's max_conns before accepting, so the
    // limit holds across workers without ever accepting and dropping.
    bool reserve_rule_slot(size_t rule) {
        const upstreams::Pool& pool = shared_.pool(rule);
        int max = pool.rule->policy.max_conns;
        shared_.add_active(static_cast<size_t>(settings_.index), *pool.state, 1);
        if (max > 0 && pool.state->active.load(std::memory_order_relaxed) > static_cast<uint32_t>(max)) {
            shared_.add_active(static_cast<size_t>(settings_.index), *pool.state, -1);
            return false;
        }
        return true;
    }

    void release_rule_slot(size_t rule) {
        shared_.add_active(static_cast<size_t>(settings_.index), *shared_.pool(rule).state, -1);
    }

    void handle_listeners() {
        for (size_t i = 0; i < listeners_.size() && !stopping_; ++i) {
            if (pollfds_[2 + i].revents & POLLIN) accept_batch(i);
        }
    }

    void accept_batch(size_t index) {
        const int listener = listeners_[index].fd.get();
        const size_t rule = listeners_[index].rule;
        for (int n = 0; n < 64 && !paused_; ++n) {
            if (!board_.may_accept(settings_.index, to_ms(now_))) return;
            if (!reserve_rule_slot(rule)) {
                pollfds_[2 + index].fd = -1;  // full: the backlog holds the rest
                rules_full_ = true;
                return;
            }
            net::SockAddr peer;
            net::Fd client = net::accept_client(listener, peer);
            if (!client) {
                int err = errno;
                release_rule_slot(rule);
                if (err == EAGAIN || err == EWOULDBLOCK) return;
                if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
                if (out_of_resources(err)) {
                    pause_accepting(index, err);
                    return;
                }
                log_.print("accept %s: %s", listeners_[index].address.c_str(), net::errno_text(err).c_str());
                return;
            }
            board_.slot(settings_.index).accepted.fetch_add(1);
            if (!admitted(rule, peer, index)) {
                release_rule_slot(rule);
                continue;  // closed as `client` goes out of scope
            }
            start(std::move(client), peer, index);
        }
    }

    // allow:/deny: checked right after accept. Deny wins; a non-empty allow
    // list admits only what it names.
    bool admitted(size_t rule, const net::SockAddr& peer, size_t listener) {
        const config::Policy& policy = shared_.pool(rule).rule->policy;
        if (policy.allow.empty() && policy.deny.empty()) return true;
        bool ok = policy.allow.empty();
        for (const net::Cidr& c : policy.allow) ok = ok || net::cidr_contains(c, peer);
        for (const net::Cidr& c : policy.deny) ok = ok && !net::cidr_contains(c, peer);
        if (ok) return true;
        shared_.pool(rule).state->denied.fetch_add(1);
        std::string more;
        if (throttle_.allow("denied " + shared_.pool(rule).rule->name, now_, more))
            log_.print("denied %s on %s (%s)%s", peer.text().c_str(), listeners_[listener].address.c_str(),
                       shared_.pool(rule).rule->name.c_str(), more.c_str());
        return false;
    }

    static bool out_of_resources(int err) {
        return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
    }

    // Out of descriptors: a level-triggered listener would wake us a million
    // times a second. Look away for a moment; connections wait in the backlog.
    // Logged at most once per shortage_log_every, with how many were quiet.
    void pause_accepting(size_t index, int err, const char* call = "accept") {
        Clock::time_point now = Clock::now();
        paused_ = true;
        resume_accept_ = now + std::chrono::milliseconds(pause_ms);
        if (now < quiet_shortage_until_) {
            ++quiet_shortages_;
            return;
        }
        char more[48] = "";
        if (quiet_shortages_ > 0) snprintf(more, sizeof more, " (%" PRIu64 " more)", quiet_shortages_);
        log_.print("%s %s: %s; pausing accepts for %dms%s", call, listeners_[index].address.c_str(),
                   net::errno_text(err).c_str(), pause_ms, more);
        quiet_shortages_ = 0;
        quiet_shortage_until_ = now + shortage_log_every;
    }

    // ---- connections --------------------------------------------------

    uint32_t new_conn() {
        if (!free_.empty()) {
            uint32_t id = free_.back();
            free_.pop_back();
            return id;
        }
        conns_.push_back(std::make_unique<Conn>());
        return static_cast<uint32_t>(conns_.size() - 1);
    }

    uint64_t next_random() {
        random_state_ ^= random_state_ << 13;
        random_state_ ^= random_state_ >> 7;
        random_state_ ^= random_state_ << 17;
        return random_state_;
    }

    void start(net::Fd client, const net::SockAddr& peer, size_t listener) {
        uint32_t id = new_conn();
        Conn& c = *conns_[id];
        c.client = std::move(client);
        c.client_address = peer;
        c.listener = listener;
        c.started = c.last_activity = now_;
        c.holds_rule_slot = true;
        if (!net::accepted_sockets_inherit_tuning) net::tune_stream(c.client.get());
        const upstreams::Pool& pool = pool_of(c);
        auto random = [this] { return next_random(); };
        if (!upstreams::plan(pool, peer, to_ms(now_), random, c.order)) warn_fail_open(pool);
        c.slot[client_side] = static_cast<int>(add_slot(c.client.get(), 0, id, client_side));
        ++live_;
        board_.slot(settings_.index).active.fetch_add(1, std::memory_order_relaxed);
        dial_next(id);
    }

    const upstreams::Pool& pool_of(const Conn& c) const { return shared_.pool(listeners_[c.listener].rule); }
    const config::Rule& rule_of(const Conn& c) const { return *pool_of(c).rule; }
    // A ranged upstream is shown as dialed ("127.0.0.1:30007"), not as written.
    std::string target_text(const Conn& c) const {
        const config::Upstream& up = rule_of(c).to[c.target];
        return up.ranged ? c.dialed.text() : up.text;
    }
    const net::SockAddr* source_of(const Conn& c) const {
        if (!settings_.sources) return nullptr;
        const net::SockAddr& s = (*settings_.sources)[listeners_[c.listener].rule][c.target];
        return s.length ? &s : nullptr;
    }

    void warn_fail_open(const upstreams::Pool& pool) {
        Clock::time_point now = Clock::now();
        if (now < quiet_fail_open_until_) return;
        quiet_fail_open_until_ = now + std::chrono::seconds(1);
        log_.print("all upstreams of (%s) are down; trying them anyway", pool.rule->name.c_str());
    }

    // Tries the current (upstream, address) and on to the next ones until a
    // connect is under way or has succeeded; with none left, gives up.
    void dial_next(uint32_t id) {
        Conn& c = *conns_[id];
        while (c.step < c.order.size()) {
            c.target = c.order[c.step];
            if (!upstreams::address_at(pool_of(c).at(c.target), c.address, c.dialed)) {
                upstream_failed(c);
                ++c.step;
                c.address = 0;
                continue;
            }
            ++c.address;
            ++c.attempts;
            if (rule_of(c).to[c.target].ranged)
                c.dialed.set_port(static_cast<uint16_t>(c.dialed.port() + listeners_[c.listener].offset));
            int rc = net::dial_start(c.dialed, c.upstream, source_of(c));
            if (rc == 0) {
                c.slot[upstream_side] = static_cast<int>(add_slot(c.upstream.get(), POLLOUT, id, upstream_side));
                connected(id);
                return;
            }
            if (rc == EINPROGRESS) {
                c.slot[upstream_side] = static_cast<int>(add_slot(c.upstream.get(), POLLOUT, id, upstream_side));
                Clock::duration limit = dial_timeout(c);
                if (limit.count() > 0) schedule(c, id, now_ + limit);
                return;
            }
            if (out_of_resources(rc)) {
                // Our own shortage, not the upstream's fault: no other upstream
                // would fare better and none is marked down for it. The client
                // keeps its place and the same dial is tried again shortly.
                --c.address;
                --c.attempts;
                pause_accepting(c.listener, rc, "socket for");
                c.waiting_for_fds = true;
                schedule(c, id, now_ + std::chrono::milliseconds(pause_ms));
                return;
            }
            log_dial_error(c, net::errno_text(rc));
            // No free local port is our shortage, not the upstream's fault.
            if (rc != EADDRNOTAVAIL) c.only_local_errors = false;
        }
        log_.print("error: no upstream of (%s) reachable for %s: %u attempts failed", rule_of(c).name.c_str(),
                   c.client_address.text().c_str(), c.attempts);
        finish(id, nullptr, false);
    }

    void log_dial_error(Conn& c, const std::string& why) {
        c.last_error = why;
        std::string address = c.dialed.text();
        const std::string text = target_text(c);
        std::string more;
        if (!throttle_.allow("dial " + text, now_, more)) return;
        if (address == text)
            log_.print("error dialing %s: %s%s", text.c_str(), why.c_str(), more.c_str());
        else
            log_.print("error dialing %s (%s): %s%s", text.c_str(), address.c_str(), why.c_str(), more.c_str());
    }

    // Every address of one upstream failed: that counts against its health.
    void upstream_failed(Conn& c) {
        bool ours = c.only_local_errors;
        c.only_local_errors = true;  // for the next upstream
        if (c.address == 0 || ours) return;  // nothing dialed, or only our own shortage
        upstreams::UpstreamState& state = pool_of(c).at(c.target);
        const config::Rule& rule = rule_of(c);
        state.resolve_wanted.store(1, std::memory_order_relaxed);
        if (upstreams::record_failure(state, rule.policy, to_ms(now_)))
            log_.print("upstream %s of (%s) is DOWN: %s (passive: %d failed connects within %s)",
                       target_text(c).c_str(), rule.name.c_str(), c.last_error.c_str(), rule.policy.max_fails,
                       flags::format_duration(rule.policy.fail_timeout).c_str());
    }

    void drop_dial(Conn& c, uint32_t id) {
        unschedule(c, id);
        if (c.slot[upstream_side] >= 0) remove_slot(static_cast<size_t>(c.slot[upstream_side]));
        c.slot[upstream_side] = -1;
        c.upstream.reset();
    }

    void dial_failed(uint32_t id, const std::string& why) {
        Conn& c = *conns_[id];
        log_dial_error(c, why);
        c.only_local_errors = false;
        drop_dial(c, id);
        dial_next(id);
    }

    void connected(uint32_t id) {
        Conn& c = *conns_[id];
        unschedule(c, id);
        c.connected = true;
        c.last_activity = now_;
        upstreams::UpstreamState& state = pool_of(c).at(c.target);
        upstreams::record_success(state);
        shared_.add_active(static_cast<size_t>(settings_.index), state, 1);
        arm_relay_timer(c, id);
        if (log_.verbose())  // the arguments cost a clock read, a printf and a malloc
            log_.trace("Connected %s => %s (%s)", listeners_[c.listener].address.c_str(), target_text(c).c_str(),
                       c.client_address.text().c_str());
        if (rule_of(c).policy.proxy != proxy_protocol::Version::off) {
            // Sent at once, not with the first client byte: with SSH the
            // server speaks first and the client would wait forever.
            net::SockAddr local;
            net::local_address(c.client.get(), local);
            std::string header = proxy_protocol::header(rule_of(c).policy.proxy, c.client_address, local);
            if (int err = c.up.send_first(c.upstream.get(), header, pool_)) {
                finish(id, net::errno_text(err).c_str(), true);
                return;
            }
        }
        update_events(c);
        // Most clients speak first (HTTP, TLS) and have done so while we
        // dialed: relay that now instead of one poll() later. A client that
        // waits for the server costs one read() that finds nothing.
        if (c.up.wants_read()) on_relay_event(Owner{id, client_side}, POLLIN);
    }

    Clock::duration dial_timeout(const Conn& c) const {
        const flags::Duration per_rule = rule_of(c).policy.connect_timeout;
        if (per_rule.count() > 0) return std::chrono::duration_cast<Clock::duration>(per_rule);
        return settings_.dial_timeout;
    }

    void schedule(Conn& c, uint32_t id, Clock::time_point when) {
        unschedule(c, id);
        c.timer_at = when;
        c.has_timer = true;
        timers_.emplace(when, id);
    }

    void unschedule(Conn& c, uint32_t id) {
        if (c.has_timer) timers_.erase({c.timer_at, id});
        c.has_timer = false;
    }

    void expire_timers(Clock::time_point now) {
        while (!timers_.empty() && timers_.begin()->first <= now) {
            uint32_t id = timers_.begin()->second;
            timers_.erase(timers_.begin());
            conns_[id]->has_timer = false;
            on_timer(id, now);
        }
    }

    void on_timer(uint32_t id, Clock::time_point now) {
        Conn& c = *conns_[id];
        if (c.waiting_for_fds) {
            c.waiting_for_fds = false;
            dial_next(id);
            return;
        }
        if (!c.connected) {
            // The socket is closed here, so a late SYN-ACK can never be used.
            auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(dial_timeout(c)).count();
            dial_failed(id, "i/o timeout after " + std::to_string(ms) + "ms");
            return;
        }
        const config::Policy& policy = rule_of(c).policy;
        if (policy.idle_timeout.count() > 0 && now - c.last_activity >= policy.idle_timeout) {
            finish(id, "idle timeout", false);
            return;
        }
        if (policy.halfclose_timeout.count() > 0 && c.half_closed_at != Clock::time_point{} &&
            now - c.half_closed_at >= policy.halfclose_timeout) {
            finish(id, "half-close timeout", false);
            return;
        }
        arm_relay_timer(c, id);
    }

    // Idle and half-close deadlines are checked lazily: activity only
    // updates last_activity, and the timer, when it fires, looks again.
    void arm_relay_timer(Conn& c, uint32_t id) {
        const config::Policy& policy = rule_of(c).policy;
        Clock::time_point next = Clock::time_point::max();
        if (policy.idle_timeout.count() > 0)
            next = std::min(next, c.last_activity + std::chrono::duration_cast<Clock::duration>(policy.idle_timeout));
        if (policy.halfclose_timeout.count() > 0 && c.half_closed_at != Clock::time_point{})
            next = std::min(next, c.half_closed_at +
                                      std::chrono::duration_cast<Clock::duration>(policy.halfclose_timeout));
        if (next != Clock::time_point::max()) schedule(c, id, next);
    }

    void handle_connections() {
        for (size_t i = pollfds_.size(); i-- > first_conn_slot_;) {
            // Ending a connection removes two slots and may shrink the array
            // below i; an entry that moved lost its revents, which poll()
            // reports again next turn (level-triggered).
            if (i >= pollfds_.size()) continue;
            short revents = pollfds_[i].revents;
            if (!revents) continue;
            pollfds_[i].revents = 0;
            Owner owner = slots_[i];
            if (owner.side == udp_session) {
                udp_->on_upstream(owner.conn, now_);
                continue;
            }
            Conn& c = *conns_[owner.conn];
            if (!c.connected) on_dial_event(owner, revents);
            else on_relay_event(owner, revents);
        }
    }

    void on_dial_event(Owner owner, short revents) {
        Conn& c = *conns_[owner.conn];
        if (owner.side == client_side) {
            if (revents & (POLLERR | POLLHUP)) finish(owner.conn, "client went away while dialing", true);
            return;
        }
        int err = net::connect_error(c.upstream.get(), revents);
        if (err == 0 && (revents & POLLOUT)) {
            connected(owner.conn);
            return;
        }
        dial_failed(owner.conn, net::errno_text(err ? err : ECONNREFUSED));
    }

    void on_relay_event(Owner owner, short revents) {
        Conn& c = *conns_[owner.conn];
        const int client = c.client.get(), upstream = c.upstream.get();
        const bool from_client = owner.side == client_side;
        relay::Direction& reading = from_client ? c.up : c.down;   // data leaving this socket
        relay::Direction& writing = from_client ? c.down : c.up;   // data going into it
        const int self = from_client ? client : upstream;
        const int other = from_client ? upstream : client;
        if (revents & POLLHUP) c.hung_up[owner.side] = true;

        int err = 0;
        if ((revents & POLLERR) && !(revents & POLLIN)) err = net::pending_error(self);
        if (!err && (revents & POLLOUT) && writing.has_parked()) err = writing.flush(self, pool_, pipes_);
        if (!err && (revents & (POLLIN | POLLHUP | POLLERR)) && reading.wants_read())
            err = reading.pump(self, other, scratch_.get(), pool_, pipes_, (revents & source_shut) != 0);
        if (!err && (revents & POLLERR) && !reading.wants_read() && !writing.has_parked())
            err = net::pending_error(self);
        if (count_bytes(c)) c.last_activity = now_;
        if (err) {
            finish(owner.conn, net::errno_text(err).c_str(), true);
            return;
        }
        if (c.up.finished() && c.down.finished()) {
            finish(owner.conn, nullptr, false);
            return;
        }
        if ((c.up.finished() || c.down.finished()) && c.half_closed_at == Clock::time_point{}) {
            if (c.up.finished()) c.down.other_way_finished();
            if (c.down.finished()) c.up.other_way_finished();
            c.half_closed_at = now_;
            if (rule_of(c).policy.halfclose_timeout.count() > 0) arm_relay_timer(c, owner.conn);
        }
        update_events(c);
    }

    // Returns whether anything moved since the last call.
    bool count_bytes(Conn& c) {
        upstreams::UpstreamState& state = pool_of(c).at(c.target);
        bool moved = c.up.bytes() != c.counted_in || c.down.bytes() != c.counted_out;
        if (c.up.bytes() != c.counted_in) {
            state.bytes_in.fetch_add(c.up.bytes() - c.counted_in);
            c.counted_in = c.up.bytes();
        }
        if (c.down.bytes() != c.counted_out) {
            state.bytes_out.fetch_add(c.down.bytes() - c.counted_out);
            c.counted_out = c.down.bytes();
        }
        return moved;
    }

    void log_closed(const Conn& c, const char* reason) const {
        if (c.connected) {
            // Whole milliseconds, printed without floating point (which would
            // pull printf's float code into a static binary).
            long long ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - c.started).count();
            char extra[160] = "";
            if (reason) snprintf(extra, sizeof extra, " error=\"%s\"", reason);
            log_.trace("Closed %s => %s (%s) bytes_in=%" PRIu64 " bytes_out=%" PRIu64 " duration=%lld.%03llds%s",
                       listeners_[c.listener].address.c_str(), target_text(c).c_str(),
                       c.client_address.text().c_str(), c.up.bytes(), c.down.bytes(), ms / 1000, ms % 1000, extra);
        } else if (reason) {
            log_.trace("Closed %s => - (%s) %s", listeners_[c.listener].address.c_str(),
                       c.client_address.text().c_str(), reason);
        }
    }

    // The one way a connection ends: logs exactly one line, frees both
    // sockets. abort: send RST, so an error on one side stays an error on
    // the other instead of looking like a clean end.
    void finish(uint32_t id, const char* reason, bool abort) {
        Conn& c = *conns_[id];
        unschedule(c, id);
        if (c.holds_rule_slot) release_rule_slot(listeners_[c.listener].rule);
        if (log_.verbose()) log_closed(c, reason);
        if (c.connected) shared_.add_active(static_cast<size_t>(settings_.index), pool_of(c).at(c.target), -1);
        if (abort) {
            if (c.client) net::set_abortive_close(c.client.get());
            if (c.upstream) net::set_abortive_close(c.upstream.get());
        }
        for (Side side : {upstream_side, client_side}) {
            if (c.slot[side] >= 0) remove_slot(static_cast<size_t>(c.slot[side]));
        }
        c.up.release(pool_, pipes_);
        c.down.release(pool_, pipes_);
        std::vector<uint16_t> order = std::move(c.order);  // keep its capacity for the next connection
        order.clear();
        *conns_[id] = Conn();  // closes both sockets
        conns_[id]->order = std::move(order);
        free_.push_back(id);
        if (--live_ == 0) pipes_.clear();
        board_.slot(settings_.index).active.fetch_sub(1, std::memory_order_relaxed);
    }

    void abort_all() {
        for (uint32_t id = 0; id < conns_.size(); ++id)
            if (conns_[id]->client) finish(id, "shutting down", true);
        if (udp_) udp_->finish_all("shutting down");
    }

    static constexpr int pause_ms = 200;

    const upstreams::Shared& shared_;
    std::vector<Listener>& listeners_;
    Settings settings_;
    const mixlog::Logger& log_;
    balance::Board& board_;
    udp_relay::Relay* udp_;
    size_t udp_first_slot_ = 0;

    signals::SelfPipe wake_;
    std::vector<pollfd> pollfds_;
    std::vector<Owner> slots_;
    size_t first_conn_slot_ = 0;
    std::vector<std::unique_ptr<Conn>> conns_;
    std::vector<uint32_t> free_;
    size_t live_ = 0;
    std::set<std::pair<Clock::time_point, uint32_t>> timers_;
    Clock::time_point now_{};  // this turn's time: one clock read per turn, not per event
    mixlog::Throttle throttle_;
    bool rules_full_ = false;
    relay::BufferPool pool_;
    relay::PipePool pipes_;
    std::unique_ptr<char[]> scratch_;
    uint64_t random_state_;

    bool stopping_ = false;
    Clock::time_point grace_deadline_{};
    bool listening_ = true;  // listener slots start armed
    bool paused_ = false;
    Clock::time_point resume_accept_{};
    uint64_t quiet_shortages_ = 0;
    Clock::time_point quiet_shortage_until_{};
    static constexpr std::chrono::seconds shortage_log_every{10};
    Clock::time_point quiet_fail_open_until_{};
};

}  // namespace worker
