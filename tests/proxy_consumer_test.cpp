// PROXY protocol against real consumers: HAProxy (`bind ... accept-proxy`)
// and nginx (`listen ... proxy_protocol`), run in the foreground as children
// of this test on loopback. Each answers an HTTP request with the client
// address it read from the PROXY header, so the body is exactly what the
// upstream believes the client to be.
//
// HAProxy is installed with apt-get when missing and the test runs as root
// (Debian package `haproxy`); nginx (package `nginx`) is used when present.
// Without either, the cases WARN and pass without checking anything.
#include <catch2/catch.hpp>

#include <memory>

#include "harness.hpp"
#include "peers.hpp"

using namespace harness;
using peers::find_program;

namespace {

// HAProxy from Debian when it is missing and we may install it: once per run,
// bounded, without letting Debian start the packaged service.
std::string haproxy_program() {
    static std::string found = [] {
        std::string p = find_program("haproxy");
        if (!p.empty() || geteuid() != 0 || find_program("apt-get").empty()) return p;
        const char* script =
            "guard=/usr/sbin/policy-rc.d; added=; "
            "if [ ! -e $guard ]; then printf '#!/bin/sh\\nexit 101\\n' > $guard && chmod 755 $guard && added=1; fi; "
            "export DEBIAN_FRONTEND=noninteractive; "
            "timeout 300 apt-get install -y -qq haproxy >/dev/null 2>&1 || "
            "{ timeout 300 apt-get update -qq >/dev/null 2>&1; timeout 300 apt-get install -y -qq haproxy >/dev/null 2>&1; }; "
            "[ -n \"$added\" ] && rm -f $guard; true";
        int rc = system(script);
        (void)rc;
        return find_program("haproxy");
    }();
    return found;
}

bool ipv6_loopback() {
    net::Fd fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    net::SockAddr at = loopback(0, AF_INET6);
    return fd && ::bind(fd.get(), at.get(), at.length) == 0;
}

// One HTTP/1.0 request on a connected socket, after `prefix` (a hand-made
// PROXY header, or nothing); returns everything up to EOF or a reset.
std::string http_get(int fd, const std::string& prefix = "") {
    std::string answer;
    if (!send_all(fd, prefix + "GET / HTTP/1.0\r\nHost: test\r\n\r\n")) return answer;
    read_to_eof(fd, answer, 1 << 16);
    return answer;
}

std::string body_of(const std::string& answer) {
    size_t at = answer.find("\r\n\r\n");
    return at == std::string::npos ? std::string() : answer.substr(at + 4);
}

// "127.0.0.5:40000", "::1:40000": how HAProxy's %[src]:%[src_port] and
// nginx's $proxy_protocol_addr:$proxy_protocol_port print a client.
std::string plain_address(const net::SockAddr& a) {
    std::string text = a.text();  // "[::1]:40000" or "127.0.0.5:40000"
    if (!text.empty() && text[0] == '[') {
        size_t close = text.find(']');
        text = text.substr(1, close - 1) + text.substr(close + 1);
    }
    return text;
}

enum class Kind { haproxy, nginx };

// The consumer as a child process: config, pid file and logs in its own temp
// dir; stopped by pid (SIGTERM, then SIGKILL) when it goes out of scope.
class Consumer {
public:
    Consumer(Kind kind, std::string program, bool with_v6) : kind_(kind), program_(std::move(program)), v6_(with_v6) {
        for (int attempt = 0; attempt < 3 && !ready_; ++attempt) {
            stop();
            port4_ = free_port(AF_INET);
            port6_ = v6_ ? free_port(AF_INET6) : 0;
            if (!port4_ || (v6_ && !port6_)) continue;
            start();
            ready_ = wait_ready();
        }
    }
    ~Consumer() { stop(); }

    bool ready() const { return ready_; }
    uint16_t port(int family) const { return family == AF_INET6 ? port6_ : port4_; }
    std::string address(int family) const {
        return family == AF_INET6 ? "[::1]:" + std::to_string(port6_) : "127.0.0.1:" + std::to_string(port4_);
    }
    const char* name() const { return kind_ == Kind::haproxy ? "haproxy" : "nginx"; }
    std::string log() const {
        return peers::file_text(dir_.path() + "/log") + peers::file_text(dir_.path() + "/error.log");
    }

private:
    std::string config() const {
        const std::string& d = dir_.path();
        std::string p4 = std::to_string(port4_), p6 = std::to_string(port6_);
        if (kind_ == Kind::haproxy)
            return "global\n"
                   "    nbthread 1\n"
                   "defaults\n"
                   "    mode http\n"
                   "    timeout connect 2s\n"
                   "    timeout client 5s\n"
                   "    timeout server 5s\n"
                   "frontend who\n"
                   "    bind 127.0.0.1:" + p4 + " accept-proxy\n" +
                   (v6_ ? "    bind [::1]:" + p6 + " accept-proxy\n" : "") +
                   "    http-request return status 200 content-type text/plain lf-string \"%[src]:%[src_port]\"\n";
        return "daemon off;\n"
               "master_process off;\n"
               "worker_processes 1;\n"
               "pid " + d + "/nginx.pid;\n"
               "error_log " + d + "/error.log info;\n"
               "events { worker_connections 64; }\n"
               "http {\n"
               "    access_log " + d + "/access.log;\n"
               "    client_body_temp_path " + d + "/body;\n"
               "    proxy_temp_path " + d + "/proxy;\n"
               "    fastcgi_temp_path " + d + "/fastcgi;\n"
               "    uwsgi_temp_path " + d + "/uwsgi;\n"
               "    scgi_temp_path " + d + "/scgi;\n"
               "    server {\n"
               "        listen 127.0.0.1:" + p4 + " proxy_protocol;\n" +
               (v6_ ? "        listen [::1]:" + p6 + " proxy_protocol;\n" : "") +
               "        location / { default_type text/plain; return 200 \"$proxy_protocol_addr:$proxy_protocol_port\"; }\n"
               "    }\n"
               "}\n";
    }

    void start() {
        std::string cfg = dir_.write(kind_ == Kind::haproxy ? "haproxy.cfg" : "nginx.conf", config());
        std::string log_file = dir_.path() + "/log", err_file = dir_.path() + "/error.log";
        std::vector<std::string> args;
        if (kind_ == Kind::haproxy) args = {program_, "-f", cfg, "-db"};
        else args = {program_, "-e", err_file, "-c", cfg};
        child_.reset(new peers::Child(args, log_file));
    }

    bool running() { return child_ && child_->running(); }

    // Ready when both listeners answer a hand-made v1 header with the
    // address it names: the consumer is up and configured as intended.
    bool wait_ready() {
        return wait_until(
            [&] {
                if (!running()) return true;
                for (int family : {AF_INET, AF_INET6}) {
                    if (family == AF_INET6 && !v6_) continue;
                    net::Fd fd = dial(port(family), family, 1000ms);
                    if (!fd) return false;
                    std::string header = "PROXY TCP4 127.0.0.9 127.0.0.1 4321 " + std::to_string(port(family)) + "\r\n";
                    if (body_of(http_get(fd.get(), header)) != "127.0.0.9:4321") return false;
                }
                return true;
            },
            5000ms) &&
               running();
    }

    void stop() { child_.reset(); }

    Kind kind_;
    std::string program_;
    bool v6_;
    TempDir dir_;
    uint16_t port4_ = 0, port6_ = 0;
    std::unique_ptr<peers::Child> child_;
    bool ready_ = false;
};

struct Case {
    std::string rule;
    int client;    // family of the client (and of the mixctl listener)
    int upstream;  // family of the consumer's listener
    bool proxied;  // whether the rule sends a header
};

// The whole matrix against one consumer: v1 and v2 (v2 inherited from
// `defaults`), IPv4 and IPv6 clients, to the consumer's IPv4 and IPv6
// listeners; then rules without the header, which the consumer must refuse.
void against(Consumer& consumer, bool v6) {
    std::vector<Case> cases;
    std::string rules = "defaults:\n  proxy_protocol: v2\nrules:\n";
    std::vector<int> families{AF_INET};
    if (v6) families.push_back(AF_INET6);
    for (const char* version : {"v1", "v2", "off"})
        for (int client : families)
            for (int upstream : families) {
                Case c{std::string(version) + (client == AF_INET ? "-from4" : "-from6") +
                           (upstream == AF_INET ? "-to4" : "-to6"),
                       client, upstream, std::string(version) != "off"};
                cases.push_back(c);
                rules += "- {name: " + c.rule + ", from: '" + (client == AF_INET ? "127.0.0.1:0" : "[::1]:0") + "', ";
                if (std::string(version) != "v2") rules += std::string("proxy_protocol: ") + version + ", ";
                rules += "to: ['" + consumer.address(upstream) + "']}\n";
            }
    Daemon d(rules);
    for (const Case& c : cases) {
        INFO(consumer.name() << ", rule " << c.rule);
        uint16_t port = d.port(c.rule);
        REQUIRE(port != 0);
        // The IPv4 client comes from 127.0.0.5, not mixctl's 127.0.0.1: only
        // the header can tell the consumer that address. The IPv6 client to
        // the IPv4 listener likewise: the consumer's own peer is 127.0.0.1.
        net::Fd fd = dial(port, c.client, 5000ms, c.client == AF_INET ? "127.0.0.5" : nullptr);
        REQUIRE(fd);
        net::SockAddr me;
        REQUIRE(net::local_address(fd.get(), me));
        std::string answer = http_get(fd.get());
        INFO("answer: " << answer);
        if (c.proxied) {
            CHECK(answer.compare(0, 15, "HTTP/1.1 200 OK") == 0);
            CHECK(body_of(answer) == plain_address(me));
        } else {
            // No header: accept-proxy / proxy_protocol listeners drop the
            // connection without an HTTP answer.
            CHECK(answer.find("HTTP/") == std::string::npos);
        }
    }
    INFO(d.log());
    CHECK(d.count("error dialing") == 0);
}

void run_consumer(Kind kind, const std::string& program) {
    bool v6 = ipv6_loopback();
    if (!v6) WARN("no IPv6 loopback (::1) here: only IPv4 clients and listeners are checked");
    Consumer consumer(kind, program, v6);
    INFO(consumer.log());
    REQUIRE(consumer.ready());
    against(consumer, v6);
    if (kind == Kind::nginx) CHECK(consumer.log().find("broken header") != std::string::npos);
}

}  // namespace

TEST_CASE("HAProxy with accept-proxy sees the real client through mixctl (v1, v2, IPv4, IPv6)",
          "[proxy-consumer]") {
    std::string program = haproxy_program();
    if (program.empty()) {
        WARN("haproxy not found and not installable (Debian package haproxy): PROXY consumer test skipped");
        return;
    }
    run_consumer(Kind::haproxy, program);
}

TEST_CASE("nginx with listen proxy_protocol sees the real client through mixctl (v1, v2, IPv4, IPv6)",
          "[proxy-consumer]") {
    std::string program = find_program("nginx");
    if (program.empty()) {
        WARN("nginx not found (Debian package nginx): nginx PROXY consumer test skipped");
        return;
    }
    run_consumer(Kind::nginx, program);
}
