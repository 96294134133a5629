// udp_relay.hpp - UDP rules: the per-worker sockets, the session table and the relay of datagrams.
// Owns UDP sessions only; it must not touch TCP connections or the process model (mixctl.cpp forks).
//
// Why long: sessions keyed by (client, local address), replies from the address the client sent
// to (IP_PKTINFO), eviction and timeouts, and per-datagram accounting are one state machine.
#pragma once

#include <chrono>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>

#include "config.hpp"
#include "log.hpp"
#include "net.hpp"
#include "udp_batch.hpp"
#include "upstreams.hpp"

namespace udp_relay {

// With one UDP socket shared by every worker, any worker could read any
// datagram and a client's flow would be split across session tables. On
// Linux each worker gets its own SO_REUSEPORT socket per port, bound by the
// parent: the kernel hashes a flow (addresses and ports) to one socket, and
// a respawned worker takes over the very same socket, datagrams queued on
// it included. Where SO_REUSEPORT does not balance (BSD, macOS: the last
// socket bound gets everything) or in the POSIX-only build, one socket per
// port is bound and worker 0 serves every UDP rule.
#if defined(__linux__) && defined(SO_REUSEPORT) && !defined(MIXCTL_POSIX_ONLY)
constexpr bool per_worker_sockets = true;
#else
constexpr bool per_worker_sockets = false;
#endif

inline int sockets_per_port(size_t workers) {
    return per_worker_sockets && workers > 1 ? static_cast<int>(workers) : 1;
}

inline bool is_wildcard(const net::SockAddr& a) {
    if (a.family() == AF_INET) return reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_addr.s_addr == INADDR_ANY;
    if (a.family() == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(&a.storage)->sin6_addr);
    return false;
}

// A nonblocking UDP socket bound to `addr`. On a wildcard address the
// kernel is asked for each datagram's destination (IP_PKTINFO,
// IPV6_RECVPKTINFO), so that a reply leaves from the address the client
// sent to: clients drop replies from any other.
inline net::Fd bind_socket(const net::SockAddr& addr, bool reuseport, std::string& error) {
    net::Fd fd(::socket(addr.family(), SOCK_DGRAM, 0));
    if (!fd || !net::set_nonblock_cloexec(fd.get())) {
        error = "socket: " + net::errno_text(errno);
        return net::Fd();
    }
    net::set_int_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1);
#ifdef SO_REUSEPORT
    if (reuseport) net::set_int_option(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1);
#else
    (void)reuseport;
#endif
    if (addr.family() == AF_INET6) net::set_int_option(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0);
    if (is_wildcard(addr)) {
#ifdef IP_PKTINFO
        if (addr.family() == AF_INET) net::set_int_option(fd.get(), IPPROTO_IP, IP_PKTINFO, 1);
#endif
#ifdef IPV6_RECVPKTINFO
        if (addr.family() == AF_INET6) {
            net::set_int_option(fd.get(), IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
#ifdef IP_PKTINFO
            net::set_int_option(fd.get(), IPPROTO_IP, IP_PKTINFO, 1);  // IPv4 clients of a dual-stack socket
#endif
        }
#endif
    }
    if (::bind(fd.get(), addr.get(), addr.length) < 0) {
        error = "bind " + addr.text() + ": " + net::errno_text(errno);
        return net::Fd();
    }
    return fd;
}

using Clock = std::chrono::steady_clock;

constexpr size_t max_datagram = udp_batch::max_datagram;
// Datagrams read with one call (udp_batch.hpp), and calls per readable
// socket per loop turn: at most 64 datagrams, so one busy flow cannot
// starve the others.
constexpr int batch = 32;
constexpr int rounds = 2;

// Where a datagram arrived: the address the client sent to. On a wildcard
// socket it comes from IP_PKTINFO / IPV6_PKTINFO, otherwise it is the
// socket's own address.
struct Local {
    net::SockAddr address;
    bool from_pktinfo = false;
};

// (client address, local address, listening socket): a flow. Fixed size and
// compared bytewise, so finding a session costs no allocation.
struct Key {
    unsigned char bytes[44] = {};
    bool operator==(const Key& other) const { return memcmp(bytes, other.bytes, sizeof bytes) == 0; }
};

struct KeyHash {
    size_t operator()(const Key& k) const { return static_cast<size_t>(upstreams::hash_bytes(k.bytes, sizeof k.bytes, 0)); }
};

// IP and port of an address in 18 bytes; IPv4-mapped IPv6 written as IPv4,
// so a client is one client whichever way the socket reports it.
inline void put_address(const net::SockAddr& a, unsigned char* out) {
    if (a.family() == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&a.storage);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &in->sin_addr, 4);
        memcpy(out + 16, &in->sin_port, 2);
    } else if (a.family() == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a.storage);
        memcpy(out, &in6->sin6_addr, 16);
        memcpy(out + 16, &in6->sin6_port, 2);
    }
}

inline Key make_key(const net::SockAddr& client, const net::SockAddr& local, uint32_t socket) {
    Key k;
    put_address(client, k.bytes);
    put_address(local, k.bytes + 18);
    memcpy(k.bytes + 36, &socket, sizeof socket);
    return k;
}

// One receiving socket of this worker (a port of a UDP rule).
struct Socket {
    int fd = -1;
    size_t rule = 0;
    uint16_t offset = 0;     // port - the rule's first port
    std::string address;     // as bound
    net::SockAddr bound;
    bool wildcard = false;   // replies need the local address chosen per datagram
};

struct Session {
    Key key;
    net::SockAddr client;
    Local local;
    uint32_t socket = 0;     // index into the worker's Sockets
    net::Fd upstream;        // connected to the upstream: the kernel filters other sources
    size_t target = 0;       // index into the rule's `to`
    net::SockAddr dialed;
    Clock::time_point started{}, last_activity{};
    uint64_t datagrams_in = 0, datagrams_out = 0, bytes_in = 0, bytes_out = 0;
    uint64_t token = 0;      // the loop's name for `upstream` (0: not watched)
    uint32_t prev = none, next = none;  // the rule's list, least recently active first
    bool live = false;
    static constexpr uint32_t none = UINT32_MAX;
};

// What the relay needs from the worker's loop (poller.hpp underneath): to
// be told when a session's upstream socket is readable. The loop hands the
// event back to on_upstream with the token watch() returned; a token that
// no longer matches is a stale event for a session that ended this turn.
class Loop {
public:
    virtual uint64_t watch(int fd, uint32_t session) = 0;  // the token, or 0 when the wait set refused it
    virtual void unwatch(int fd) = 0;                      // fd is about to be closed
protected:
    ~Loop() = default;
};

// One worker's UDP side: its sockets, its session table (bounded per rule by
// max_sessions, least recently active evicted first) and the relay.
class Relay {
public:
    Relay(const upstreams::Shared& shared, std::vector<Socket> sockets, int worker, const mixlog::Logger& log,
          const std::vector<std::vector<net::SockAddr>>* sources)
        : shared_(shared), sockets_(std::move(sockets)), worker_(worker), log_(log), sources_(sources),
          batch_(batch), lists_(shared.rules()) {
        random_state_ = static_cast<uint64_t>(getpid()) * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    }

    void attach(Loop& loop) { loop_ = &loop; }
    const std::vector<Socket>& sockets() const { return sockets_; }
    size_t live() const { return live_; }

    // The socket's datagrams, read a batch at a time: each goes to its
    // flow's session, which is made on the first one. A batch's datagrams
    // are grouped per session (in order within each) and each group goes
    // upstream with one call.
    void on_socket(uint32_t index, Clock::time_point now) {
        const Socket& sock = sockets_[index];
        const upstreams::Pool& pool = shared_.rule_pool(sock.rule);
        for (int round = 0; round < rounds; ++round) {
            const int count = batch_.receive(sock.fd, batch, true, sock.wildcard);
            groups_.clear();
            for (int i = 0; i < count; ++i) {
                if (batch_.truncated(i)) {
                    pool.state->dropped.fetch_add(1);
                    continue;
                }
                Local local;
                local.address = sock.bound;
                if (sock.wildcard) read_destination(batch_.header(i), sock.bound.port(), local);
                const net::SockAddr& client = batch_.sender(i);
                Key key = make_key(client, local.address, index);
                auto found = table_.find(key);
                uint32_t id;
                if (found != table_.end()) {
                    id = found->second;
                } else {
                    // Opening may evict a session: what waits for one goes first.
                    forward_groups(now);
                    id = open(index, key, client, local, now);
                    if (id == Session::none) continue;
                }
                group(id, i);
                // responses: 0 ends a session at its first datagram, so
                // each datagram is a session of its own, as one at a time.
                if (pool.rule->policy.responses == 0) forward_groups(now);
            }
            forward_groups(now);
            if (count < batch) return;  // the socket is empty (or its error waits for the next turn)
        }
    }

    // The session's upstream socket is readable: replies go to the client,
    // from the address it sent to, a batch at a time.
    void on_upstream(uint32_t id, uint64_t token, Clock::time_point now) {
        if (id >= sessions_.size() || sessions_[id]->token != token) return;  // ended earlier this turn
        for (int round = 0; round < rounds; ++round) {
            Session& s = *sessions_[id];
            const upstreams::Pool& pool = pool_of(s);
            const int responses = pool.rule->policy.responses;
            int want = batch;
            // Never read past the last reply the session may relay.
            if (responses != config::responses_unlimited)
                want = static_cast<int>(std::min<uint64_t>(static_cast<uint64_t>(want),
                                                           static_cast<uint64_t>(responses) - s.datagrams_out));
            const int count = batch_.receive(s.upstream.get(), want, false, false);
            const int err = batch_.error();
            batch_.clear();
            const size_t control_length = s.local.from_pktinfo ? source_control(s) : 0;
            for (int i = 0; i < count; ++i) {
                if (batch_.truncated(i)) pool.state->dropped.fetch_add(1);
                else
                    batch_.add(i, batch_.size(i), &s.client, control_length ? reply_control_ : nullptr, control_length);
            }
            uint64_t sent = 0, bytes = 0;
            for (int first = 0; first < batch_.outgoing();) {
                int n = batch_.send(sockets_[s.socket].fd, first);
                if (n < 0) {
                    pool.state->dropped.fetch_add(1);  // a full send buffer: lost, as on the wire
                    ++first;
                    continue;
                }
                for (int j = first; j < first + n; ++j) bytes += batch_.outgoing_size(j);
                sent += static_cast<uint64_t>(n);
                first += n;
            }
            if (sent) {
                s.datagrams_out += sent;
                s.bytes_out += bytes;
                upstreams::UpstreamState& state = pool.at(s.target);
                state.datagrams_out.fetch_add(sent);
                state.bytes_out.fetch_add(bytes);
                touch(id, now);
            }
            if (responses != config::responses_unlimited && s.datagrams_out >= static_cast<uint64_t>(responses)) {
                finish(id, "responses");
                return;
            }
            if (err) {
                upstream_error(id, err, now);
                return;
            }
            if (count < want) return;
        }
    }

    // Sessions idle for their rule's idle_timeout end. Each rule's list is
    // ordered by last activity, so only its head is ever looked at.
    void expire(Clock::time_point now) {
        for (size_t r = 0; r < lists_.size(); ++r) {
            const Clock::duration idle = idle_of(r);
            while (lists_[r].head != Session::none && sessions_[lists_[r].head]->last_activity + idle <= now)
                finish(lists_[r].head, "idle timeout");
        }
    }

    // When expire() next has work: the oldest session of each rule.
    Clock::time_point next_deadline() const {
        Clock::time_point next = Clock::time_point::max();
        for (size_t r = 0; r < lists_.size(); ++r) {
            if (lists_[r].head == Session::none) continue;
            next = std::min(next, sessions_[lists_[r].head]->last_activity + idle_of(r));
        }
        return next;
    }

    // The worker stops (a reload or a stop): its sockets are read by the
    // next generation, so a session here only waits for replies to what it
    // already sent. Once quiet for `drain_idle` (or its idle_timeout, if
    // shorter) it ends, instead of holding the worker for all of -grace.
    static constexpr std::chrono::seconds drain_idle{1};
    void begin_stop() { stopping_ = true; }

    void finish_all(const char* reason) {
        for (uint32_t id = 0; id < sessions_.size(); ++id)
            if (sessions_[id]->live) finish(id, reason);
    }

private:
    struct List {
        uint32_t head = Session::none, tail = Session::none;
        size_t count = 0;
    };
    // A batch's datagrams waiting to go up one session's socket: slots
    // first..last, chained through next_slot_.
    struct Group {
        uint32_t session;
        int first, last;
    };

    const upstreams::Pool& pool_of(const Session& s) const { return shared_.rule_pool(sockets_[s.socket].rule); }

    Clock::duration idle_of(size_t rule) const {
        auto idle = std::chrono::duration_cast<Clock::duration>(shared_.rule_pool(rule).rule->policy.idle_timeout);
        return stopping_ ? std::min<Clock::duration>(idle, drain_idle) : idle;
    }

    static void read_destination(msghdr& msg, uint16_t port, Local& local) {
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
#ifdef IP_PKTINFO
            if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
                in_pktinfo info;
                memcpy(&info, CMSG_DATA(c), sizeof info);
                auto* in = reinterpret_cast<sockaddr_in*>(&local.address.storage);
                local.address = net::SockAddr();
                in->sin_family = AF_INET;
                in->sin_addr = info.ipi_addr;
                in->sin_port = htons(port);
                local.address.length = sizeof *in;
                local.from_pktinfo = true;
                return;
            }
#endif
#ifdef IPV6_PKTINFO
            if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
                in6_pktinfo info;
                memcpy(&info, CMSG_DATA(c), sizeof info);
                local.address = net::SockAddr();
                if (IN6_IS_ADDR_V4MAPPED(&info.ipi6_addr)) {
                    auto* in = reinterpret_cast<sockaddr_in*>(&local.address.storage);
                    in->sin_family = AF_INET;
                    memcpy(&in->sin_addr, &info.ipi6_addr.s6_addr[12], 4);
                    in->sin_port = htons(port);
                    local.address.length = sizeof *in;
                } else {
                    auto* in6 = reinterpret_cast<sockaddr_in6*>(&local.address.storage);
                    in6->sin6_family = AF_INET6;
                    in6->sin6_addr = info.ipi6_addr;
                    in6->sin6_port = htons(port);
                    local.address.length = sizeof *in6;
                }
                local.from_pktinfo = true;
                // An IP_PKTINFO, if there is one too, says the same for IPv4.
            }
#endif
        }
    }

    // The ancillary data that makes a reply leave from the address the
    // client sent to (a wildcard socket), in reply_control_; its length.
    size_t source_control(const Session& s) {
        const Socket& sock = sockets_[s.socket];
        memset(reply_control_, 0, sizeof reply_control_);
        const net::SockAddr& from = s.local.address;
        cmsghdr* c = reinterpret_cast<cmsghdr*>(reply_control_);
#ifdef IP_PKTINFO
        if (from.family() == AF_INET) {
            in_pktinfo info{};
            info.ipi_spec_dst = reinterpret_cast<const sockaddr_in*>(&from.storage)->sin_addr;
            // An IPv6 socket takes the source of an IPv4 reply as a mapped IPV6_PKTINFO.
            if (sock.bound.family() == AF_INET6) {
                in6_pktinfo info6{};
                info6.ipi6_addr.s6_addr[10] = info6.ipi6_addr.s6_addr[11] = 0xff;
                memcpy(&info6.ipi6_addr.s6_addr[12], &info.ipi_spec_dst, 4);
                c->cmsg_level = IPPROTO_IPV6;
                c->cmsg_type = IPV6_PKTINFO;
                c->cmsg_len = CMSG_LEN(sizeof info6);
                memcpy(CMSG_DATA(c), &info6, sizeof info6);
                return CMSG_SPACE(sizeof info6);
            }
            c->cmsg_level = IPPROTO_IP;
            c->cmsg_type = IP_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof info);
            memcpy(CMSG_DATA(c), &info, sizeof info);
            return CMSG_SPACE(sizeof info);
        }
#endif
#ifdef IPV6_PKTINFO
        if (from.family() == AF_INET6) {
            in6_pktinfo info6{};
            info6.ipi6_addr = reinterpret_cast<const sockaddr_in6*>(&from.storage)->sin6_addr;
            c->cmsg_level = IPPROTO_IPV6;
            c->cmsg_type = IPV6_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof info6);
            memcpy(CMSG_DATA(c), &info6, sizeof info6);
            return CMSG_SPACE(sizeof info6);
        }
#endif
        (void)sock;
        return 0;
    }

    uint64_t next_random() {
        random_state_ ^= random_state_ << 13;
        random_state_ ^= random_state_ >> 7;
        random_state_ ^= random_state_ << 17;
        return random_state_;
    }

    bool admitted(const config::Policy& policy, const net::SockAddr& client) const {
        if (policy.allow.empty() && policy.deny.empty()) return true;
        bool ok = policy.allow.empty();
        for (const net::Cidr& c : policy.allow) ok = ok || net::cidr_contains(c, client);
        for (const net::Cidr& c : policy.deny) ok = ok && !net::cidr_contains(c, client);
        return ok;
    }

    // A new session: admission, the strategy's pick, a connected socket.
    // Session::none when the datagram is not relayed.
    uint32_t open(uint32_t index, const Key& key, const net::SockAddr& client, const Local& local,
                  Clock::time_point now) {
        const Socket& sock = sockets_[index];
        const upstreams::Pool& pool = shared_.rule_pool(sock.rule);
        const config::Rule& rule = *pool.rule;
        if (!admitted(rule.policy, client)) {
            pool.state->denied.fetch_add(1);
            std::string more;
            if (throttle_.allow("denied " + rule.name, now, more))
                log_.print("denied %s on %s (%s)%s", client.text().c_str(), local.address.text().c_str(),
                           rule.name.c_str(), more.c_str());
            return Session::none;
        }
        auto random = [this] { return next_random(); };
        const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
        if (!upstreams::plan(pool, client, now_ms, random, order_)) {
            std::string more;
            if (throttle_.allow("all down " + rule.name, now, more))
                log_.print("all upstreams of (%s) are down; trying them anyway%s", rule.name.c_str(), more.c_str());
        }
        List& list = lists_[sock.rule];
        if (list.count >= static_cast<size_t>(rule.policy.max_sessions)) {
            pool.state->evicted.fetch_add(1);
            finish(list.head, "evicted");
        }
        // The first upstream with an address; a datagram has no "next
        // upstream" once sent, but a name without addresses is skipped.
        for (uint16_t target : order_) {
            net::SockAddr to;
            if (!upstreams::address_at(pool.at(target), 0, to)) continue;
            if (rule.to[target].ranged) to.set_port(static_cast<uint16_t>(to.port() + sock.offset));
            net::Fd fd;
            int err = connect_upstream(to, source_of(sock.rule, target), fd);
            if (err) {
                pool.state->dropped.fetch_add(1);
                std::string more;
                if (throttle_.allow("udp socket " + rule.name, now, more))
                    log_.print("error: udp session of (%s) for %s to %s: %s%s", rule.name.c_str(),
                               client.text().c_str(), to.text().c_str(), net::errno_text(err).c_str(), more.c_str());
                return Session::none;
            }
            uint32_t id = new_session();
            Session& s = *sessions_[id];
            s.key = key;
            s.client = client;
            s.local = local;
            s.socket = index;
            s.upstream = std::move(fd);
            s.target = target;
            s.dialed = to;
            s.started = s.last_activity = now;
            s.live = true;
            s.token = loop_->watch(s.upstream.get(), id);
            table_.emplace(key, id);
            push_back(list, id);
            ++live_;
            upstreams::UpstreamState& state = pool.at(target);
            upstreams::record_success(state);
            shared_.add_active(static_cast<size_t>(worker_), state, 1);
            shared_.add_active(static_cast<size_t>(worker_), *pool.state, 1);
            if (log_.verbose())
                log_.trace("Connected %s => %s (%s) protocol=udp", local.address.text().c_str(), target_text(s).c_str(),
                           client.text().c_str());
            if (!s.token) {  // the wait set is out of memory: this session cannot be served
                pool.state->dropped.fetch_add(1);
                finish(id, "wait set full");
                return Session::none;
            }
            return id;
        }
        pool.state->dropped.fetch_add(1);
        return Session::none;
    }

    // sources_ is per pool (config::pools order); a UDP rule has only its own.
    const net::SockAddr* source_of(size_t rule, size_t target) const {
        if (!sources_) return nullptr;
        const net::SockAddr& s = (*sources_)[shared_.rule_pool_index(rule)][target];
        return s.length ? &s : nullptr;
    }

    static int connect_upstream(const net::SockAddr& to, const net::SockAddr* source, net::Fd& out) {
        out = net::new_socket(to.family(), SOCK_DGRAM);
        if (!out) return errno;
        if (source) {
            if (int err = net::bind_source(out.get(), *source)) {
                out.reset();
                return err;
            }
        }
        if (::connect(out.get(), to.get(), to.length) < 0) {
            int err = errno;
            out.reset();
            return err;
        }
        return 0;
    }

    std::string target_text(const Session& s) const {
        const config::Upstream& up = pool_of(s).rule->to[s.target];
        return up.ranged ? s.dialed.text() : up.text;
    }

    // Slot i of the batch goes to session id, after the session's earlier ones.
    void group(uint32_t id, int i) {
        next_slot_[static_cast<size_t>(i)] = -1;
        for (size_t g = groups_.size(); g-- > 0;) {
            if (groups_[g].session != id) continue;
            next_slot_[static_cast<size_t>(groups_[g].last)] = i;
            groups_[g].last = i;
            return;
        }
        groups_.push_back(Group{id, i, i});
    }

    // Each waiting group goes up its session's connected socket, in order.
    void forward_groups(Clock::time_point now) {
        for (const Group& g : groups_) forward(g, now);
        groups_.clear();
    }

    void forward(const Group& g, Clock::time_point now) {
        Session& s = *sessions_[g.session];
        const upstreams::Pool& pool = pool_of(s);
        batch_.clear();
        for (int i = g.first; i >= 0; i = next_slot_[static_cast<size_t>(i)])
            batch_.add(i, batch_.size(i), nullptr, nullptr, 0);
        uint64_t sent = 0, bytes = 0;
        int refused = 0, first = 0;
#if defined(MIXCTL_MMSG) && defined(UDP_SEGMENT)
        if (batch_.send_segmented(s.upstream.get(), 0, batch_.outgoing())) {
            first = batch_.outgoing();
            sent = static_cast<uint64_t>(first);
            for (int j = 0; j < first; ++j) bytes += batch_.outgoing_size(j);
        }
#endif
        while (first < batch_.outgoing()) {
            int n = batch_.send(s.upstream.get(), first);
            if (n >= 0) {
                for (int j = first; j < first + n; ++j) bytes += batch_.outgoing_size(j);
                sent += static_cast<uint64_t>(n);
                first += n;
                continue;
            }
            if (errno == ECONNREFUSED) {
                // The session ends here; the rest of its datagrams in this
                // batch are not retried elsewhere (a datagram has no "next
                // upstream") and are counted as dropped.
                refused = ECONNREFUSED;
                if (batch_.outgoing() - first - 1 > 0)
                    pool.state->dropped.fetch_add(static_cast<uint64_t>(batch_.outgoing() - first - 1));
                break;
            }
            pool.state->dropped.fetch_add(1);  // a full send buffer: lost, as on the wire
            ++first;
        }
        if (sent) {
            s.datagrams_in += sent;
            s.bytes_in += bytes;
            upstreams::UpstreamState& state = pool.at(s.target);
            state.datagrams_in.fetch_add(sent);
            state.bytes_in.fetch_add(bytes);
            touch(g.session, now);
        }
        if (refused) upstream_error(g.session, refused, now);
        else if (pool.rule->policy.responses == 0) finish(g.session, "responses");
    }

    // An ICMP port unreachable (ECONNREFUSED on the connected socket) is one
    // failed attempt toward max_fails; the session ends and the next one
    // goes elsewhere.
    void upstream_error(uint32_t id, int err, Clock::time_point now) {
        Session& s = *sessions_[id];
        const upstreams::Pool& pool = pool_of(s);
        const config::Rule& rule = *pool.rule;
        upstreams::UpstreamState& state = pool.at(s.target);
        if (err == ECONNREFUSED) {
            state.resolve_wanted.store(1, std::memory_order_relaxed);
            const int64_t now_ms =
                std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
            // One health state per upstream entry, ranged or not: name the entry, and the port that failed.
            const config::Upstream& up = rule.to[s.target];
            if (upstreams::record_failure(state, rule.policy, now_ms))
                log_.print("upstream %s of (%s) is DOWN: %s%s (passive: %d failed attempts within %s)", up.text.c_str(),
                           rule.name.c_str(), net::errno_text(err).c_str(),
                           up.ranged ? (" at " + s.dialed.text()).c_str() : "", rule.policy.max_fails,
                           flags::format_duration(rule.policy.fail_timeout).c_str());
        }
        finish(id, net::errno_text(err).c_str());
    }

    uint32_t new_session() {
        if (!free_.empty()) {
            uint32_t id = free_.back();
            free_.pop_back();
            return id;
        }
        sessions_.push_back(std::make_unique<Session>());
        return static_cast<uint32_t>(sessions_.size() - 1);
    }

    void push_back(List& list, uint32_t id) {
        Session& s = *sessions_[id];
        s.prev = list.tail;
        s.next = Session::none;
        if (list.tail != Session::none) sessions_[list.tail]->next = id;
        else list.head = id;
        list.tail = id;
        ++list.count;
    }

    void unlink(List& list, uint32_t id) {
        Session& s = *sessions_[id];
        if (s.prev != Session::none) sessions_[s.prev]->next = s.next;
        else list.head = s.next;
        if (s.next != Session::none) sessions_[s.next]->prev = s.prev;
        else list.tail = s.prev;
        s.prev = s.next = Session::none;
        --list.count;
    }

    void touch(uint32_t id, Clock::time_point now) {
        Session& s = *sessions_[id];
        s.last_activity = now;
        List& list = lists_[sockets_[s.socket].rule];
        if (list.tail == id) return;
        unlink(list, id);
        push_back(list, id);
    }

    // The one way a session ends: one log line, its socket closed, its
    // place freed.
    void finish(uint32_t id, const char* reason) {
        Session& s = *sessions_[id];
        const upstreams::Pool& pool = pool_of(s);
        if (log_.verbose()) {
            long long ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - s.started).count();
            log_.trace("Closed %s => %s (%s) bytes_in=%" PRIu64 " bytes_out=%" PRIu64
                       " duration=%lld.%03llds protocol=udp datagrams_in=%" PRIu64 " datagrams_out=%" PRIu64
                       " reason=\"%s\"",
                       s.local.address.text().c_str(), target_text(s).c_str(), s.client.text().c_str(), s.bytes_in,
                       s.bytes_out, ms / 1000, ms % 1000, s.datagrams_in, s.datagrams_out, reason);
        }
        shared_.add_active(static_cast<size_t>(worker_), pool.at(s.target), -1);
        shared_.add_active(static_cast<size_t>(worker_), *pool.state, -1);
        unlink(lists_[sockets_[s.socket].rule], id);
        table_.erase(s.key);
        if (s.token) loop_->unwatch(s.upstream.get());
        *sessions_[id] = Session();  // closes the upstream socket
        free_.push_back(id);
        --live_;
    }

    const upstreams::Shared& shared_;
    std::vector<Socket> sockets_;
    int worker_;
    const mixlog::Logger& log_;
    const std::vector<std::vector<net::SockAddr>>* sources_;
    Loop* loop_ = nullptr;
    udp_batch::Batch batch_;
    std::vector<Group> groups_;
    int next_slot_[batch] = {};
    alignas(cmsghdr) char reply_control_[64] = {};
    std::vector<std::unique_ptr<Session>> sessions_;
    std::vector<uint32_t> free_;
    std::unordered_map<Key, uint32_t, KeyHash> table_;
    std::vector<List> lists_;  // per rule
    std::vector<uint16_t> order_;
    size_t live_ = 0;
    bool stopping_ = false;
    mixlog::Throttle throttle_;
    uint64_t random_state_;
};

}  // namespace udp_relay
