// worker.hpp - one pre-forked worker's readiness loop and its connections' life: pre-read, dial, relay, close.
// Owns the connections; not waiting (poller.hpp), deadlines (timers.hpp), accepting (acceptor.hpp),
// choosing and connecting upstreams (dialer.hpp), moving bytes (relay.hpp) or the pre-dial decision (preread.hpp).
//
// Why long: the relay state machine reads top to bottom in one class (each event handler beside
// the connection it changes), and the SNI/PROXY pre-read joins that loop.
//
// A turn of the loop: run the due timers, decide whether to listen, wait,
// then handle the ready connections (dial results, relay events), and
// accept last, with a fresh clock, so a dial deadline counts from its accept.
#pragma once

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <poll.h>
#include <unistd.h>

#include "acceptor.hpp"
#include "balance.hpp"
#include "dialer.hpp"
#include "log.hpp"
#include "net.hpp"
#include "poller.hpp"
#include "preread.hpp"
#include "proxy_protocol.hpp"
#include "relay.hpp"
#include "signals.hpp"
#include "timers.hpp"
#include "udp_relay.hpp"
#include "upstreams.hpp"

namespace worker {

using Clock = std::chrono::steady_clock;
using Listener = acceptor::Listener;
using acceptor::to_ms;

struct Settings {
    int index = 0;                          // slot on the balance board
    Clock::duration dial_timeout{};         // zero: no deadline
    Clock::duration grace{};
    int parent_fd = -1;                     // EOF here means the parent is gone
    poller::Backend backend = poller::default_backend();
    const dialer::Sources* sources = nullptr;  // source: addresses per rule and upstream
};

class Worker : private udp_relay::Loop {
public:
    // udp: this worker's UDP sockets and sessions (udp_relay.hpp), or nullptr.
    Worker(const upstreams::Shared& shared, std::vector<Listener>& listeners, const Settings& settings,
           const mixlog::Logger& log, balance::Board& board, udp_relay::Relay* udp = nullptr)
        : shared_(shared), settings_(settings), log_(log), board_(board), poller_(settings.backend),
          acceptor_(shared, listeners, settings.index, log, board, poller_),
          dialer_(shared, log, settings.dial_timeout, static_cast<size_t>(settings.index), settings.sources), udp_(udp),
          scratch_(new char[relay::buffer_size]) {
        if (udp_) udp_->attach(*this);
    }

    // Runs until told to stop and the last connection is gone. Returns the
    // process exit status.
    int run() {
        if (!wake_.open()) {
            log_.print("worker: pipe: %s", net::errno_text(errno).c_str());
            return 1;
        }
        // Made here, after fork(): each worker, and each respawn, has its own.
        int err = poller_.open();
        if (!err) err = poller_.watch(wake_.fd(), wake_token, POLLIN);
        if (!err) err = poller_.watch(settings_.parent_fd, parent_token, POLLIN);
        if (!err) err = acceptor_.watch(first_listener_token);
        if (udp_)
            for (size_t j = 0; j < udp_->sockets().size() && !err; ++j)
                err = poller_.watch(udp_->sockets()[j].fd, udp_socket_bit | j, POLLIN);
        if (err) {
            log_.print("worker %d: %s: %s", settings_.index, poller::name(poller_.backend()),
                       net::errno_text(err).c_str());
            return 1;
        }

        for (;;) {
            check_signals();
            Clock::time_point now = now_ = Clock::now();
            expire_timers(now);
            if (udp_) udp_->expire(now);
            if (descriptors_freed_) after_descriptors_freed();
            const size_t sessions = udp_ ? udp_->live() : 0;
            if (stopping_ && live_ == 0 && sessions == 0) return 0;
            if (stopping_ && now >= grace_deadline_) {
                log_.print("worker %d: grace period over, closing %zu connections", settings_.index, live_ + sessions);
                abort_all();
                return 0;
            }
            board_.heartbeat(settings_.index, to_ms(now));
            if (!stopping_) acceptor_.arm(now);
            const poller::Event* events = nullptr;
            int ready = poller_.wait(wait_timeout(now), events);
            if (ready < 0) {
                if (errno == EINTR) continue;
                log_.print("worker %d: %s: %s", settings_.index, poller::name(poller_.backend()),
                           net::errno_text(errno).c_str());
                return 1;
            }
            now_ = Clock::now();
            for (int i = 0; i < ready; ++i) handle(events[i]);
            if (descriptors_freed_) after_descriptors_freed();
            watch_slow_dials();
            // Handling the ready sockets can take a while on a busy machine;
            // a dial deadline must count from the accept, not from the wait.
            now_ = Clock::now();
            if (!stopping_)
                acceptor_.accept_ready(
                    [this](net::Fd client, const net::SockAddr& peer, size_t listener, size_t client_slot) {
                        start(std::move(client), peer, listener, client_slot);
                    },
                    now_);
        }
    }

private:
#if defined(POLLRDHUP) && !defined(MIXCTL_POSIX_ONLY)
    // Linux also says when the peer has sent its FIN (see Direction::pump).
    static constexpr uint32_t readable = POLLIN | POLLRDHUP;
    static constexpr uint32_t source_shut = POLLRDHUP;
#else
    static constexpr uint32_t readable = POLLIN;
    static constexpr uint32_t source_shut = 0;
#endif
    enum Side : uint8_t { client_side = 0, upstream_side = 1 };

    // A token says which socket an event is for. Control sockets have the
    // top bit; a connection's socket carries a serial number that changes
    // with every socket, so an event that was already waiting for a socket
    // closed earlier in the same turn (the id reused, or a redial) is
    // recognised as stale and dropped.
    static constexpr uint64_t control_bit = 1ULL << 63;
    static constexpr uint64_t wake_token = control_bit | 0, parent_token = control_bit | 1,
                              first_listener_token = control_bit | 2;
    // UDP: a worker's receiving socket j is udp_socket_bit | j; a session's
    // upstream socket udp_session_bit | serial << 32 | id (stale events are
    // recognised as for connections).
    static constexpr uint64_t udp_socket_bit = control_bit | (1ULL << 62);
    static constexpr uint64_t udp_session_bit = 1ULL << 62;

    struct Conn {
        net::Fd client, upstream;
        net::SockAddr client_address;
        size_t listener = 0;
        bool connected = false;
        dialer::Dial dial;
        bool waiting_for_fds = false;   // socket() hit EMFILE: the dial is retried
        bool holds_rule_slot = false;   // counted in the rule's active (max_conns)
        bool prereading = false;        // in the pre-dial read phase (accept_proxy, routes)
        uint32_t pool = 0;              // the pool dialed (upstreams::Shared): the rule's own or a route's
        uint32_t client_slot = UINT32_MAX;  // counted in the per-client table (max_conns_per_client)
        // Only for rules that read before dialing, until the upstream is
        // connected: what was read (forwarded first) and the PROXY header's
        // addresses. A pointer, so other connections pay 8 bytes for it.
        std::unique_ptr<preread::Reader> pre;
        // The one timer (timers_, by id) is the dial deadline while dialing,
        // then the next idle or half-close check.
        Clock::time_point last_activity{}, half_closed_at{};
        relay::Direction up;    // client -> upstream
        relay::Direction down;  // upstream -> client
        uint64_t token[2] = {0, 0};  // as registered with the poller; 0: not watched
        bool hung_up[2] = {false, false};
        Clock::time_point started{};
        uint64_t counted_in = 0, counted_out = 0;  // bytes already added to the shared counters
        int8_t reset_by = -1;   // the Side whose socket error aborted the relay, if one did
    };

    // ---- the wait set ---------------------------------------------------

    uint64_t token_for(uint32_t id, Side side) {
        if (++serial_ == 0 || serial_ >= (1u << 31)) serial_ = 1;
        return (static_cast<uint64_t>(serial_) << 32) | (static_cast<uint64_t>(id) << 1) | side;
    }

    int fd_of(const Conn& c, Side side) const { return side == client_side ? c.client.get() : c.upstream.get(); }

    // 0 or the errno (the wait set is out of memory).
    int watch(Conn& c, uint32_t id, Side side, uint32_t events) {
        uint64_t token = token_for(id, side);
        if (int err = poller_.watch(fd_of(c, side), token, events)) return err;
        c.token[side] = token;
        return 0;
    }

    void unwatch(Conn& c, Side side) {
        if (!c.token[side]) return;
        poller_.forget(fd_of(c, side), true);
        c.token[side] = 0;
    }

    int set_events(Conn& c, uint32_t id, Side side, uint32_t events) {
        if (!c.token[side]) return watch(c, id, side, events);  // a client whose dial was quick joins only now
        // A socket shut both ways reports POLLHUP for ever; with nothing to
        // ask of it, it leaves the wait set instead of spinning the loop.
        return poller_.want(fd_of(c, side), (events == 0 && c.hung_up[side]) ? poller::silent : events);
    }

    // What each socket is waited for follows from the relay's state; the
    // poller makes a system call only when that changes.
    int update_events(Conn& c, uint32_t id) {
        if (!c.connected) return set_events(c, id, client_side, 0);  // still told of POLLERR/POLLHUP: a client that gave up
        if (int err = set_events(c, id, client_side, (c.up.wants_read() ? readable : 0) |
                                                         (c.down.has_parked() ? POLLOUT : 0)))
            return err;
        return set_events(c, id, upstream_side,
                          (c.down.wants_read() ? readable : 0) | (c.up.has_parked() ? POLLOUT : 0));
    }

    // A new client joins the wait set (for nothing but POLLERR/POLLHUP: it
    // may reset while we dial) only if its dial outlasts one turn of the
    // loop. Most dials end in the next wait, and the client then joins once,
    // already waiting for its bytes: one epoll_ctl per connection fewer.
    static constexpr int slow_dial_ms = 20;
    void watch_slow_dials() {
        slow_spare_.clear();
        slow_spare_.swap(dialing_unwatched_);
        for (uint32_t id : slow_spare_) {
            Conn& c = *conns_[id];
            if (!c.client || c.connected || c.token[client_side]) continue;  // done, or a later connection's
            if (int err = watch(c, id, client_side, 0)) wait_set_full(id, err);
        }
    }

    // The wait set refused a socket (epoll_ctl: ENOMEM, or ENOSPC from
    // max_user_watches): like running out of descriptors, only this
    // connection pays. It is closed, the worker goes on; logged once per burst.
    void wait_set_full(uint32_t id, int err) {
        std::string more;
        if (throttle_.allow("wait set", now_, more))
            log_.print("%s_ctl: %s; closing the connection from %s%s", poller::name(poller_.backend()),
                       net::errno_text(err).c_str(), conns_[id]->client_address.text().c_str(), more.c_str());
        finish(id, "wait set full", false);
    }

    // ---- the loop's parts ---------------------------------------------

    int wait_timeout(Clock::time_point now) const {
        Clock::time_point wake = now + std::chrono::hours(1);
        if (!timers_.empty()) wake = std::min(wake, timers_.next());
        if (udp_) wake = std::min(wake, udp_->next_deadline());
        if (stopping_) wake = std::min(wake, grace_deadline_);
        if (acceptor_.paused()) wake = std::min(wake, acceptor_.resume_at());
        // A dial that outlasts this wait has its client watched after it
        // (watch_slow_dials): a client resetting meanwhile is seen soon.
        if (!dialing_unwatched_.empty()) wake = std::min(wake, now + std::chrono::milliseconds(slow_dial_ms));
        const std::chrono::milliseconds recheck(paced(balance::Board::recheck_every_ms));
        if (acceptor_.rules_full() && !stopping_) wake = std::min(wake, now + recheck);
        // Others' accept counts change without waking us: a worker held back
        // looks again now and then (see balance.hpp).
        if (board_.count() > 1 && !stopping_ && !acceptor_.listening()) wake = std::min(wake, now + recheck);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count();
        if (wake > now + std::chrono::milliseconds(ms)) ++ms;  // round up: never wake before a deadline
        return static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(ms, 3600 * 1000)));
    }

    int paced(int every_ms) const { return balance::Board::paced(every_ms, poller_.watched()); }

    void handle(const poller::Event& e) {
        if ((e.token & udp_socket_bit) == udp_socket_bit) {
            udp_->on_socket(static_cast<uint32_t>(e.token & 0xffffffffu), now_);
            return;
        }
        if ((e.token & (control_bit | udp_session_bit)) == udp_session_bit) {
            udp_->on_upstream(static_cast<uint32_t>(e.token & 0x7fffffffu), e.token, now_);
            return;
        }
        if (e.token & control_bit) {
            uint64_t which = e.token & ~control_bit;
            if (e.token == wake_token) wake_.drain();
            else if (e.token == parent_token) {
                poller_.forget(settings_.parent_fd, false);  // EOF stays readable: look once
                begin_stop();
            } else {
                acceptor_.mark_ready(static_cast<size_t>(which - 2));
            }
            return;
        }
        uint32_t id = static_cast<uint32_t>(e.token >> 1) & 0x7fffffffu;
        Side side = static_cast<Side>(e.token & 1);
        if (id >= conns_.size() || conns_[id]->token[side] != e.token) return;  // closed earlier this turn
        Conn& c = *conns_[id];
        if (c.prereading) on_preread_event(id, e.events);
        else if (!c.connected) on_dial_event(id, side, e.events);
        else on_relay_event(id, side, e.events);
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
        acceptor_.stop();
        // A UDP socket is no longer read (the next generation's worker reads
        // the very same socket), but kept: live sessions reply through it.
        if (udp_) {
            for (const udp_relay::Socket& sock : udp_->sockets()) poller_.forget(sock.fd, false);
            udp_->begin_stop();
        }
    }

    // ---- UDP (udp_relay.hpp): session sockets in this loop's wait set ----

    uint64_t watch(int fd, uint32_t session) override {
        if (++serial_ == 0 || serial_ >= (1u << 30)) serial_ = 1;
        uint64_t token = udp_session_bit | (static_cast<uint64_t>(serial_) << 32) | session;
        return poller_.watch(fd, token, POLLIN) == 0 ? token : 0;
    }
    void unwatch(int fd) override { poller_.forget(fd, true); }

    // ---- connections --------------------------------------------------

    uint32_t new_conn() {
        if (!free_.empty()) {
            uint32_t id = free_.back();
            free_.pop_back();
            return id;
        }
        conns_.push_back(std::make_unique<Conn>());
        timers_.reserve(conns_.size());
        return static_cast<uint32_t>(conns_.size() - 1);
    }

    // The listener's rule (its index), and the pool the connection dials:
    // that rule's own, or the SNI route chosen (whose settings it then uses).
    size_t rule_of(const Conn& c) const { return acceptor_.rule_of(c.listener); }
    const config::Rule& rule(const Conn& c) const { return *shared_.pool(c.pool).rule; }
    std::string target_text(const Conn& c) const { return dialer_.target_text(c.pool, c.dial); }
    upstreams::UpstreamState& upstream_state(const Conn& c) const { return shared_.pool(c.pool).at(c.dial.target); }

    void start(net::Fd client, const net::SockAddr& peer, size_t listener, size_t client_slot) {
        uint32_t id = new_conn();
        Conn& c = *conns_[id];
        c.client = std::move(client);
        c.client_address = peer;
        c.listener = listener;
        c.client_slot = static_cast<uint32_t>(client_slot);  // SIZE_MAX becomes UINT32_MAX: none
        c.started = c.last_activity = now_;
        c.holds_rule_slot = true;
        c.pool = static_cast<uint32_t>(shared_.rule_pool_index(rule_of(c)));
        c.dial.offset = acceptor_.listener(listener).offset;  // where a ranged upstream goes (any pool of the rule)
        ++live_;
        board_.slot(settings_.index).active.fetch_add(1, std::memory_order_relaxed);
        if (!net::accepted_sockets_inherit_tuning) net::tune_stream(c.client.get());
        const config::Rule& own = rule(c);
        if (own.prereads()) {
            // The PROXY header and/or ClientHello first, under one deadline.
            c.pre.reset(new preread::Reader(own));
            c.prereading = true;
            if (int err = watch(c, id, client_side, readable)) return wait_set_full(id, err);
            timers_.schedule(id, now_ + std::chrono::duration_cast<Clock::duration>(own.policy.preread_timeout));
            return;
        }
        dialing_unwatched_.push_back(id);
        dialer_.plan(c.pool, peer, now_, c.dial);
        dial_next(id);
    }

    // ---- the pre-dial read phase (preread.hpp) ------------------------

    void on_preread_event(uint32_t id, uint32_t events) {
        Conn& c = *conns_[id];
        preread::Reader& pre = *c.pre;
        if (events & (POLLIN | POLLHUP | POLLERR)) {
            while (pre.step() == preread::Step::need_more) {
                size_t room = std::min(pre.room(), relay::buffer_size);
                ssize_t n = ::read(c.client.get(), scratch_.get(), room);
                if (n > 0) {
                    pre.feed(scratch_.get(), static_cast<size_t>(n));
                    continue;
                }
                if (n < 0 && errno == EINTR) continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                pre.ended();  // EOF or an error
            }
        }
        preread_step(id);
    }

    // Acts on the reader's decision, if it has made one.
    void preread_step(uint32_t id) {
        Conn& c = *conns_[id];
        preread::Reader& pre = *c.pre;
        if (pre.step() == preread::Step::need_more) return;
        const size_t rule_index = rule_of(c);
        const upstreams::Pool& own = shared_.rule_pool(rule_index);
        if (pre.step() == preread::Step::reject) {
            const bool unrouted = pre.refusal() == preread::Refusal::unrouted;
            (unrouted ? own.state->unrouted : own.state->bad_preread).fetch_add(1);
            std::string why = std::string(unrouted ? "no route: " : "") + pre.why();
            if (!pre.server_name().empty()) why += " (" + pre.server_name() + ")";
            finish(id, why.c_str(), false);
            return;
        }
        if (pre.has_address()) c.client_address = pre.client();
        if (own.rule->policy.accept_proxy) {
            size_t slot = SIZE_MAX;
            if (!acceptor_.admitted(rule_index, c.client_address, c.listener, now_) ||
                !acceptor_.take_client_slot(rule_index, c.client_address, c.listener, now_, slot)) {
                finish(id, "refused", false);
                return;
            }
            c.client_slot = static_cast<uint32_t>(slot);
        }
        if (pre.route() >= 0)
            c.pool = static_cast<uint32_t>(shared_.route_pool_index(rule_index, static_cast<size_t>(pre.route())));
        c.prereading = false;  // c.pre keeps the bytes for connected()
        timers_.cancel(id);
        if (int err = set_events(c, id, client_side, 0)) return wait_set_full(id, err);
        dialer_.plan(c.pool, c.client_address, now_, c.dial);
        dial_next(id);
    }

    void dial_next(uint32_t id) {
        Conn& c = *conns_[id];
        int err = 0;
        switch (dialer_.next(c.pool, c.dial, c.upstream, c.client_address, now_, err)) {
        case dialer::Outcome::connected:
            if ((err = watch(c, id, upstream_side, POLLOUT))) return wait_set_full(id, err);
            connected(id);
            return;
        case dialer::Outcome::connecting: {
            if ((err = watch(c, id, upstream_side, POLLOUT))) return wait_set_full(id, err);
            Clock::duration limit = dialer_.timeout(c.pool);
            if (limit.count() > 0) timers_.schedule(id, now_ + limit);
            return;
        }
        case dialer::Outcome::no_fds:
            // Retried when one of our connections closes, or after the pause.
            acceptor_.pause(now_, c.listener, err, "socket for");
            c.waiting_for_fds = true;
            waiting_for_fds_.push_back(id);
            timers_.schedule(id, now_ + std::chrono::milliseconds(acceptor::Acceptor::pause_ms));
            return;
        case dialer::Outcome::gave_up:
            finish(id, nullptr, false);
            return;
        }
    }

    void retry_dial(uint32_t id) {
        Conn& c = *conns_[id];
        if (!c.waiting_for_fds) return;
        c.waiting_for_fds = false;
        timers_.cancel(id);
        dial_next(id);
    }

    void drop_dial(Conn& c, uint32_t id) {
        timers_.cancel(id);
        unwatch(c, upstream_side);
        c.upstream.reset();
    }

    void dial_failed(uint32_t id, const std::string& why) {
        Conn& c = *conns_[id];
        dialer_.failed(c.pool, c.dial, why, now_);
        drop_dial(c, id);
        dial_next(id);
    }

    void connected(uint32_t id) {
        Conn& c = *conns_[id];
        timers_.cancel(id);
        c.connected = true;
        c.last_activity = now_;
        dialer_.succeeded(c.pool, c.dial);  // counted in active since its dial began
        arm_relay_timer(c, id);
        if (log_.verbose())  // the arguments cost a clock read, a printf and a malloc
            log_.trace("Connected %s => %s (%s)", acceptor_.listener(c.listener).address.c_str(),
                       target_text(c).c_str(), c.client_address.text().c_str());
        const proxy_protocol::Version proxy = rule(c).policy.proxy;
        if (proxy != proxy_protocol::Version::off || c.pre) {
            // A PROXY header is sent at once, not with the first client byte:
            // with SSH the server speaks first and the client would wait
            // forever. What the client sent before the dial follows it.
            std::string first;
            if (proxy != proxy_protocol::Version::off) {
                net::SockAddr local;  // as the client sees us: a received header's destination
                if (c.pre && c.pre->has_address()) local = c.pre->destination();
                else net::local_address(c.client.get(), local);
                first = proxy_protocol::header(proxy, c.client_address, local);
            }
            size_t client_part = 0;
            if (c.pre) {
                first += c.pre->bytes();
                client_part = c.pre->bytes().size();
                c.pre.reset();
            }
            if (int err = c.up.send_first(c.upstream.get(), first, pool_, client_part)) {
                finish(id, net::errno_text(err).c_str(), true);
                return;
            }
        }
        if (int err = update_events(c, id)) return wait_set_full(id, err);
        // Most clients speak first (HTTP, TLS) and have done so while we
        // dialed: relay that now instead of one wait later. A client that
        // waits for the server costs one read() that finds nothing.
        if (c.up.wants_read()) on_relay_event(id, client_side, POLLIN, false);
    }

    void on_dial_event(uint32_t id, Side side, uint32_t events) {
        Conn& c = *conns_[id];
        if (side == client_side) {
            if (events & (POLLERR | POLLHUP)) finish(id, "client went away while dialing", true);
            return;
        }
        int err = net::connect_error(c.upstream.get(), static_cast<short>(events));
        if (err == 0 && (events & POLLOUT)) {
            connected(id);
            return;
        }
        dial_failed(id, net::errno_text(err ? err : ECONNREFUSED));
    }

    // The relay state machine: one socket of a connected pair is ready.
    // polled: events come from a wait, so a missing POLLERR means the socket
    // had no error then (the relay need not ask it at EOF).
    void on_relay_event(uint32_t id, Side side, uint32_t events, bool polled = true) {
        Conn& c = *conns_[id];
        const int client = c.client.get(), upstream = c.upstream.get();
        const bool from_client = side == client_side;
        relay::Direction& reading = from_client ? c.up : c.down;   // data leaving this socket
        relay::Direction& writing = from_client ? c.down : c.up;   // data going into it
        const int self = from_client ? client : upstream;
        const int other = from_client ? upstream : client;
        if (events & POLLHUP) c.hung_up[side] = true;

        // Whose socket an error comes from: this one, unless a Direction
        // says it was the other end of its stream.
        const Side peer = from_client ? upstream_side : client_side;
        Side failed = side;
        int err = 0;
        if ((events & POLLERR) && !(events & POLLIN)) err = net::pending_error(self);
        if (!err && (events & POLLOUT) && writing.has_parked()) {
            err = writing.flush(self, pool_, pipes_);
            if (err && writing.fault_at_source()) failed = peer;
        }
        if (!err && (events & (POLLIN | POLLHUP | POLLERR)) && reading.wants_read()) {
            err = reading.pump(self, other, scratch_.get(), pool_, pipes_, (events & source_shut) != 0,
                               !polled || (events & POLLERR) != 0);
            if (err && !reading.fault_at_source()) failed = peer;
        }
        if (!err && (events & POLLERR) && !reading.wants_read() && !writing.has_parked())
            err = reading.source_failed(net::pending_error(self), other);
        if (count_bytes(c)) c.last_activity = now_;
        if (err) {
            c.reset_by = static_cast<int8_t>(failed);
            finish(id, net::errno_text(err).c_str(), true);
            return;
        }
        if (c.up.finished() && c.down.finished()) {
            finish(id, nullptr, false);
            return;
        }
        if ((c.up.finished() || c.down.finished()) && c.half_closed_at == Clock::time_point{}) {
            if (c.up.finished()) c.down.other_way_finished();
            if (c.down.finished()) c.up.other_way_finished();
            c.half_closed_at = now_;
            if (rule(c).policy.halfclose_timeout.count() > 0) arm_relay_timer(c, id);
        }
        if (int e = update_events(c, id)) wait_set_full(id, e);
    }

    // ---- timers ---------------------------------------------------------

    void expire_timers(Clock::time_point now) {
        for (uint32_t id; (id = timers_.pop_due(now)) != UINT32_MAX;) on_timer(id, now);
    }

    void on_timer(uint32_t id, Clock::time_point now) {
        Conn& c = *conns_[id];
        if (c.prereading) {
            c.pre->timed_out();
            preread_step(id);
            return;
        }
        if (c.waiting_for_fds) {
            retry_dial(id);
            return;
        }
        if (!c.connected) {
            // The socket is closed here, so a late SYN-ACK can never be used.
            auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(dialer_.timeout(c.pool)).count();
            dial_failed(id, "i/o timeout after " + std::to_string(ms) + "ms");
            return;
        }
        const config::Policy& policy = rule(c).policy;
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
        const config::Policy& policy = rule(c).policy;
        Clock::time_point next = Clock::time_point::max();
        if (policy.idle_timeout.count() > 0)
            next = std::min(next, c.last_activity + std::chrono::duration_cast<Clock::duration>(policy.idle_timeout));
        if (policy.halfclose_timeout.count() > 0 && c.half_closed_at != Clock::time_point{})
            next = std::min(next, c.half_closed_at +
                                      std::chrono::duration_cast<Clock::duration>(policy.halfclose_timeout));
        if (next != Clock::time_point::max()) timers_.schedule(id, next);
    }

    // ---- the end of a connection ----------------------------------------

    // Returns whether anything moved since the last call.
    bool count_bytes(Conn& c) {
        upstreams::UpstreamState& state = upstream_state(c);
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
        const std::string& from = acceptor_.listener(c.listener).address;
        if (c.connected) {
            // Whole milliseconds, printed without floating point (which would
            // pull printf's float code into a static binary).
            long long ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - c.started).count();
            char extra[192] = "";
            if (reason)
                snprintf(extra, sizeof extra, " error=\"%s\"%s", reason,
                         c.reset_by < 0 ? "" : c.reset_by == client_side ? " reset_by=client" : " reset_by=upstream");
            log_.trace("Closed %s => %s (%s) bytes_in=%" PRIu64 " bytes_out=%" PRIu64 " duration=%lld.%03llds%s",
                       from.c_str(), target_text(c).c_str(), c.client_address.text().c_str(), c.up.bytes(),
                       c.down.bytes(), ms / 1000, ms % 1000, extra);
        } else if (reason) {
            log_.trace("Closed %s => - (%s) %s", from.c_str(), c.client_address.text().c_str(), reason);
        }
    }

    // The one way a connection ends: logs exactly one line, frees both
    // sockets. abort: send RST, so an error on one side stays an error on
    // the other instead of looking like a clean end.
    void finish(uint32_t id, const char* reason, bool abort) {
        Conn& c = *conns_[id];
        timers_.cancel(id);
        if (c.holds_rule_slot) acceptor_.release_rule_slot(rule_of(c));
        if (c.client_slot != UINT32_MAX) acceptor_.release_client_slot(c.client_slot);
        if (log_.verbose()) log_closed(c, reason);
        if (c.connected && c.reset_by >= 0) {
            upstreams::UpstreamState& state = upstream_state(c);
            (c.reset_by == client_side ? state.client_resets : state.upstream_resets).fetch_add(1);
        }
        dialer_.release(c.pool, c.dial);  // its place in the target's active count
        if (abort) {
            if (c.client) net::set_abortive_close(c.client.get());
            if (c.upstream) net::set_abortive_close(c.upstream.get());
        }
        // Counted out before the sockets close: a client that sees the close
        // and asks for the stats at once must not find it still active.
        board_.slot(settings_.index).active.fetch_sub(1, std::memory_order_relaxed);
        unwatch(c, upstream_side);
        unwatch(c, client_side);
        c.up.release(pool_, pipes_);
        c.down.release(pool_, pipes_);
        dialer::Dial dial = std::move(c.dial);  // keeps its order's capacity for the next connection
        dial.reset();
        *conns_[id] = Conn();  // closes both sockets
        conns_[id]->dial = std::move(dial);
        free_.push_back(id);
        if (--live_ == 0) pipes_.clear();
        descriptors_freed_ = true;
    }

    // Descriptors were freed this turn: dials waiting for one go first,
    // then accepting resumes (issue 20.4: not after a fixed pause).
    void after_descriptors_freed() {
        descriptors_freed_ = false;
        waiting_spare_.clear();
        waiting_spare_.swap(waiting_for_fds_);
        for (uint32_t id : waiting_spare_) retry_dial(id);  // one still short puts itself back
        if (waiting_for_fds_.empty()) acceptor_.descriptors_freed();
    }

    void abort_all() {
        for (uint32_t id = 0; id < conns_.size(); ++id)
            if (conns_[id]->client) finish(id, "shutting down", true);
        if (udp_) udp_->finish_all("shutting down");
    }

    const upstreams::Shared& shared_;
    Settings settings_;
    const mixlog::Logger& log_;
    balance::Board& board_;
    poller::Poller poller_;
    acceptor::Acceptor acceptor_;
    dialer::Dialer dialer_;
    udp_relay::Relay* udp_;

    signals::SelfPipe wake_;
    std::vector<std::unique_ptr<Conn>> conns_;
    std::vector<uint32_t> free_;
    std::vector<uint32_t> waiting_for_fds_, waiting_spare_;
    std::vector<uint32_t> dialing_unwatched_, slow_spare_;  // started, client not yet in the wait set
    size_t live_ = 0;
    uint32_t serial_ = 0;
    timers::Queue timers_;
    Clock::time_point now_{};  // this turn's time: one clock read per turn, not per event
    mixlog::Throttle throttle_;
    bool descriptors_freed_ = false;
    relay::BufferPool pool_;
    relay::PipePool pipes_;
    std::unique_ptr<char[]> scratch_;

    bool stopping_ = false;
    Clock::time_point grace_deadline_{};
};

}  // namespace worker
