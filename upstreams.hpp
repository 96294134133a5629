// upstreams.hpp - what every process knows about every upstream (shared memory), and how a connection picks one.
// Owns the shared counters, health, addresses and the choice; never opens a socket.
//
// Why long: the shared layout (rules, routes, upstreams, per-worker rows, the per-client table)
// and the choice that reads it (strategies, backups, limits, retries) must agree field by field.
//
// The state lives in MAP_SHARED memory that the parent maps before forking,
// so all workers (and a respawned one) see one picture: counters, passive
// and active health, the round-robin cursor, and the current addresses of
// names (rewritten by the checker process when DNS changes). Everything is
// an atomic or behind a seqlock: no locks on the relay path (except on CPUs
// without 64-bit atomics: see shared64.hpp).
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <sys/mman.h>

#include "config.hpp"
#include "net.hpp"
#include "shared64.hpp"

namespace upstreams {

constexpr int max_addresses = 8;  // per upstream name

enum Probe : uint32_t { probe_unknown = 0, probe_up = 1, probe_down = 2 };

struct UpstreamState {
    // Counters, as served by SIGUSR1 stats.
    std::atomic<uint32_t> active{0};
    shared64::U64 total;      // connections established
    shared64::U64 failed;     // connect attempts that failed
    shared64::U64 bytes_in;   // client -> upstream
    shared64::U64 bytes_out;  // upstream -> client
    shared64::U64 client_resets;    // relays the client aborted (passed on to the upstream as RST)
    shared64::U64 upstream_resets;  // relays the upstream aborted (passed on to the client as RST)
    shared64::U64 datagrams_in;   // UDP: client -> upstream
    shared64::U64 datagrams_out;  // UDP: upstream -> client
    // Passive health: max_fails failures within fail_timeout -> down until.
    shared64::I64 window_start_ms;
    std::atomic<uint32_t> window_fails{0};
    shared64::I64 down_until_ms;
    // Active health, written by the checker.
    std::atomic<uint32_t> probe{probe_unknown};
    // A worker saw a connect fail: the checker re-resolves the name soon.
    std::atomic<uint32_t> resolve_wanted{0};
    // Run-time settings from the control socket (written by the checker):
    // a disabled upstream gets no new connections, its live ones go on.
    std::atomic<uint32_t> disabled{0};
    std::atomic<uint32_t> weight{1};         // starts as the config's weight
    std::atomic<uint32_t> weight_changed{0};  // set at run time: kept across a reload
    uint32_t column = 0;  // in the per-worker rows
    // Addresses, single writer (the checker), seqlock for the readers.
    std::atomic<uint32_t> version{0};
    uint32_t address_count = 0;
    net::SockAddr addresses[max_addresses];
};

// One per pool. The refusal counters and `active` are kept on a rule's
// default pool only: they are the listener's.
struct RuleState {
    shared64::U64 cursor;             // round-robin, shared by all workers
    std::atomic<uint32_t> active{0};  // connections of this rule, all workers (max_conns)
    shared64::U64 denied;             // clients refused by allow/deny
    shared64::U64 evicted;            // UDP sessions ended to make room (max_sessions)
    shared64::U64 dropped;            // UDP datagrams not relayed (no socket, full buffers, too big)
    shared64::U64 lost;               // UDP sessions of a worker that died without ending them
    shared64::U64 over_client_limit;  // refused by max_conns_per_client
    shared64::U64 bad_preread;        // no valid PROXY header, or a bad / late ClientHello: closed
    shared64::U64 unrouted;           // no route and no default pool: closed
    uint32_t column = 0;              // in the per-worker rows
};

// One pool's view for choosing (a rule's `to`, or one of its routes):
// static facts from the config plus pointers into the shared state.
struct Pool {
    const config::Rule* rule = nullptr;  // for a route, the route (its name is the rule's)
    RuleState* state = nullptr;
    UpstreamState* first = nullptr;  // rule->to.size() consecutive entries
    UpstreamState& at(size_t i) const { return first[i]; }
    size_t size() const { return rule->to.size(); }
};

// Concurrent connections per (rule, client address), across workers: for
// max_conns_per_client. A fixed open-addressed table in the shared memory;
// each slot is one 64-bit word, a 48-bit key hash and a 16-bit count,
// changed only by compare-and-swap, so a check and its increment are one
// step (the limit holds under races). A slot whose count is 0 is free for
// any key. Each worker also keeps its own count per slot, so the parent
// can take back what a dead worker held (as with `active`). When the probe
// window is full (over ~10,000 distinct clients at once) the client is
// admitted uncounted: the table bounds memory, never availability.
struct ClientTable {
    std::atomic<uint64_t>* slots = nullptr;
    std::atomic<uint16_t>* rows = nullptr;  // [worker][slot]
    size_t size = 0, workers = 0;
    static constexpr size_t probes = 32;
    static constexpr uint64_t count_mask = 0xFFFF;

    static uint64_t key(size_t rule, const net::SockAddr& client);

    enum class Take { ok, over_limit, uncounted };

    // On ok, `slot` is what release() wants back.
    Take take(size_t worker, uint64_t key, int limit, size_t& slot) const {
        if (size == 0) return Take::uncounted;
        const uint64_t tag = key << 16;
        for (int round = 0; round < 64; ++round) {
            size_t free_at = SIZE_MAX;
            uint64_t free_word = 0;
            for (size_t i = 0; i < probes; ++i) {
                size_t at = (key + i) % size;
                uint64_t word = slots[at].load(std::memory_order_acquire);
                if ((word & ~count_mask) == tag && (word & count_mask) != 0) {
                    if ((word & count_mask) >= static_cast<uint64_t>(limit)) return Take::over_limit;
                    if (!slots[at].compare_exchange_weak(word, word + 1)) goto again;
                    return took(worker, at, slot);
                }
                if ((word & count_mask) == 0 && free_at == SIZE_MAX) {
                    free_at = at;
                    free_word = word;
                }
            }
            if (free_at == SIZE_MAX) return Take::uncounted;
            if (slots[free_at].compare_exchange_strong(free_word, tag | 1)) return took(worker, free_at, slot);
        again:;
        }
        return Take::uncounted;  // lost 64 races in a row: do not spin
    }

    void release(size_t worker, size_t slot) const {
        slots[slot].fetch_sub(1, std::memory_order_acq_rel);
        rows[(worker < workers ? worker : 0) * size + slot].fetch_sub(1, std::memory_order_relaxed);
    }

    void forget_worker(size_t worker) const {
        if (worker >= workers) return;
        for (size_t i = 0; i < size; ++i) {
            uint16_t held = rows[worker * size + i].exchange(0);
            if (held) slots[i].fetch_sub(held, std::memory_order_acq_rel);
        }
    }

private:
    Take took(size_t worker, size_t at, size_t& slot) const {
        rows[(worker < workers ? worker : 0) * size + at].fetch_add(1, std::memory_order_relaxed);
        slot = at;
        return Take::ok;
    }
};

class Shared {
public:
    Shared() = default;
    Shared(const Shared&) = delete;
    Shared& operator=(const Shared&) = delete;
    ~Shared() { unmap(); }

    // resolved[p][u]: the addresses found at start for pool p (in the order
    // of config::pools), upstream u.
    bool map(const config::Config& cfg, const std::vector<std::vector<std::vector<net::SockAddr>>>& resolved,
             size_t workers = 1) {
        unmap();
        const std::vector<const config::Rule*> all = config::pools(cfg);
        size_t upstream_count = 0;
        for (const config::Rule* r : all) upstream_count += r->to.size();
        columns_ = upstream_count + all.size();
        workers_ = workers;
        clients_.size = 0;
        for (const config::Rule& r : cfg.rules)
            if (r.policy.max_conns_per_client > 0) clients_.size = client_table_size;
        size_t state_bytes = sizeof(RuleState) * all.size() + sizeof(UpstreamState) * upstream_count;
        state_bytes = (state_bytes + 63) / 64 * 64;
        size_t rows_bytes = (sizeof(std::atomic<int32_t>) * columns_ * workers_ + 63) / 64 * 64;
        size_t table_bytes = sizeof(std::atomic<uint64_t>) * clients_.size;
        bytes_ = state_bytes + rows_bytes + table_bytes + sizeof(std::atomic<uint16_t>) * clients_.size * workers_;
        void* memory = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED) return false;
        memory_ = memory;
        auto* rules = static_cast<RuleState*>(memory);
        auto* ups = reinterpret_cast<UpstreamState*>(rules + all.size());
        rows_ = reinterpret_cast<std::atomic<int32_t>*>(static_cast<char*>(memory) + state_bytes);
        for (size_t i = 0; i < columns_ * workers_; ++i) new (&rows_[i]) std::atomic<int32_t>(0);
        clients_.slots = reinterpret_cast<std::atomic<uint64_t>*>(static_cast<char*>(memory) + state_bytes + rows_bytes);
        clients_.rows = reinterpret_cast<std::atomic<uint16_t>*>(clients_.slots + clients_.size);
        for (size_t i = 0; i < clients_.size; ++i) new (&clients_.slots[i]) std::atomic<uint64_t>(0);
        for (size_t i = 0; i < clients_.size * workers_; ++i) new (&clients_.rows[i]) std::atomic<uint16_t>(0);
        clients_.workers = workers_;
        size_t next = 0;
        for (size_t p = 0; p < all.size(); ++p) {
            Pool pool;
            pool.rule = all[p];
            pool.state = new (&rules[p]) RuleState();
            pool.state->column = static_cast<uint32_t>(upstream_count + p);
            pool.first = &ups[next];
            for (size_t u = 0; u < all[p]->to.size(); ++u) {
                UpstreamState* s = new (&ups[next]) UpstreamState();
                s->column = static_cast<uint32_t>(next++);
                s->weight.store(static_cast<uint32_t>(all[p]->to[u].weight), std::memory_order_relaxed);
                set_addresses(*s, resolved[p][u]);
            }
            if (all[p]->route.empty()) rule_pools_.push_back(p);
            pools_.push_back(pool);
        }
        return true;
    }

    // Active counts are kept twice: a total that readers use, and one row per
    // worker, so that the parent can take back what a worker that died
    // without cleaning up (SIGKILL, a crash) still held.
    void add_active(size_t worker, UpstreamState& s, int delta) const {
        s.active.fetch_add(static_cast<uint32_t>(delta), std::memory_order_relaxed);
        row(worker, s.column).fetch_add(delta, std::memory_order_relaxed);
    }
    void add_active(size_t worker, RuleState& r, int delta) const {
        r.active.fetch_add(static_cast<uint32_t>(delta), std::memory_order_relaxed);
        row(worker, r.column).fetch_add(delta, std::memory_order_relaxed);
    }

    // A connection takes its place at an upstream when it starts dialing it
    // (so a burst of dials can not overshoot max_conns, and least-conn sees
    // dials in flight); false, with nothing taken, when the upstream is full.
    bool take_place(size_t worker, UpstreamState& s, int max_conns) const {
        add_active(worker, s, 1);
        if (max_conns > 0 && s.active.load(std::memory_order_relaxed) > static_cast<uint32_t>(max_conns)) {
            add_active(worker, s, -1);
            return false;
        }
        return true;
    }

    // The parent, before it forks a replacement for `worker`.
    void forget_worker(size_t worker) const {
        if (worker >= workers_) return;
        clients_.forget_worker(worker);
        for (const Pool& pool : pools_) {
            int32_t held = row(worker, pool.state->column).exchange(0);
            pool.state->active.fetch_sub(static_cast<uint32_t>(held));
            if (pool.rule->policy.protocol == config::Protocol::udp && held > 0)
                pool.state->lost.fetch_add(static_cast<uint64_t>(held));
            for (size_t u = 0; u < pool.size(); ++u) {
                UpstreamState& s = pool.at(u);
                s.active.fetch_sub(static_cast<uint32_t>(row(worker, s.column).exchange(0)));
            }
        }
    }

    // Every pool (config::pools order): a rule's own, then its routes'.
    const Pool& pool(size_t index) const { return pools_[index]; }
    size_t pools() const { return pools_.size(); }
    // Rule r's default pool (its `to`; the listener's counters live here),
    // and its route k.
    size_t rule_pool_index(size_t rule) const { return rule_pools_[rule]; }
    const Pool& rule_pool(size_t rule) const { return pools_[rule_pools_[rule]]; }
    size_t route_pool_index(size_t rule, size_t route) const { return rule_pools_[rule] + 1 + route; }
    size_t rules() const { return rule_pools_.size(); }

    ClientTable& clients() const { return clients_; }

private:
    void unmap() {
        if (memory_) munmap(memory_, bytes_);
        memory_ = nullptr;
        pools_.clear();
        rule_pools_.clear();
        clients_ = ClientTable();
    }

    std::atomic<int32_t>& row(size_t worker, uint32_t column) const {
        return rows_[(worker < workers_ ? worker : 0) * columns_ + column];
    }

    static constexpr size_t client_table_size = 16384;

    void* memory_ = nullptr;
    size_t bytes_ = 0;
    std::vector<Pool> pools_;
    std::vector<size_t> rule_pools_;
    mutable ClientTable clients_;
    std::atomic<int32_t>* rows_ = nullptr;
    size_t columns_ = 0, workers_ = 0;

public:
    // Single writer (the checker, or the parent before forking).
    static void set_addresses(UpstreamState& s, const std::vector<net::SockAddr>& list) {
        s.version.fetch_add(1, std::memory_order_acq_rel);  // odd: being written
        std::atomic_thread_fence(std::memory_order_release);
        s.address_count = static_cast<uint32_t>(std::min<size_t>(list.size(), max_addresses));
        for (uint32_t i = 0; i < s.address_count; ++i) s.addresses[i] = list[i];
        s.version.fetch_add(1, std::memory_order_release);  // even: stable
    }
};

// Copies address `index` of an upstream; false when there is no such index.
inline bool address_at(const UpstreamState& s, uint32_t index, net::SockAddr& out) {
    for (;;) {
        uint32_t before = s.version.load(std::memory_order_acquire);
        if (before & 1) continue;
        bool present = index < s.address_count;
        if (present) out = s.addresses[index];
        std::atomic_thread_fence(std::memory_order_acquire);
        if (s.version.load(std::memory_order_relaxed) == before) return present;
    }
}

inline std::vector<net::SockAddr> addresses_of(const UpstreamState& s) {
    std::vector<net::SockAddr> out;
    net::SockAddr a;
    for (uint32_t i = 0; address_at(s, i, a); ++i) out.push_back(a);
    return out;
}

// ---- health -------------------------------------------------------------

inline bool passive_down(const UpstreamState& s, int64_t now_ms) {
    return now_ms < s.down_until_ms.load();
}

inline bool is_up(const UpstreamState& s, int64_t now_ms) {
    return s.probe.load(std::memory_order_relaxed) != probe_down && !passive_down(s, now_ms);
}

// Counts a failed connect. Returns true for the one caller that turned the
// upstream down, so the transition is logged once across all workers.
inline bool record_failure(UpstreamState& s, const config::Policy& policy, int64_t now_ms) {
    s.failed.fetch_add(1);
    const int64_t window = std::chrono::duration_cast<std::chrono::milliseconds>(policy.fail_timeout).count();
    int64_t start = s.window_start_ms.load();
    if (now_ms - start >= window && s.window_start_ms.compare_exchange(start, now_ms))
        s.window_fails.store(0, std::memory_order_relaxed);
    uint32_t fails = s.window_fails.fetch_add(1, std::memory_order_relaxed) + 1;
    if (fails < static_cast<uint32_t>(policy.max_fails)) return false;
    int64_t until = s.down_until_ms.load();
    if (until > now_ms) return false;
    if (!s.down_until_ms.compare_exchange(until, now_ms + window)) return false;
    s.window_fails.store(0, std::memory_order_relaxed);
    return true;
}

// A reload keeps what was learned about an upstream that is still there.
inline void copy_history(const UpstreamState& from, UpstreamState& to) {
    to.total.store(from.total.load());
    to.failed.store(from.failed.load());
    to.bytes_in.store(from.bytes_in.load());
    to.bytes_out.store(from.bytes_out.load());
    to.client_resets.store(from.client_resets.load());
    to.upstream_resets.store(from.upstream_resets.load());
    to.datagrams_in.store(from.datagrams_in.load());
    to.datagrams_out.store(from.datagrams_out.load());
    to.window_start_ms.store(from.window_start_ms.load());
    to.window_fails.store(from.window_fails.load());
    to.down_until_ms.store(from.down_until_ms.load());
    to.probe.store(from.probe.load());
}

// What a reload keeps of the control socket's changes: `disable` always; a
// run-time weight unless the file's weight for it changed (the file wins).
inline void copy_runtime(const UpstreamState& from, const config::Upstream& was, UpstreamState& to,
                         const config::Upstream& now) {
    to.disabled.store(from.disabled.load());
    if (from.weight_changed.load() && was.weight == now.weight) {
        to.weight.store(from.weight.load());
        to.weight_changed.store(1);
    }
}

// At its own max_conns: skipped by new connections.
inline bool full(const UpstreamState& s, const config::Upstream& u) {
    return u.max_conns > 0 && s.active.load(std::memory_order_relaxed) >= static_cast<uint32_t>(u.max_conns);
}

// Whether any new connection could be sent anywhere: false when every
// upstream that is not disabled is at its max_conns (clients then wait in
// the kernel backlog, as with the rule's max_conns).
// When every upstream is disabled there is room: such clients are closed at
// once rather than left waiting for an operator.
inline bool has_room(const Pool& pool) {
    bool any_enabled = false;
    for (size_t i = 0; i < pool.size(); ++i) {
        if (pool.at(i).disabled.load(std::memory_order_relaxed)) continue;
        any_enabled = true;
        if (!full(pool.at(i), pool.rule->to[i])) return true;
    }
    return !any_enabled;
}

// The one word `show`, SIGUSR1 stats and /metrics use: disabled (no live
// connections left), draining (disabled, some still live), else health.
inline const char* state_name(const UpstreamState& s, int64_t now_ms) {
    if (s.disabled.load(std::memory_order_relaxed)) return s.active.load() ? "draining" : "disabled";
    return is_up(s, now_ms) ? "up" : "down";
}

inline void record_success(UpstreamState& s) {
    s.total.fetch_add(1);
    if (s.window_fails.load(std::memory_order_relaxed) != 0) s.window_fails.store(0, std::memory_order_relaxed);
}

// ---- choosing -------------------------------------------------------------

inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

inline uint64_t hash_bytes(const void* data, size_t size, uint64_t seed) {
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
    return mix64(h);
}

// The client's IP, without the port: source-hash keys on the host.
inline uint64_t client_key(const net::SockAddr& client) {
    if (client.family() == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&client.storage);
        return hash_bytes(&in->sin_addr, sizeof in->sin_addr, 0);
    }
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&client.storage);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return hash_bytes(&in6->sin6_addr.s6_addr[12], 4, 0);
    return hash_bytes(&in6->sin6_addr, sizeof in6->sin6_addr, 0);
}

inline uint64_t ClientTable::key(size_t rule, const net::SockAddr& client) {
    return mix64(client_key(client) ^ mix64(rule + 1)) >> 16;  // 48 bits
}

// The strategy's choice among group[0..count): an index into group.
template <class Random>
size_t pick(const Pool& pool, const uint16_t* group, size_t count, const net::SockAddr& client, Random& random) {
    const config::Rule& rule = *pool.rule;
    auto weight = [&](size_t k) {
        return static_cast<uint64_t>(std::max<uint32_t>(1, pool.at(group[k]).weight.load(std::memory_order_relaxed)));
    };
    uint64_t total = 0;
    for (size_t k = 0; k < count; ++k) total += weight(k);
    switch (rule.policy.strategy) {
        case config::Strategy::random:
        case config::Strategy::round_robin: {
            uint64_t ticket = rule.policy.strategy == config::Strategy::random
                                  ? random() % total
                                  : pool.state->cursor.fetch_add(1) % total;
            for (size_t k = 0; k < count; ++k) {
                if (ticket < weight(k)) return k;
                ticket -= weight(k);
            }
            return 0;
        }
        case config::Strategy::least_conn: {
            // Fewest active per unit of weight; ties go round the shared
            // cursor, so sequential clients to idle upstreams alternate and
            // workers that read the same counters do not all pick one.
            size_t best = 0, ties = 0;
            auto fewer = [&](size_t x, size_t y) {  // x has fewer than y per unit of weight
                uint64_t ax = pool.at(group[x]).active.load(std::memory_order_relaxed);
                uint64_t ay = pool.at(group[y]).active.load(std::memory_order_relaxed);
                return ax * weight(y) < ay * weight(x);
            };
            for (size_t k = 1; k < count; ++k)
                if (fewer(k, best)) best = k;
            for (size_t k = 0; k < count; ++k) ties += !fewer(best, k);
            if (ties < 2) return best;
            uint64_t turn = pool.state->cursor.fetch_add(1) % ties;
            for (size_t k = 0; k < count; ++k)
                if (!fewer(best, k) && turn-- == 0) return k;
            return best;
        }
        case config::Strategy::source_hash: {
            // Rendezvous hashing: each upstream scores the client; the best
            // wins. Removing an upstream moves only the clients it had.
            uint64_t key = client_key(client);
            size_t best = 0;
            double best_score = -1;
            for (size_t k = 0; k < count; ++k) {
                const std::string& name = rule.to[group[k]].text;
                uint64_t h = hash_bytes(name.data(), name.size(), key);
                double unit = (static_cast<double>(h >> 11) + 0.5) / 9007199254740992.0;  // (0,1)
                double score = -static_cast<double>(weight(k)) / std::log(unit);
                if (score > best_score) {
                    best_score = score;
                    best = k;
                }
            }
            return best;
        }
    }
    return 0;
}


// Fisher-Yates over v[from..to): the order among equals is random.
template <class Random>
void shuffle_range(std::vector<uint16_t>& v, size_t from, size_t to, Random& random) {
    for (size_t i = to; i > from + 1; --i) std::swap(v[i - 1], v[from + random() % (i - from)]);
}

// Which upstreams a connection tries, in order. `out` holds indexes into the
// rule's `to`: the group that serves (the primaries that are up, or the
// backups that are up when no primary is), the strategy's pick first and the
// rest in random order; behind serving primaries, the backups that are up;
// then the upstreams marked down (by a health check or by max_fails),
// primaries before backups, each in random order. A down mark means "try
// last", not "never": one that came back before its health state caught up
// still serves a client whom every up upstream refused. Disabled upstreams
// and those at their max_conns are never in it; the rule's `retries` cuts it
// to 1 + retries. Returns false when nothing was up and the list is every
// usable upstream, the strategy's pick first (fail open), so the caller can
// say so. Allocates nothing once `out` has grown to the rule's size.
template <class Random>
bool plan(const Pool& pool, const net::SockAddr& client, int64_t now_ms, Random& random, std::vector<uint16_t>& out) {
    const config::Rule& rule = *pool.rule;
    const size_t n = pool.size();
    // Each state is read once, so a probe landing half way can neither list
    // an upstream twice nor leave it out: up ones from the front, down ones
    // from the back; primaries in a first pass, backups in a second (the
    // flag is the file's: it does not move). Then out is [up primaries, up
    // backups, gap, down backups, down primaries], each up tier in index
    // order and each down tier in reverse.
    out.resize(n);
    size_t front = 0, back = n, up_primaries = 0, down_primaries = 0;
    for (bool backups : {false, true}) {
        for (size_t i = 0; i < n; ++i) {
            if (rule.to[i].backup != backups || pool.at(i).disabled.load(std::memory_order_relaxed) ||
                full(pool.at(i), rule.to[i]))
                continue;
            out[is_up(pool.at(i), now_ms) ? front++ : --back] = static_cast<uint16_t>(i);
        }
        if (!backups) {
            up_primaries = front;
            down_primaries = n - back;
        }
    }
    const size_t up = front;
    out.erase(out.begin() + static_cast<std::ptrdiff_t>(up), out.begin() + static_cast<std::ptrdiff_t>(back));
    std::reverse(out.begin() + static_cast<std::ptrdiff_t>(up), out.end());  // down primaries, then down backups
    if (out.empty()) return true;  // all disabled or full: nothing to try (not a health problem)
    auto pick_first = [&](size_t count) {
        std::swap(out[0], out[pick(pool, out.data(), count, client, random)]);
        shuffle_range(out, 1, count, random);
    };
    auto cut = [&] {
        if (rule.policy.retries >= 0 && out.size() > static_cast<size_t>(rule.policy.retries) + 1)
            out.resize(static_cast<size_t>(rule.policy.retries) + 1);
    };
    if (up == 0) {  // fail open: every usable upstream is the group
        pick_first(out.size());
        cut();
        return false;
    }
    const size_t serving = up_primaries ? up_primaries : up;
    pick_first(serving);
    shuffle_range(out, serving, up, random);  // the backups behind serving primaries
    shuffle_range(out, up, up + down_primaries, random);
    shuffle_range(out, up + down_primaries, out.size(), random);
    cut();
    return true;
}

}  // namespace upstreams
