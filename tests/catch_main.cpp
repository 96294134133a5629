// The Catch2 main, compiled once (it is slow to build). After the run it
// prints a plain "N passed, N failed" line, counted in test cases, so CI can
// read the result without knowing Catch2's own summary format.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

namespace {

Catch::Totals run_totals;

struct RememberTotals : Catch::TestEventListenerBase {
    using TestEventListenerBase::TestEventListenerBase;
    void testRunEnded(Catch::TestRunStats const& stats) override { run_totals = stats.totals; }
};

}  // namespace

CATCH_REGISTER_LISTENER(RememberTotals)

int main(int argc, char* argv[]) {
    int failed = Catch::Session().run(argc, argv);
    std::fflush(stdout);
    std::printf("%llu passed, %llu failed\n", static_cast<unsigned long long>(run_totals.testCases.passed),
                static_cast<unsigned long long>(run_totals.testCases.failed));
    return failed;
}
