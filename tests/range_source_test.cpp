// Port ranges (from: ":30000-30100", to: [host] or a shifted range) and
// source: (upstream sockets bound to a chosen local address), TCP side.
#include <catch2/catch.hpp>

#include <csignal>
#include <random>

#include "harness.hpp"
#include "hello_bytes.hpp"

using namespace harness;

namespace {

// Sends the peer's address (as the upstream sees it) and the local port.
void tell_peer(int fd) {
    net::SockAddr peer, local;
    peer.length = sizeof peer.storage;
    getpeername(fd, peer.get(), &peer.length);
    net::local_address(fd, local);
    std::string line = peer.text() + " " + std::to_string(local.port()) + "\n";
    send_all(fd, line);
}

std::string ask(uint16_t port, const char* host = "127.0.0.1") {
    net::Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    set_timeouts(fd.get(), 5000ms);
    net::SockAddr to = loopback(port, AF_INET, host);
    if (::connect(fd.get(), to.get(), to.length) < 0) return "connect failed";
    std::string reply;
    read_to_eof(fd.get(), reply);
    return reply;
}

bool bindable(const char* host, uint16_t port, int type) {
    net::Fd fd(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
    net::SockAddr at = loopback(port, AF_INET, host);
    return fd && ::bind(fd.get(), at.get(), at.length) == 0;
}

// `n` consecutive ports free on 127.0.0.1 and 127.0.0.2, TCP and UDP, below
// the ephemeral range so that no client socket takes one meanwhile.
uint16_t free_range(int n) {
    std::mt19937 random(static_cast<unsigned>(getpid()) ^ static_cast<unsigned>(time(nullptr)));
    for (int attempt = 0; attempt < 200; ++attempt) {
        uint16_t base = static_cast<uint16_t>(20000 + random() % 10000);
        bool ok = true;
        for (int i = 0; i < n && ok; ++i)
            for (const char* host : {"127.0.0.1", "127.0.0.2"})
                ok = ok && bindable(host, static_cast<uint16_t>(base + i), SOCK_STREAM) &&
                     bindable(host, static_cast<uint16_t>(base + i), SOCK_DGRAM);
        if (ok) return base;
    }
    return 0;
}

std::string range(uint16_t first, int n) { return std::to_string(first) + "-" + std::to_string(first + n - 1); }

}  // namespace

TEST_CASE("range: to [host] without a port goes to the port the client reached", "[range]") {
    const int n = 5;
    uint16_t base = free_range(n);
    REQUIRE(base != 0);
    std::vector<std::unique_ptr<Server>> ups;
    for (int i = 0; i < n; ++i)
        ups.push_back(std::make_unique<Server>(tell_peer, AF_INET, static_cast<uint16_t>(base + i), 64, "127.0.0.2"));
    for (auto& u : ups) REQUIRE(u->ok());
    Daemon d(rules_yaml({rule_yaml("ftp", "127.0.0.1:" + range(base, n), {"127.0.0.2"})}), {"-w", "2"});
    REQUIRE(d.port("ftp") == base);
    CHECK(d.wait_log("Forwarding (ftp) from: 127.0.0.1:" + range(base, n) + " to: [127.0.0.2]"));
    for (int i : {0, 2, n - 1}) {
        INFO(d.log());
        uint16_t port = static_cast<uint16_t>(base + i);
        std::string reply = ask(port);
        CHECK(reply.find(" " + std::to_string(port) + "\n") != std::string::npos);
        CHECK(reply.rfind("127.0.0.1:", 0) == 0);
    }
    // The log shows the port dialed, one rule in the stats.
    CHECK(d.wait_log("Connected 127.0.0.1:" + std::to_string(base + 2) + " => 127.0.0.2:" + std::to_string(base + 2)));
    d.signal(SIGUSR1);
    CHECK(d.wait_log("stats clients rule=ftp "));
    CHECK(d.wait_log("stats rule=ftp upstream=127.0.0.2 "));
    CHECK(d.count("stats rule=ftp upstream=") == 1);
}

TEST_CASE("range: a shifted range maps port N to N - first + target", "[range]") {
    const int n = 4;
    uint16_t from = free_range(n), to = 0;
    REQUIRE(from != 0);
    do to = free_range(n);
    while (to != 0 && to < from + n && from < to + n);
    REQUIRE(to != 0);
    std::vector<std::unique_ptr<Server>> ups;
    for (int i = 0; i < n; ++i)
        ups.push_back(std::make_unique<Server>(tell_peer, AF_INET, static_cast<uint16_t>(to + i), 64, "127.0.0.1"));
    Daemon d(rules_yaml({rule_yaml("shift", "127.0.0.1:" + range(from, n), {"127.0.0.1:" + range(to, n)})}));
    REQUIRE(d.port("shift") == from);
    for (int i = 0; i < n; ++i) {
        INFO(d.log());
        std::string reply = ask(static_cast<uint16_t>(from + i));
        CHECK(reply.find(" " + std::to_string(to + i) + "\n") != std::string::npos);
    }
}

TEST_CASE("range: a ranged upstream has one health state: a refused port marks the whole entry down", "[range][health]") {
    const int n = 3;
    uint16_t base = 0;
    for (int attempt = 0; attempt < 20 && base == 0; ++attempt) {
        base = free_range(n);
        for (int i = 0; i < n && base; ++i)
            if (!bindable("127.0.0.3", static_cast<uint16_t>(base + i), SOCK_STREAM)) base = 0;
    }
    REQUIRE(base != 0);
    // 127.0.0.2 serves every port; 127.0.0.3 all but the middle one.
    std::vector<std::unique_ptr<Server>> two, three;
    for (int i = 0; i < n; ++i) {
        two.push_back(std::make_unique<Server>(tell_peer, AF_INET, static_cast<uint16_t>(base + i), 64, "127.0.0.2"));
        if (i != 1)
            three.push_back(std::make_unique<Server>(tell_peer, AF_INET, static_cast<uint16_t>(base + i), 64, "127.0.0.3"));
    }
    for (auto& u : two) REQUIRE(u->ok());
    for (auto& u : three) REQUIRE(u->ok());
    Daemon d(rules_yaml({rule_yaml("r", "127.0.0.1:" + range(base, n), {"127.0.0.2", "127.0.0.3"}) +
                         "  strategy: round-robin\n  max_fails: 1\n  fail_timeout: 30s\n"}),
             {"-w", "1"});
    REQUIRE(d.port("r") == base);
    INFO(d.log());
    // The middle port: .3 refuses, the connect fails over to .2, and the entry
    // 127.0.0.3 (every port of it) is down for fail_timeout.
    for (int k = 0; k < 2; ++k) CHECK(ask(static_cast<uint16_t>(base + 1)).rfind("127.0.0.1:", 0) == 0);
    CHECK(d.wait_log("upstream 127.0.0.3 of (r) is DOWN: connection refused at 127.0.0.3:" + std::to_string(base + 1) +
                     " (passive: 1 failed connects within 30s)"));
    for (int k = 0; k < 4; ++k) CHECK(ask(static_cast<uint16_t>(base)).rfind("127.0.0.1:", 0) == 0);
    CHECK(three[0]->accepted() == 0);  // .3 serves this port, but the entry is down
    CHECK(two[0]->accepted() == 4);
    d.signal(SIGUSR1);
    CHECK(d.wait_log("stats rule=r upstream=127.0.0.3 state=down"));
}

TEST_CASE("range: a port that cannot be bound fails the start naming it, nothing left bound", "[range]") {
    const int n = 6;
    uint16_t base = free_range(n);
    REQUIRE(base != 0);
    Server squatter(echo, AF_INET, static_cast<uint16_t>(base + 3));  // takes the 4th port
    REQUIRE(squatter.ok());
    Daemon d(rules_yaml({rule_yaml("r", "127.0.0.1:" + range(base, n), {"127.0.0.2"})}));
    Exit e = d.wait_exit();
    INFO(d.log());
    CHECK(e.code == 1);
    // The log pipe is read by a thread: wait for the lines, do not just count them.
    CHECK(d.wait_log("error: rule (r): listen on 127.0.0.1:" + std::to_string(base + 3) + ": "));
    CHECK(d.wait_log("address already in use"));
    CHECK(d.count("listen on") == 1);
    for (int i : {0, 1, 2, 4, 5}) CHECK(bindable("127.0.0.1", static_cast<uint16_t>(base + i), SOCK_STREAM));
}

TEST_CASE("range: -check reports the sockets a range needs and warns past RLIMIT_NOFILE", "[range][cli]") {
    TempDir dir;
    std::string ok = dir.write("ok.yaml", rules_yaml({rule_yaml("r", "127.0.0.1:20000-20099", {"127.0.0.2"})}));
    RunResult r = run({"-check", "-w", "2", "-f", ok});
    CHECK(r.exit.code == 0);
    CHECK(r.out == "configuration OK\n");
    CHECK(r.err.find("sockets: 100 listening (2 workers) + up to 0 for UDP sessions per worker; RLIMIT_NOFILE") !=
          std::string::npos);
    CHECK(r.err.find("warning") == std::string::npos);
    std::string big = dir.write("big.yaml", rules_yaml({rule_yaml("r", ":1024-65535", {"127.0.0.2"})}));
    pid_t pid = fork();
    if (pid == 0) {
        rlimit lim{1024, 1024};
        setrlimit(RLIMIT_NOFILE, &lim);
        int out = ::open((dir.path() + "/err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(out, 2);
        exec_mixctl({"-check", "-w", "1", "-f", big});
    }
    int status = 0;
    waitpid(pid, &status, 0);
    net::Fd err(::open((dir.path() + "/err").c_str(), O_RDONLY));
    std::string text = drain_fd(err.get());
    INFO(text);
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(text.find("warning: sockets: 64512 listening (1 workers)") != std::string::npos);
    CHECK(text.find("RLIMIT_NOFILE 1024: raise the limit") != std::string::npos);
}

TEST_CASE("source: the upstream sees connections from 127.0.0.2", "[source]") {
    Server up(tell_peer);
    Server other(tell_peer);
    std::string text =
        "rules:\n- name: r\n  from: 127.0.0.1:0\n  source: 127.0.0.2\n  to: [\"" + up.address() + "\"]\n" +
        "- name: s\n  from: 127.0.0.1:0\n  source: 127.0.0.2\n  to:\n    - {address: \"" + other.address() +
        "\", source: 127.0.0.3}\n";
    Daemon d(text);
    uint16_t port = d.port("r"), port_s = d.port("s");
    REQUIRE(port != 0);
    REQUIRE(port_s != 0);
    for (int i = 0; i < 3; ++i) CHECK(ask(port).rfind("127.0.0.2:", 0) == 0);
    CHECK(ask(port_s).rfind("127.0.0.3:", 0) == 0);
}

TEST_CASE("source: a non-local address is refused by -check, at start and on reload", "[source]") {
    Server up(tell_peer);
    TempDir dir;
    // 192.0.2.0/24 is TEST-NET-1: never an address of this host. Nothing is
    // sent: only bind() is tried.
    std::string bad_text = rules_yaml({rule_yaml("r", "127.0.0.1:0", {up.address()})});
    bad_text.insert(bad_text.find("  to:"), "  source: 192.0.2.1\n");
    std::string bad = dir.write("bad.yaml", bad_text);
    RunResult r = run({"-check", "-f", bad});
    INFO(r.err);
    CHECK(r.exit.code == 1);
    CHECK(r.err.find(bad + ":5: source: 192.0.2.1 is not an address of this host (bind 192.0.2.1:0: cannot assign "
                            "requested address)") != std::string::npos);

    Daemon start(bad_text);
    CHECK(start.wait_exit().code == 1);
    CHECK(start.wait_log("source: 192.0.2.1 is not an address of this host"));

    Daemon d(rules_yaml({rule_yaml("r", "127.0.0.1:0", {up.address()})}));
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    REQUIRE(d.workers(1).size() == 1);  // forked after the parent's signal handlers are in
    std::string now = bad_text;
    now.replace(now.find("127.0.0.1:0"), 11, "127.0.0.1:" + std::to_string(port));
    d.dir().write("rules.yaml", now);
    d.signal(SIGHUP);
    CHECK(d.wait_log("still serving the previous configuration"));
    CHECK(ask(port).rfind("127.0.0.1:", 0) == 0);
}

TEST_CASE("range: an SNI route on a ranged rule follows the client's port, from the route's source", "[range][source][sni]") {
    const int n = 3;
    uint16_t base = free_range(n), to = 0;
    REQUIRE(base != 0);
    do to = free_range(n);
    while (to != 0 && to < base + n && base < to + n);
    REQUIRE(to != 0);
    const std::string hello = hello_bytes::hello("app.example.com");
    // Reads the whole ClientHello first (closing on unread bytes would reset).
    auto hear_then_tell = [&hello](int fd) {
        std::string got;
        if (read_exact(fd, got, hello.size())) tell_peer(fd);
    };
    std::vector<std::unique_ptr<Server>> ups;
    for (int i = 0; i < n; ++i) {
        ups.push_back(std::make_unique<Server>(tell_peer, AF_INET, static_cast<uint16_t>(base + i), 64, "127.0.0.2"));
        ups.push_back(std::make_unique<Server>(hear_then_tell, AF_INET, static_cast<uint16_t>(to + i), 64, "127.0.0.2"));
    }
    for (auto& u : ups) REQUIRE(u->ok());
    Daemon d("rules:\n- name: tls\n  from: 127.0.0.1:" + range(base, n) + "\n  preread_timeout: 1s\n" +
             "  to: [127.0.0.2]\n  routes:\n    - sni: [app.example.com]\n      source: 127.0.0.2\n" +
             "      to: [127.0.0.2:" + range(to, n) + "]\n");
    REQUIRE(d.port("tls") == base);
    CHECK(d.wait_log("Forwarding (tls) from: 127.0.0.1:" + range(base, n) + " sni: [app.example.com]"));
    for (int i : {0, n - 1}) {
        INFO(d.log());
        uint16_t port = static_cast<uint16_t>(base + i);
        net::Fd fd = dial(port);
        REQUIRE(fd);
        set_timeouts(fd.get(), 5000ms);
        REQUIRE(send_all(fd.get(), hello));
        std::string reply;
        read_to_eof(fd.get(), reply);
        // The route's upstream at the mapped port, reached from its source.
        CHECK(reply.rfind("127.0.0.2:", 0) == 0);
        CHECK(reply.find(" " + std::to_string(to + i) + "\n") != std::string::npos);
        // No hello within preread_timeout: the default pool, same port.
        std::string plain = ask(port);
        CHECK(plain.rfind("127.0.0.1:", 0) == 0);
        CHECK(plain.find(" " + std::to_string(port) + "\n") != std::string::npos);
    }
}
