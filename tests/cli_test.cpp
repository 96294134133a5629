// The command line, end to end: the real ./mixctl binary, its exit codes,
// what it prints on stdout and stderr, and the shape of its log lines.
#include <catch2/catch.hpp>

#include <cctype>
#include <fstream>
#include <sstream>

#include "harness.hpp"

using namespace harness;

namespace {

bool contains(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

// Go's log.LstdFlags prefix: "2006/01/02 15:04:05 ".
bool has_go_timestamp(const std::string& line) {
    const std::string shape = "dddd/dd/dd dd:dd:dd ";
    if (line.size() <= shape.size()) return false;
    for (size_t i = 0; i < shape.size(); ++i) {
        char want = shape[i], got = line[i];
        if (want == 'd' ? !isdigit(static_cast<unsigned char>(got)) : got != want) return false;
    }
    int month = atoi(line.substr(5, 2).c_str()), day = atoi(line.substr(8, 2).c_str());
    int hour = atoi(line.substr(11, 2).c_str()), minute = atoi(line.substr(14, 2).c_str());
    int second = atoi(line.substr(17, 2).c_str());
    return atoi(line.substr(0, 4).c_str()) >= 2020 && month >= 1 && month <= 12 && day >= 1 && day <= 31 &&
           hour <= 23 && minute <= 59 && second <= 60;
}

// The log line without its timestamp.
std::string message_of(const std::string& line) { return line.size() > 20 ? line.substr(20) : std::string(); }

// The first log line whose message starts with `prefix`, without its timestamp; "" if none.
std::string find_message(const std::string& log, const std::string& prefix) {
    for (const std::string& line : lines_of(log))
        if (starts_with(message_of(line), prefix)) return message_of(line);
    return "";
}

std::string makefile_version() {
    std::ifstream in("Makefile");
    std::string line;
    while (std::getline(in, line)) {
        if (!starts_with(line, "VERSION")) continue;
        size_t eq = line.find('=');
        if (eq == std::string::npos) continue;
        std::string v = line.substr(eq + 1);
        size_t b = v.find_first_not_of(" \t"), e = v.find_last_not_of(" \t\r");
        return b == std::string::npos ? "" : v.substr(b, e - b + 1);
    }
    return "";
}

std::string describe(const RunResult& r) {
    return "exit=" + std::to_string(r.exit.code) + " signal=" + std::to_string(r.exit.signal) + "\n--- stdout:\n" +
           r.out + "--- stderr:\n" + r.err;
}

const char* const usage_head = "Usage of mixctl:\n";

// A file written for the Go tool: comments, quotes, flow lists, version 0.1.
const char* const go_style_rules =
    "# rules for inlets' mixctl\n"
    "version: 0.1\n"
    "\n"
    "rules:\n"
    "- name: remap-local-ssh-port   # ssh -p 2222 localhost\n"
    "  from: 127.0.0.1:2222\n"
    "  to:\n"
    "    - 127.0.0.1:22\n"
    "\n"
    "- name: \"local web server\"\n"
    "  from: '127.0.0.1:3000'\n"
    "  to:\n"
    "    - \"127.0.0.1:8080\"\n"
    "    - '127.0.0.1:8081'\n"
    "\n"
    "# a flow list, as the Go README's k3s example writes it\n"
    "- name: k3s-api\n"
    "  from: 127.0.0.1:6443\n"
    "  to: [127.0.0.2:6443, \"127.0.0.3:6443\", localhost:6443]\n";

}  // namespace

// ---- usage and flag errors --------------------------------------------------------

TEST_CASE("-h, -help and --help print usage on stderr and exit 0 with nothing on stdout", "[cli]") {
    for (const char* flag : {"-h", "-help", "--help"}) {
        RunResult r = run({flag});
        INFO(flag << "\n" << describe(r));
        CHECK(r.exit.code == 0);
        CHECK(r.out.empty());
        CHECK(starts_with(r.err, usage_head));
        CHECK(contains(r.err, "  -f string\n"));
        CHECK(contains(r.err, "  -check\n"));
    }
}

TEST_CASE("an unknown flag is named, usage follows, and the exit code is 2", "[cli]") {
    RunResult r = run({"-x"});
    INFO(describe(r));
    CHECK(r.exit.code == 2);
    CHECK(r.out.empty());
    CHECK(starts_with(r.err, std::string("flag provided but not defined: -x\n") + usage_head));
}

TEST_CASE("a bad duration for -t is reported as Go reports it, exit 2", "[cli]") {
    RunResult r = run({"-t", "abc"});
    INFO(describe(r));
    CHECK(r.exit.code == 2);
    CHECK(r.out.empty());
    CHECK(starts_with(r.err, "invalid value \"abc\" for flag -t: parse error\n"));
    CHECK(contains(r.err, usage_head));
}

TEST_CASE("-f without a value says the flag needs an argument, exit 2", "[cli]") {
    RunResult r = run({"-f"});
    INFO(describe(r));
    CHECK(r.exit.code == 2);
    CHECK(r.out.empty());
    CHECK(starts_with(r.err, "flag needs an argument: -f\n"));
    CHECK(contains(r.err, usage_head));
}

// ---- version ----------------------------------------------------------------------

TEST_CASE("-version and -V print the Makefile's version on stdout and exit 0", "[cli]") {
    std::string version = makefile_version();
    REQUIRE(!version.empty());
#ifdef MIXCTL_VERSION
    CHECK(version == MIXCTL_VERSION);
#endif
    for (const char* flag : {"-version", "-V", "--version"}) {
        RunResult r = run({flag});
        INFO(flag << "\n" << describe(r));
        CHECK(r.exit.code == 0);
        CHECK(r.out == "mixctl " + version + "\n");
        CHECK(r.err.empty());
    }
}

// ---- -check -----------------------------------------------------------------------

// -check of a file with UDP rules or port ranges says on stderr how many
// sockets it needs; nothing else may be there (no warning, no error).
bool only_socket_count(const std::string& err) {
    for (const std::string& line : lines_of(err))
        if (line.find(" sockets: ") == std::string::npos || line.find("warning") != std::string::npos) return false;
    return true;
}

TEST_CASE("-check accepts rules.example.yaml: configuration OK, exit 0", "[cli]") {
    RunResult r = run({"-check", "-f", "rules.example.yaml"});
    INFO(describe(r));
    CHECK(r.exit.code == 0);
    CHECK(r.out == "configuration OK\n");
    CHECK(only_socket_count(r.err));
}

TEST_CASE("-check accepts a rules file written for the Go tool", "[cli]") {
    TempDir dir;
    std::string file = dir.write("rules.yaml", go_style_rules);
    RunResult r = run({"-check", "-f", file});
    INFO(describe(r));
    CHECK(r.exit.code == 0);
    CHECK(r.out == "configuration OK\n");
    CHECK(r.err.empty());
}

TEST_CASE("a missing rules file fails with exit 1 and names the file", "[cli]") {
    TempDir dir;
    std::string file = dir.path() + "/no-such-rules.yaml";
    for (bool check : {true, false}) {
        std::vector<std::string> args{"-f", file, "-v=false"};
        if (check) args.push_back("-check");
        RunResult r = run(args);
        INFO("check=" << check << "\n" << describe(r));
        CHECK(r.exit.code == 1);
        CHECK(r.out.empty());
        CHECK(contains(r.err, "open " + file + ": no such file or directory\n"));
        CHECK_FALSE(contains(r.err, "Forwarding"));
    }
}

TEST_CASE("every error in a bad rules file is reported as file:line, exit 1", "[cli]") {
    TempDir dir;
    std::string file = dir.write("rules.yaml",
                                 "version: 0.1\n"                 // 1
                                 "rules:\n"                       // 2
                                 "- name: a\n"                    // 3
                                 "  from: 127.0.0.1:99999\n"      // 4  port out of range
                                 "  to:\n"                        // 5
                                 "    - 127.0.0.1:7001\n"         // 6
                                 "- name: b\n"                    // 7
                                 "  from: 127.0.0.1:7100\n"       // 8
                                 "  to: 127.0.0.1:7002\n"         // 9
                                 "- name: c\n"                    // 10
                                 "  from: 127.0.0.1:7200\n"       // 11
                                 "  to:\n"                        // 12
                                 "    - \"::1:22\"\n"             // 13 IPv6 without brackets
                                 "- name: d\n"                    // 14
                                 "  from: 127.0.0.1:7100\n"       // 15 same listener as b
                                 "  to: 127.0.0.1:7003\n"         // 16
                                 "- name: e\n"                    // 17
                                 "  from: 127.0.0.1:7300\n"       // 18
                                 "  to: []\n");                   // 19 empty list
    for (bool check : {true, false}) {
        std::vector<std::string> args{"-f", file};
        if (check) args.push_back("-check");
        RunResult r = run(args);
        INFO("check=" << check << "\n" << describe(r));
        CHECK(r.exit.code == 1);
        CHECK(r.out.empty());
        CHECK(contains(r.err, file + ":4: from: \"127.0.0.1:99999\": port 99999 out of range"));
        CHECK(contains(r.err, file + ":19: to: the list is empty"));
        CHECK(contains(r.err, file + ":13: to: \"::1:22\": too many colons in address"));
        CHECK(contains(r.err, file + ":15: from: \"127.0.0.1:7100\" is already used by rule \"b\" at line 8"));
        CHECK(contains(r.err, file + ": 4 errors"));
        CHECK_FALSE(contains(r.err, "Forwarding"));
        // Every message line is a timestamped log line.
        for (const std::string& line : lines_of(r.err)) CHECK(has_go_timestamp(line));
    }
}

TEST_CASE("a YAML syntax error is reported with its file and line, exit 1", "[cli]") {
    TempDir dir;
    std::string file = dir.write("rules.yaml",
                                 "rules:\n"
                                 "- name: a\n"
                                 "\tfrom: 127.0.0.1:7000\n"
                                 "  to: [127.0.0.1:7001]\n");
    RunResult r = run({"-check", "-f", file});
    INFO(describe(r));
    CHECK(r.exit.code == 1);
    CHECK(r.out.empty());
    CHECK(contains(r.err, file + ":3: "));
}

TEST_CASE("unknown keys are warned about with file:line, and -check still passes", "[cli]") {
    TempDir dir;
    std::string file = dir.write("rules.yaml",
                                 "version: 0.1\n"
                                 "colour: blue\n"
                                 "rules:\n"
                                 "- name: a\n"
                                 "  from: 127.0.0.1:7000\n"
                                 "  wieght: 3\n"
                                 "  to:\n"
                                 "    - 127.0.0.1:7001\n");
    RunResult r = run({"-check", "-f", file});
    INFO(describe(r));
    CHECK(r.exit.code == 0);
    CHECK(r.out == "configuration OK\n");
    CHECK(contains(r.err, file + ":2: warning: unknown key \"colour\" ignored\n"));
    CHECK(contains(r.err, file + ":6: warning: unknown key \"wieght\" ignored\n"));
    for (const std::string& line : lines_of(r.err)) CHECK(has_go_timestamp(line));
}

// ---- Go flag semantics --------------------------------------------------------------

TEST_CASE("-v false stops flag parsing as in Go: later flags are ignored with a warning", "[cli]") {
    // `false` is positional, so parsing stops there; the -f after it is not
    // used (if it were, the missing file would fail the check).
    RunResult r = run({"-f", "rules.example.yaml", "-check", "-v", "false", "-f", "/nonexistent/rules.yaml"});
    INFO(describe(r));
    CHECK(r.exit.code == 0);
    CHECK(r.out == "configuration OK\n");
    CHECK(contains(r.err, "warning: ignoring arguments after the flags: false -f /nonexistent/rules.yaml"));
    CHECK_FALSE(contains(r.err, "/nonexistent/rules.yaml:"));
}

TEST_CASE("a daemon started with -v false runs with the defaults for the flags after it", "[cli]") {
    Server up(digest);
    // -f FILE -v false -w 1: -v stays true (bool flags only take =value),
    // and -w 1 is never parsed, so the default worker count applies.
    Daemon d(rules_yaml({rule_yaml("r", "127.0.0.1:0", {up.address()})}), {"-v", "false", "-w", "1"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    INFO(d.log());
    CHECK(d.wait_log("warning: ignoring arguments after the flags: false -w 1"));
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK(d.wait_log("started: " + std::to_string(cpus > 0 ? cpus : 1) + " workers"));
    net::Fd fd = dial(port);
    REQUIRE(fd);
    REQUIRE(send_all(fd.get(), std::string("abc")));
    ::shutdown(fd.get(), SHUT_WR);
    std::string reply;
    REQUIRE(read_to_eof(fd.get(), reply));
    CHECK(reply == digest_line("abc"));
    CHECK(d.wait_log("Connected 127.0.0.1:" + std::to_string(port) + " => "));  // verbose: still the default
}

TEST_CASE("every spelling of a flag reaches the daemon", "[cli]") {
    const std::vector<std::vector<std::string>> spellings = {
        {"--f=rules.example.yaml", "-check"},
        {"-f=rules.example.yaml", "--check"},
        {"--f", "rules.example.yaml", "-check=true"},
        {"-check", "-f", "rules.example.yaml", "--"},
        {"-t=2s", "--w=3", "-grace", "1m30s", "-v=0", "-check", "-f", "rules.example.yaml"},
    };
    for (const auto& args : spellings) {
        std::string joined;
        for (const std::string& a : args) joined += a + " ";
        RunResult r = run(args);
        INFO(joined << "\n" << describe(r));
        CHECK(r.exit.code == 0);
        CHECK(r.out == "configuration OK\n");
        CHECK(only_socket_count(r.err));
    }
    // And -check=false does not check: the daemon would run, so give it a
    // file that fails to make it exit.
    TempDir dir;
    std::string bad = dir.write("rules.yaml", "rules: []\n");
    RunResult r = run({"-check=false", "--f=" + bad});
    INFO(describe(r));
    CHECK(r.exit.code == 1);
    CHECK(contains(r.err, bad + ":1: rules: the list is empty"));
}

// ---- log lines -------------------------------------------------------------------------

TEST_CASE("log lines carry Go's timestamp and the startup line prints the upstreams as a Go slice", "[cli]") {
    Server a(echo), b(echo);
    Daemon d(rules_yaml({rule_yaml("web", "127.0.0.1:0", {a.address(), b.address()})}), {"-w", "1"});
    uint16_t port = d.port("web");
    REQUIRE(port != 0);
    REQUIRE(d.wait_log(" started: "));
    std::string log = d.log();
    INFO(log);
    CHECK(find_message(log, "Forwarding (web)") ==
          "Forwarding (web) from: 127.0.0.1:" + std::to_string(port) + " to: [" + a.address() + " " + b.address() + "]");
    std::vector<std::string> lines = lines_of(log);
    CHECK(lines.size() >= 2);
    for (const std::string& line : lines) {
        INFO(line);
        CHECK(has_go_timestamp(line));
    }
}

TEST_CASE("with -v=false no Connected or Closed lines are logged", "[cli]") {
    Server up(digest);
    Daemon d(rules_yaml({rule_yaml("r", "127.0.0.1:0", {up.address()})}), {"-w", "1", "-v=false"});
    uint16_t port = d.ready_port(1);
    std::vector<pid_t> workers = d.workers(1);
    for (int i = 0; i < 5; ++i) {
        net::Fd fd = dial(port);
        REQUIRE(fd);
        REQUIRE(send_all(fd.get(), std::string("hello")));
        ::shutdown(fd.get(), SHUT_WR);
        std::string reply;
        REQUIRE(read_to_eof(fd.get(), reply));
        CHECK(reply == digest_line("hello"));
    }
    // The connections are over in the worker too (both sides closed), so
    // any line they would log has been written.
    CHECK(wait_until([&] { return up.active() == 0; }));
    std::this_thread::sleep_for(300ms);
    INFO(d.log());
    CHECK(d.count("Connected") == 0);
    CHECK(d.count("Closed") == 0);
    CHECK(d.count("Forwarding (r)") == 1);
}

TEST_CASE("by default every connection logs Connected and Closed with addresses, byte counts and duration", "[cli]") {
    Server up(digest);
    Daemon d(rules_yaml({rule_yaml("r", "127.0.0.1:0", {up.address()})}), {"-w", "1"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    net::Fd fd = dial(port);
    REQUIRE(fd);
    net::SockAddr me;
    REQUIRE(net::local_address(fd.get(), me));
    std::string client = me.text();
    std::string request = pattern(1234, 5);
    REQUIRE(send_all(fd.get(), request));
    ::shutdown(fd.get(), SHUT_WR);
    std::string reply;
    REQUIRE(read_to_eof(fd.get(), reply));
    REQUIRE(reply == digest_line(request));

    const std::string from = "127.0.0.1:" + std::to_string(port);
    const std::string connected = "Connected " + from + " => " + up.address() + " (" + client + ")";
    const std::string closed = "Closed " + from + " => " + up.address() + " (" + client + ") bytes_in=1234 bytes_out=" +
                               std::to_string(reply.size()) + " duration=";
    CHECK(d.wait_log(connected));
    CHECK(d.wait_log(closed));
    std::string log = d.log();
    INFO(log);
    CHECK(find_message(log, "Connected ") == connected);
    std::string line = find_message(log, "Closed ");
    REQUIRE(starts_with(line, closed));
    // duration=S.mmms, nothing after it for a clean end.
    std::string duration = line.substr(closed.size());
    INFO(duration);
    REQUIRE(duration.size() >= 6);
    CHECK(duration.back() == 's');
    size_t dot = duration.find('.');
    REQUIRE(dot != std::string::npos);
    CHECK(dot >= 1);
    CHECK(duration.size() - dot == 5);  // ".123s"
    for (size_t i = 0; i + 1 < duration.size(); ++i)
        if (i != dot) CHECK(isdigit(static_cast<unsigned char>(duration[i])));
}

// ---- refusing to start -------------------------------------------------------------------

TEST_CASE("an empty to: list is refused at start, not on the first connection", "[cli]") {
    TempDir dir;
    std::string file = dir.write("rules.yaml",
                                 "version: 0.1\n"
                                 "rules:\n"
                                 "- name: nowhere\n"
                                 "  from: 127.0.0.1:0\n"
                                 "  to: []\n");
    RunResult r = run({"-f", file, "-w", "1"});
    INFO(describe(r));
    CHECK(r.exit.code == 1);
    CHECK(r.out.empty());
    CHECK(contains(r.err, file + ":5: to: the list is empty"));
    CHECK_FALSE(contains(r.err, "Forwarding"));
    CHECK_FALSE(contains(r.err, "started"));
}

TEST_CASE("a port out of range fails at start before any Forwarding line, exit 1", "[cli]") {
    TempDir dir;
    std::string file = dir.write("rules.yaml", rules_yaml({rule_yaml("ok", "127.0.0.1:0", {"127.0.0.1:7001"}),
                                                           rule_yaml("bad", "127.0.0.1:70000", {"127.0.0.1:7002"})}));
    RunResult r = run({"-f", file, "-w", "1"});
    INFO(describe(r));
    CHECK(r.exit.code == 1);
    CHECK(contains(r.err, "port 70000 out of range"));
    CHECK_FALSE(contains(r.err, "Forwarding"));
}

TEST_CASE("a port already in use fails at start before any Forwarding line, exit 1", "[cli]") {
    Server holder(echo);  // keeps the port busy
    REQUIRE(holder.ok());
    TempDir dir;
    std::string busy = "127.0.0.1:" + std::to_string(holder.port());
    std::string file = dir.write("rules.yaml", rules_yaml({rule_yaml("first", "127.0.0.1:0", {"127.0.0.1:7001"}),
                                                           rule_yaml("second", busy, {"127.0.0.1:7002"})}));
    RunResult r = run({"-f", file, "-w", "1"});
    INFO(describe(r));
    CHECK(r.exit.code == 1);
    CHECK(contains(r.err, "error: rule (second): listen on " + busy + ": "));
    CHECK(contains(r.err, "address already in use"));
    CHECK_FALSE(contains(r.err, "Forwarding"));
    CHECK_FALSE(contains(r.err, "started"));
    CHECK(holder.accepted() == 0);
}
