// Choosing an upstream: plan()/pick() over a Shared mapped from a parsed
// config and fake resolved addresses (nothing here touches the network),
// and the passive-health window of record_failure().
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.hpp"
#include "upstreams.hpp"

namespace {

net::SockAddr v4(const std::string& ip, uint16_t port) {
    net::SockAddr a;
    auto* in = reinterpret_cast<sockaddr_in*>(&a.storage);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    inet_pton(AF_INET, ip.c_str(), &in->sin_addr);
    a.length = sizeof(sockaddr_in);
    return a;
}

net::SockAddr v4_mapped(const std::string& ip, uint16_t port) {
    net::SockAddr a;
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    inet_pton(AF_INET6, ("::ffff:" + ip).c_str(), &in6->sin6_addr);
    a.length = sizeof(sockaddr_in6);
    return a;
}

// The i-th of many fake client addresses (never dialed).
net::SockAddr client(int i, uint16_t port = 40000) {
    return v4("10." + std::to_string((i >> 16) & 255) + "." + std::to_string((i >> 8) & 255) + "." +
                  std::to_string(i & 255),
              port);
}

// A parsed config and its shared state. Upstream u of rule r "resolves" to
// 127.0.0.1:(20000 + 100 r + u). Not movable: the pools point into cfg.
struct Fixture {
    config::Config cfg;
    config::Diagnostics diag;
    upstreams::Shared shared;
    bool ok = false;

    explicit Fixture(const std::string& yaml) {
        if (!config::parse_text(yaml, "rules.yaml", cfg, diag)) return;
        std::vector<std::vector<std::vector<net::SockAddr>>> resolved;
        for (size_t r = 0; r < cfg.rules.size(); ++r) {
            resolved.emplace_back();
            for (size_t u = 0; u < cfg.rules[r].to.size(); ++u)
                resolved.back().push_back({v4("127.0.0.1", static_cast<uint16_t>(20000 + 100 * r + u))});
        }
        ok = shared.map(cfg, resolved);
    }
    Fixture(const Fixture&) = delete;

    const upstreams::Pool& pool(size_t r = 0) const { return shared.pool(r); }
    upstreams::UpstreamState& at(size_t u, size_t r = 0) const { return shared.pool(r).at(u); }
    std::string errors() const {
        std::string out;
        for (const std::string& e : diag.errors) out += e + "\n";
        return out;
    }
};

// One rule "r" with the given strategy and upstream lines (each already a
// YAML sequence item's text, e.g. "127.0.0.1:1" or "{address: ..., weight: 3}").
std::string rule(const std::string& strategy, const std::vector<std::string>& to, const std::string& extra = "") {
    std::string text = "rules:\n- name: r\n  from: 127.0.0.1:0\n  strategy: " + strategy + "\n" + extra + "  to:\n";
    for (const std::string& t : to) text += "    - " + t + "\n";
    return text;
}

// Deterministic xorshift, as the workers use; seedable per test.
struct Rng {
    uint64_t state;
    explicit Rng(uint64_t seed = 0x1234567) : state(seed) {}
    uint64_t operator()() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        return state;
    }
};

constexpr int64_t T = 1000000;  // a "now" well past the epoch of the steady clock

// The upstream a new connection goes to first.
size_t first_choice(const Fixture& f, const net::SockAddr& from, Rng& rng, int64_t now = T, size_t r = 0) {
    std::vector<uint16_t> order;
    upstreams::plan(f.pool(r), from, now, rng, order);
    return order.empty() ? SIZE_MAX : order[0];
}

std::multiset<uint16_t> as_set(const std::vector<uint16_t>& v) { return {v.begin(), v.end()}; }

}  // namespace

// ---- mapping ----------------------------------------------------------------

TEST_CASE("shared state: every upstream starts up with its resolved addresses and zero counters", "[upstreams]") {
    Fixture f(rule("random", {"127.0.0.1:1", "127.0.0.1:2"}) +
              "- name: s\n  from: 127.0.0.1:0\n  to: [127.0.0.1:3, 127.0.0.1:4, 127.0.0.1:5]\n");
    INFO(f.errors());
    REQUIRE(f.ok);
    REQUIRE(f.shared.rules() == 2);
    CHECK(f.pool(0).size() == 2);
    CHECK(f.pool(1).size() == 3);
    CHECK(f.pool(1).rule->name == "s");
    for (size_t r = 0; r < 2; ++r)
        for (size_t u = 0; u < f.pool(r).size(); ++u) {
            const upstreams::UpstreamState& s = f.at(u, r);
            CHECK(upstreams::is_up(s, T));
            CHECK(s.active.load() == 0);
            CHECK(s.total.load() == 0);
            CHECK(s.failed.load() == 0);
            CHECK(s.bytes_in.load() == 0);
            CHECK(s.bytes_out.load() == 0);
            CHECK(s.version.load() % 2 == 0);
            std::vector<net::SockAddr> a = upstreams::addresses_of(s);
            REQUIRE(a.size() == 1);
            CHECK(a[0].text() == "127.0.0.1:" + std::to_string(20000 + 100 * r + u));
        }
    // Rules do not share upstream state.
    f.at(0, 0).active = 7;
    CHECK(f.at(0, 1).active.load() == 0);
}

TEST_CASE("set_addresses replaces an upstream's addresses and keeps at most max_addresses", "[upstreams]") {
    Fixture f(rule("random", {"127.0.0.1:1"}));
    REQUIRE(f.ok);
    std::vector<net::SockAddr> many;
    for (int i = 0; i < 12; ++i) many.push_back(v4("127.0.0." + std::to_string(i + 2), 80));
    uint32_t before = f.at(0).version.load();
    upstreams::Shared::set_addresses(f.at(0), many);
    CHECK(f.at(0).version.load() == before + 2);  // even again: readers see a stable list
    std::vector<net::SockAddr> got = upstreams::addresses_of(f.at(0));
    REQUIRE(got.size() == static_cast<size_t>(upstreams::max_addresses));
    CHECK(got[0].text() == "127.0.0.2:80");
    CHECK(got[7].text() == "127.0.0.9:80");
    net::SockAddr out;
    CHECK_FALSE(upstreams::address_at(f.at(0), upstreams::max_addresses, out));
    upstreams::Shared::set_addresses(f.at(0), {});
    CHECK(upstreams::addresses_of(f.at(0)).empty());
}

// ---- plan: health, backups, fail-open ---------------------------------------

TEST_CASE("plan lists every up primary once, then the backups; a backup is never first while a primary is up",
          "[upstreams]") {
    Fixture f(rule("random", {"127.0.0.1:1", "127.0.0.1:2", "{address: 127.0.0.1:3, backup: true}",
                              "{address: 127.0.0.1:4, backup: true}"}));
    INFO(f.errors());
    REQUIRE(f.ok);
    Rng rng;
    std::vector<uint16_t> order;
    std::map<uint16_t, int> firsts;
    for (int i = 0; i < 200; ++i) {
        REQUIRE(upstreams::plan(f.pool(), client(i), T, rng, order));
        REQUIRE(order.size() == 4);
        CHECK(as_set({order[0], order[1]}) == std::multiset<uint16_t>{0, 1});
        CHECK(as_set({order[2], order[3]}) == std::multiset<uint16_t>{2, 3});
        ++firsts[order[0]];
    }
    CHECK(firsts[0] > 50);
    CHECK(firsts[1] > 50);
    CHECK(firsts.count(2) == 0);
    CHECK(firsts.count(3) == 0);
}

TEST_CASE("plan puts upstreams marked down by probes or by passive health last, and only until down_until",
          "[upstreams]") {
    Fixture f(rule("random", {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
    REQUIRE(f.ok);
    Rng rng;
    std::vector<uint16_t> order;

    f.at(0).probe = upstreams::probe_down;
    f.at(1).probe = upstreams::probe_up;  // up and unknown both count as up
    REQUIRE(upstreams::plan(f.pool(), client(1), T, rng, order));
    REQUIRE(order.size() == 3);
    CHECK(as_set({order[0], order[1]}) == std::multiset<uint16_t>{1, 2});
    CHECK(order[2] == 0);

    f.at(0).probe = upstreams::probe_unknown;
    f.at(2).down_until_ms.store(T + 500);
    CHECK(upstreams::passive_down(f.at(2), T));
    CHECK(upstreams::passive_down(f.at(2), T + 499));
    CHECK_FALSE(upstreams::passive_down(f.at(2), T + 500));
    REQUIRE(upstreams::plan(f.pool(), client(1), T + 499, rng, order));
    REQUIRE(order.size() == 3);
    CHECK(as_set({order[0], order[1]}) == std::multiset<uint16_t>{0, 1});
    CHECK(order[2] == 2);
    // Once down_until has passed it is up again: any of the three may come first.
    std::set<uint16_t> firsts;
    for (int i = 0; i < 60; ++i) {
        REQUIRE(upstreams::plan(f.pool(), client(i), T + 500, rng, order));
        CHECK(as_set(order) == std::multiset<uint16_t>{0, 1, 2});
        firsts.insert(order[0]);
    }
    CHECK(firsts.size() == 3);
}

TEST_CASE("backups serve only when every primary is down; down-marked upstreams follow, primaries first",
          "[upstreams]") {
    Fixture f(rule("round-robin", {"127.0.0.1:1", "{address: 127.0.0.1:2, backup: true}", "127.0.0.1:3",
                                   "{address: 127.0.0.1:4, backup: true}"}));
    REQUIRE(f.ok);
    Rng rng;
    std::vector<uint16_t> order;

    // One primary down: the other primary first, the backups after it, the
    // down primary last.
    f.at(0).probe = upstreams::probe_down;
    for (int i = 0; i < 10; ++i) {
        REQUIRE(upstreams::plan(f.pool(), client(i), T, rng, order));
        REQUIRE(order.size() == 4);
        CHECK(order[0] == 2);
        CHECK(as_set({order[1], order[2]}) == std::multiset<uint16_t>{1, 3});
        CHECK(order[3] == 0);
    }
    // Both primaries down: the backups serve, and that is not fail-open;
    // the down primaries follow them in random order.
    f.at(2).down_until_ms.store(T + 10000);
    std::map<uint16_t, int> firsts, thirds;
    for (int i = 0; i < 40; ++i) {
        REQUIRE(upstreams::plan(f.pool(), client(i), T, rng, order));
        REQUIRE(order.size() == 4);
        CHECK(as_set({order[0], order[1]}) == std::multiset<uint16_t>{1, 3});
        CHECK(as_set({order[2], order[3]}) == std::multiset<uint16_t>{0, 2});
        ++firsts[order[0]];
        ++thirds[order[2]];
    }
    CHECK(firsts[1] == 20);  // round-robin between the two backups
    CHECK(firsts[3] == 20);
    CHECK(thirds[0] > 5);  // the down ones are not always tried in one order
    CHECK(thirds[2] > 5);
    // One backup down too: the other one alone serves; then the down
    // primaries; the down backup last of all.
    f.at(3).probe = upstreams::probe_down;
    REQUIRE(upstreams::plan(f.pool(), client(0), T, rng, order));
    REQUIRE(order.size() == 4);
    CHECK(order[0] == 1);
    CHECK(as_set({order[1], order[2]}) == std::multiset<uint16_t>{0, 2});
    CHECK(order[3] == 3);
    // Backups all down, primaries up: primaries, then the down backups.
    f.at(0).probe = upstreams::probe_up;
    f.at(2).down_until_ms.store(0);
    f.at(1).probe = upstreams::probe_down;
    REQUIRE(upstreams::plan(f.pool(), client(0), T, rng, order));
    REQUIRE(order.size() == 4);
    CHECK(as_set({order[0], order[1]}) == std::multiset<uint16_t>{0, 2});
    CHECK(as_set({order[2], order[3]}) == std::multiset<uint16_t>{1, 3});
}

TEST_CASE("all upstreams down: plan fails open with every upstream and says so", "[upstreams]") {
    Fixture f(rule("random", {"127.0.0.1:1", "127.0.0.1:2", "{address: 127.0.0.1:3, backup: true}"}));
    REQUIRE(f.ok);
    Rng rng;
    std::vector<uint16_t> order;
    f.at(0).probe = upstreams::probe_down;
    f.at(1).down_until_ms.store(T + 1);
    f.at(2).probe = upstreams::probe_down;
    std::set<uint16_t> firsts;
    for (int i = 0; i < 100; ++i) {
        CHECK_FALSE(upstreams::plan(f.pool(), client(i), T, rng, order));
        CHECK(as_set(order) == std::multiset<uint16_t>{0, 1, 2});
        firsts.insert(order[0]);
    }
    CHECK(firsts.size() >= 2);  // not always the same victim
    // As soon as one is up again, it comes first, the down primary next,
    // the down backup last.
    CHECK(upstreams::plan(f.pool(), client(0), T + 1, rng, order));
    CHECK(order == std::vector<uint16_t>{1, 0, 2});
}

// ---- strategies ---------------------------------------------------------------

TEST_CASE("round-robin: one shared cursor rotates through the upstreams in order", "[upstreams]") {
    Fixture f(rule("round-robin", {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
    REQUIRE(f.ok);
    Rng rng;
    std::vector<size_t> seq;
    for (int i = 0; i < 6; ++i) seq.push_back(first_choice(f, client(0), rng));
    CHECK(seq == std::vector<size_t>{0, 1, 2, 0, 1, 2});
    std::map<size_t, int> counts;
    for (int i = 0; i < 300; ++i) ++counts[first_choice(f, client(i), rng)];
    CHECK(counts[0] == 100);
    CHECK(counts[1] == 100);
    CHECK(counts[2] == 100);
    CHECK(f.pool().state->cursor.load() == 306);
}

TEST_CASE("round-robin: the cursor is shared with a forked process", "[upstreams]") {
    Fixture f(rule("round-robin", {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
    REQUIRE(f.ok);
    Rng rng;
    CHECK(first_choice(f, client(0), rng) == 0);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        Rng mine(99);
        for (int i = 0; i < 100; ++i) first_choice(f, client(i), mine);
        f.at(1).active.fetch_add(5);
        _exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(f.pool().state->cursor.load() == 101);
    CHECK(f.at(1).active.load() == 5);
    CHECK(first_choice(f, client(0), rng) == 101 % 3);
}

TEST_CASE("round-robin skips a down upstream and splits evenly over the rest", "[upstreams]") {
    Fixture f(rule("round-robin", {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
    REQUIRE(f.ok);
    Rng rng;
    f.at(1).probe = upstreams::probe_down;
    std::map<size_t, int> counts;
    for (int i = 0; i < 100; ++i) ++counts[first_choice(f, client(i), rng)];
    CHECK(counts[0] == 50);
    CHECK(counts[2] == 50);
    CHECK(counts.count(1) == 0);
}

TEST_CASE("weights: round-robin gives exactly 3:1, random about 3:1", "[upstreams]") {
    std::vector<std::string> to{"{address: 127.0.0.1:1, weight: 3}", "{address: 127.0.0.1:2, weight: 1}"};
    SECTION("round-robin") {
        Fixture f(rule("round-robin", to));
        INFO(f.errors());
        REQUIRE(f.ok);
        Rng rng;
        std::map<size_t, int> counts;
        for (int i = 0; i < 400; ++i) ++counts[first_choice(f, client(i), rng)];
        CHECK(counts[0] == 300);
        CHECK(counts[1] == 100);
    }
    SECTION("random") {
        Fixture f(rule("random", to));
        REQUIRE(f.ok);
        Rng rng(777);
        std::map<size_t, int> counts;
        for (int i = 0; i < 4000; ++i) ++counts[first_choice(f, client(i), rng)];
        // Expected 3000 / 1000, sd about 27.
        CHECK(counts[0] > 2850);
        CHECK(counts[0] < 3150);
        CHECK(counts[0] + counts[1] == 4000);
    }
}

TEST_CASE("least-conn picks the upstream with the fewest active connections per weight", "[upstreams]") {
    SECTION("plain") {
        Fixture f(rule("least-conn", {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
        REQUIRE(f.ok);
        Rng rng;
        f.at(0).active = 5;
        f.at(1).active = 2;
        f.at(2).active = 7;
        for (int i = 0; i < 50; ++i) CHECK(first_choice(f, client(i), rng) == 1);
        // Simulate connections arriving and staying: each goes to the least loaded.
        for (int i = 0; i < 7; ++i) {
            size_t k = first_choice(f, client(i), rng);
            f.at(k).active.fetch_add(1);
        }
        // 5,2,7 + 7 new: the second one catches up to 5, then it and the first take turns -> 7,7,7.
        CHECK(f.at(0).active.load() == 7);
        CHECK(f.at(1).active.load() == 7);
        CHECK(f.at(2).active.load() == 7);
    }
    SECTION("ties go round the tied only") {
        Fixture f(rule("least-conn", {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
        REQUIRE(f.ok);
        Rng rng;
        f.at(0).active = 3;
        f.at(1).active = 3;
        f.at(2).active = 4;
        std::map<size_t, int> counts;
        for (int i = 0; i < 400; ++i) ++counts[first_choice(f, client(i), rng)];
        CHECK(counts[0] > 120);
        CHECK(counts[1] > 120);
        CHECK(counts.count(2) == 0);
        // Three-way tie: all three chosen, roughly evenly.
        f.at(2).active = 3;
        counts.clear();
        for (int i = 0; i < 900; ++i) ++counts[first_choice(f, client(i), rng)];
        for (size_t k = 0; k < 3; ++k) CHECK(counts[k] > 200);
    }
    SECTION("weighted") {
        Fixture f(rule("least-conn", {"{address: 127.0.0.1:1, weight: 2}", "127.0.0.1:2"}));
        REQUIRE(f.ok);
        Rng rng;
        f.at(0).active = 3;  // 1.5 per unit of weight
        f.at(1).active = 2;  // 2 per unit
        CHECK(first_choice(f, client(0), rng) == 0);
        f.at(0).active = 5;  // 2.5
        CHECK(first_choice(f, client(0), rng) == 1);
    }
    SECTION("a down upstream is not chosen even if it is idle") {
        Fixture f(rule("least-conn", {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
        REQUIRE(f.ok);
        Rng rng;
        f.at(0).active = 0;
        f.at(0).probe = upstreams::probe_down;
        f.at(1).active = 10;
        f.at(2).active = 4;
        for (int i = 0; i < 20; ++i) CHECK(first_choice(f, client(i), rng) == 2);
    }
}

TEST_CASE("source-hash: a client IP always gets the same upstream, whatever its port or the random source",
          "[upstreams]") {
    Fixture f(rule("source-hash", {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
    REQUIRE(f.ok);
    Rng rng;
    std::map<size_t, int> spread;
    for (int i = 0; i < 3000; ++i) {
        size_t first = first_choice(f, client(i, 40000), rng);
        ++spread[first];
        if (i % 100 == 0) {
            Rng other(static_cast<uint64_t>(i) + 5);
            for (uint16_t port : {1, 1024, 65535}) CHECK(first_choice(f, client(i, port), other) == first);
            CHECK(first_choice(f, v4_mapped("10.0." + std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255), 9),
                               other) == first);
        }
    }
    // Spread over all three (expected 1000 each).
    for (size_t k = 0; k < 3; ++k) {
        CHECK(spread[k] > 850);
        CHECK(spread[k] < 1150);
    }
}

TEST_CASE("source-hash: removing one upstream from the config moves only its clients", "[upstreams]") {
    Fixture three(rule("source-hash", {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
    Fixture two(rule("source-hash", {"127.0.0.1:1", "127.0.0.1:3"}));
    REQUIRE(three.ok);
    REQUIRE(two.ok);
    Rng rng;
    auto name = [](const Fixture& f, size_t u) { return f.cfg.rules[0].to[u].text; };
    int kept = 0, moved = 0, wrongly_moved = 0;
    std::map<std::string, int> moved_to;
    for (int i = 0; i < 3000; ++i) {
        std::string before = name(three, first_choice(three, client(i), rng));
        std::string after = name(two, first_choice(two, client(i), rng));
        if (before == "127.0.0.1:2") {
            ++moved;
            ++moved_to[after];
        } else if (before == after) {
            ++kept;
        } else {
            ++wrongly_moved;
        }
    }
    CHECK(wrongly_moved == 0);
    CHECK(kept + moved == 3000);
    CHECK(moved > 850);  // about a third had the removed one
    CHECK(moved < 1150);
    // Its clients spread over both survivors.
    CHECK(moved_to["127.0.0.1:1"] > moved / 3);
    CHECK(moved_to["127.0.0.1:3"] > moved / 3);
}

TEST_CASE("source-hash: an upstream going down moves only its clients, and they come back when it is up",
          "[upstreams]") {
    Fixture f(rule("source-hash", {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
    REQUIRE(f.ok);
    Rng rng;
    std::vector<size_t> before;
    for (int i = 0; i < 2000; ++i) before.push_back(first_choice(f, client(i), rng));
    f.at(1).probe = upstreams::probe_down;
    int moved = 0;
    for (int i = 0; i < 2000; ++i) {
        size_t now = first_choice(f, client(i), rng);
        CHECK(now != 1);
        if (before[static_cast<size_t>(i)] != 1) CHECK(now == before[static_cast<size_t>(i)]);
        else ++moved;
    }
    CHECK(moved > 400);
    f.at(1).probe = upstreams::probe_up;
    int same = 0;
    for (int i = 0; i < 2000; ++i) same += first_choice(f, client(i), rng) == before[static_cast<size_t>(i)];
    CHECK(same == 2000);
}

TEST_CASE("source-hash honours weights", "[upstreams]") {
    Fixture f(rule("source-hash", {"{address: 127.0.0.1:1, weight: 3}", "127.0.0.1:2"}));
    REQUIRE(f.ok);
    Rng rng;
    std::map<size_t, int> spread;
    for (int i = 0; i < 4000; ++i) ++spread[first_choice(f, client(i), rng)];
    CHECK(spread[0] > 2800);
    CHECK(spread[0] < 3200);
}

// ---- passive health -----------------------------------------------------------

TEST_CASE("record_failure: max_fails failures within fail_timeout mark the upstream down for fail_timeout",
          "[upstreams]") {
    Fixture f(rule("random", {"127.0.0.1:1", "127.0.0.1:2"}, "  max_fails: 3\n  fail_timeout: 2s\n"));
    INFO(f.errors());
    REQUIRE(f.ok);
    const config::Policy& policy = f.cfg.rules[0].policy;
    REQUIRE(policy.max_fails == 3);
    upstreams::UpstreamState& s = f.at(0);

    CHECK_FALSE(upstreams::record_failure(s, policy, T));
    CHECK_FALSE(upstreams::record_failure(s, policy, T + 100));
    CHECK(upstreams::is_up(s, T + 200));
    CHECK(upstreams::record_failure(s, policy, T + 200));  // the third: the one caller that turns it down
    CHECK(s.down_until_ms.load() == T + 2200);
    CHECK_FALSE(upstreams::is_up(s, T + 200));
    CHECK_FALSE(upstreams::is_up(s, T + 2199));
    CHECK(upstreams::is_up(s, T + 2200));
    // More failures while down (fail-open dials, dials already in flight)
    // neither report a new transition nor extend the down time.
    for (int i = 0; i < 5; ++i) CHECK_FALSE(upstreams::record_failure(s, policy, T + 300 + i));
    CHECK(s.down_until_ms.load() == T + 2200);
    CHECK(s.failed.load() == 8);
    // The other upstream is untouched.
    CHECK(f.at(1).failed.load() == 0);
    CHECK(upstreams::is_up(f.at(1), T + 200));
}

TEST_CASE("record_failure: failures spread over more than fail_timeout do not add up", "[upstreams]") {
    Fixture f(rule("random", {"127.0.0.1:1"}, "  max_fails: 2\n  fail_timeout: 1s\n"));
    REQUIRE(f.ok);
    const config::Policy& policy = f.cfg.rules[0].policy;
    upstreams::UpstreamState& s = f.at(0);
    CHECK_FALSE(upstreams::record_failure(s, policy, T));
    CHECK_FALSE(upstreams::record_failure(s, policy, T + 1500));  // a new window
    CHECK_FALSE(upstreams::record_failure(s, policy, T + 3000));  // and another
    CHECK(upstreams::is_up(s, T + 3000));
    CHECK(upstreams::record_failure(s, policy, T + 3100));  // second within the window
    CHECK(s.down_until_ms.load() == T + 4100);
}

TEST_CASE("record_failure: a success clears the count of failures", "[upstreams]") {
    Fixture f(rule("random", {"127.0.0.1:1"}, "  max_fails: 2\n  fail_timeout: 10s\n"));
    REQUIRE(f.ok);
    const config::Policy& policy = f.cfg.rules[0].policy;
    upstreams::UpstreamState& s = f.at(0);
    CHECK_FALSE(upstreams::record_failure(s, policy, T));
    upstreams::record_success(s);
    CHECK(s.total.load() == 1);
    CHECK_FALSE(upstreams::record_failure(s, policy, T + 10));
    CHECK(upstreams::is_up(s, T + 10));
    CHECK(upstreams::record_failure(s, policy, T + 20));
    CHECK(s.failed.load() == 3);
}

TEST_CASE("record_failure: with the defaults one failure marks down for 10 s, and again after it expires",
          "[upstreams]") {
    Fixture f(rule("random", {"127.0.0.1:1", "127.0.0.1:2"}));
    REQUIRE(f.ok);
    const config::Policy& policy = f.cfg.rules[0].policy;
    REQUIRE(policy.max_fails == 1);
    upstreams::UpstreamState& s = f.at(0);
    CHECK(upstreams::record_failure(s, policy, T));
    CHECK(s.down_until_ms.load() == T + 10000);
    Rng rng;
    for (int i = 0; i < 20; ++i) CHECK(first_choice(f, client(i), rng, T + 9999) == 1);
    CHECK_FALSE(upstreams::record_failure(s, policy, T + 5000));
    // Expired: the next failure is a new transition (logged once more).
    CHECK(upstreams::is_up(s, T + 10000));
    CHECK(upstreams::record_failure(s, policy, T + 10001));
    CHECK(s.down_until_ms.load() == T + 20001);
    CHECK(upstreams::passive_down(s, T + 20000));
    CHECK_FALSE(upstreams::passive_down(s, T + 20001));
}

TEST_CASE("record_failure: many processes failing at once report the transition exactly once", "[upstreams]") {
    Fixture f(rule("random", {"127.0.0.1:1"}, "  max_fails: 5\n  fail_timeout: 1m\n"));
    REQUIRE(f.ok);
    const config::Policy& policy = f.cfg.rules[0].policy;
    upstreams::UpstreamState& s = f.at(0);
    // Counts transitions in shared memory too.
    void* mem = mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    auto* transitions = new (mem) std::atomic<int>(0);
    std::vector<pid_t> kids;
    for (int k = 0; k < 4; ++k) {
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            for (int i = 0; i < 200; ++i)
                if (upstreams::record_failure(s, policy, T + i)) transitions->fetch_add(1);
            _exit(0);
        }
        kids.push_back(pid);
    }
    for (pid_t pid : kids) {
        int status = 0;
        waitpid(pid, &status, 0);
    }
    CHECK(transitions->load() == 1);
    CHECK(s.failed.load() == 800);
    CHECK(upstreams::passive_down(s, T + 1000));
    munmap(mem, sizeof(std::atomic<int>));
}

// ---- run-time state, per-upstream limits, retries (issue 15) -----------------

TEST_CASE("least-conn: ten sequential connections to two idle upstreams of equal weight go 5 and 5",
          "[upstreams][least-conn]") {
    Fixture f(rule("least-conn", {"127.0.0.1:1", "127.0.0.1:2"}));
    REQUIRE(f.ok);
    Rng rng;
    std::map<size_t, int> counts;
    for (int i = 0; i < 10; ++i) ++counts[first_choice(f, client(i), rng)];  // each closes before the next
    CHECK(counts[0] == 5);
    CHECK(counts[1] == 5);
}

TEST_CASE("a disabled upstream is never planned, not even when everything else is down", "[upstreams][control]") {
    Fixture f(rule("round-robin", {"127.0.0.1:1", "127.0.0.1:2", "{address: 127.0.0.1:3, backup: true}"}));
    REQUIRE(f.ok);
    Rng rng;
    f.at(0).disabled = 1;
    std::vector<uint16_t> order;
    for (int i = 0; i < 20; ++i) {
        CHECK(upstreams::plan(f.pool(), client(i), T, rng, order));
        CHECK(std::find(order.begin(), order.end(), 0) == order.end());
        CHECK(order[0] == 1);
    }
    f.at(1).probe = upstreams::probe_down;
    CHECK(first_choice(f, client(0), rng) == 2);  // the backup takes over
    CHECK(upstreams::plan(f.pool(), client(0), T, rng, order));
    CHECK(order == std::vector<uint16_t>{2, 1});  // the down primary after it, never the disabled one
    f.at(2).probe = upstreams::probe_down;
    CHECK_FALSE(upstreams::plan(f.pool(), client(0), T, rng, order));  // fail open: only the enabled ones
    CHECK(as_set(order) == std::multiset<uint16_t>{1, 2});
    f.at(1).disabled = 1;
    f.at(2).disabled = 1;
    upstreams::plan(f.pool(), client(0), T, rng, order);
    CHECK(order.empty());
    CHECK(upstreams::has_room(f.pool()));  // all disabled: clients are closed, not parked
    CHECK(std::string(upstreams::state_name(f.at(1), T)) == "disabled");
    f.at(1).active = 2;
    CHECK(std::string(upstreams::state_name(f.at(1), T)) == "draining");
}

TEST_CASE("a run-time weight steers round-robin at once", "[upstreams][control]") {
    Fixture f(rule("round-robin", {"127.0.0.1:1", "127.0.0.1:2"}));
    REQUIRE(f.ok);
    Rng rng;
    CHECK(f.at(0).weight.load() == 1);
    f.at(0).weight = 3;
    std::map<size_t, int> counts;
    for (int i = 0; i < 400; ++i) ++counts[first_choice(f, client(i), rng)];
    CHECK(counts[0] == 300);
    CHECK(counts[1] == 100);
}

TEST_CASE("max_conns: a full upstream is skipped, backups take over when every primary is full",
          "[upstreams][max_conns]") {
    Fixture f(rule("round-robin",
                   {"{address: 127.0.0.1:1, max_conns: 2}", "{address: 127.0.0.1:2, max_conns: 1}",
                    "{address: 127.0.0.1:3, backup: true, max_conns: 1}"}));
    REQUIRE(f.ok);
    REQUIRE(f.cfg.rules[0].to[0].max_conns == 2);
    Rng rng;
    CHECK(f.shared.take_place(0, f.at(0), 2));
    CHECK(f.shared.take_place(0, f.at(0), 2));
    CHECK_FALSE(f.shared.take_place(0, f.at(0), 2));  // a third would overshoot: nothing taken
    CHECK(f.at(0).active.load() == 2);
    for (int i = 0; i < 10; ++i) CHECK(first_choice(f, client(i), rng) == 1);
    f.at(1).active = 1;
    std::vector<uint16_t> order;
    upstreams::plan(f.pool(), client(0), T, rng, order);
    CHECK(order == std::vector<uint16_t>{2});
    CHECK(upstreams::has_room(f.pool()));
    f.at(1).active = 0;
    f.at(1).probe = upstreams::probe_down;  // down-marked but with room: listed last, still not the full one
    upstreams::plan(f.pool(), client(0), T, rng, order);
    CHECK(order == std::vector<uint16_t>{2, 1});
    f.at(1).active = 1;
    f.at(2).active = 1;
    upstreams::plan(f.pool(), client(0), T, rng, order);
    CHECK(order.empty());
    CHECK_FALSE(upstreams::has_room(f.pool()));  // the worker stops accepting: clients wait in the backlog
    f.at(0).active = 1;
    CHECK(upstreams::has_room(f.pool()));
}

TEST_CASE("retries: N cuts the failover list to 1 + N upstreams; the default tries them all",
          "[upstreams][retries]") {
    std::vector<std::string> five = {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:5"};
    Rng rng;
    std::vector<uint16_t> order;
    {
        Fixture f(rule("random", five));
        REQUIRE(f.ok);
        CHECK(f.cfg.rules[0].policy.retries == -1);
        upstreams::plan(f.pool(), client(0), T, rng, order);
        CHECK(order.size() == 5);
    }
    for (int n : {0, 1, 3, 9}) {
        Fixture f(rule("random", five, "  retries: " + std::to_string(n) + "\n"));
        REQUIRE(f.ok);
        upstreams::plan(f.pool(), client(0), T, rng, order);
        CHECK(order.size() == std::min<size_t>(5, static_cast<size_t>(n) + 1));
    }
    // The cut also takes the down-marked upstreams at the tail first.
    Fixture f(rule("random", five, "  retries: 2\n"));
    REQUIRE(f.ok);
    f.at(0).probe = upstreams::probe_down;
    f.at(1).down_until_ms.store(T + 1000);
    f.at(2).probe = upstreams::probe_down;
    upstreams::plan(f.pool(), client(0), T, rng, order);
    REQUIRE(order.size() == 3);
    CHECK(as_set({order[0], order[1]}) == std::multiset<uint16_t>{3, 4});
    CHECK(order[2] <= 2);
}

TEST_CASE("a reload keeps disable and a run-time weight, unless the file changed that weight",
          "[upstreams][control]") {
    Fixture before(rule("random", {"127.0.0.1:1", "{address: 127.0.0.1:2, weight: 2}"}));
    Fixture same(rule("random", {"127.0.0.1:1", "{address: 127.0.0.1:2, weight: 2}"}));
    Fixture edited(rule("random", {"127.0.0.1:1", "{address: 127.0.0.1:2, weight: 4}"}));
    REQUIRE((before.ok && same.ok && edited.ok));
    before.at(0).disabled = 1;
    before.at(1).weight = 7;
    before.at(1).weight_changed = 1;
    for (size_t u = 0; u < 2; ++u) {
        upstreams::copy_runtime(before.at(u), before.cfg.rules[0].to[u], same.at(u), same.cfg.rules[0].to[u]);
        upstreams::copy_runtime(before.at(u), before.cfg.rules[0].to[u], edited.at(u), edited.cfg.rules[0].to[u]);
    }
    CHECK(same.at(0).disabled.load() == 1);
    CHECK(same.at(1).weight.load() == 7);
    CHECK(edited.at(0).disabled.load() == 1);
    CHECK(edited.at(1).weight.load() == 4);
}
