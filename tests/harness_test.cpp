// The harness's own behaviour: a failing test prints the log of every
// daemon it ran (the listener below tells harness.hpp a test has failed).
// Listeners outside the main file need Catch2's reporter interfaces.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace harness;

namespace {

// Marks the running test case failed at its first failed assertion, so the
// Daemons it still holds print their logs as they go away (a REQUIRE
// unwinds through them), and clears the mark when the next case starts.
struct FailedTestMarker : Catch::TestEventListenerBase {
    using TestEventListenerBase::TestEventListenerBase;
    void testCaseStarting(Catch::TestCaseInfo const& info) override {
        test_failed() = false;
        TestEventListenerBase::testCaseStarting(info);
    }
    bool assertionEnded(Catch::AssertionStats const& stats) override {
        if (!stats.assertionResult.isOk()) test_failed() = true;
        return TestEventListenerBase::assertionEnded(stats);
    }
};

}  // namespace

CATCH_REGISTER_LISTENER(FailedTestMarker)

// Hidden (run only by name, below): a test that fails on purpose while a
// daemon runs.
TEST_CASE("harness: a deliberately failing test with a daemon", "[.harness-fails]") {
    Server up(echo);
    Daemon d(one_rule(up), {"-w", "1"});
    REQUIRE(d.port("r") != 0);
    CHECK(1 == 2);
}

TEST_CASE("a failing test prints its daemon's log, a passing one does not", "[harness]") {
    RunResult failing = run_self({"[.harness-fails]"});
    INFO("stderr:\n" << failing.err << "\nstdout:\n" << failing.out);
    CHECK(failing.exit.code != 0);
    CHECK(failing.err.find("---- the failed test's mixctl (pid ") != std::string::npos);
    CHECK(failing.err.find("Forwarding (r) from: 127.0.0.1:") != std::string::npos);
    RunResult passing = run_self({"wait_until returns as soon as the condition holds and false at its deadline"});
    CHECK(passing.exit.code == 0);
    CHECK(passing.err.find("---- the failed test's mixctl") == std::string::npos);
}

TEST_CASE("wait_until returns as soon as the condition holds and false at its deadline", "[harness]") {
    Clock::time_point t0 = Clock::now();
    int calls = 0;
    CHECK(wait_until([&] { return ++calls == 3; }, 5000ms));
    CHECK(calls == 3);
    CHECK_FALSE(wait_until([] { return false; }, 50ms));
    CHECK(elapsed_ms(t0) >= 50);
}
