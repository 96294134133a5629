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

namespace worker {

using Clock = std::chrono::steady_clock;

// One upstream of a rule, resolved by the parent.
struct Target {
    std::string text;
    std::vector<net::SockAddr> addresses;
};

// What a rule means to a worker.
struct Route {
    std::string name;
    std::vector<Target> targets;
};

struct Listener {
    net::Fd fd;
    size_t route = 0;
    std::string address;  // as bound, e.g. "127.0.0.1:41000"
};

struct Settings {
    int index = 0;                          // slot on the balance board
    Clock::duration dial_timeout{};         // zero: no deadline
    Clock::duration grace{};
    int parent_fd = -1;                     // EOF here means the parent is gone
};

inline int64_t to_ms(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

class Worker {
public:
    Worker(const std::vector<Route>& routes, std::vector<Listener>& listeners, const Settings& settings,
           const mixlog::Logger& log, balance::Board& board)
        : routes_(routes), listeners_(listeners), settings_(settings), log_(log), board_(board),
          scratch_(new char[relay::buffer_size]) {
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
        first_conn_slot_ = slots_.size();

        for (;;) {
            check_signals();
            Clock::time_point now = Clock::now();
            expire_dials(now);
            if (stopping_ && live_ == 0) return 0;
            if (stopping_ && now >= grace_deadline_) {
                log_.print("worker %d: grace period over, closing %zu connections", settings_.index, live_);
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
            handle_control();
            handle_connections();
            handle_listeners();
        }
    }

private:
    static constexpr uint32_t control_owner = UINT32_MAX;
    enum Side : uint8_t { client_side = 0, upstream_side = 1 };

    struct Owner {
        uint32_t conn;
        Side side;
    };

    struct Conn {
        net::Fd client, upstream;
        net::SockAddr client_address;
        size_t listener = 0;
        bool connected = false;
        // Dial order: target (first + k * stride) % n for k = 0, 1, ...
        uint32_t first = 0, stride = 1, step = 0, address = 0, attempts = 0;
        Clock::time_point dial_deadline{};
        bool has_deadline = false;
        relay::Direction up;    // client -> upstream
        relay::Direction down;  // upstream -> client
        int slot[2] = {-1, -1};
        bool hung_up[2] = {false, false};
        Clock::time_point started{};
        const net::SockAddr* dialed = nullptr;
        size_t target = 0;
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
            conns_[moved.conn]->slot[moved.side] = static_cast<int>(index);
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
        set_events(c, client_side, static_cast<short>((c.up.wants_read() ? POLLIN : 0) |
                                                      (c.down.has_parked() ? POLLOUT : 0)));
        set_events(c, upstream_side, static_cast<short>((c.down.wants_read() ? POLLIN : 0) |
                                                        (c.up.has_parked() ? POLLOUT : 0)));
    }

    // ---- the loop's parts ---------------------------------------------

    int poll_timeout(Clock::time_point now) const {
        Clock::time_point wake = now + std::chrono::hours(1);
        if (!dial_deadlines_.empty()) wake = std::min(wake, dial_deadlines_.begin()->first);
        if (stopping_) wake = std::min(wake, grace_deadline_);
        if (paused_) wake = std::min(wake, resume_accept_);
        if (board_.count() > 1 && !stopping_) wake = std::min(wake, now + std::chrono::milliseconds(balance::Board::heartbeat_every_ms));
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count();
        if (wake > now + std::chrono::milliseconds(ms)) ++ms;  // round up: never wake before a deadline
        return static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(ms, 3600 * 1000)));
    }

    void handle_control() {
        if (pollfds_[0].revents) wake_.drain();
        if (pollfds_[1].revents) {
            pollfds_[1].fd = -1;  // EOF stays readable: look once
            begin_stop();
        }
    }

    // Checked every turn, not only when the self-pipe is readable: a signal
    // that came before the pipe existed must not wait for the next wakeup.
    void check_signals() {
        if (!signals::arrived.stop) return;
        signals::arrived.stop = 0;
        if (!stopping_) {
            begin_stop();
            return;
        }
        log_.print("worker %d: stopping now, closing %zu connections", settings_.index, live_);
        abort_all();
        _exit(0);
    }

    void begin_stop() {
        if (stopping_) return;
        stopping_ = true;
        grace_deadline_ = Clock::now() + settings_.grace;
        for (size_t i = 0; i < listeners_.size(); ++i) {
            pollfds_[2 + i].fd = -1;
            listeners_[i].fd.reset();
        }
    }

    void arm_listeners(Clock::time_point now) {
        if (stopping_) return;
        if (paused_ && now >= resume_accept_) paused_ = false;
        bool on = !paused_ && board_.may_accept(settings_.index, to_ms(now));
        if (on == listening_) return;
        listening_ = on;
        for (size_t i = 0; i < listeners_.size(); ++i)
            pollfds_[2 + i].fd = on ? listeners_[i].fd.get() : -1;
    }

    void handle_listeners() {
        for (size_t i = 0; i < listeners_.size() && !stopping_; ++i) {
            if (pollfds_[2 + i].revents & POLLIN) accept_batch(i);
        }
    }

    void accept_batch(size_t index) {
        const int listener = listeners_[index].fd.get();
        for (int n = 0; n < 64; ++n) {
            if (!board_.may_accept(settings_.index, to_ms(Clock::now()))) return;
            net::SockAddr peer;
            net::Fd client = net::accept_client(listener, peer);
            if (!client) {
                int err = errno;
                if (err == EAGAIN || err == EWOULDBLOCK) return;
                if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
                if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                    pause_accepting(index, err);
                    return;
                }
                log_.print("accept %s: %s", listeners_[index].address.c_str(), net::errno_text(err).c_str());
                return;
            }
            if (pauses_ > 0) {
                log_.print("worker %d: accepting again after %" PRIu64 " pauses for lack of file descriptors",
                           settings_.index, pauses_);
                pauses_ = 0;
            }
            board_.slot(settings_.index).accepted.fetch_add(1, std::memory_order_relaxed);
            start(std::move(client), peer, index);
        }
    }

    // Out of descriptors: a level-triggered listener would wake us a million
    // times a second. Look away for a moment; connections wait in the backlog.
    void pause_accepting(size_t index, int err) {
        if (pauses_++ == 0)
            log_.print("accept %s: %s; pausing accepts for %dms (logged once per burst)",
                       listeners_[index].address.c_str(), net::errno_text(err).c_str(), pause_ms);
        paused_ = true;
        resume_accept_ = Clock::now() + std::chrono::milliseconds(pause_ms);
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

    static uint32_t gcd(uint32_t a, uint32_t b) { return b == 0 ? a : gcd(b, a % b); }

    void start(net::Fd client, const net::SockAddr& peer, size_t listener) {
        uint32_t id = new_conn();
        Conn& c = *conns_[id];
        c.client = std::move(client);
        c.client_address = peer;
        c.listener = listener;
        c.started = Clock::now();
        net::tune_stream(c.client.get());
        // Uniform first choice, like the Go tool; a random stride coprime to
        // n visits every other upstream once, in a shuffled order.
        uint32_t n = static_cast<uint32_t>(route_of(c).targets.size());
        c.first = static_cast<uint32_t>(next_random() % n);
        c.stride = 1;
        if (n > 2) {
            do c.stride = 1 + static_cast<uint32_t>(next_random() % (n - 1));
            while (gcd(c.stride, n) != 1);
        }
        c.slot[client_side] = static_cast<int>(add_slot(c.client.get(), 0, id, client_side));
        ++live_;
        board_.slot(settings_.index).active.fetch_add(1, std::memory_order_relaxed);
        dial_next(id);
    }

    const Route& route_of(const Conn& c) const { return routes_[listeners_[c.listener].route]; }

    // Tries the current (target, address) and on to the next ones until a
    // connect is under way or has succeeded; with none left, gives up.
    void dial_next(uint32_t id) {
        Conn& c = *conns_[id];
        const Route& route = route_of(c);
        const uint32_t n = static_cast<uint32_t>(route.targets.size());
        while (c.step < n) {
            c.target = (c.first + c.step * c.stride) % n;
            const Target& target = route.targets[c.target];
            if (c.address >= target.addresses.size()) {
                ++c.step;
                c.address = 0;
                continue;
            }
            c.dialed = &target.addresses[c.address++];
            ++c.attempts;
            int rc = net::dial_start(*c.dialed, c.upstream);
            if (rc == 0) {
                c.slot[upstream_side] = static_cast<int>(add_slot(c.upstream.get(), POLLOUT, id, upstream_side));
                connected(id);
                return;
            }
            if (rc == EINPROGRESS) {
                c.slot[upstream_side] = static_cast<int>(add_slot(c.upstream.get(), POLLOUT, id, upstream_side));
                if (settings_.dial_timeout.count() > 0) {
                    c.dial_deadline = Clock::now() + settings_.dial_timeout;
                    c.has_deadline = true;
                    dial_deadlines_.emplace(c.dial_deadline, id);
                }
                return;
            }
            log_dial_error(c, net::errno_text(rc));
        }
        log_.print("error: no upstream of (%s) reachable for %s: %u attempts failed", route.name.c_str(),
                   c.client_address.text().c_str(), c.attempts);
        finish(id, nullptr, false);
    }

    void log_dial_error(const Conn& c, const std::string& why) {
        const Target& target = route_of(c).targets[c.target];
        std::string address = c.dialed->text();
        if (address == target.text)
            log_.print("error dialing %s: %s", target.text.c_str(), why.c_str());
        else
            log_.print("error dialing %s (%s): %s", target.text.c_str(), address.c_str(), why.c_str());
    }

    void drop_dial(Conn& c, uint32_t id) {
        drop_dial_deadline(c, id);
        if (c.slot[upstream_side] >= 0) remove_slot(static_cast<size_t>(c.slot[upstream_side]));
        c.slot[upstream_side] = -1;
        c.upstream.reset();
    }

    void dial_failed(uint32_t id, const std::string& why) {
        Conn& c = *conns_[id];
        log_dial_error(c, why);
        drop_dial(c, id);
        dial_next(id);
    }

    void connected(uint32_t id) {
        Conn& c = *conns_[id];
        drop_dial_deadline(c, id);
        c.connected = true;
        log_.trace("Connected %s => %s (%s)", listeners_[c.listener].address.c_str(),
                   route_of(c).targets[c.target].text.c_str(), c.client_address.text().c_str());
        update_events(c);
    }

    void expire_dials(Clock::time_point now) {
        while (!dial_deadlines_.empty() && dial_deadlines_.begin()->first <= now) {
            uint32_t id = dial_deadlines_.begin()->second;
            dial_deadlines_.erase(dial_deadlines_.begin());
            Conn& c = *conns_[id];
            c.has_deadline = false;
            // The socket is closed below, so a late SYN-ACK can never be used.
            std::string why = "i/o timeout after " + std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(settings_.dial_timeout).count()) + "ms";
            dial_failed(id, why);
        }
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
        int err = net::pending_error(c.upstream.get());
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
        if (!err && (revents & POLLOUT) && writing.has_parked()) err = writing.flush(self, pool_);
        if (!err && (revents & (POLLIN | POLLHUP | POLLERR)) && reading.wants_read())
            err = reading.pump(self, other, scratch_.get(), pool_);
        if (!err && (revents & POLLERR) && !reading.wants_read() && !writing.has_parked())
            err = net::pending_error(self);
        if (err) {
            finish(owner.conn, net::errno_text(err).c_str(), true);
            return;
        }
        if (c.up.finished() && c.down.finished()) {
            finish(owner.conn, nullptr, false);
            return;
        }
        update_events(c);
    }

    // The one way a connection ends: logs exactly one line, frees both
    // sockets. abort: send RST, so an error on one side stays an error on
    // the other instead of looking like a clean end.
    void finish(uint32_t id, const char* reason, bool abort) {
        Conn& c = *conns_[id];
        drop_dial_deadline(c, id);
        if (c.connected) {
            double seconds = std::chrono::duration<double>(Clock::now() - c.started).count();
            char extra[160] = "";
            if (reason) snprintf(extra, sizeof extra, " error=\"%s\"", reason);
            log_.trace("Closed %s => %s (%s) bytes_in=%" PRIu64 " bytes_out=%" PRIu64 " duration=%.3fs%s",
                       listeners_[c.listener].address.c_str(), route_of(c).targets[c.target].text.c_str(),
                       c.client_address.text().c_str(), c.up.bytes(), c.down.bytes(), seconds, extra);
        } else if (reason) {
            log_.trace("Closed %s => - (%s) %s", listeners_[c.listener].address.c_str(),
                       c.client_address.text().c_str(), reason);
        }
        if (abort) {
            if (c.client) net::set_abortive_close(c.client.get());
            if (c.upstream) net::set_abortive_close(c.upstream.get());
        }
        for (Side side : {upstream_side, client_side}) {
            if (c.slot[side] >= 0) remove_slot(static_cast<size_t>(c.slot[side]));
        }
        c.up.release(pool_);
        c.down.release(pool_);
        *conns_[id] = Conn();  // closes both sockets
        free_.push_back(id);
        --live_;
        board_.slot(settings_.index).active.fetch_sub(1, std::memory_order_relaxed);
    }

    void drop_dial_deadline(Conn& c, uint32_t id) {
        if (c.has_deadline) dial_deadlines_.erase({c.dial_deadline, id});
        c.has_deadline = false;
    }

    void abort_all() {
        for (uint32_t id = 0; id < conns_.size(); ++id)
            if (conns_[id]->client) finish(id, "shutting down", true);
    }

    static constexpr int pause_ms = 200;

    const std::vector<Route>& routes_;
    std::vector<Listener>& listeners_;
    Settings settings_;
    const mixlog::Logger& log_;
    balance::Board& board_;

    signals::SelfPipe wake_;
    std::vector<pollfd> pollfds_;
    std::vector<Owner> slots_;
    size_t first_conn_slot_ = 0;
    std::vector<std::unique_ptr<Conn>> conns_;
    std::vector<uint32_t> free_;
    size_t live_ = 0;
    std::set<std::pair<Clock::time_point, uint32_t>> dial_deadlines_;
    relay::BufferPool pool_;
    std::unique_ptr<char[]> scratch_;
    uint64_t random_state_;

    bool stopping_ = false;
    Clock::time_point grace_deadline_{};
    bool listening_ = true;  // listener slots start armed
    bool paused_ = false;
    Clock::time_point resume_accept_{};
    uint64_t pauses_ = 0;
};

}  // namespace worker
