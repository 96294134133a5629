// timers_test.cpp - the deadline heap: order, cancel, reschedule, and no allocation once warm.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "timers.hpp"

using timers::Clock;
using timers::Queue;
using std::chrono::milliseconds;

namespace {

std::vector<uint32_t> drain(Queue& q, Clock::time_point now) {
    std::vector<uint32_t> out;
    for (uint32_t id; (id = q.pop_due(now)) != UINT32_MAX;) out.push_back(id);
    return out;
}

}  // namespace

TEST_CASE("timers come out in deadline order, and only once due", "[timers]") {
    Queue q;
    Clock::time_point t0{};
    q.schedule(3, t0 + milliseconds(30));
    q.schedule(1, t0 + milliseconds(10));
    q.schedule(2, t0 + milliseconds(20));
    CHECK(q.next() == t0 + milliseconds(10));
    CHECK(drain(q, t0 + milliseconds(5)).empty());
    CHECK(drain(q, t0 + milliseconds(20)) == std::vector<uint32_t>{1, 2});
    CHECK(q.size() == 1);
    CHECK(drain(q, t0 + milliseconds(100)) == std::vector<uint32_t>{3});
    CHECK(q.empty());
}

TEST_CASE("a rescheduled timer moves, a cancelled one never fires", "[timers]") {
    Queue q;
    Clock::time_point t0{};
    for (uint32_t id = 0; id < 10; ++id) q.schedule(id, t0 + milliseconds(10 * (id + 1)));
    q.schedule(9, t0 + milliseconds(1));   // earlier
    q.schedule(0, t0 + milliseconds(500));  // later
    q.cancel(5);
    q.cancel(5);   // twice is harmless
    q.cancel(77);  // never scheduled
    CHECK_FALSE(q.scheduled(5));
    CHECK(q.scheduled(9));
    CHECK(drain(q, t0 + milliseconds(1000)) == std::vector<uint32_t>{9, 1, 2, 3, 4, 6, 7, 8, 0});
}

TEST_CASE("random schedules, moves and cancels keep the heap in order", "[timers]") {
    std::mt19937 random(12);
    Queue q;
    Clock::time_point t0{};
    std::vector<int64_t> want(500, -1);  // by id: deadline in ms, or -1
    for (int round = 0; round < 20000; ++round) {
        uint32_t id = random() % want.size();
        if (random() % 4 == 0) {
            q.cancel(id);
            want[id] = -1;
        } else {
            int64_t at = random() % 100000;
            q.schedule(id, t0 + milliseconds(at));
            want[id] = at;
        }
    }
    int64_t last = -1;
    size_t count = 0;
    for (uint32_t id; (id = q.pop_due(t0 + milliseconds(100000))) != UINT32_MAX; ++count) {
        REQUIRE(want[id] >= last);
        last = want[id];
        want[id] = -1;
    }
    CHECK(std::count(want.begin(), want.end(), -1) == static_cast<long>(want.size()));
    CHECK(count > 0);
}

TEST_CASE("once reserved, scheduling and cancelling allocate nothing", "[timers]") {
    Queue q;
    q.reserve(1000);
    Clock::time_point t0{};
    for (uint32_t id = 0; id < 1000; ++id) q.schedule(id, t0 + milliseconds(id % 17));
    const size_t before = q.capacity();
    for (int round = 0; round < 10; ++round) {
        for (uint32_t id = 0; id < 1000; ++id) q.cancel(id);
        for (uint32_t id = 0; id < 1000; ++id) q.schedule(id, t0 + milliseconds((id * 7 + round) % 31));
    }
    CHECK(q.capacity() == before);  // the heap never grew: no allocation
}
