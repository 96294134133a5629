// The balance board on its own: when a worker ahead of the others holds
// back, and which workers count in that comparison.
#include <catch2/catch.hpp>

#include "balance.hpp"

TEST_CASE("a worker far ahead holds back only while the others can accept", "[balance]") {
    balance::Board board;
    REQUIRE(board.map(2));
    const int64_t now = 1000000;
    board.heartbeat(0, now);
    board.heartbeat(1, now);
    board.slot(0).accepted.store(100);
    board.slot(1).accepted.store(0);
    CHECK_FALSE(board.may_accept(0, now));  // 100 > 0 + lead
    CHECK(board.may_accept(1, now));

    // Worker 1 is out of descriptors: it still runs (fresh heartbeat) but
    // leaves the comparison at once.
    board.set_accepting(1, false);
    CHECK(board.may_accept(0, now));
    board.slot(0).accepted.store(300);  // worker 0 takes its share meanwhile
    CHECK(board.may_accept(0, now));

    // Back: level with the others, so worker 0 is not held back by what it
    // took meanwhile, and worker 1 does not take every connection to catch up.
    board.set_accepting(1, true);
    CHECK(board.slot(1).accepted.load() == 300);
    CHECK(board.may_accept(0, now));
    CHECK(board.may_accept(1, now));
}

TEST_CASE("a worker whose heartbeat is stale leaves the comparison", "[balance]") {
    balance::Board board;
    REQUIRE(board.map(2));
    board.heartbeat(0, 5000);
    board.heartbeat(1, 5000);
    board.slot(0).accepted.store(100);
    CHECK_FALSE(board.may_accept(0, 5000));
    CHECK(board.may_accept(0, 5000 + balance::Board::stale_after_ms + 1));
}
