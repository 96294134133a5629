// Reload on SIGHUP: no refused connection, live transfers untouched, new
// rules in force, a bad file changes nothing.
#include <catch2/catch.hpp>

#include <atomic>
#include <csignal>
#include <thread>

#include "harness.hpp"

using namespace harness;

namespace {

std::string config_for(uint16_t port, const std::string& upstream, const std::string& extra = "") {
    return rules_yaml({rule_yaml("r", "127.0.0.1:" + std::to_string(port), {upstream})}) + extra;
}

// Rewrites the daemon's rules file in place and asks for a reload; waits for
// the outcome line.
bool reload_with(Daemon& d, const std::string& text, const std::string& outcome = "reloaded ") {
    size_t before = d.count(outcome);
    d.dir().write("rules.yaml", text);
    d.signal(SIGHUP);
    return d.wait_log(outcome, 5000ms, before + 1);
}

std::string first_line(uint16_t port) {
    net::Fd fd = dial(port);
    std::string line;
    if (!fd || !read_exact(fd.get(), line, 2)) return "";
    return line;
}

}  // namespace

TEST_CASE("a changed to: takes effect for new connections after SIGHUP", "[reload]") {
    Server a(banner("A")), b(banner("B"));
    uint16_t port = free_port();
    Daemon d(config_for(port, a.address()), {"-w", "2", "-v=false"});
    REQUIRE(d.port("r") == port);
    CHECK(first_line(port) == "A\n");
    REQUIRE(reload_with(d, config_for(port, b.address())));
    CHECK(d.wait_log("reloaded " + d.file() + ": 1 rules (0 added, 0 removed, 1 changed)"));
    for (int i = 0; i < 10; ++i) CHECK(first_line(port) == "B\n");
}

TEST_CASE("a reload that changes only max_conns reports the rule changed; one that adds a comment, unchanged",
          "[reload]") {
    Server a(banner("A"));
    uint16_t port = free_port();
    Daemon d(config_for(port, a.address()), {"-w", "1", "-v=false"});
    REQUIRE(d.port("r") == port);
    REQUIRE(reload_with(d, config_for(port, a.address(), "  max_conns: 5\n")));
    CHECK(d.count(": 1 rules (0 added, 0 removed, 1 changed)") == 1);
    REQUIRE(reload_with(d, "# only a comment is new\n" + config_for(port, a.address(), "  max_conns: 5\n")));
    CHECK(d.count(": 1 rules (0 added, 0 removed, 0 changed)") == 1);
    CHECK(first_line(port) == "A\n");
}

TEST_CASE("a client loop sees no refused or failed connection through 20 reloads", "[reload]") {
    Server up(digest);
    uint16_t port = free_port();
    Daemon d(config_for(port, up.address()), {"-w", "2", "-v=false"});
    REQUIRE(d.port("r") == port);
    std::atomic<bool> stop{false};
    std::atomic<int> good{0}, bad{0};
    std::thread client([&] {
        while (!stop) {
            std::string request = pattern(300, static_cast<uint64_t>(good + bad)), reply;
            net::Fd fd = dial(port);
            bool ok = fd && send_all(fd.get(), request);
            if (ok) {
                ::shutdown(fd.get(), SHUT_WR);
                ok = read_to_eof(fd.get(), reply) && reply == digest_line(request);
            }
            (ok ? good : bad)++;
            std::this_thread::sleep_for(2ms);
        }
    });
    for (int i = 0; i < 20; ++i) {
        // Alternate between two equivalent files so every reload is a real one.
        std::string extra = i % 2 ? "- name: extra\n  from: 127.0.0.1:0\n  to: [\"" + up.address() + "\"]\n" : "";
        CHECK(reload_with(d, config_for(port, up.address(), extra)));
        std::this_thread::sleep_for(30ms);
    }
    stop = true;
    client.join();
    CHECK(bad == 0);
    CHECK(good > 40);
}

TEST_CASE("a 100 MB transfer started before 20 reloads completes byte-exact", "[reload]") {
    Server up(echo);
    uint16_t port = free_port();
    // The old workers keep the transfer; a long grace makes sure a slow,
    // busy machine can not turn this into a test of the grace period.
    Daemon d(config_for(port, up.address()), {"-w", "2", "-v=false", "-grace", "60s"});
    REQUIRE(d.port("r") == port);
    net::Fd fd = dial(port, AF_INET, 30000ms);
    REQUIRE(fd);
    const uint64_t size = 100ull << 20;
    Checksum sent;
    std::atomic<bool> reloading{true};
    std::thread writer([&] {
        // Paced so the transfer is still running while the reloads happen.
        const std::string chunk = pattern(1 << 20, 5);
        for (uint64_t done = 0; done < size; done += chunk.size()) {
            sent.add(chunk.data(), chunk.size());
            if (!send_all(fd.get(), chunk)) break;
            if (reloading) std::this_thread::sleep_for(5ms);
        }
        ::shutdown(fd.get(), SHUT_WR);
    });
    std::thread reloader([&] {
        for (int i = 0; i < 20; ++i) {
            reload_with(d, config_for(port, up.address(), i % 2 ? "# " + std::to_string(i) + "\n- {from: '127.0.0.1:0', to: ['127.0.0.1:1']}\n" : ""));
        }
        reloading = false;
    });
    Checksum got;
    bool ok = read_to_eof(fd.get(), got);
    writer.join();
    reloader.join();
    CHECK(ok);
    CHECK(got.bytes() == size);
    CHECK(got.value() == sent.value());
    CHECK(d.count("reloaded ") >= 20);
}

TEST_CASE("an invalid file on reload is reported with file:line and changes nothing", "[reload]") {
    Server a(banner("A"));
    uint16_t port = free_port();
    Daemon d(config_for(port, a.address()), {"-w", "1", "-v=false"});
    REQUIRE(d.port("r") == port);
    std::vector<pid_t> workers = d.workers(1);
    REQUIRE(reload_with(d, "rules:\n- from: 127.0.0.1:1\n  to: []\n", "failed: still serving"));
    CHECK(d.wait_log(d.file() + ":3: to: the list is empty"));
    CHECK(first_line(port) == "A\n");
    CHECK(children(d.pid()) == workers);  // the old workers were left alone
}

TEST_CASE("a reload whose new listener cannot bind keeps the old config", "[reload]") {
    Server a(banner("A")), taken([](int) {});
    uint16_t port = free_port();
    Daemon d(config_for(port, a.address()), {"-w", "1", "-v=false"});
    REQUIRE(d.port("r") == port);
    std::string extra = "- name: clash\n  from: \"" + taken.address() + "\"\n  to: [\"" + a.address() + "\"]\n";
    REQUIRE(reload_with(d, config_for(port, a.address(), extra), "failed: still serving"));
    CHECK(d.wait_log("rule (clash): listen on " + taken.address() + ": bind " + taken.address() + ": address already in use"));
    CHECK(first_line(port) == "A\n");
}

TEST_CASE("a removed rule stops listening and added ones start", "[reload]") {
    Server a(banner("A")), b(banner("B"));
    uint16_t keep = free_port(), drop = free_port(), add = free_port();
    auto two = [&](uint16_t second, const std::string& name) {
        return rules_yaml({rule_yaml("keep", "127.0.0.1:" + std::to_string(keep), {a.address()}),
                           rule_yaml(name, "127.0.0.1:" + std::to_string(second), {b.address()})});
    };
    Daemon d(two(drop, "drop"), {"-w", "2", "-v=false"});
    REQUIRE(d.port("drop") == drop);
    CHECK(first_line(drop) == "B\n");
    REQUIRE(reload_with(d, two(add, "add")));
    CHECK(d.wait_log("2 rules (1 added, 1 removed, 0 changed)"));
    CHECK(first_line(add) == "B\n");
    CHECK(first_line(keep) == "A\n");
    CHECK(wait_until([&] { return !dial(drop, AF_INET, 500ms); }, 5000ms));  // refused once old workers let go
}

TEST_CASE("descriptor counts stay flat across reloads", "[reload]") {
    Server a(banner("A"));
    uint16_t port = free_port();
    Daemon d(config_for(port, a.address()), {"-w", "2", "-v=false"});
    REQUIRE(d.port("r") == port);
    REQUIRE(d.workers(2).size() == 2);
    int parent_before = fd_count(d.pid());
    for (int i = 0; i < 10; ++i) REQUIRE(reload_with(d, config_for(port, a.address(), i % 2 ? "# x\n" : "")));
    CHECK(wait_until([&] { return d.workers(2, 100ms).size() == 2; }, 10000ms));  // old generations gone
    CHECK(fd_count(d.pid()) == parent_before);
    for (pid_t w : d.workers(2)) {
        int n = fd_count(w);
        CHECK(n > 0);
        CHECK(n <= 9);  // stdio, self-pipe, lifeline, epoll, one listener: nothing carried from older generations
    }
    CHECK(first_line(port) == "A\n");
}

TEST_CASE("what was learned about an upstream survives a reload", "[reload]") {
    Server a(banner("A"));
    uint16_t port = free_port();
    Daemon d(config_for(port, a.address()), {"-w", "1", "-v=false"});
    REQUIRE(d.port("r") == port);
    for (int i = 0; i < 3; ++i) REQUIRE(first_line(port) == "A\n");
    REQUIRE(reload_with(d, config_for(port, a.address(), "# unchanged rule, new file\n")));
    CHECK(first_line(port) == "A\n");
    // Counters of the kept upstream go on from where they were: 3 + 1.
    CHECK(wait_until([&] {
        d.signal(SIGUSR1);
        return d.wait_log("stats rule=r upstream=" + a.address() + " state=up active=0 total=4 ", 300ms);
    }, 5000ms));
}

TEST_CASE("a SIGHUP sent the moment the Forwarding lines appear reloads the daemon instead of killing it",
          "[reload]") {
    // A script (or a test) that waits for the Forwarding lines and then
    // reloads used to kill the daemon now and then: the lines were printed
    // before the handlers were in. Made deterministic here: the daemon's
    // stderr is a pipe this test fills first, so the daemon blocks in its
    // first log write. While it is blocked there, SIGHUP must already be
    // caught, and a SIGHUP sent then must end in a reload.
    Server a(banner("A"));
    uint16_t port = free_port();
    TempDir dir;
    std::string file = dir.write("rules.yaml", config_for(port, a.address()));
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    net::Fd read_end(ends[0]), write_end(ends[1]);
    fcntl(write_end.get(), F_SETPIPE_SZ, 4096);
    fcntl(write_end.get(), F_SETFL, O_NONBLOCK);
    const std::string filler(4096, '#');
    while (::write(write_end.get(), filler.data(), filler.size()) > 0) {
    }
    fcntl(write_end.get(), F_SETFL, 0);  // the daemon's writes must block, not fail
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        dup2(write_end.get(), 1);
        dup2(write_end.get(), 2);
        exec_mixctl({"-f", file, "-w", "1", "-v=false"});
    }
    REQUIRE(pid > 0);
    setpgid(pid, pid);
    write_end.reset();
    auto syscall_now = [&] {
        net::Fd f(::open(("/proc/" + std::to_string(pid) + "/syscall").c_str(), O_RDONLY | O_CLOEXEC));
        return f ? drain_fd(f.get()) : std::string();
    };
    // Blocked in write(2) on stdout or stderr: its first log line.
    bool blocked = wait_until([&] {
        std::string now = syscall_now();
        return starts_with(now, "1 0x1 ") || starts_with(now, "1 0x2 ");
    });
    std::string status;
    {
        net::Fd f(::open(("/proc/" + std::to_string(pid) + "/status").c_str(), O_RDONLY | O_CLOEXEC));
        status = f ? drain_fd(f.get()) : "";
    }
    size_t at = status.find("SigCgt:");
    unsigned long long caught = at == std::string::npos ? 0 : std::stoull(status.substr(at + 7), nullptr, 16);
    kill(pid, SIGHUP);
    std::string log;
    int exit_status = 0;
    bool exited = false;
    bool settled = wait_until([&] {
        char buf[4096];
        pollfd p{read_end.get(), POLLIN, 0};
        while (::poll(&p, 1, 0) > 0) {
            ssize_t n = ::read(read_end.get(), buf, sizeof buf);
            if (n <= 0) break;
            log.append(buf, static_cast<size_t>(n));
        }
        if (!exited && waitpid(pid, &exit_status, WNOHANG) == pid) exited = true;
        return exited || log.find("reloaded " + file) != std::string::npos;
    });
    if (!exited) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        waitpid(pid, &exit_status, 0);
    }
    INFO("daemon log:\n" << log.substr(log.find_first_not_of('#') == std::string::npos ? log.size() : log.find_first_not_of('#')));
    CHECK(blocked);
    CHECK((caught & (1ull << (SIGHUP - 1))) != 0);
    CHECK(settled);
    CHECK(log.find("reloaded " + file) != std::string::npos);
    CHECK_FALSE(exited);
}
