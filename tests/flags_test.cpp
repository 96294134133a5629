// Tests for flags.hpp: mixctl's command line must behave exactly like the Go
// binary's (Go's `flag` package with ExitOnError, time.ParseDuration and
// Duration.String).
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "flags.hpp"
#include "log.hpp"

using flags::Duration;
using flags::Options;
using flags::Outcome;
using flags::ParseResult;

namespace {

constexpr std::int64_t kNs = 1;
constexpr std::int64_t kUs = 1000 * kNs;
constexpr std::int64_t kMs = 1000 * kUs;
constexpr std::int64_t kSec = 1000 * kMs;
constexpr std::int64_t kMin = 60 * kSec;
constexpr std::int64_t kHour = 60 * kMin;

// Runs flags::parse on {"mixctl", args...}.
ParseResult run(const std::vector<std::string>& args, Options& options) {
    std::vector<const char*> argv;
    argv.push_back("mixctl");
    for (const std::string& a : args) argv.push_back(a.c_str());
    return flags::parse(static_cast<int>(argv.size()), argv.data(), options);
}

std::string show(const std::vector<std::string>& args) {
    std::string out;
    for (const std::string& a : args) {
        if (!out.empty()) out += ' ';
        out += '[' + a + ']';
    }
    return out;
}

using Args = std::vector<std::string>;

}  // namespace

// ---------------------------------------------------------------- durations

TEST_CASE("parse_duration accepts what Go's time.ParseDuration accepts, with the same value",
          "[flags][duration]") {
    struct Case {
        const char* text;
        std::int64_t ns;
    };
    const Case cases[] = {
        // zero, with and without sign, needs no unit
        {"0", 0},
        {"-0", 0},
        {"+0", 0},
        {"0s", 0},
        {"0.0h", 0},
        // simple
        {"5s", 5 * kSec},
        {"30s", 30 * kSec},
        {"1478s", 1478 * kSec},
        {"-5s", -5 * kSec},
        {"+5s", 5 * kSec},
        // decimals
        {"1.5s", 1500 * kMs},
        {"5.0s", 5 * kSec},
        {"5.6s", 5 * kSec + 600 * kMs},
        {"5.s", 5 * kSec},
        {"1.s", 1 * kSec},
        {".5s", 500 * kMs},
        {"1.0s", 1 * kSec},
        {"1.00s", 1 * kSec},
        {"1.004s", 1 * kSec + 4 * kMs},
        {"1.0040s", 1 * kSec + 4 * kMs},
        {"100.00100s", 100 * kSec + 1 * kMs},
        // every unit
        {"10ns", 10 * kNs},
        {"11us", 11 * kUs},
        {"300us", 300 * kUs},
        {"12\xC2\xB5s", 12 * kUs},  // U+00B5 micro sign
        {"12\xCE\xBCs", 12 * kUs},  // U+03BC Greek mu
        {"13ms", 13 * kMs},
        {"1500ms", 1500 * kMs},
        {"14s", 14 * kSec},
        {"15m", 15 * kMin},
        {"16h", 16 * kHour},
        // composites
        {"1m30s", 90 * kSec},
        {"2h45m", 2 * kHour + 45 * kMin},
        {"3h30m", 3 * kHour + 30 * kMin},
        {"10.5s4m", 4 * kMin + 10 * kSec + 500 * kMs},
        {"-2m3.4s", -(2 * kMin + 3 * kSec + 400 * kMs)},
        {"1h2m3s4ms5us6ns", 1 * kHour + 2 * kMin + 3 * kSec + 4 * kMs + 5 * kUs + 6 * kNs},
        {"39h9m14.425s", 39 * kHour + 9 * kMin + 14 * kSec + 425 * kMs},
        {"1s1s", 2 * kSec},
        // large values and fractions of large units
        {"52763797000ns", 52763797000 * kNs},
        {"0.3333333333333333333h", 20 * kMin},
        {"0.100000000000000000000h", 6 * kMin},
        {"9007199254740993ns", (std::int64_t{1} << 53) + 1},
        {"9223372036854775807ns", INT64_MAX},
        {"9223372036854775.807us", INT64_MAX},
        {"9223372036854.775807ms", INT64_MAX},
        {"9223372036.854775807s", INT64_MAX},
        {"-9223372036854775808ns", INT64_MIN},
        {"-9223372036854775.808us", INT64_MIN},
        {"-9223372036.854775808s", INT64_MIN},
        {"2562047h47m16.854775807s", INT64_MAX},
    };
    for (const Case& c : cases) {
        INFO("input: " << c.text);
        Duration d{-12345};
        std::string error;
        CHECK(flags::parse_duration(c.text, d, error));
        CHECK(error.empty());
        CHECK(d.count() == c.ns);
    }
}

TEST_CASE("parse_duration rejects what Go rejects, with Go's error text", "[flags][duration]") {
    struct Case {
        const char* text;
        const char* error;
    };
    const Case cases[] = {
        {"", R"(time: invalid duration "")"},
        {"-", R"(time: invalid duration "-")"},
        {"+", R"(time: invalid duration "+")"},
        {"abc", R"(time: invalid duration "abc")"},
        {"s", R"(time: invalid duration "s")"},
        {".", R"(time: invalid duration ".")"},
        {".s", R"(time: invalid duration ".s")"},
        {"-.s", R"(time: invalid duration "-.s")"},
        {"+.s", R"(time: invalid duration "+.s")"},
        {" 1s", R"(time: invalid duration " 1s")"},
        {"--1s", R"(time: invalid duration "--1s")"},
        {"1h-1m", R"(time: unknown unit "h-" in duration "1h-1m")"},  // units run to the next digit or dot
        {"1h.-1m", R"(time: invalid duration "1h.-1m")"},
        {"1", R"(time: missing unit in duration "1")"},
        {"00", R"(time: missing unit in duration "00")"},
        {"-1", R"(time: missing unit in duration "-1")"},
        {"1.5", R"(time: missing unit in duration "1.5")"},
        {"1s2", R"(time: missing unit in duration "1s2")"},
        {"1.5.s", R"(time: missing unit in duration "1.5.s")"},
        {"1x", R"(time: unknown unit "x" in duration "1x")"},
        {"1 s", R"(time: unknown unit " s" in duration "1 s")"},
        {"1S", R"(time: unknown unit "S" in duration "1S")"},
        {"1sec", R"(time: unknown unit "sec" in duration "1sec")"},
        {"3000000h", R"(time: invalid duration "3000000h")"},  // overflows int64 ns
        {"9223372036854775808ns", R"(time: invalid duration "9223372036854775808ns")"},
        {"9223372036854775.808us", R"(time: invalid duration "9223372036854775.808us")"},
        {"9223372036854ms775us808ns", R"(time: invalid duration "9223372036854ms775us808ns")"},
        {"-9223372036854775809ns", R"(time: invalid duration "-9223372036854775809ns")"},
        {"99999999999999999999s", R"(time: invalid duration "99999999999999999999s")"},
        // Go wraps 2^63+2^63 to 0 here; we call it the overflow it is.
        {"9223372036854775808ns9223372036854775808ns",
         R"(time: invalid duration "9223372036854775808ns9223372036854775808ns")"},
        // time.quote: non-ASCII and control bytes as \x escapes, '"' and '\' escaped
        {"1\xC3\xA9", R"(time: unknown unit "\xc3\xa9" in duration "1\xc3\xa9")"},
        {"1s\t", R"(time: unknown unit "s\x09" in duration "1s\x09")"},
        {"\"1s\"", R"(time: invalid duration "\"1s\"")"},
        {"1\\", R"(time: unknown unit "\\" in duration "1\\")"},
    };
    for (const Case& c : cases) {
        INFO("input: " << c.text);
        Duration d{-12345};
        std::string error;
        CHECK_FALSE(flags::parse_duration(c.text, d, error));
        CHECK(error == c.error);
        CHECK(d.count() == -12345);  // untouched on failure
    }
}

TEST_CASE("format_duration prints what Go's Duration.String prints", "[flags][duration]") {
    struct Case {
        std::int64_t ns;
        const char* text;
    };
    const Case cases[] = {
        {0, "0s"},
        {1 * kNs, "1ns"},
        {2 * kNs, "2ns"},
        {999 * kNs, "999ns"},
        {1 * kUs + 100 * kNs, "1.1\xC2\xB5s"},
        {1500 * kNs, "1.5\xC2\xB5s"},
        {300 * kUs, "300\xC2\xB5s"},
        {2200 * kUs, "2.2ms"},
        {300 * kMs, "300ms"},
        {100 * kMs, "100ms"},
        {999999999, "999.999999ms"},
        {1 * kSec, "1s"},
        {1500 * kMs, "1.5s"},
        {1001 * kMs, "1.001s"},
        {1 * kSec + 1, "1.000000001s"},
        {10 * kSec, "10s"},
        {59 * kSec, "59s"},
        {60 * kSec, "1m0s"},
        {90 * kSec, "1m30s"},
        {3 * kMin + 300 * kMs, "3m0.3s"},
        {4 * kMin + 5 * kSec, "4m5s"},
        {4 * kMin + 5001 * kMs, "4m5.001s"},
        {5 * kHour + 6 * kMin + 7001 * kMs, "5h6m7.001s"},
        {1 * kHour, "1h0m0s"},
        {2 * kHour + 45 * kMin, "2h45m0s"},
        {8 * kMin + 1, "8m0.000000001s"},
        {-1 * kNs, "-1ns"},
        {-1 * kSec, "-1s"},
        {-1500 * kMs, "-1.5s"},
        {-(3 * kMin + 300 * kMs), "-3m0.3s"},
        {INT64_MAX, "2562047h47m16.854775807s"},
        {INT64_MIN, "-2562047h47m16.854775808s"},
    };
    for (const Case& c : cases) {
        INFO("nanoseconds: " << c.ns);
        CHECK(flags::format_duration(Duration(c.ns)) == c.text);
    }
}

TEST_CASE("format_duration output parses back to the same duration", "[flags][duration]") {
    const std::int64_t values[] = {
        0,         1,           999,           1000,        1500,     999999,
        1000000,   1500000000,  90 * kSec,     kHour,       kHour + 1, 123456789012345,
        -1,        -1500 * kMs, -kHour - kMin, INT64_MAX,   INT64_MIN,
    };
    for (std::int64_t ns : values) {
        const std::string text = flags::format_duration(Duration(ns));
        INFO("nanoseconds: " << ns << " text: " << text);
        Duration back{};
        std::string error;
        REQUIRE(flags::parse_duration(text, back, error));
        CHECK(back.count() == ns);
    }
}

// ---------------------------------------------------------------- defaults

TEST_CASE("no arguments leaves every option at its documented default", "[flags][parse]") {
    Options o;
    ParseResult r = run({}, o);
    CHECK(r.outcome == Outcome::Run);
    CHECK(r.message.empty());
    CHECK(o.file == "rules.yaml");
    CHECK(o.dial_timeout == std::chrono::milliseconds(1500));
    CHECK(o.verbose);
    CHECK(o.workers == 0);
    CHECK_FALSE(o.check);
    CHECK_FALSE(o.version);
    CHECK(o.grace == std::chrono::seconds(10));
    CHECK_FALSE(o.syslog);
    CHECK(o.args.empty());
}

TEST_CASE("a null or absent argv still parses as no arguments", "[flags][parse]") {
    Options o;
    CHECK(flags::parse(0, nullptr, o).outcome == Outcome::Run);
    const char* only_name[] = {"mixctl"};
    CHECK(flags::parse(1, only_name, o).outcome == Outcome::Run);
    CHECK(o.args.empty());
}

// ---------------------------------------------------------------- spellings

TEST_CASE("-f x, --f x, -f=x and --f=x all set the same flag, for every valued flag",
          "[flags][parse]") {
    struct Flag {
        const char* name;
        const char* value;
    };
    const Flag valued[] = {{"f", "other.yaml"}, {"t", "250ms"}, {"grace", "1m"}, {"w", "7"}};
    for (const Flag& f : valued) {
        const std::string n = f.name;
        const std::string v = f.value;
        const std::vector<Args> spellings = {
            {"-" + n, v}, {"--" + n, v}, {"-" + n + "=" + v}, {"--" + n + "=" + v}};
        for (const Args& args : spellings) {
            INFO("argv: " << show(args));
            Options o;
            ParseResult r = run(args, o);
            REQUIRE(r.outcome == Outcome::Run);
            CHECK(o.args.empty());
            if (n == "f") CHECK(o.file == "other.yaml");
            if (n == "t") CHECK(o.dial_timeout == std::chrono::milliseconds(250));
            if (n == "grace") CHECK(o.grace == std::chrono::minutes(1));
            if (n == "w") CHECK(o.workers == 7);
        }
    }
}

TEST_CASE("every flag can be given together and each lands in its own field", "[flags][parse]") {
    Options o;
    ParseResult r = run({"-f", "/etc/mixctl/rules.yaml", "-t", "3s", "-v=false", "-w", "4",
                         "-check", "-version", "-grace", "30s", "rest"},
                        o);
    REQUIRE(r.outcome == Outcome::Run);
    CHECK(o.file == "/etc/mixctl/rules.yaml");
    CHECK(o.dial_timeout == std::chrono::seconds(3));
    CHECK_FALSE(o.verbose);
    CHECK(o.workers == 4);
    CHECK(o.check);
    CHECK(o.version);
    CHECK(o.grace == std::chrono::seconds(30));
    CHECK(o.args == Args{"rest"});
}

TEST_CASE("a valued flag takes the next argument verbatim, even when it looks like a flag",
          "[flags][parse]") {
    struct Case {
        Args argv;
        const char* file;
        Args rest;
    };
    const Case cases[] = {
        {{"-f", "-v"}, "-v", {}},
        {{"-f", "--"}, "--", {}},
        {{"-f", "-"}, "-", {}},
        {{"-f", ""}, "", {}},
        {{"-f="}, "", {}},
        {{"-f=a=b"}, "a=b", {}},
        {{"-f", "x", "-f", "y"}, "y", {}},  // last one wins
        {{"-f=x", "--f", "z", "pos"}, "z", {"pos"}},
        {{"-f", "with space"}, "with space", {}},
    };
    for (const Case& c : cases) {
        INFO("argv: " << show(c.argv));
        Options o;
        ParseResult r = run(c.argv, o);
        REQUIRE(r.outcome == Outcome::Run);
        CHECK(o.file == c.file);
        CHECK(o.args == c.rest);
    }
}

// ---------------------------------------------------------------- bool flags

TEST_CASE("bool flags accept exactly strconv.ParseBool's spellings after '='", "[flags][bool]") {
    const char* truthy[] = {"1", "t", "T", "TRUE", "true", "True"};
    const char* falsy[] = {"0", "f", "F", "FALSE", "false", "False"};
    const char* names[] = {"v", "check", "version", "V"};
    for (const char* name : names) {
        for (const char* dashes : {"-", "--"}) {
            for (const char* t : truthy) {
                Options o;
                o.verbose = false;
                std::string arg = std::string(dashes) + name + "=" + t;
                INFO("arg: " << arg);
                REQUIRE(run({arg}, o).outcome == Outcome::Run);
                const bool value = std::string(name) == "v"       ? o.verbose
                                   : std::string(name) == "check" ? o.check
                                                                  : o.version;
                CHECK(value);
            }
            for (const char* f : falsy) {
                Options o;
                o.verbose = o.check = o.version = true;
                std::string arg = std::string(dashes) + name + "=" + f;
                INFO("arg: " << arg);
                REQUIRE(run({arg}, o).outcome == Outcome::Run);
                const bool value = std::string(name) == "v"       ? o.verbose
                                   : std::string(name) == "check" ? o.check
                                                                  : o.version;
                CHECK_FALSE(value);
            }
        }
    }
}

TEST_CASE("a bare bool flag sets it to true", "[flags][bool]") {
    Options o;
    o.verbose = false;
    REQUIRE(run({"-v", "--check", "-version"}, o).outcome == Outcome::Run);
    CHECK(o.verbose);
    CHECK(o.check);
    CHECK(o.version);
    CHECK(o.args.empty());
}

TEST_CASE("-V and -version both set the version option", "[flags][bool]") {
    for (const char* arg : {"-V", "--V", "-version", "--version", "-V=true", "-version=1"}) {
        INFO("arg: " << arg);
        Options o;
        REQUIRE(run({arg}, o).outcome == Outcome::Run);
        CHECK(o.version);
    }
    Options o;
    REQUIRE(run({"-V", "-version=false"}, o).outcome == Outcome::Run);
    CHECK_FALSE(o.version);  // last one wins across the two spellings
}

TEST_CASE("-syslog is a bool flag, off by default, in every Go spelling", "[flags][bool][syslog]") {
    for (const char* arg : {"-syslog", "--syslog", "-syslog=true", "--syslog=1", "-syslog=T"}) {
        INFO("arg: " << arg);
        Options o;
        REQUIRE(run({arg}, o).outcome == Outcome::Run);
        CHECK(o.syslog);
        CHECK(o.verbose);  // the other flags keep their defaults
        CHECK_FALSE(o.check);
        CHECK(o.args.empty());
    }
    Options o;
    REQUIRE(run({"-syslog", "-syslog=false"}, o).outcome == Outcome::Run);
    CHECK_FALSE(o.syslog);  // the last one wins
}

TEST_CASE("-syslog false stops parsing at false, as for every Go bool flag", "[flags][bool][syslog]") {
    Options o;
    ParseResult r = run({"-syslog", "false", "-w", "2"}, o);
    REQUIRE(r.outcome == Outcome::Run);
    CHECK(o.syslog);
    CHECK(o.workers == 0);
    CHECK(o.args == Args{"false", "-w", "2"});
}

TEST_CASE("-syslog with a value ParseBool rejects is an error worded as Go's", "[flags][bool][syslog]") {
    Options o;
    ParseResult r = run({"-syslog=yes"}, o);
    CHECK(r.outcome == Outcome::Error);
    CHECK(r.message == "invalid boolean value \"yes\" for -syslog: parse error");
}

TEST_CASE("-syslog combines with the other flags", "[flags][syslog]") {
    Options o;
    REQUIRE(run({"-f", "/etc/mixctl/rules.yaml", "-syslog", "-v=false", "-w", "3"}, o).outcome == Outcome::Run);
    CHECK(o.syslog);
    CHECK(o.file == "/etc/mixctl/rules.yaml");
    CHECK_FALSE(o.verbose);
    CHECK(o.workers == 3);
}

TEST_CASE("with -syslog, errors go out at LOG_ERR, warnings at LOG_WARNING, the rest at LOG_INFO",
          "[flags][syslog]") {
    using mixlog::Logger;
    CHECK(Logger::priority_of("error: rule (web): listen on 127.0.0.1:80: address already in use") == LOG_ERR);
    CHECK(Logger::priority_of("error dialing 127.0.0.1:8081: connection refused") == LOG_ERR);
    CHECK(Logger::priority_of("worker 1: error: poll: bad file descriptor") == LOG_ERR);
    CHECK(Logger::priority_of("rules.yaml:7: warning: unknown key \"wieght\" ignored") == LOG_WARNING);
    CHECK(Logger::priority_of("warning: setrlimit RLIMIT_NOFILE 4096: operation not permitted") == LOG_WARNING);
    CHECK(Logger::priority_of("Forwarding (k3s) from: 127.0.0.1:6443 to: [127.0.0.1:16443]") == LOG_INFO);
    CHECK(Logger::priority_of("Closed 127.0.0.1:6443 => 127.0.0.1:16443 (127.0.0.1:50412) bytes_in=1") == LOG_INFO);
    CHECK(Logger::priority_of("") == LOG_INFO);
    CHECK_FALSE(Logger(true, false).uses_syslog());
}

TEST_CASE("-v false leaves false as a positional argument, as Go does", "[flags][bool]") {
    Options o;
    o.verbose = false;
    ParseResult r = run({"-v", "false", "-f", "x"}, o);
    REQUIRE(r.outcome == Outcome::Run);
    CHECK(o.verbose);               // -v alone means true
    CHECK(o.file == "rules.yaml");  // parsing stopped at "false"
    CHECK(o.args == Args{"false", "-f", "x"});
}

TEST_CASE("-check true likewise stops parsing at true", "[flags][bool]") {
    Options o;
    ParseResult r = run({"-check", "true", "-w", "3"}, o);
    REQUIRE(r.outcome == Outcome::Run);
    CHECK(o.check);
    CHECK(o.workers == 0);
    CHECK(o.args == Args{"true", "-w", "3"});
}

TEST_CASE("a bool flag with a value strconv.ParseBool rejects is an error worded as Go's",
          "[flags][bool]") {
    struct Case {
        const char* arg;
        const char* message;
    };
    const Case cases[] = {
        {"-v=x", R"(invalid boolean value "x" for -v: parse error)"},
        {"--v=yes", R"(invalid boolean value "yes" for -v: parse error)"},
        {"-v=", R"(invalid boolean value "" for -v: parse error)"},
        {"-v=tRUE", R"(invalid boolean value "tRUE" for -v: parse error)"},
        {"-v=2", R"(invalid boolean value "2" for -v: parse error)"},
        {"-check=on", R"(invalid boolean value "on" for -check: parse error)"},
        {"-version=no", R"(invalid boolean value "no" for -version: parse error)"},
        {"-V=off", R"(invalid boolean value "off" for -V: parse error)"},
    };
    for (const Case& c : cases) {
        INFO("arg: " << c.arg);
        Options o;
        ParseResult r = run({c.arg}, o);
        CHECK(r.outcome == Outcome::Error);
        CHECK(r.message == c.message);
    }
}

// ---------------------------------------------------------------- stopping

TEST_CASE("the first non-flag argument stops parsing and it and the rest become args",
          "[flags][positional]") {
    struct Case {
        Args argv;
        Args rest;
        const char* file;
    };
    const Case cases[] = {
        {{"a"}, {"a"}, "rules.yaml"},
        {{"a", "-f", "x"}, {"a", "-f", "x"}, "rules.yaml"},
        {{"-f", "x", "a", "b"}, {"a", "b"}, "x"},
        {{"-"}, {"-"}, "rules.yaml"},                  // "-" alone is positional
        {{"-", "-f", "x"}, {"-", "-f", "x"}, "rules.yaml"},
        {{""}, {""}, "rules.yaml"},                    // so is an empty argument
        {{"--"}, {}, "rules.yaml"},                    // "--" ends flags and is dropped
        {{"--", "-f", "x"}, {"-f", "x"}, "rules.yaml"},
        {{"-f", "x", "--", "--", "y"}, {"--", "y"}, "x"},
        {{"-f", "x", "--"}, {}, "x"},
        {{"--", "-h"}, {"-h"}, "rules.yaml"},          // no help after "--"
        {{"a", "-nosuchflag"}, {"a", "-nosuchflag"}, "rules.yaml"},
    };
    for (const Case& c : cases) {
        INFO("argv: " << show(c.argv));
        Options o;
        ParseResult r = run(c.argv, o);
        REQUIRE(r.outcome == Outcome::Run);
        CHECK(o.args == c.rest);
        CHECK(o.file == c.file);
    }
}

TEST_CASE("args are replaced, not appended to, by a second parse", "[flags][positional]") {
    Options o;
    o.args = {"stale"};
    REQUIRE(run({"fresh"}, o).outcome == Outcome::Run);
    CHECK(o.args == Args{"fresh"});
    REQUIRE(run({}, o).outcome == Outcome::Run);
    CHECK(o.args.empty());
}

// ---------------------------------------------------------------- errors

TEST_CASE("argument errors are reported with Go's exact messages", "[flags][errors]") {
    struct Case {
        Args argv;
        const char* message;
    };
    const Case cases[] = {
        // unknown flags (names are case-sensitive)
        {{"-x"}, "flag provided but not defined: -x"},
        {{"--x"}, "flag provided but not defined: -x"},
        {{"-x=1"}, "flag provided but not defined: -x"},
        {{"-F", "x"}, "flag provided but not defined: -F"},
        {{"-Check"}, "flag provided but not defined: -Check"},
        {{"-Help"}, "flag provided but not defined: -Help"},
        {{"-H"}, "flag provided but not defined: -H"},
        {{"-verbose"}, "flag provided but not defined: -verbose"},
        {{"-f", "x", "-nope", "y"}, "flag provided but not defined: -nope"},
        // missing values
        {{"-f"}, "flag needs an argument: -f"},
        {{"--f"}, "flag needs an argument: -f"},
        {{"-t"}, "flag needs an argument: -t"},
        {{"-w"}, "flag needs an argument: -w"},
        {{"-grace"}, "flag needs an argument: -grace"},
        {{"-v", "-f"}, "flag needs an argument: -f"},
        // bad syntax
        {{"---f"}, "bad flag syntax: ---f"},
        {{"---"}, "bad flag syntax: ---"},
        {{"-=x"}, "bad flag syntax: -=x"},
        {{"--=x"}, "bad flag syntax: --=x"},
        {{"-="}, "bad flag syntax: -="},
        // bad durations: Go's flag package says "parse error", not time's text
        {{"-t", "abc"}, R"(invalid value "abc" for flag -t: parse error)"},
        {{"-t", "1"}, R"(invalid value "1" for flag -t: parse error)"},
        {{"-t="}, R"(invalid value "" for flag -t: parse error)"},
        {{"--t=5 s"}, R"(invalid value "5 s" for flag -t: parse error)"},
        {{"-grace", "10"}, R"(invalid value "10" for flag -grace: parse error)"},
        {{"-grace", "forever"}, R"(invalid value "forever" for flag -grace: parse error)"},
        // negative durations
        {{"-t", "-1s"}, R"(invalid value "-1s" for flag -t: must not be negative)"},
        {{"-t=-1ns"}, R"(invalid value "-1ns" for flag -t: must not be negative)"},
        {{"-grace", "-5m"}, R"(invalid value "-5m" for flag -grace: must not be negative)"},
        // bad worker counts
        {{"-w", "abc"}, R"(invalid value "abc" for flag -w: parse error)"},
        {{"-w", ""}, R"(invalid value "" for flag -w: parse error)"},
        {{"-w", "1.5"}, R"(invalid value "1.5" for flag -w: parse error)"},
        {{"-w", " 4"}, R"(invalid value " 4" for flag -w: parse error)"},
        {{"-w", "08"}, R"(invalid value "08" for flag -w: parse error)"},  // octal, as in Go
        {{"-w", "0x"}, R"(invalid value "0x" for flag -w: parse error)"},
        {{"-w", "1__0"}, R"(invalid value "1__0" for flag -w: parse error)"},
        {{"-w", "_10"}, R"(invalid value "_10" for flag -w: parse error)"},
        {{"-w", "10_"}, R"(invalid value "10_" for flag -w: parse error)"},
        {{"-w", "0"}, R"(invalid value "0" for flag -w: must be between 1 and 4096)"},
        {{"-w", "-1"}, R"(invalid value "-1" for flag -w: must be between 1 and 4096)"},
        {{"-w", "4097"}, R"(invalid value "4097" for flag -w: must be between 1 and 4096)"},
        {{"-w", "9223372036854775807"},
         R"(invalid value "9223372036854775807" for flag -w: must be between 1 and 4096)"},
        {{"-w", "9223372036854775808"},
         R"(invalid value "9223372036854775808" for flag -w: value out of range)"},
        {{"-w", "99999999999999999999"},
         R"(invalid value "99999999999999999999" for flag -w: value out of range)"},
        // values are quoted as Go's %q quotes them
        {{"-t", "a\"b"}, R"(invalid value "a\"b" for flag -t: parse error)"},
        {{"-t", "a\\b"}, R"(invalid value "a\\b" for flag -t: parse error)"},
        {{"-t", "a\tb\n"}, R"(invalid value "a\tb\n" for flag -t: parse error)"},
        {{"-t", "\x01\x7f"}, R"(invalid value "\x01\x7f" for flag -t: parse error)"},
        {{"-t", "caf\xC3\xA9"}, "invalid value \"caf\xC3\xA9\" for flag -t: parse error"},
        {{"-t", "bad\xFF"}, R"(invalid value "bad\xff" for flag -t: parse error)"},
        {{"-t", "\xC2\xA0"}, R"(invalid value "\u00a0" for flag -t: parse error)"},
        {{"-v=\xE2\x80\x8B"}, R"(invalid boolean value "\u200b" for -v: parse error)"},
    };
    for (const Case& c : cases) {
        INFO("argv: " << show(c.argv));
        Options o;
        ParseResult r = run(c.argv, o);
        CHECK(r.outcome == Outcome::Error);
        CHECK(r.message == c.message);
    }
}

TEST_CASE("-w accepts Go's ParseInt base-0 forms within 1..4096", "[flags][workers]") {
    struct Case {
        const char* text;
        int workers;
    };
    const Case cases[] = {
        {"1", 1},      {"4096", 4096}, {"+8", 8},    {"16", 16},   {"0x10", 16},
        {"0X1f", 31},  {"010", 8},     {"0o17", 15}, {"0O7", 7},   {"0b101", 5},
        {"0B11", 3},   {"1_000", 1000}, {"0x_1_0", 16}, {"0_7", 7}, {"0010", 8},
    };
    for (const Case& c : cases) {
        INFO("-w " << c.text);
        Options o;
        ParseResult r = run({"-w", c.text}, o);
        REQUIRE(r.outcome == Outcome::Run);
        CHECK(o.workers == c.workers);
    }
}

TEST_CASE("-t 0 and -grace 0 are accepted and mean zero", "[flags][duration]") {
    for (const char* zero : {"0", "0s", "-0", "+0", "0ms"}) {
        INFO("value: " << zero);
        Options o;
        REQUIRE(run({"-t", zero, "-grace", zero}, o).outcome == Outcome::Run);
        CHECK(o.dial_timeout.count() == 0);
        CHECK(o.grace.count() == 0);
    }
}

TEST_CASE("duration flags take Go duration syntax", "[flags][duration]") {
    Options o;
    REQUIRE(run({"-t", "1m30s", "-grace=2h45m"}, o).outcome == Outcome::Run);
    CHECK(o.dial_timeout == std::chrono::seconds(90));
    CHECK(o.grace == std::chrono::minutes(165));
    REQUIRE(run({"-t", ".5s", "-grace", "300us"}, o).outcome == Outcome::Run);
    CHECK(o.dial_timeout == std::chrono::milliseconds(500));
    CHECK(o.grace == std::chrono::microseconds(300));
}

TEST_CASE("parsing stops at the first error and does not report later ones",
          "[flags][errors]") {
    Options o;
    ParseResult r = run({"-f", "set.yaml", "-x", "-y"}, o);
    CHECK(r.outcome == Outcome::Error);
    CHECK(r.message == "flag provided but not defined: -x");
    CHECK(o.file == "set.yaml");  // flags before the error were applied, as in Go
}

// ---------------------------------------------------------------- help

TEST_CASE("-h, -help, --h and --help ask for help (exit 0), with any value", "[flags][help]") {
    const Args forms[] = {{"-h"},     {"-help"},   {"--h"},  {"--help"}, {"-h=1"},
                          {"-help=false"}, {"-f", "x", "-h"}, {"-h", "-x"}, {"-v", "--help"}};
    for (const Args& argv : forms) {
        INFO("argv: " << show(argv));
        Options o;
        ParseResult r = run(argv, o);
        CHECK(r.outcome == Outcome::Help);
        CHECK(r.message.empty());
    }
}

TEST_CASE("help after a positional argument or after -- is just an argument", "[flags][help]") {
    Options o;
    ParseResult r = run({"x", "-h"}, o);
    CHECK(r.outcome == Outcome::Run);
    CHECK(o.args == Args{"x", "-h"});
    r = run({"-f", "-h"}, o);  // the value of -f
    CHECK(r.outcome == Outcome::Run);
    CHECK(o.file == "-h");
}

TEST_CASE("an error before -h wins, as Go reports the first problem", "[flags][help]") {
    Options o;
    ParseResult r = run({"-x", "-h"}, o);
    CHECK(r.outcome == Outcome::Error);
    CHECK(r.message == "flag provided but not defined: -x");
}

// ---------------------------------------------------------------- usage

TEST_CASE("usage text is exactly what Go's default usage would print", "[flags][usage]") {
    const std::string expected =
        "Usage of mixctl:\n"
        "  -V\tprint the version and exit (same as -version)\n"
        "  -check\n"
        "    \tvalidate the config file, print \"configuration OK\" and exit\n"
        "  -ctl string\n"
        "    \tsend a command (show, disable, enable, weight) to the control socket of -f's file, print the answer "
        "and exit\n"
        "  -f string\n"
        "    \trules file (YAML: rules of from/to; also routes (SNI), accept_proxy,\n"
        "    \tmax_conns_per_client ...: see README.md or mixctl(8)) (default \"rules.yaml\")\n"
        "  -grace duration\n"
        "    \ton SIGTERM/SIGINT, time live connections get to finish (default 10s)\n"
        "  -probe string\n"
        "    \tsend one request through the listener of RULE (a rule name or listen address in -f) and exit:\n"
        "    \t0 when an upstream replies within -t, 1 otherwise, with one line why (for keepalived's vrrp_script)\n"
        "  -syslog\n"
        "    \tlog to syslog(3) (facility daemon, ident mixctl) instead of stderr\n"
        "  -t duration\n"
        "    \tupstream dial timeout (with -probe: the whole probe's); 0 means no deadline (default 1.5s)\n"
        "  -u string\n"
        "    \tafter binding, run workers as USER[:GROUP] (the parent keeps its rights for reloads)\n"
        "  -v\tverbose: log every connection (default true)\n"
        "  -version\n"
        "    \tprint the version and exit\n"
        "  -w int\n"
        "    \tworker processes (default: number of online CPUs)\n";
    CHECK(flags::usage("mixctl") == expected);
}

TEST_CASE("usage names the program by the basename of argv[0]", "[flags][usage]") {
    struct Case {
        const char* argv0;
        const char* first_line;
    };
    const Case cases[] = {
        {"/usr/local/bin/mixctl", "Usage of mixctl:\n"},
        {"./mixctl", "Usage of mixctl:\n"},
        {"bin/mix-ctl2", "Usage of mix-ctl2:\n"},
        {"mixctl", "Usage of mixctl:\n"},
        {"", "Usage of mixctl:\n"},
        {nullptr, "Usage of mixctl:\n"},
    };
    for (const Case& c : cases) {
        INFO("argv0: " << (c.argv0 ? c.argv0 : "(null)"));
        const std::string text = flags::usage(c.argv0);
        CHECK(text.rfind(c.first_line, 0) == 0);
    }
}

TEST_CASE("usage lists every flag once, sorted by name with uppercase first", "[flags][usage]") {
    const std::string text = flags::usage("mixctl");
    const char* order[] = {"\n  -V\t",          "\n  -check\n",   "\n  -ctl string\n", "\n  -f string\n",
                           "\n  -grace duration\n", "\n  -probe string\n", "\n  -syslog\n", "\n  -t duration\n", "\n  -u string\n", "\n  -v\t",
                           "\n  -version\n",    "\n  -w int\n"};
    std::size_t last = 0;
    for (const char* entry : order) {
        INFO("entry: " << entry);
        const std::size_t at = text.find(entry);
        REQUIRE(at != std::string::npos);
        CHECK(at >= last);
        CHECK(text.find(entry, at + 1) == std::string::npos);
        last = at;
    }
    // Exactly one "  -" flag line per flag.
    std::size_t flag_lines = 0;
    for (std::size_t at = text.find("\n  -"); at != std::string::npos;
         at = text.find("\n  -", at + 1)) {
        ++flag_lines;
    }
    CHECK(flag_lines == 12);
}

TEST_CASE("usage shows defaults the way Go does and omits zero-value defaults",
          "[flags][usage]") {
    const std::string text = flags::usage("mixctl");
    CHECK(text.find("(default \"rules.yaml\")") != std::string::npos);  // strings quoted
    CHECK(text.find("(default 1.5s)") != std::string::npos);            // Duration.String
    CHECK(text.find("(default 10s)") != std::string::npos);
    CHECK(text.find("(default true)") != std::string::npos);  // -v
    CHECK(text.find("(default false)") == std::string::npos);  // zero bools not shown
    CHECK(text.find("(default 0)") == std::string::npos);      // zero int not shown
    CHECK(text.find("0 means no deadline") != std::string::npos);
    CHECK(text.back() == '\n');
}

TEST_CASE("every flag in the usage text is one that parse accepts", "[flags][usage]") {
    const char* names[] = {"V", "check", "ctl", "f", "grace", "syslog", "t", "u", "v", "version", "w"};
    const char* sample[] = {"", "", "show", "x", "1s", "", "1s", "nobody", "", "", "2"};
    for (std::size_t i = 0; i < 11; ++i) {
        INFO("flag: " << names[i]);
        CHECK(flags::usage("mixctl").find(std::string("  -") + names[i]) != std::string::npos);
        Args argv = {std::string("-") + names[i]};
        if (*sample[i] != '\0') argv.push_back(sample[i]);
        Options o;
        CHECK(run(argv, o).outcome == Outcome::Run);
    }
}
