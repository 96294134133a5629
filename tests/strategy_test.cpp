// Upstream strategies and health, end to end: the real mixctl with several
// workers in front of loopback servers that say their name, so every test
// can tell where each connection went. Timing bounds are at least 3x the
// configured intervals; every wait polls with a deadline.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sched.h>
#include <sys/mount.h>

#include "harness.hpp"

using namespace harness;

namespace {

// One rule "r" on an ephemeral port; `policy` holds whole lines ("  strategy: x\n"),
// each of `to` is one YAML sequence item (a quoted address or a flow mapping).
std::string policy_rule(const std::string& policy, const std::vector<std::string>& to) {
    std::string text = "version: 0.1\nrules:\n- name: r\n  from: \"127.0.0.1:0\"\n" + policy + "  to:\n";
    for (const std::string& t : to) text += "    - " + t + "\n";
    return text;
}

std::string quoted(const std::string& address) { return "\"" + address + "\""; }

std::string loopback_address(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

// Connects (from `source`, if given), reads the upstream's banner line and
// returns its name; "" when the connection was not served. With `keep`, the
// connection stays open in it.
std::string who(uint16_t port, const char* source = nullptr, net::Fd* keep = nullptr) {
    net::Fd fd = dial(port, AF_INET, 5000ms, source);
    if (!fd) return "";
    std::string line;
    char buf[64];
    while (line.find('\n') == std::string::npos && line.size() < 64) {
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return "";
        line.append(buf, static_cast<size_t>(n));
    }
    if (keep) *keep = std::move(fd);
    return line.substr(0, line.find('\n'));
}

// Who answered each of `n` connections in a row, by name ("" for each one
// not served).
std::map<std::string, int> tally(uint16_t port, int n) {
    std::map<std::string, int> got;
    for (int i = 0; i < n; ++i) ++got[who(port)];
    return got;
}

// ---- SIGUSR1 stats ---------------------------------------------------------------

struct Stat {
    std::string line;  // as logged, from "stats " on
    std::string state;
    uint64_t active = 0, total = 0, failed = 0, bytes_in = 0, bytes_out = 0;
};

std::string field(const std::string& line, const std::string& key) {
    size_t at = line.find(" " + key + "=");
    if (at == std::string::npos) return "";
    at += key.size() + 2;
    size_t end = line.find(' ', at);
    return line.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

// Sends SIGUSR1 and parses the per-upstream lines it produces, keyed by the
// upstream's address as written in the config. Empty if they do not come.
std::map<std::string, Stat> stats(const Daemon& d, size_t upstreams, Ms limit = patience) {
    const size_t from = d.log().size();
    d.signal(SIGUSR1);
    std::map<std::string, Stat> out;
    wait_until(
        [&] {
            std::string text = d.log().substr(from);
            out.clear();
            size_t at = 0;
            for (;;) {
                size_t begin = text.find("stats rule=", at);
                if (begin == std::string::npos) break;
                size_t end = text.find('\n', begin);
                if (end == std::string::npos) break;  // not complete yet
                Stat s;
                s.line = text.substr(begin, end - begin);
                s.state = field(s.line, "state");
                s.active = std::stoull("0" + field(s.line, "active"));
                s.total = std::stoull("0" + field(s.line, "total"));
                s.failed = std::stoull("0" + field(s.line, "failed"));
                s.bytes_in = std::stoull("0" + field(s.line, "bytes_in"));
                s.bytes_out = std::stoull("0" + field(s.line, "bytes_out"));
                out[field(s.line, "upstream")] = s;
                at = end;
            }
            return out.size() >= upstreams;
        },
        limit);
    if (out.size() < upstreams) out.clear();
    return out;
}

// Polls stats until `ok` holds for them; returns the last ones seen.
std::map<std::string, Stat> stats_until(const Daemon& d, size_t upstreams,
                                        const std::function<bool(std::map<std::string, Stat>&)>& ok,
                                        Ms limit = patience) {
    std::map<std::string, Stat> last;
    wait_until(
        [&] {
            last = stats(d, upstreams, 1000ms);
            return !last.empty() && ok(last);
        },
        limit);
    return last;
}

// ---- a private /etc/hosts ---------------------------------------------------------

// Runs in the daemon's child before exec: a mount namespace of its own in
// which /etc/hosts, /etc/resolv.conf and /etc/nsswitch.conf are our files.
// The resolver then only knows the names in our hosts file: nsswitch says
// "files" only, and resolv.conf points at a loopback port nobody serves,
// so no lookup can ever leave the machine.
bool enter_private_names(const char* hosts, const char* resolv, const char* nsswitch) {
    if (unshare(CLONE_NEWNS) != 0) return false;
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
    if (mount(hosts, "/etc/hosts", nullptr, MS_BIND, nullptr) != 0) return false;
    if (mount(resolv, "/etc/resolv.conf", nullptr, MS_BIND, nullptr) != 0) return false;
    if (mount(nsswitch, "/etc/nsswitch.conf", nullptr, MS_BIND, nullptr) != 0) return false;
    return true;
}

class PrivateNames {
public:
    explicit PrivateNames(const std::string& hosts_text) {
        hosts_ = dir_.write("hosts", hosts_text);
        resolv_ = dir_.write("resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n");
        nsswitch_ = dir_.write("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n");
    }

    // Whether this machine lets us make the namespace (tried in a throwaway child).
    bool supported() const {
        pid_t pid = fork();
        if (pid < 0) return false;
        if (pid == 0) _exit(enter_private_names(hosts_.c_str(), resolv_.c_str(), nsswitch_.c_str()) ? 0 : 1);
        int status = 0;
        if (!wait_until([&] { return waitpid(pid, &status, WNOHANG) == pid; }, 5000ms)) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return false;
        }
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }

    // For Daemon's in_child: never exec the daemon outside the namespace.
    std::function<void()> in_child() const {
        const char* h = hosts_.c_str();
        const char* r = resolv_.c_str();
        const char* n = nsswitch_.c_str();
        return [h, r, n] {
            if (!enter_private_names(h, r, n)) _exit(125);
        };
    }

    // Overwrites the hosts file in place (same inode, no truncation: a
    // lookup never sees it empty). Keep `text` the same length as before.
    bool rewrite(const std::string& text) const {
        net::Fd fd(::open(hosts_.c_str(), O_WRONLY | O_CLOEXEC));
        return fd && ::pwrite(fd.get(), text.data(), text.size(), 0) == static_cast<ssize_t>(text.size());
    }

private:
    TempDir dir_;
    std::string hosts_, resolv_, nsswitch_;
};

std::string hosts_file(const std::string& entry) { return "127.0.0.1 localhost\n" + entry + "\n"; }

// Banner servers "A" on 127.0.0.2 and "B" on 127.0.0.3, on one port (a name
// in `to` carries one port). Tries a few ports: the one picked for A may be
// taken on 127.0.0.3 (e.g. by a client socket of another test).
bool same_port_pair(std::unique_ptr<Server>& a, std::unique_ptr<Server>& b) {
    for (int attempt = 0; attempt < 50; ++attempt) {
        a.reset(new Server(banner("A"), AF_INET, 0, 1024, "127.0.0.2"));
        if (!a->ok()) continue;
        b.reset(new Server(banner("B"), AF_INET, a->port(), 1024, "127.0.0.3"));
        if (b->ok()) return true;
    }
    return false;
}

}  // namespace

TEST_CASE("round-robin over 3 upstreams with 4 workers: 300 connections give each 100 +- 4", "[strategy]") {
    Server a(banner("A")), b(banner("B")), c(banner("C"));
    Daemon d(policy_rule("  strategy: round-robin\n", {quoted(a.address()), quoted(b.address()), quoted(c.address())}),
             {"-w", "4", "-v=false"});
    uint16_t port = d.ready_port(4);
    std::map<std::string, int> got = tally(port, 300);
    INFO("A=" << got["A"] << " B=" << got["B"] << " C=" << got["C"]);
    CHECK(got[""] == 0);
    for (const char* name : {"A", "B", "C"}) {
        CHECK(got[name] >= 96);
        CHECK(got[name] <= 104);
    }
    CHECK(a.accepted() + b.accepted() + c.accepted() == 300);
    CHECK(alive(d));
}

TEST_CASE("least-conn: while one upstream holds connections open, new ones go to the others", "[strategy]") {
    Server a(banner("A")), b(banner("B")), c(banner("C"));
    Daemon d(policy_rule("  strategy: least-conn\n", {quoted(a.address()), quoted(b.address()), quoted(c.address())}),
             {"-w", "2", "-v=false"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    const int n = 4;

    // Held connections opened one after another spread exactly evenly.
    std::map<std::string, std::vector<net::Fd>> held;
    for (int i = 0; i < 3 * n; ++i) {
        net::Fd fd;
        std::string name = who(port, nullptr, &fd);
        REQUIRE(!name.empty());
        held[name].push_back(std::move(fd));
    }
    for (const char* name : {"A", "B", "C"}) CHECK(held[name].size() == static_cast<size_t>(n));

    // Only A keeps its connections.
    held["B"].clear();
    held["C"].clear();
    auto s = stats_until(d, 3, [&](std::map<std::string, Stat>& st) {
        return st[a.address()].active == static_cast<uint64_t>(n) && st[b.address()].active == 0 &&
               st[c.address()].active == 0;
    });
    REQUIRE(s[a.address()].active == static_cast<uint64_t>(n));
    REQUIRE(s[b.address()].active == 0);
    REQUIRE(s[c.address()].active == 0);

    // 2n new held connections: B and C catch up with A, A gets none.
    std::map<std::string, int> next;
    std::vector<net::Fd> more;
    for (int i = 0; i < 2 * n; ++i) {
        net::Fd fd;
        ++next[who(port, nullptr, &fd)];
        more.push_back(std::move(fd));
    }
    INFO("A=" << next["A"] << " B=" << next["B"] << " C=" << next["C"]);
    CHECK(next["A"] == 0);
    CHECK(next["B"] == n);
    CHECK(next["C"] == n);
    CHECK(next[""] == 0);
    CHECK(a.active() == n);
    CHECK(alive(d));
}

TEST_CASE("source-hash: each client address sticks to one upstream; a dead upstream moves only its clients",
          "[strategy]") {
    std::vector<std::unique_ptr<Server>> servers;
    std::map<std::string, Server*> by_name;
    std::vector<std::string> to;
    for (const char* name : {"A", "B", "C"}) {
        servers.emplace_back(new Server(banner(name)));
        by_name[name] = servers.back().get();
        to.push_back(quoted(servers.back()->address()));
    }
    Daemon d(policy_rule("  strategy: source-hash\n"
                         "  health_check: {interval: 200ms, timeout: 200ms, rise: 2, fall: 2}\n",
                         to),
             {"-w", "2", "-v=false"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);

    std::vector<std::string> clients;
    for (int i = 2; i <= 9; ++i) clients.push_back("127.0.0." + std::to_string(i));

    // Every client: 50 connections, one upstream.
    auto sticky = [&](std::map<std::string, std::string>& owner) {
        for (const std::string& client : clients) {
            std::map<std::string, int> got;
            for (int i = 0; i < 50; ++i) ++got[who(port, client.c_str())];
            INFO("client " << client);
            CHECK(got.size() == 1);
            CHECK(got.count("") == 0);
            owner[client] = got.begin()->first;
        }
    };
    std::map<std::string, std::string> before;
    sticky(before);
    std::map<std::string, int> clients_of;
    for (const auto& kv : before) ++clients_of[kv.second];
    // Not everyone on one upstream (with 8 clients and 3 upstreams, the odds are 1 in 2187).
    CHECK(clients_of.size() >= 2);

    // Stop the upstream with the most clients; the health check marks it down.
    std::string victim = std::max_element(clients_of.begin(), clients_of.end(), [](const auto& x, const auto& y) {
                             return x.second < y.second;
                         })->first;
    REQUIRE(by_name.count(victim) == 1);
    const std::string victim_address = by_name[victim]->address();
    by_name[victim]->stop();
    REQUIRE(d.wait_log("upstream " + victim_address + " of (r) is DOWN", 3000ms));

    std::map<std::string, std::string> after;
    sticky(after);
    for (const std::string& client : clients) {
        INFO("client " << client << " was on " << before[client] << ", now on " << after[client]);
        if (before[client] == victim) CHECK(after[client] != victim);
        else CHECK(after[client] == before[client]);
    }
    CHECK(d.count("error dialing " + victim_address) == 0);  // nobody was sent to it
    CHECK(alive(d));
}

TEST_CASE("weights 3:1 with round-robin: 400 connections split 300/100 +- 8", "[strategy]") {
    Server a(banner("A")), b(banner("B"));
    Daemon d(policy_rule("  strategy: round-robin\n", {"{address: \"" + a.address() + "\", weight: 3}",
                                                       "{address: \"" + b.address() + "\", weight: 1}"}),
             {"-w", "2", "-v=false"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    std::map<std::string, int> got = tally(port, 400);
    INFO("A=" << got["A"] << " B=" << got["B"]);
    CHECK(got[""] == 0);
    CHECK(got["A"] >= 292);
    CHECK(got["A"] <= 308);
    CHECK(got["A"] + got["B"] == 400);
}

TEST_CASE("weights 3:1 with random: 400 connections split about 300/100", "[strategy]") {
    Server a(banner("A")), b(banner("B"));
    Daemon d(policy_rule("", {"{address: \"" + a.address() + "\", weight: 3}", quoted(b.address())}),
             {"-w", "2", "-v=false"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    std::map<std::string, int> got = tally(port, 400);
    INFO("A=" << got["A"] << " B=" << got["B"]);
    CHECK(got[""] == 0);
    // Binomial(400, 0.75): mean 300, sd 8.7; +- 45 is over 5 sd.
    CHECK(got["A"] >= 255);
    CHECK(got["A"] <= 345);
    CHECK(got["A"] + got["B"] == 400);
}

TEST_CASE("a backup serves only while the primary is down", "[strategy]") {
    std::unique_ptr<Server> a(new Server(banner("A")));
    Server b(banner("B"));
    const uint16_t a_port = a->port();
    const std::string a_address = a->address();
    Daemon d(policy_rule("  fail_timeout: 1s\n", {quoted(a_address), "{address: \"" + b.address() + "\", backup: true}"}),
             {"-w", "2", "-v=false"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);

    std::map<std::string, int> got = tally(port, 20);
    CHECK(got["A"] == 20);
    CHECK(b.accepted() == 0);

    a->stop();
    got.clear();
    for (int i = 0; i < 20; ++i) ++got[who(port)];
    CHECK(got["B"] == 20);  // every client served, by the backup
    CHECK(d.count("error dialing " + a_address + ": connection refused") >= 1);
    CHECK(d.count("no upstream of") == 0);

    // The primary comes back: once its passive mark expires, it has them all again.
    a.reset(new Server(banner("A"), AF_INET, a_port));
    REQUIRE(a->ok());
    CHECK(wait_until([&] { return who(port) == "A"; }, 5000ms));
    const int backup_had = b.accepted();
    got.clear();
    for (int i = 0; i < 20; ++i) ++got[who(port)];
    CHECK(got["A"] == 20);
    CHECK(b.accepted() == backup_had);
    CHECK(alive(d));
}

TEST_CASE("passive health: a dead upstream gets a few connect attempts per fail_timeout while clients are served",
          "[strategy]") {
    Server a(banner("A")), b(banner("B"));
    const uint16_t dead = closed_port();
    REQUIRE(dead != 0);
    const std::string dead_address = loopback_address(dead);
    Daemon d(policy_rule("  max_fails: 1\n  fail_timeout: 2s\n",
                         {quoted(a.address()), quoted(dead_address), quoted(b.address())}),
             {"-w", "2", "-v=false"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);

    const int threads = 4;
    std::atomic<int> served{0}, unserved{0};
    std::atomic<bool> stop{false};
    Clock::time_point t0 = Clock::now();
    std::vector<std::thread> load;
    for (int t = 0; t < threads; ++t)
        load.emplace_back([&] {
            while (!stop) {
                std::string name = who(port);
                (name == "A" || name == "B" ? served : unserved).fetch_add(1);
            }
        });
    std::this_thread::sleep_for(3000ms);
    stop = true;
    for (std::thread& t : load) t.join();
    const long ran = elapsed_ms(t0);

    const size_t attempts = d.count("error dialing " + dead_address + ": connection refused");
    // Each fail_timeout window starts with one failed attempt; connections
    // already planned at that moment (at most one per client thread) may
    // fail on it too.
    const size_t windows = static_cast<size_t>(ran / 2000 + 1);
    INFO("served " << served << ", unserved " << unserved << ", attempts on the dead one " << attempts << " in "
                   << ran << " ms");
    CHECK(unserved == 0);
    CHECK(served > 100);
    CHECK(attempts >= 2);  // tried again once its fail_timeout was over
    CHECK(attempts <= windows * threads);
    CHECK(d.count("upstream " + dead_address + " of (r) is DOWN: connection refused (passive") >= 1);
    CHECK(d.count("upstream " + dead_address + " of (r) is DOWN") <= windows);
    CHECK(d.count("no upstream of") == 0);

    // The shared counter agrees with the log.
    auto s = stats_until(d, 3, [&](std::map<std::string, Stat>& st) { return st[dead_address].failed == attempts; });
    CHECK(s[dead_address].failed == attempts);
    CHECK(s[dead_address].total == 0);
    CHECK(s[a.address()].total + s[b.address()].total == static_cast<uint64_t>(served.load()));
    CHECK(alive(d));
}

TEST_CASE("active health: a dead upstream is marked down before any client is sent to it, and is back within "
          "rise x interval",
          "[strategy]") {
    Server a(banner("A"));
    const uint16_t x_port = closed_port();
    REQUIRE(x_port != 0);
    const std::string x_address = loopback_address(x_port);
    Daemon d(policy_rule("  strategy: round-robin\n"
                         "  health_check: {interval: 200ms, timeout: 200ms, rise: 2, fall: 2}\n",
                         {quoted(a.address()), quoted(x_address)}),
             {"-w", "2", "-v=false"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);

    // No client yet: the checker alone finds it dead.
    REQUIRE(d.wait_log("upstream " + x_address + " of (r) is DOWN: connection refused", 3000ms));
    auto s = stats(d, 2);
    REQUIRE(!s.empty());
    CHECK(s[x_address].state == "down");
    CHECK(s[a.address()].state == "up");
    CHECK(s[x_address].failed == 0);

    std::map<std::string, int> got = tally(port, 20);
    CHECK(got["A"] == 20);
    CHECK(d.count("error dialing") == 0);  // not one client was sent to it

    // It comes back on the same port.
    std::unique_ptr<Server> x(new Server(banner("X"), AF_INET, x_port));
    REQUIRE(x->ok());
    Clock::time_point t0 = Clock::now();
    REQUIRE(d.wait_log("upstream " + x_address + " of (r) is UP (2 checks)", 3000ms));
    const long took = elapsed_ms(t0);
    INFO("UP after " << took << " ms (rise x interval = 400 ms)");
    CHECK(took < 1500);
    CHECK(stats(d, 2)[x_address].state == "up");
    got.clear();
    for (int i = 0; i < 20; ++i) ++got[who(port)];
    CHECK(got["X"] == 10);  // round-robin over both again
    CHECK(got["A"] == 10);

    // And down again after `fall` failed checks, logged once.
    x->stop();
    REQUIRE(d.wait_log("upstream " + x_address + " of (r) is DOWN: connection refused (2 checks)", 3000ms));
    std::this_thread::sleep_for(600ms);  // three more probe intervals
    CHECK(d.count("upstream " + x_address + " of (r) is DOWN") == 2);
    CHECK(d.count("upstream " + x_address + " of (r) is UP") == 1);
    CHECK(alive(d));
}

TEST_CASE("all upstreams marked down: connections still try them (fail open), and that is logged", "[strategy]") {
    const uint16_t x = closed_port(), y = closed_port();
    REQUIRE(x != 0);
    REQUIRE(y != 0);
    const std::string x_address = loopback_address(x), y_address = loopback_address(y);
    Daemon d(policy_rule("  fail_timeout: 30s\n", {quoted(x_address), quoted(y_address)}), {"-w", "2", "-v=false"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    {
        net::Fd fd = dial(port);
        REQUIRE(fd);
        CHECK(closed_by_peer(fd.get(), 3000ms));
    }
    REQUIRE(d.wait_log("is DOWN: connection refused (passive", 3000ms, 2));
    auto s = stats(d, 2);
    CHECK(s[x_address].state == "down");
    CHECK(s[y_address].state == "down");

    // One comes back long before its 30 s are over: it is used at once.
    Server back(banner("Y"), AF_INET, y);
    REQUIRE(back.ok());
    Clock::time_point t0 = Clock::now();
    CHECK(who(port) == "Y");
    CHECK(elapsed_ms(t0) < 3000);
    CHECK(d.wait_log("all upstreams of (r) are down; trying them anyway", 3000ms));
    CHECK(alive(d));
}

TEST_CASE("a killed worker's connections stop counting as active, so least-conn and stats stay true",
          "[strategy]") {
    Server a(banner("A")), b(banner("B"));
    Daemon d(policy_rule("  strategy: least-conn\n", {quoted(a.address()), quoted(b.address())}),
             {"-w", "1", "-v=false"});
    uint16_t port = d.ready_port(1);
    std::vector<pid_t> before = d.workers(1);

    // Two connections held on A, none on B.
    std::map<std::string, std::vector<net::Fd>> held;
    for (int i = 0; i < 4; ++i) {
        net::Fd fd;
        held[who(port, nullptr, &fd)].push_back(std::move(fd));
    }
    REQUIRE(held["A"].size() == 2);
    REQUIRE(held["B"].size() == 2);
    held["B"].clear();
    auto s = stats_until(d, 2, [&](std::map<std::string, Stat>& st) {
        return st[a.address()].active == 2 && st[b.address()].active == 0;
    });
    REQUIRE(s[a.address()].active == 2);
    REQUIRE(s[b.address()].active == 0);

    // The worker dies with A's connections; the parent starts a new one.
    REQUIRE(kill(before[0], SIGKILL) == 0);
    for (net::Fd& fd : held["A"]) CHECK(closed_by_peer(fd.get(), 3000ms));
    held.clear();
    std::vector<pid_t> after;
    REQUIRE(wait_until([&] { after = children(d.pid()); return after.size() == 1 && after[0] != before[0]; }, 5000ms));
    CHECK(wait_until([&] { return a.active() == 0; }, 3000ms));  // A sees its connections gone too

    // Nothing is open any more, and the stats must say so.
    s = stats_until(d, 2, [&](std::map<std::string, Stat>& st) {
        return st[a.address()].active == 0 && st[b.address()].active == 0;
    });
    INFO(s[a.address()].line << "\n" << s[b.address()].line);
    CHECK(s[a.address()].active == 0);
    CHECK(s[b.address()].active == 0);
    CHECK(s[a.address()].total == 2);  // the shared counters survived the worker
    CHECK(s[b.address()].total == 2);

    // Both idle: two new held connections go one to each (not both to B).
    std::map<std::string, int> got;
    std::vector<net::Fd> more;
    for (int i = 0; i < 2; ++i) {
        net::Fd fd;
        ++got[who(port, nullptr, &fd)];
        more.push_back(std::move(fd));
    }
    CHECK(got["A"] == 1);
    CHECK(got["B"] == 1);
    CHECK(alive(d));
}

TEST_CASE("SIGUSR1 lists per-upstream state, active, total, failed and byte counts as plain integers",
          "[strategy]") {
    Server a(digest);
    const uint16_t dead = closed_port();
    REQUIRE(dead != 0);
    const std::string dead_address = loopback_address(dead);
    // The dead upstream stays marked down for the whole test however slow
    // the machine (fail_timeout 10m): the listing, not the timeout, is tested.
    Daemon d(policy_rule("  strategy: round-robin\n  fail_timeout: 10m\n", {quoted(a.address()), quoted(dead_address)}),
             {"-w", "2", "-v=false"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);

    auto s = stats(d, 2);
    REQUIRE(s.size() == 2);
    CHECK(s[a.address()].line == "stats rule=r upstream=" + a.address() +
                                     " state=up active=0 total=0 failed=0 bytes_in=0 bytes_out=0"
                                     " resets_by_client=0 resets_by_upstream=0 weight=1");

    // 10 exchanges, the first of 1 000 000 bytes; the second one meets the
    // dead upstream first (round-robin) and fails over.
    uint64_t in = 0, out = 0;
    int good = 0;
    for (int i = 0; i < 10; ++i) {
        std::string request = pattern(i == 0 ? 1000000 : 1000, static_cast<uint64_t>(i + 1)), reply;
        net::Fd fd = dial(port);
        if (fd && send_all(fd.get(), request) && ::shutdown(fd.get(), SHUT_WR) == 0 &&
            read_to_eof(fd.get(), reply) && reply == digest_line(request))
            ++good;
        in += request.size();
        out += digest_line(request).size();
    }
    CHECK(good == 10);
    CHECK(d.count("error dialing " + dead_address + ": connection refused") == 1);

    // Two connections held open.
    std::vector<net::Fd> held;
    for (int i = 0; i < 2; ++i) {
        held.push_back(dial(port));
        REQUIRE(held.back());
    }
    s = stats_until(d, 2, [&](std::map<std::string, Stat>& st) {
        return st[a.address()].active == 2 && st[a.address()].total == 12 && st[a.address()].bytes_in == in &&
               st[a.address()].bytes_out == out;
    });
    REQUIRE(s.size() == 2);
    INFO(s[a.address()].line << "\n" << s[dead_address].line);
    CHECK(s[a.address()].line == "stats rule=r upstream=" + a.address() + " state=up active=2 total=12 failed=0 bytes_in=" +
                                     std::to_string(in) + " bytes_out=" + std::to_string(out) +
                                     " resets_by_client=0 resets_by_upstream=0 weight=1");
    CHECK(in == 1009000);
    CHECK(s[dead_address].line ==
          "stats rule=r upstream=" + dead_address +
              " state=down active=0 total=0 failed=1 bytes_in=0 bytes_out=0 resets_by_client=0 resets_by_upstream=0"
              " weight=1");
    // One line per worker too; together they accepted every connection.
    uint64_t accepted = 0;
    CHECK(wait_until(
        [&] {
            std::string text = d.log();
            size_t first = text.rfind("stats worker=0 ");
            size_t second = first == std::string::npos ? first : text.find("stats worker=1 ", first);
            if (second == std::string::npos || text.find('\n', second) == std::string::npos) return false;
            accepted = 0;
            for (size_t at : {first, second})
                accepted += std::stoull("0" + field(text.substr(at, text.find('\n', at) - at), "accepted"));
            return accepted == 12;
        },
        patience));
    CHECK(accepted == 12);

    held.clear();
    s = stats_until(d, 2, [&](std::map<std::string, Stat>& st) { return st[a.address()].active == 0; });
    CHECK(s[a.address()].active == 0);
    CHECK(s[a.address()].total == 12);
    CHECK(alive(d));
}

TEST_CASE("DNS: a name that changes address in /etc/hosts is followed without a restart", "[strategy][dns]") {
    std::unique_ptr<Server> a, b;
    REQUIRE(same_port_pair(a, b));
    const uint16_t p = a->port();
    const std::string name = "upstream.test:" + std::to_string(p);
    PrivateNames names(hosts_file("127.0.0.2 upstream.test"));
    if (!names.supported()) {
        WARN("SKIPPED: cannot make a private mount namespace here (unshare/mount failed); DNS test not run");
        return;
    }
    Daemon d(policy_rule("  resolve_interval: 300ms\n", {quoted(name)}), {"-w", "2", "-v=false"}, names.in_child());
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    const pid_t pid = d.pid();
    auto ten = [&] { return tally(port, 10); };
    CHECK(ten()["A"] == 10);

    // A new address for the name.
    REQUIRE(names.rewrite(hosts_file("127.0.0.3 upstream.test")));
    REQUIRE(d.wait_log("upstream " + name + " of (r) now resolves to 127.0.0.3:" + std::to_string(p), 3000ms));
    CHECK(ten()["B"] == 10);

    // The name disappears: the last good address stays, and that is logged once.
    REQUIRE(names.rewrite(hosts_file("#27.0.0.3 upstream.test")));
    REQUIRE(d.wait_log("error: " + name + " of (r): lookup upstream.test", 3000ms));
    CHECK(d.count("keeping 127.0.0.3:" + std::to_string(p)) == 1);
    std::this_thread::sleep_for(1200ms);  // four more resolve intervals
    CHECK(d.count("lookup upstream.test") == 1);
    CHECK(ten()["B"] == 10);

    // It comes back, pointing at the first address again.
    REQUIRE(names.rewrite(hosts_file("127.0.0.2 upstream.test")));
    REQUIRE(d.wait_log("upstream " + name + " of (r) now resolves to 127.0.0.2:" + std::to_string(p), 3000ms));
    CHECK(ten()["A"] == 10);
    CHECK(d.pid() == pid);
    CHECK(alive(d));
    CHECK(a->accepted() == 20);
    CHECK(b->accepted() == 20);
}

TEST_CASE("DNS: a failed connect makes the name be looked up again long before resolve_interval", "[strategy][dns]") {
    std::unique_ptr<Server> a, b;
    REQUIRE(same_port_pair(a, b));
    const uint16_t p = a->port();
    const std::string name = "upstream.test:" + std::to_string(p);
    PrivateNames names(hosts_file("127.0.0.2 upstream.test"));
    if (!names.supported()) {
        WARN("SKIPPED: cannot make a private mount namespace here (unshare/mount failed); DNS test not run");
        return;
    }
    Daemon d(policy_rule("  resolve_interval: 1m\n", {quoted(name)}), {"-w", "2", "-v=false"}, names.in_child());
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    CHECK(who(port) == "A");

    REQUIRE(names.rewrite(hosts_file("127.0.0.3 upstream.test")));
    a->stop();
    Clock::time_point t0 = Clock::now();
    // The first connection fails (the only upstream refuses); soon after, the
    // name is looked up again and connections reach the new address.
    CHECK(wait_until([&] { return who(port) == "B"; }, 5000ms));
    INFO("served by the new address after " << elapsed_ms(t0) << " ms");
    CHECK(elapsed_ms(t0) < 5000);
    // The line may reach the log after the client was served: wait for it.
    CHECK(d.wait_log("now resolves to 127.0.0.3:" + std::to_string(p)));
    CHECK(d.count("now resolves to 127.0.0.3:" + std::to_string(p)) == 1);
    CHECK(alive(d));
}
