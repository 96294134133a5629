// Deeper health checks (issue 15): send/expect and tls against real
// servers on loopback - harness servers and `openssl s_server` with a
// throwaway certificate made here - and the hand-built ClientHello and the
// reply judges on their own. Every wait polls a log line with a deadline.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "checker.hpp"
#include "harness.hpp"
#include "tls_hello.hpp"

using namespace harness;

namespace {

std::string checked_rule(const std::string& check, const std::vector<std::string>& to) {
    std::string text = "rules:\n- name: r\n  from: \"127.0.0.1:0\"\n  health_check: " + check + "\n  to:\n";
    for (const std::string& t : to) text += "    - \"" + t + "\"\n";
    return text;
}

std::string at(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

// Reads one line, answers `reply`, closes.
Server::Handler answer_line(std::string reply) {
    return [reply](int fd) {
        std::string line;
        char c;
        while (line.size() < 200 && ::recv(fd, &c, 1, 0) == 1 && c != '\n') line += c;
        send_all(fd, reply);
    };
}

// Ends its side at once (FIN before any byte), then waits for the prober to go.
void closes_at_once(int fd) {
    ::shutdown(fd, SHUT_WR);
    char buf[512];
    while (::recv(fd, buf, sizeof buf, 0) > 0) {
    }
}

// openssl s_server on a loopback port with a certificate made for the test.
class TlsServer {
public:
    TlsServer(uint16_t port, const std::vector<std::string>& extra = {}) {
        std::string cert = dir_.path() + "/cert.pem", key = dir_.path() + "/key.pem";
        std::string make = "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + key + " -out " + cert +
                           " -days 1 -subj /CN=mixctl-health-test >/dev/null 2>&1";
        if (system(make.c_str()) != 0) return;
        std::vector<std::string> args = {"openssl", "s_server", "-4", "-accept", at(port), "-cert", cert, "-key", key,
                                         "-quiet"};
        args.insert(args.end(), extra.begin(), extra.end());
        for (std::string& a : args)
            if (a == "@cert") a = cert;
            else if (a == "@key") a = key;
        std::string log = dir_.path() + "/s_server.log";
        pid_ = fork();
        if (pid_ == 0) {
            int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            dup2(out, 1);
            dup2(out, 2);
            std::vector<char*> argv;
            for (std::string& a : args) argv.push_back(&a[0]);
            argv.push_back(nullptr);
            execvp("openssl", argv.data());
            _exit(127);
        }
    }
    ~TlsServer() {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
    }
    bool started() const { return pid_ > 0; }

private:
    TempDir dir_;
    pid_t pid_ = -1;
};

bool have_openssl() { return system("openssl version >/dev/null 2>&1") == 0; }

}  // namespace

// ---- the pieces ---------------------------------------------------------------

TEST_CASE("the hand-built ClientHello is one well-formed handshake record, with server_name only when asked",
          "[health][tls]") {
    for (const std::string& sni : {std::string(), std::string("k3s.example")}) {
        std::string h = tls_hello::client_hello(sni, 7);
        auto byte = [&](size_t i) { return static_cast<unsigned>(static_cast<unsigned char>(h[i])); };
        REQUIRE(h.size() > 60);
        CHECK(byte(0) == 0x16);
        CHECK((byte(1) == 3 && byte(2) == 1));
        CHECK((byte(3) << 8 | byte(4)) == h.size() - 5);
        CHECK(byte(5) == 1);  // client_hello
        CHECK((byte(6) << 16 | byte(7) << 8 | byte(8)) == h.size() - 9);
        CHECK((byte(9) == 3 && byte(10) == 3));
        size_t p = 11 + 32;
        p += 1 + byte(p);                            // session id
        p += 2 + (byte(p) << 8 | byte(p + 1));       // cipher suites
        p += 1 + byte(p);                            // compression
        size_t ext_end = p + 2 + (byte(p) << 8 | byte(p + 1));
        CHECK(ext_end == h.size());
        bool saw_sni = false;
        for (p += 2; p + 4 <= ext_end;) {
            unsigned type = byte(p) << 8 | byte(p + 1), len = byte(p + 2) << 8 | byte(p + 3);
            if (type == 0) {
                saw_sni = true;
                CHECK(h.substr(p + 4 + 5, len - 5) == sni);
            }
            p += 4 + len;
        }
        CHECK(p == ext_end);
        CHECK(saw_sni == !sni.empty());
    }
    CHECK(tls_hello::client_hello("", 1) != tls_hello::client_hello("", 2));  // fresh random each time
}

TEST_CASE("the reply judges: expect prefix and TLS handshake record, with the reasons logged", "[health]") {
    using tls_hello::Verdict;
    std::string why;
    CHECK(checker::judge_expect("+PONG", "+PO", false, why) == Verdict::more);
    CHECK(checker::judge_expect("+PONG", "+PONG\r\n", false, why) == Verdict::ok);
    CHECK(checker::judge_expect("+PONG", "-ERR\r\n", false, why) == Verdict::fail);
    CHECK(why == "expected \"+PONG\", got \"-ERR\\r\\n\"");
    CHECK(checker::judge_expect("+PONG", "+PO", true, why) == Verdict::fail);
    CHECK(why == "expected \"+PONG\", got \"+PO\" and the server closed");
    CHECK(checker::judge_expect("HTTP/1.0 200", std::string("HTTP/1.0 503\x01", 13), false, why) == Verdict::fail);
    CHECK(why == "expected \"HTTP/1.0 200\", got \"HTTP/1.0 503\\x01\"");

    CHECK(tls_hello::judge_reply(std::string("\x16\x03\x03\x00", 4), false, why) == Verdict::more);
    CHECK(tls_hello::judge_reply(std::string("\x16\x03\x03\x00\x38\x02", 6), false, why) == Verdict::ok);
    CHECK(tls_hello::judge_reply(std::string("\x15\x03\x03\x00\x02\x02\x70", 7), false, why) == Verdict::fail);
    CHECK(why == "no TLS handshake record: the server sent a TLS alert (description 112)");
    CHECK(tls_hello::judge_reply("", true, why) == Verdict::fail);
    CHECK(why == "no TLS handshake record: the server closed after 0 bytes");
    CHECK(tls_hello::judge_reply("SSH-2.0-x", false, why) == Verdict::fail);
    CHECK(why == "no TLS handshake record: got 9 bytes starting 0x5353482d");
    CHECK(tls_hello::judge_reply(std::string("\x16\x03\x03\x00\x10\x0b", 6), false, why) == Verdict::fail);
}

// ---- against real servers -----------------------------------------------------------

TEST_CASE("send/expect: a wrong answer is DOWN with what came, the right one brings it UP",
          "[health][integration]") {
    uint16_t port = free_port();
    Daemon d(checked_rule("{interval: 200ms, timeout: 1s, rise: 1, fall: 1, send: \"PING\\r\\n\", expect: \"+PONG\"}",
                          {at(port)}));
    REQUIRE(d.port("r"));
    INFO(d.log());
    CHECK(d.wait_log("upstream " + at(port) + " of (r) is DOWN: connection refused"));
    {
        Server wrong(answer_line("-LOADING Redis is loading the dataset in memory\r\n"), AF_INET, port);
        REQUIRE(wrong.ok());
        CHECK(d.wait_log("upstream " + at(port) + " of (r) still DOWN: expected \"+PONG\", got \"-LOADING Redis is"));
        REQUIRE(wait_until([&] { return wrong.accepted() >= 3; }, 10000ms));
        CHECK(d.count("is UP") == 0);
        CHECK(d.count("still DOWN") == 1);  // a reason is logged once, not every check
    }
    Server right(answer_line("+PONG\r\n"), AF_INET, port);
    REQUIRE(right.ok());
    CHECK(d.wait_log("upstream " + at(port) + " of (r) is UP", 10000ms));
}

TEST_CASE("checks leave from the rule's source address, as its connections do", "[health][integration][source]") {
    Server tells([](int fd) {  // answers "from ADDRESS:PORT" after the check's line
        std::string line;
        char c;
        while (line.size() < 200 && ::recv(fd, &c, 1, 0) == 1 && c != '\n') line += c;
        net::SockAddr peer;
        peer.length = sizeof peer.storage;
        getpeername(fd, peer.get(), &peer.length);
        send_all(fd, "from " + peer.text() + "\n");
    });
    REQUIRE(tells.ok());
    const std::string check = "{interval: 200ms, timeout: 1s, rise: 1, fall: 1, send: \"who\\n\", expect: \"from 127.0.0.2:\"}";
    Daemon d(checked_rule(check, {tells.address()}) + "  source: 127.0.0.2\n" +
             "- name: plain\n  from: \"127.0.0.1:0\"\n  health_check: " + check + "\n  to: [\"" + tells.address() +
             "\"]\n");
    REQUIRE(d.port("r"));
    INFO(d.log());
    // The rule without source: is the control: its checks come from 127.0.0.1.
    CHECK(d.wait_log("upstream " + tells.address() + " of (plain) is DOWN: expected \"from 127.0.0.2:\", got \"from 127.0.0.1:"));
    REQUIRE(wait_until([&] { return tells.accepted() >= 8; }, 10000ms));
    CHECK(d.count("of (r) is DOWN") == 0);
}

TEST_CASE("send/expect: the reason names the wrong reply, a close and a hang", "[health][integration]") {
    Server wrong(answer_line("-ERR unknown command\r\n"));
    Server closes(closes_at_once);
    Server hangs([](int fd) {
        char buf[64];
        while (::recv(fd, buf, sizeof buf, 0) > 0) {
        }
    });
    Server http(answer_line("HTTP/1.0 200 OK\r\n\r\nok"));
    Daemon d(checked_rule("{interval: 300ms, timeout: 600ms, rise: 1, fall: 1, send: \"PING\\r\\n\", expect: \"+PONG\"}",
                          {wrong.address(), closes.address(), hangs.address()}) +
             "- name: h\n  from: \"127.0.0.1:0\"\n  health_check: {interval: 300ms, timeout: 600ms, fall: 1, send: "
             "\"GET /health HTTP/1.0\\r\\n\\r\\n\", expect: \"HTTP/1.0 200\"}\n  to: [\"" + http.address() + "\"]\n");
    REQUIRE(d.port("r"));
    INFO(d.log());
    CHECK(d.wait_log("upstream " + wrong.address() + " of (r) is DOWN: expected \"+PONG\", got \"-ERR unknown command\\r\\n\""));
    CHECK(d.wait_log("upstream " + closes.address() + " of (r) is DOWN: expected \"+PONG\", got \"\" and the server closed"));
    CHECK(d.wait_log("upstream " + hangs.address() + " of (r) is DOWN: timeout: expected \"+PONG\" within 600ms, got \"\""));
    REQUIRE(wait_until([&] { return http.accepted() >= 3; }, 10000ms));
    CHECK(d.count("of (h) is DOWN") == 0);
}

TEST_CASE("tls: openssl s_server comes UP; a server that closes at once, one that hangs and a plain one stay DOWN",
          "[health][tls][integration]") {
    if (!have_openssl()) {
        WARN("openssl not installed: skipped (apt-get install openssl)");
        return;
    }
    uint16_t port = free_port();
    Server closes(closes_at_once);
    Server hangs([](int fd) {
        char buf[64];
        while (::recv(fd, buf, sizeof buf, 0) > 0) {
        }
    });
    Server plain(banner("SSH-2.0-OpenSSH_9.2"));
    Daemon d(checked_rule("{interval: 300ms, timeout: 600ms, rise: 1, fall: 1, tls: true}",
                          {at(port), closes.address(), hangs.address(), plain.address()}));
    REQUIRE(d.port("r"));
    INFO(d.log());
    CHECK(d.wait_log("upstream " + at(port) + " of (r) is DOWN: connection refused"));
    CHECK(d.wait_log("upstream " + closes.address() + " of (r) is DOWN: no TLS handshake record: the server closed after 0 bytes"));
    CHECK(d.wait_log("upstream " + hangs.address() + " of (r) is DOWN: timeout: no TLS handshake record within 600ms"));
    CHECK(d.wait_log("upstream " + plain.address() + " of (r) is DOWN: no TLS handshake record: got "));
    CHECK(d.wait_log("bytes starting 0x5353482d"));
    TlsServer tls(port);
    REQUIRE(tls.started());
    CHECK(d.wait_log("upstream " + at(port) + " of (r) is UP", 15000ms));
}

TEST_CASE("tls with sni: the name the server expects brings it UP, another gets its alert logged",
          "[health][tls][integration]") {
    if (!have_openssl()) {
        WARN("openssl not installed: skipped (apt-get install openssl)");
        return;
    }
    uint16_t good_port = free_port(), bad_port = free_port();
    std::vector<std::string> strict = {"-servername", "api.k3s.test", "-servername_fatal", "-cert2", "@cert", "-key2", "@key"};
    Daemon d("rules:\n"
             "- name: good\n  from: \"127.0.0.1:0\"\n  health_check: {interval: 300ms, timeout: 1s, rise: 1, fall: 1, "
             "tls: true, sni: api.k3s.test}\n  to: [\"" + at(good_port) + "\"]\n"
             "- name: bad\n  from: \"127.0.0.1:0\"\n  health_check: {interval: 300ms, timeout: 1s, rise: 1, fall: 1, "
             "tls: true, sni: other.test}\n  to: [\"" + at(bad_port) + "\"]\n");
    REQUIRE(d.port("bad"));
    INFO(d.log());
    CHECK(d.wait_log("of (good) is DOWN: connection refused"));
    CHECK(d.wait_log("of (bad) is DOWN: connection refused"));
    TlsServer good(good_port, strict), bad(bad_port, strict);
    REQUIRE((good.started() && bad.started()));
    CHECK(d.wait_log("upstream " + at(good_port) + " of (good) is UP", 15000ms));
    CHECK(d.wait_log("upstream " + at(bad_port) +
                     " of (bad) still DOWN: no TLS handshake record: the server sent a TLS alert (description 112)",
                     15000ms));
    CHECK(d.count("of (bad) is UP") == 0);
}
