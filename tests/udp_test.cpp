// UDP rules end to end: dnsmasq upstreams and dig through mixctl, sessions
// keyed by (client, local address), replies from the address the client
// sent to, idle expiry, eviction, whole datagrams, passive health, reloads
// and a killed worker under a client loop.
#include <catch2/catch.hpp>

#include <atomic>
#include <csignal>
#include <set>
#include <thread>

#include "harness.hpp"

using namespace harness;

namespace {

std::string find_tool(const char* name) {
    for (const char* dir : {"/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin", "/usr/local/sbin"}) {
        std::string file = std::string(dir) + "/" + name;
        if (::access(file.c_str(), X_OK) == 0) return file;
    }
    return "";
}

// A process of ours (dnsmasq), killed by pid when the test ends.
class Child {
public:
    explicit Child(std::vector<std::string> args) {
        pid_ = fork();
        if (pid_ == 0) {
            int null = ::open("/dev/null", O_RDWR);
            dup2(null, 1);
            dup2(null, 2);
            std::vector<char*> argv;
            for (std::string& a : args) argv.push_back(&a[0]);
            argv.push_back(nullptr);
            execv(argv[0], argv.data());
            _exit(127);
        }
    }
    bool exited() {
        if (pid_ <= 0) return true;
        if (waitpid(pid_, nullptr, WNOHANG) != pid_) return false;
        pid_ = -1;
        return true;
    }
    ~Child() {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
    }

private:
    pid_t pid_ = -1;
};

// dnsmasq on 127.0.0.1:port answering who.test with `answer`, health.lan
// with 127.0.0.1 (the health check's name), and nothing else (no upstream
// servers, no /etc/hosts).
class Dnsmasq {
public:
    Dnsmasq(uint16_t port, const std::string& answer)
        : child_({find_tool("dnsmasq"), "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                  "--listen-address=127.0.0.1", "--bind-interfaces", "--port=" + std::to_string(port),
                  "--address=/who.test/" + answer, "--address=/health.lan/127.0.0.1", "--pid-file=", "--user=root", "--group=root"}) {}

    Child& child() { return child_; }

private:
    Child child_;
};

// Runs dig; returns its output ("" on failure).
std::string dig(const std::string& server, uint16_t port, const std::string& extra = "+short") {
    std::string cmd = find_tool("dig") + " @" + server + " -p " + std::to_string(port) +
                      " who.test A +tries=1 +time=2 " + extra + " 2>&1";
    std::string out;
    if (FILE* p = popen(cmd.c_str(), "r")) {
        char buf[512];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
        pclose(p);
    }
    return out;
}

uint16_t free_udp_port() {
    net::Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    net::SockAddr at = loopback(0);
    if (!fd || ::bind(fd.get(), at.get(), at.length) < 0) return 0;
    net::SockAddr bound;
    net::local_address(fd.get(), bound);
    return bound.port();
}

// dnsmasq answering `answer` on a free port, ready; retried on another port
// when the one picked was taken meanwhile (dnsmasq also binds TCP).
std::unique_ptr<Dnsmasq> start_dns(const std::string& answer, uint16_t& port) {
    for (int attempt = 0; attempt < 10; ++attempt) {
        port = free_udp_port();
        auto dns = std::make_unique<Dnsmasq>(port, answer);
        bool ready = wait_until([&] { return dns->child().exited() || dig("127.0.0.1", port) == answer + "\n"; },
                                5000ms);
        if (ready && !dns->child().exited()) return dns;
    }
    return nullptr;
}

std::string udp_rule(const std::string& name, const std::string& from, const std::vector<std::string>& to,
                     const std::string& extra = "") {
    return rule_yaml(name, from, to) + "  protocol: udp\n" + extra;
}

bool have_dns_tools() { return !find_tool("dnsmasq").empty() && !find_tool("dig").empty(); }

// The health check of docs/configuration.md: a DNS query (ID 0x1234, RD)
// for health.lan/A; dnsmasq answers its own names with the same ID and the
// flags QR AA RD RA, NOERROR (\x85\x80).
const std::string dns_check_keys =
    "send: \"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x06health\\x03lan\\x00\\x00\\x01\\x00\\x01\", "
    "expect: \"\\x12\\x34\\x85\\x80\"";

std::string dns_check(const std::string& timing) {
    return "  health_check: {" + timing + ", " + dns_check_keys + "}\n";
}

// A port free for UDP and TCP (dnsmasq binds both) below the ephemeral
// range, so no client socket of another test takes it before dnsmasq does.
uint16_t free_fixed_port() {
    for (int attempt = 0; attempt < 200; ++attempt) {
        uint16_t port = static_cast<uint16_t>(20000 + (static_cast<unsigned>(getpid()) * 13 + attempt * 101) % 10000);
        bool ok = true;
        for (int type : {SOCK_DGRAM, SOCK_STREAM}) {
            net::Fd fd(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
            net::SockAddr at = loopback(port);
            ok = ok && fd && ::bind(fd.get(), at.get(), at.length) == 0;
        }
        if (ok) return port;
    }
    return 0;
}

UdpServer::Handler never_answers() {
    return [](const std::string&, const net::SockAddr&, bool& reply) {
        reply = false;
        return std::string();
    };
}

}  // namespace

TEST_CASE("udp: dig through mixctl gets dnsmasq's answer, responses: 1 ends each session", "[udp][dns]") {
    if (!have_dns_tools()) {
        WARN("dnsmasq or dig missing (apt-get install dnsmasq-base bind9-dnsutils): skipped");
        return;
    }
    uint16_t pa = 0, pb = 0;
    auto a = start_dns("192.0.2.1", pa), b = start_dns("192.0.2.2", pb);
    REQUIRE(a);
    REQUIRE(b);
    Daemon d(rules_yaml({udp_rule("dns", "127.0.0.1:0",
                                  {"127.0.0.1:" + std::to_string(pa), "127.0.0.1:" + std::to_string(pb)},
                                  "  strategy: round-robin\n  responses: 1\n")}),
             {"-w", "2"});
    uint16_t port = d.port("dns");
    REQUIRE(port != 0);
    INFO(d.log());
    std::set<std::string> answers;
    for (int i = 0; i < 6; ++i) {
        std::string out = dig("127.0.0.1", port);
        CHECK((out == "192.0.2.1\n" || out == "192.0.2.2\n"));
        answers.insert(out);
    }
    CHECK(answers.size() == 2);  // round robin per session: both answered
    CHECK(d.wait_log("reason=\"responses\"", 5000ms, 6));
    CHECK(d.count("datagrams_in=1 datagrams_out=1 reason=\"responses\"") == 6);
}

TEST_CASE("udp: a wildcard from queried on 127.0.0.2 answers from 127.0.0.2", "[udp][dns]") {
    UdpServer up(udp_echo);
    REQUIRE(up.ok());
    uint16_t port = free_udp_port();
    Daemon d(rules_yaml({udp_rule("any", ":" + std::to_string(port), {up.address()})}), {"-w", "2"});
    REQUIRE(d.port("any") == port);
    INFO(d.log());
    // A connected client socket: the kernel drops a reply from any other source.
    for (const char* host : {"127.0.0.2", "127.0.0.1", "127.0.0.3"}) {
        INFO(host);
        net::Fd c = udp_client(port, host);
        std::string reply;
        CHECK(udp_ask(c.get(), std::string("hello ") + host, reply));
        CHECK(reply == std::string("hello ") + host);
    }
    net::Fd c6 = udp_client(port, nullptr, 2000ms, AF_INET6);
    std::string reply;
    CHECK(udp_ask(c6.get(), "six", reply));
    CHECK(reply == "six");
    CHECK(d.wait_log("Connected 127.0.0.2:" + std::to_string(port) + " => " + up.address()));
    if (have_dns_tools()) {
        uint16_t pa = 0;
        auto a = start_dns("192.0.2.7", pa);
        REQUIRE(a);
        uint16_t p2 = free_udp_port();
        Daemon dns2(rules_yaml({udp_rule("dns", ":" + std::to_string(p2), {"127.0.0.1:" + std::to_string(pa)})}));
        REQUIRE(dns2.port("dns") == p2);
        // dig rejects an answer from an unexpected source ("reply from unexpected source").
        CHECK(dig("127.0.0.2", p2) == "192.0.2.7\n");
    }
}

TEST_CASE("udp: an upstream that is down (ICMP unreachable) is marked down; the next query goes to the other",
          "[udp][dns]") {
    UdpServer live(udp_who("live"));
    uint16_t dead = free_udp_port();  // nothing listens: ICMP port unreachable
    Daemon d(rules_yaml({udp_rule("r", "127.0.0.1:0", {"127.0.0.1:" + std::to_string(dead), live.address()},
                                  "  strategy: round-robin\n  max_fails: 1\n  fail_timeout: 30s\n")}));
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    INFO(d.log());
    int answered = 0, lost = 0;
    for (int i = 0; i < 8; ++i) {
        net::Fd c = udp_client(port, "127.0.0.1", 500ms);
        std::string reply;
        if (udp_ask(c.get(), "q", reply)) {
            CHECK(reply.rfind("live ", 0) == 0);
            ++answered;
        } else {
            ++lost;
        }
    }
    CHECK(lost <= 1);  // only the query that met the dead upstream first
    CHECK(answered >= 7);
    CHECK(d.wait_log("upstream 127.0.0.1:" + std::to_string(dead) + " of (r) is DOWN: connection refused"));
    d.signal(SIGUSR1);
    CHECK(d.wait_log("stats rule=r upstream=127.0.0.1:" + std::to_string(dead) + " state=down"));
}

TEST_CASE("udp health: a DNS query checks dnsmasq; a silent and a wrong upstream are DOWN and every dig goes to dnsmasq",
          "[udp][dns][health]") {
    if (!have_dns_tools()) {
        WARN("dnsmasq or dig missing (apt-get install dnsmasq-base bind9-dnsutils): skipped");
        return;
    }
    uint16_t pa = 0;
    auto a = start_dns("192.0.2.1", pa);
    REQUIRE(a);
    UdpServer silent(never_answers());
    UdpServer wrong([](const std::string&, const net::SockAddr&, bool&) { return std::string("no"); });
    REQUIRE(silent.ok());
    REQUIRE(wrong.ok());
    const std::string good = "127.0.0.1:" + std::to_string(pa);
    Daemon d(rules_yaml({udp_rule("dns", "127.0.0.1:0", {good, silent.address(), wrong.address()},
                                  "  strategy: round-robin\n" +
                                      dns_check("interval: 200ms, timeout: 300ms, rise: 1, fall: 1"))}),
             {"-w", "2"});
    uint16_t port = d.port("dns");
    REQUIRE(port != 0);
    INFO(d.log());
    CHECK(d.wait_log("upstream " + silent.address() + " of (dns) is DOWN: timeout: no reply within 300ms (1 checks)"));
    CHECK(d.wait_log("upstream " + wrong.address() + " of (dns) is DOWN: expected \"\\x124\\x85\\x80\", got \"no\" (1 checks)"));
    for (int i = 0; i < 6; ++i) CHECK(dig("127.0.0.1", port) == "192.0.2.1\n");  // round robin over the one up
    CHECK(d.count("of (dns) is DOWN") == 2);
    CHECK(d.count("upstream " + good + " of (dns)") == 0);  // dnsmasq answered every check
    d.signal(SIGUSR1);
    CHECK(d.wait_log("stats rule=dns upstream=" + good + " state=up"));
    CHECK(d.wait_log("stats rule=dns upstream=" + silent.address() + " state=down"));
}

TEST_CASE("udp health: a closed port is DOWN as port unreachable and comes UP after rise checks once dnsmasq runs",
          "[udp][dns][health]") {
    if (!have_dns_tools()) {
        WARN("dnsmasq or dig missing (apt-get install dnsmasq-base bind9-dnsutils): skipped");
        return;
    }
    uint16_t pa = 0;
    auto a = start_dns("192.0.2.1", pa);
    REQUIRE(a);
    uint16_t pb = free_fixed_port();  // nothing listens yet: ICMP port unreachable
    REQUIRE(pb != 0);
    const std::string late = "127.0.0.1:" + std::to_string(pb);
    Daemon d(rules_yaml({udp_rule("dns", "127.0.0.1:0", {"127.0.0.1:" + std::to_string(pa), late},
                                  "  strategy: round-robin\n  responses: 1\n" +
                                      dns_check("interval: 200ms, timeout: 1s, rise: 2, fall: 1"))}),
             {"-w", "2"});
    uint16_t port = d.port("dns");
    REQUIRE(port != 0);
    INFO(d.log());
    CHECK(d.wait_log("upstream " + late + " of (dns) is DOWN: port unreachable (1 checks)"));
    for (int i = 0; i < 4; ++i) CHECK(dig("127.0.0.1", port) == "192.0.2.1\n");
    Dnsmasq b(pb, "192.0.2.2");
    bool up = d.wait_log("upstream " + late + " of (dns) is UP (2 checks)", 10000ms);
    INFO("dnsmasq on " << late << (b.child().exited() ? " exited (port taken meanwhile?)" : " runs"));
    REQUIRE(up);
    std::set<std::string> answers;
    for (int i = 0; i < 6; ++i) answers.insert(dig("127.0.0.1", port));
    CHECK(answers == std::set<std::string>{"192.0.2.1\n", "192.0.2.2\n"});  // back in the rotation
}

TEST_CASE("udp health: checks leave from the rule's source address", "[udp][health][source]") {
    UdpServer up(udp_who("up"));
    REQUIRE(up.ok());
    const std::string check = "  health_check: {interval: 200ms, timeout: 1s, rise: 1, fall: 1, send: \"hi\", "
                              "expect: \"up 127.0.0.2:\"}\n";
    Daemon d(rules_yaml({udp_rule("from2", "127.0.0.1:0", {up.address()}, "  source: 127.0.0.2\n" + check),
                         udp_rule("from1", "127.0.0.1:0", {up.address()}, check)}));
    REQUIRE(d.port("from2") != 0);
    INFO(d.log());
    // The rule without source: is the control: its checks come from 127.0.0.1.
    CHECK(d.wait_log("upstream " + up.address() + " of (from1) is DOWN: expected \"up 127.0.0.2:\", got \"up 127.0.0.1:"));
    REQUIRE(wait_until([&] { return up.received() >= 8; }, 10000ms));
    CHECK(d.count("of (from2) is DOWN") == 0);
}

TEST_CASE("udp: two client sockets are two sessions, each sticky to its upstream socket", "[udp]") {
    UdpServer up(udp_who("up"));
    Daemon d(rules_yaml({udp_rule("r", "127.0.0.1:0", {up.address()})}), {"-w", "2"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    INFO(d.log());
    net::Fd one = udp_client(port), two = udp_client(port);
    std::set<std::string> seen_one, seen_two;
    for (int i = 0; i < 5; ++i) {
        std::string r1, r2;
        REQUIRE(udp_ask(one.get(), "a", r1));
        REQUIRE(udp_ask(two.get(), "b", r2));
        seen_one.insert(r1);
        seen_two.insert(r2);
    }
    CHECK(seen_one.size() == 1);  // one session: one upstream source port
    CHECK(seen_two.size() == 1);
    CHECK(*seen_one.begin() != *seen_two.begin());
    CHECK(d.wait_log("Connected 127.0.0.1:" + std::to_string(port), 5000ms, 2));
    CHECK(d.count("Connected 127.0.0.1:" + std::to_string(port)) == 2);
}

TEST_CASE("udp: a session ends after idle_timeout; the next datagram opens a new one", "[udp]") {
    UdpServer up(udp_who("up"));
    Daemon d(rules_yaml({udp_rule("r", "127.0.0.1:0", {up.address()}, "  idle_timeout: 300ms\n")}));
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    INFO(d.log());
    net::Fd c = udp_client(port);
    std::string first, second;
    REQUIRE(udp_ask(c.get(), "x", first));
    CHECK(d.wait_log("datagrams_in=1 datagrams_out=1 reason=\"idle timeout\"", 3000ms));
    REQUIRE(udp_ask(c.get(), "y", second));
    CHECK(d.wait_log("Connected ", 5000ms, 2));
    CHECK(d.count("Connected ") == 2);
    CHECK(first != second);  // a new session: a new upstream socket
}

TEST_CASE("udp: at max_sessions the least recently active session is evicted and counted", "[udp]") {
    UdpServer up(udp_who("up"));
    Daemon d(rules_yaml({udp_rule("r", "127.0.0.1:0", {up.address()}, "  max_sessions: 2\n")}));
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    INFO(d.log());
    net::Fd a = udp_client(port), b = udp_client(port), c = udp_client(port);
    std::string ra, rb, rc, ra2;
    REQUIRE(udp_ask(a.get(), "1", ra));
    REQUIRE(udp_ask(b.get(), "2", rb));
    REQUIRE(udp_ask(a.get(), "3", ra2));  // a is now the most recent: b is the oldest idle
    CHECK(ra == ra2);
    REQUIRE(udp_ask(c.get(), "4", rc));
    net::SockAddr b_addr;
    net::local_address(b.get(), b_addr);
    CHECK(d.wait_log("(" + b_addr.text() + ") bytes_in=1 bytes_out="));
    CHECK(d.count("reason=\"evicted\"") == 1);
    d.signal(SIGUSR1);
    CHECK(d.wait_log("stats clients rule=r active=2 denied=0 over_client_limit=0 bad_preread=0 unrouted=0 evicted=1 dropped=0 lost=0 protocol=udp"));
}

TEST_CASE("udp: zero-length and 65,507-byte datagrams are relayed whole, byte-exact", "[udp]") {
    UdpServer up(udp_echo);
    Daemon d(rules_yaml({udp_rule("r", "127.0.0.1:0", {up.address()})}));
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    INFO(d.log());
    net::Fd c = udp_client(port);
    for (size_t size : {size_t(0), size_t(1), size_t(1400), size_t(9000), size_t(65507)}) {
        INFO(size);
        std::string data = pattern(size, size), reply = "not this";
        REQUIRE(udp_ask(c.get(), data, reply));
        CHECK(reply.size() == size);
        CHECK(checksum(reply) == checksum(data));
    }
    // In order, never merged: a burst comes back as the same datagrams.
    for (int i = 0; i < 20; ++i) {
        std::string data = std::to_string(i);
        ::send(c.get(), data.data(), data.size(), 0);
    }
    for (int i = 0; i < 20; ++i) {
        char buf[64];
        ssize_t n = ::recv(c.get(), buf, sizeof buf, 0);
        REQUIRE(n > 0);
        CHECK(std::string(buf, static_cast<size_t>(n)) == std::to_string(i));
    }
}

TEST_CASE("udp: allow and deny apply per session", "[udp]") {
    UdpServer up(udp_echo);
    Daemon d(rules_yaml({udp_rule("r", "127.0.0.1:0", {up.address()}, "  allow: [127.0.0.2]\n")}));
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    INFO(d.log());
    std::string reply;
    net::Fd ok = udp_client(port, "127.0.0.1", 2000ms, AF_INET, "127.0.0.2");
    CHECK(udp_ask(ok.get(), "in", reply));
    net::Fd no = udp_client(port, "127.0.0.1", 500ms);
    CHECK_FALSE(udp_ask(no.get(), "out", reply));
    CHECK(d.wait_log("denied 127.0.0.1:"));
    CHECK(up.received() == 1);
}

TEST_CASE("udp: source: the upstream sees datagrams from 127.0.0.2", "[udp][source]") {
    UdpServer up(udp_who("up"));
    Daemon d(rules_yaml({udp_rule("r", "127.0.0.1:0", {up.address()}, "  source: 127.0.0.2\n")}));
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    net::Fd c = udp_client(port);
    std::string reply;
    REQUIRE(udp_ask(c.get(), "x", reply));
    CHECK(reply.rfind("up 127.0.0.2:", 0) == 0);
}

TEST_CASE("udp: a port range sends each port to the same port of the upstream host", "[udp][range]") {
    const int n = 5;
    uint16_t base = 0;
    std::vector<std::unique_ptr<UdpServer>> ups;
    for (int attempt = 0; attempt < 50 && ups.size() < n; ++attempt) {
        ups.clear();
        base = static_cast<uint16_t>(20000 + (static_cast<unsigned>(getpid()) * 7 + attempt * 97) % 10000);
        for (int i = 0; i < n; ++i) {
            auto s = std::make_unique<UdpServer>(udp_who("p" + std::to_string(i)), "127.0.0.2",
                                                 static_cast<uint16_t>(base + i));
            if (!s->ok()) break;
            ups.push_back(std::move(s));
        }
    }
    REQUIRE(ups.size() == n);
    Daemon d(rules_yaml({udp_rule("range", "127.0.0.1:" + std::to_string(base) + "-" + std::to_string(base + n - 1),
                                  {"127.0.0.2"})}),
             {"-w", "2"});
    REQUIRE(d.port("range") == base);
    INFO(d.log());
    for (int i : {0, 2, n - 1}) {
        net::Fd c = udp_client(static_cast<uint16_t>(base + i));
        std::string reply;
        REQUIRE(udp_ask(c.get(), "x", reply));
        CHECK(reply.rfind("p" + std::to_string(i) + " ", 0) == 0);
    }
}

TEST_CASE("udp health: a ranged upstream has one state, checked on its first port; DOWN there, no port gets it",
          "[udp][range][health]") {
    const int n = 3;
    uint16_t base = 0;
    std::vector<std::unique_ptr<UdpServer>> ups;
    // 127.0.0.2 serves every port of the range; 127.0.0.3 all but the first.
    for (int attempt = 0; attempt < 50 && ups.size() < 2 * n - 1; ++attempt) {
        ups.clear();
        base = static_cast<uint16_t>(20000 + (static_cast<unsigned>(getpid()) * 11 + attempt * 89) % 10000);
        for (int i = 0; i < n; ++i)
            for (const char* host : {"127.0.0.2", "127.0.0.3"}) {
                if (i == 0 && std::string(host) == "127.0.0.3") continue;
                auto s = std::make_unique<UdpServer>(udp_who(std::string(host) + "/" + std::to_string(i)), host,
                                                     static_cast<uint16_t>(base + i));
                if (!s->ok()) break;
                ups.push_back(std::move(s));
            }
    }
    REQUIRE(ups.size() == 2 * n - 1);
    Daemon d(rules_yaml({udp_rule("range", "127.0.0.1:" + std::to_string(base) + "-" + std::to_string(base + n - 1),
                                  {"127.0.0.2", "127.0.0.3"},
                                  "  strategy: round-robin\n  health_check: {interval: 200ms, timeout: 1s, rise: 1, "
                                  "fall: 1, send: \"ping\"}\n")}),
             {"-w", "2"});
    REQUIRE(d.port("range") == base);
    INFO(d.log());
    CHECK(d.wait_log("upstream 127.0.0.3 of (range) is DOWN: port unreachable (1 checks)"));
    for (int i = 1; i < n; ++i)
        for (int k = 0; k < 3; ++k) {
            net::Fd c = udp_client(static_cast<uint16_t>(base + i));
            std::string reply;
            REQUIRE(udp_ask(c.get(), "x", reply));
            CHECK(reply.rfind("127.0.0.2/" + std::to_string(i) + " ", 0) == 0);  // .3 would serve this port: down anyway
        }
    CHECK(d.count("of (range) is DOWN") == 1);  // one entry, one line: not one per port
}

TEST_CASE("udp: reloads and a killed worker under a client loop: served throughout, losses counted", "[udp][reload]") {
    UdpServer up(udp_echo);
    uint16_t port = free_udp_port();
    auto text = [&](bool extra) {
        std::vector<std::string> rules{udp_rule("r", "127.0.0.1:" + std::to_string(port), {up.address()})};
        if (extra) rules.push_back(rule_yaml("extra", "127.0.0.1:0", {up.address()}));
        return rules_yaml(rules);
    };
    Daemon d(text(false), {"-w", "2", "-v=false", "-grace", "1s"});
    REQUIRE(d.port("r") == port);
    REQUIRE(d.workers(2).size() == 2);  // forked after the parent's signal handlers are in
    std::atomic<bool> stop{false};
    std::atomic<int> good{0}, bad{0}, wrong{0};
    std::thread client([&] {
        for (int i = 0; !stop && i < 100000; ++i) {
            // A new client socket every 10 datagrams: new sessions all along.
            net::Fd c = udp_client(port, "127.0.0.1", 1000ms);
            for (int k = 0; k < 10 && !stop; ++k) {
                std::string data = pattern(100 + static_cast<size_t>(k), static_cast<uint64_t>(i * 10 + k)), reply;
                if (!udp_ask(c.get(), data, reply)) ++bad;
                else if (reply != data) ++wrong;
                else ++good;
            }
        }
    });
    auto progress = [&](int more) {
        int target = good + more;
        return wait_until([&] { return good >= target; }, 10000ms);
    };
    REQUIRE(progress(50));
    for (int i = 0; i < 5; ++i) {
        size_t before = d.count("reloaded ");
        d.dir().write("rules.yaml", text(i % 2 == 0));
        d.signal(SIGHUP);
        CHECK(d.wait_log("reloaded ", 5000ms, before + 1));
        CHECK(progress(30));
    }
    std::vector<pid_t> workers = d.workers(2);
    REQUIRE(workers.size() >= 1);
    kill(workers[0], SIGKILL);
    CHECK(d.wait_log("killed by signal 9"));
    CHECK(progress(100));
    stop = true;
    client.join();
    INFO(d.log());
    INFO("good " << good << " bad " << bad);
    CHECK(wrong == 0);
    CHECK(bad <= 10);  // a datagram in flight at a kill or a reload may be lost, not more
    CHECK(alive(d));
    d.signal(SIGUSR1);
    REQUIRE(d.wait_log("stats clients rule=r "));
    // The killed worker's sessions are counted as lost (if it held any).
    std::string log = d.log();
    size_t at = log.find("lost=", log.find("stats clients rule=r "));
    REQUIRE(at != std::string::npos);
    INFO("udp reload/kill loop: " << good << " answered, " << bad << " lost datagrams, sessions lost: "
                                  << atoi(log.c_str() + at + 5));
    CHECK(alive(d));
}

TEST_CASE("udp: a stop with a live session drains within a second, not the whole -grace", "[udp]") {
    UdpServer up(udp_echo);
    Daemon d(rules_yaml({udp_rule("r", "127.0.0.1:0", {up.address()})}), {"-w", "1", "-grace", "30s"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    net::Fd c = udp_client(port);
    std::string reply;
    REQUIRE(udp_ask(c.get(), "x", reply));
    REQUIRE(d.workers(1).size() == 1);
    Clock::time_point asked = Clock::now();
    d.signal(SIGTERM);
    Exit e = d.wait_exit(10000ms);
    INFO(d.log());
    CHECK(e.code == 0);
    CHECK(elapsed_ms(asked) < 8000);  // quiet for 1 s ends it; -grace would be 30 s
    CHECK(d.wait_log("datagrams_in=1 datagrams_out=1 reason=\"idle timeout\""));
}

// ---- batches (udp_batch.hpp): many datagrams per system call --------------

namespace {

// Client c's datagram i: the first zero-length, the others of sizes distinct
// within the client; every tenth client sends one 65,507-byte datagram, each
// in its own round, so that a round fits the sockets' default buffers.
size_t batch_test_size(int c, int i) {
    if (i == 0) return 0;
    if (c % 10 == 0 && i == 2 * (15 + c / 10) + 1) return 65507;
    return static_cast<size_t>(i * 7 + c % 7 + 1);
}

std::string batch_test_data(int c, int i) {
    return pattern(batch_test_size(c, i), static_cast<uint64_t>(c) * 1000 + static_cast<uint64_t>(i));
}

// Reads `n` replies on each client and compares them, in order, with what it
// sent from `first` on; counts the missing and the wrong (another client's,
// merged, split, reordered).
void expect_replies(std::vector<net::Fd>& clients, int first, int n, int& missing, int& wrong,
                    std::vector<uint64_t>& sums) {
    std::vector<char> buf(70000);
    for (size_t c = 0; c < clients.size(); ++c) {
        for (int i = first; i < first + n; ++i) {
            ssize_t got = ::recv(clients[c].get(), buf.data(), buf.size(), 0);
            if (got < 0) {
                ++missing;
                break;  // the socket's timeout: the rest of this client's are late too
            }
            std::string reply(buf.data(), static_cast<size_t>(got));
            if (reply != batch_test_data(static_cast<int>(c), i)) ++wrong;
            sums[c] += checksum(reply);
        }
    }
}

}  // namespace

TEST_CASE("udp: 50 clients x 40 datagrams at once: every reply whole, to its client, from the address it sent to, "
          "in order",
          "[udp][batch]") {
    UdpServer up(udp_echo);
    REQUIRE(up.ok());
    uint16_t port = free_udp_port();
    Daemon d(rules_yaml({udp_rule("any", ":" + std::to_string(port), {up.address()})}), {"-w", "1"});
    REQUIRE(d.port("any") == port);
    INFO(d.log());
    constexpr int clients = 50, per_client = 40;
    // Connected sockets to 127.0.0.1 and 127.0.0.2 on a wildcard listener:
    // the kernel drops a reply from any other source.
    std::vector<net::Fd> socks;
    for (int c = 0; c < clients; ++c) {
        socks.push_back(udp_client(port, c % 2 ? "127.0.0.2" : "127.0.0.1", 3000ms));
        REQUIRE(socks.back());
    }
    std::vector<uint64_t> sent_sums(clients), got_sums(clients);
    int missing = 0, wrong = 0;
    // Each round every client sends two datagrams back to back (one session's
    // pair inside a batch of many sessions), then all replies are read.
    for (int round = 0; round < per_client / 2; ++round) {
        for (int c = 0; c < clients; ++c) {
            for (int i = 2 * round; i < 2 * round + 2; ++i) {
                std::string data = batch_test_data(c, i);
                sent_sums[static_cast<size_t>(c)] += checksum(data);
                REQUIRE(::send(socks[static_cast<size_t>(c)].get(), data.data(), data.size(), 0) ==
                        static_cast<ssize_t>(data.size()));
            }
        }
        expect_replies(socks, 2 * round, 2, missing, wrong, got_sums);
    }
    CHECK(missing == 0);
    CHECK(wrong == 0);
    CHECK(got_sums == sent_sums);
    CHECK(d.count("Connected ") == clients);  // one session per client, whatever the batches
}

TEST_CASE("udp: a batch read in one call mixes many sessions; each gets its own datagrams, in order", "[udp][batch]") {
    UdpServer up(udp_echo);
    REQUIRE(up.ok());
    Daemon d(rules_yaml({udp_rule("r", "127.0.0.1:0", {up.address()})}), {"-w", "1"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    INFO(d.log());
    std::vector<pid_t> workers = d.workers(1);
    REQUIRE(workers.size() == 1);
    constexpr int clients = 20, each = 5;
    std::vector<net::Fd> socks;
    for (int c = 0; c < clients; ++c) socks.push_back(udp_client(port, "127.0.0.1", 3000ms));
    // The worker is held while the datagrams queue, so that it reads them in
    // batches of many sessions, interleaved.
    REQUIRE(kill(workers[0], SIGSTOP) == 0);
    for (int i = 0; i < each; ++i)
        for (int c = 0; c < clients; ++c) {
            std::string data = batch_test_data(c, i + 1);
            ::send(socks[static_cast<size_t>(c)].get(), data.data(), data.size(), 0);
        }
    REQUIRE(kill(workers[0], SIGCONT) == 0);
    std::vector<uint64_t> sums(clients);
    int missing = 0, wrong = 0;
    expect_replies(socks, 1, each, missing, wrong, sums);
    CHECK(missing == 0);
    CHECK(wrong == 0);
    CHECK(d.wait_log("Connected ", 5000ms, clients));
    CHECK(d.count("Connected ") == clients);
}

TEST_CASE("udp: a session refused mid-batch (ICMP unreachable) ends alone; the batch's other sessions are served",
          "[udp][batch]") {
    UdpServer live(udp_echo);
    REQUIRE(live.ok());
    uint16_t dead = free_udp_port();  // nothing listens: ICMP port unreachable
    Daemon d(rules_yaml({udp_rule("r", "127.0.0.1:0", {"127.0.0.1:" + std::to_string(dead), live.address()},
                                  "  strategy: round-robin\n  max_fails: 3\n  fail_timeout: 30s\n")}),
             {"-w", "1"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    INFO(d.log());
    std::vector<pid_t> workers = d.workers(1);
    REQUIRE(workers.size() == 1);
    constexpr int clients = 10, each = 3;
    std::vector<net::Fd> socks;
    for (int c = 0; c < clients; ++c) socks.push_back(udp_client(port, "127.0.0.1", 1000ms));
    REQUIRE(kill(workers[0], SIGSTOP) == 0);
    for (int c = 0; c < clients; ++c)
        for (int i = 1; i <= each; ++i) {
            std::string data = batch_test_data(c, i);
            ::send(socks[static_cast<size_t>(c)].get(), data.data(), data.size(), 0);
        }
    REQUIRE(kill(workers[0], SIGCONT) == 0);
    // Round robin: every other session went to the dead upstream (until
    // max_fails marks it down). Every session on the live one gets all of
    // its replies, in order: none is cut short by its neighbour's error. A
    // client that met the dead one gets at most its own datagrams, in order.
    int whole = 0, wrong = 0;
    std::vector<char> buf(70000);
    for (int c = 0; c < clients; ++c) {
        int got = 0, next = 1;
        for (int k = 1; k <= each; ++k) {
            ssize_t n = ::recv(socks[static_cast<size_t>(c)].get(), buf.data(), buf.size(), 0);
            if (n < 0) break;
            std::string reply(buf.data(), static_cast<size_t>(n));
            while (next <= each && reply != batch_test_data(c, next)) ++next;
            if (next > each) ++wrong;
            ++next;
            ++got;
        }
        if (got == each) ++whole;
    }
    CHECK(wrong == 0);
    CHECK(whole >= clients / 2);
    CHECK(whole < clients);  // the dead upstream was met
    CHECK(d.wait_log("reason=\"connection refused\""));
    // The worker goes on: a new client is answered (by the live upstream).
    net::Fd later = udp_client(port, "127.0.0.1", 2000ms);
    std::string reply;
    bool answered = false;
    for (int attempt = 0; attempt < 3 && !answered; ++attempt) answered = udp_ask(later.get(), "later", reply);
    CHECK(answered);
    CHECK(reply == "later");
}

TEST_CASE("udp: a session's run of equal-sized datagrams in one batch reaches the upstream as the same datagrams",
          "[udp][batch]") {
    UdpServer up(udp_echo);
    REQUIRE(up.ok());
    Daemon d(rules_yaml({udp_rule("r", "127.0.0.1:0", {up.address()})}), {"-w", "1"});
    uint16_t port = d.port("r");
    REQUIRE(port != 0);
    INFO(d.log());
    std::vector<pid_t> workers = d.workers(1);
    REQUIRE(workers.size() == 1);
    net::Fd c = udp_client(port, "127.0.0.1", 3000ms);
    std::string first;
    REQUIRE(udp_ask(c.get(), "open", first));  // the session exists before the batch
    // Held worker: 30 datagrams of 1,400 bytes and a shorter last one queue
    // and are read as one batch of one session (on Linux one UDP_SEGMENT
    // send upstream), then must arrive as 31 datagrams, not fewer or more.
    constexpr int count = 31;
    auto data = [](int i) { return pattern(i == count - 1 ? 100 : 1400, 7000 + static_cast<uint64_t>(i)); };
    const int before = up.received();
    REQUIRE(kill(workers[0], SIGSTOP) == 0);
    for (int i = 0; i < count; ++i) {
        std::string out = data(i);
        REQUIRE(::send(c.get(), out.data(), out.size(), 0) == static_cast<ssize_t>(out.size()));
    }
    REQUIRE(kill(workers[0], SIGCONT) == 0);
    std::vector<char> buf(70000);
    int wrong = 0, got = 0;
    for (int i = 0; i < count; ++i) {
        ssize_t n = ::recv(c.get(), buf.data(), buf.size(), 0);
        if (n < 0) break;
        ++got;
        if (std::string(buf.data(), static_cast<size_t>(n)) != data(i)) ++wrong;
    }
    CHECK(got == count);
    CHECK(wrong == 0);
    CHECK(up.received() - before == count);
}
