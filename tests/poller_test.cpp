// poller_test.cpp - both wait backends: readiness, changes of interest, silence, forgetting.
#include <catch2/catch.hpp>

#include <map>
#include <vector>

#include <sys/socket.h>
#include <unistd.h>

#include "poller.hpp"

using poller::Backend;
using poller::Poller;

namespace {

std::vector<Backend> backends() {
    std::vector<Backend> all{Backend::poll};
    if (poller::default_backend() == Backend::epoll) all.push_back(Backend::epoll);
    return all;
}

// token -> events of one wait.
std::map<uint64_t, uint32_t> ready(Poller& p, int timeout_ms = 0) {
    const poller::Event* events = nullptr;
    int n = p.wait(timeout_ms, events);
    std::map<uint64_t, uint32_t> out;
    for (int i = 0; i < n; ++i) out[events[i].token] = events[i].events;
    return out;
}

struct Pair {
    net::Fd a, b;
    Pair() {
        int ends[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends) == 0);
        a.reset(ends[0]);
        b.reset(ends[1]);
    }
};

}  // namespace

TEST_CASE("a socket is reported ready for what it is watched for, with its token", "[poller]") {
    for (Backend backend : backends()) {
        INFO(poller::name(backend));
        Poller p(backend);
        REQUIRE(p.open() == 0);
        Pair x, y;
        REQUIRE(p.watch(x.a.get(), 11, POLLIN) == 0);
        REQUIRE(p.watch(y.a.get(), 22, POLLIN) == 0);
        CHECK(ready(p).empty());
        REQUIRE(::write(y.b.get(), "z", 1) == 1);
        auto r = ready(p, 1000);
        REQUIRE(r.size() == 1);
        CHECK((r[22] & POLLIN) != 0);
        // Level-triggered: still reported while unread.
        CHECK(ready(p).count(22) == 1);
        // Wanting POLLOUT too: both reported, and a repeated want changes nothing.
        REQUIRE(p.want(x.a.get(), POLLIN | POLLOUT) == 0);
        REQUIRE(p.want(x.a.get(), POLLIN | POLLOUT) == 0);
        r = ready(p);
        CHECK((r[11] & POLLOUT) != 0);
        CHECK(p.watched() == 2);
    }
}

TEST_CASE("a silent socket does not wake the wait even when hung up, and comes back when wanted", "[poller]") {
    for (Backend backend : backends()) {
        INFO(poller::name(backend));
        Poller p(backend);
        REQUIRE(p.open() == 0);
        Pair x;
        REQUIRE(p.watch(x.a.get(), 5, 0) == 0);
        x.b.reset();  // the peer is gone: POLLHUP, reported even with no events asked
        auto r = ready(p, 1000);
        REQUIRE(r.count(5) == 1);
        CHECK((r[5] & POLLHUP) != 0);
        REQUIRE(p.want(x.a.get(), poller::silent) == 0);
        CHECK(ready(p, 50).empty());
        REQUIRE(p.want(x.a.get(), POLLIN) == 0);
        CHECK(ready(p, 1000).count(5) == 1);
    }
}

TEST_CASE("a forgotten socket is never reported again, and its number can be watched anew", "[poller]") {
    for (Backend backend : backends()) {
        INFO(poller::name(backend));
        Poller p(backend);
        REQUIRE(p.open() == 0);
        std::vector<Pair> pairs(5);
        for (size_t i = 0; i < pairs.size(); ++i) REQUIRE(p.watch(pairs[i].a.get(), i, POLLOUT) == 0);
        CHECK(ready(p).size() == 5);
        p.forget(pairs[1].a.get(), false);
        int number = pairs[3].a.get();
        p.forget(number, true);
        pairs[3].a.reset();  // closed, as forget(.., true) promised
        auto r = ready(p);
        CHECK(r.size() == 3);
        CHECK(r.count(1) == 0);
        CHECK(r.count(3) == 0);
        Pair fresh;  // most likely takes the closed number again
        REQUIRE(p.watch(fresh.a.get(), 99, POLLOUT) == 0);
        r = ready(p);
        CHECK(r.count(99) == 1);
        CHECK(r.size() == 4);
        CHECK(p.watched() == 4);
    }
}
