// Fair under pressure: a worker that cannot accept (out of descriptors)
// must not hold the others back. The real mixctl between real sockets on
// loopback; every wait has a deadline.
#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace harness;

namespace {

// The `accepted=` count of the last SIGUSR1 stats line for worker `pid`.
long accepted_by(const Daemon& d, pid_t pid) {
    std::string needle = " pid=" + std::to_string(pid) + " ";
    long value = -1;
    for (const std::string& line : lines_of(d.log())) {
        if (line.find("stats worker=") == std::string::npos || line.find(needle) == std::string::npos) continue;
        size_t at = line.find("accepted=");
        if (at != std::string::npos) value = atol(line.c_str() + at + 9);
    }
    return value;
}

// Asks for stats and waits until the line for `pid` is new.
long fresh_accepted(Daemon& d, pid_t pid) {
    size_t before = d.count("stats worker=");
    d.signal(SIGUSR1);
    if (!d.wait_log("stats worker=", 5000ms, before + 2)) return -1;
    return accepted_by(d, pid);
}

}  // namespace

TEST_CASE("a worker out of descriptors does not hold the other back: 200 connections in a row all served", "[fair]") {
    Server up(digest);
    REQUIRE(up.ok());
    Daemon d(one_rule(up), {"-w", "2", "-v=false"});
    uint16_t port = d.ready_port(2);
    std::vector<pid_t> workers = d.workers(2);
    // Both workers have started and settled before one is starved.
    warm_up(port, 4, "warm-up");
    const pid_t starved = workers[0];
    settled_fd_count(starved);
    rlim_t limit = limit_with_room(starved, 0);  // it can open nothing more
    REQUIRE(limit > 0);
    SoftFdLimit lowered(starved, limit);
    REQUIRE(lowered.ok());
    const pid_t healthy = workers[1];
    const long healthy_before = fresh_accepted(d, healthy);
    REQUIRE(healthy_before >= 0);

    int served = 0;
    long slowest_ms = 0;
    Clock::time_point start = Clock::now();
    for (int i = 0; i < 200 && elapsed_ms(start) < 60000; ++i) {
        std::string request = pattern(100 + static_cast<size_t>(i), static_cast<uint64_t>(i)), reply;
        Clock::time_point t = Clock::now();
        if (!exchange(port, request, reply, AF_INET, 3000ms) || reply != digest_line(request)) break;
        slowest_ms = std::max(slowest_ms, elapsed_ms(t));
        ++served;
    }
    const long total_ms = elapsed_ms(start);
    const long healthy_after = fresh_accepted(d, healthy);
    INFO("served " << served << " of 200 in " << total_ms << " ms, slowest " << slowest_ms << " ms; soft limit "
                   << limit << "; the other worker accepted " << healthy_before << " -> " << healthy_after);
    INFO(d.log());
    CHECK(served == 200);
    CHECK(total_ms < 30000);  // generous: ~1 s on an idle machine
    CHECK(healthy_after - healthy_before == served);  // every one of them, by the other worker
    CHECK(d.count("too many open files") >= 1);  // the starved worker did try, and paused
}
