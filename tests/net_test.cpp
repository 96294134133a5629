// Sockets and addresses: host:port syntax, resolution, listen and dial.
#include <catch2/catch.hpp>

#include <poll.h>

#include "net.hpp"

namespace {

// A listener on 127.0.0.1 at a port the kernel picks; `bound` is where.
net::Fd loopback_listener(net::SockAddr& bound) {
    net::HostPort hp{"127.0.0.1", 0};
    std::vector<net::SockAddr> addrs;
    std::string error;
    REQUIRE(net::resolve(hp, true, addrs, error));
    net::Fd listener = net::listen_on(addrs[0], 16, error);
    REQUIRE(listener);
    REQUIRE(net::local_address(listener.get(), bound));
    return listener;
}

}  // namespace

TEST_CASE("host:port forms parse to host and port", "[net]") {
    struct Case {
        const char* text;
        const char* host;
        uint16_t port;
    };
    const Case cases[] = {
        {"127.0.0.1:22", "127.0.0.1", 22},   {"localhost:6443", "localhost", 6443},
        {"[::1]:8080", "::1", 8080},         {"[::]:80", "::", 80},
        {":7000", "", 7000},                 {"0.0.0.0:65535", "0.0.0.0", 65535},
        {"[fe80::1%lo]:1", "fe80::1%lo", 1}, {"my-host.example:1", "my-host.example", 1},
    };
    for (const Case& c : cases) {
        INFO(c.text);
        net::HostPort hp;
        std::string error;
        REQUIRE(net::parse_host_port(c.text, false, hp, error));
        CHECK(hp.host == c.host);
        CHECK(hp.port == c.port);
    }
}

TEST_CASE("bad addresses are refused with the reason", "[net]") {
    struct Case {
        const char* text;
        const char* message;
    };
    const Case cases[] = {
        {"127.0.0.1", "missing port"},
        {"127.0.0.1:", "missing port"},
        {"::1:22", "too many colons in address: write IPv6 addresses in brackets, e.g. [::1]:22"},
        {"[::1]", "missing port"},
        {"[::1:22", "missing ']'"},
        {"[127.0.0.1]:22", "brackets are only for IPv6"},
        {"host:0", "port 0 out of range"},
        {"host:65536", "port 65536 out of range"},
        {"host:99999999999", "invalid port"},
        {"host:-1", "invalid port"},
        {"host:22a", "invalid port"},
        {"ho st:22", "invalid host"},
    };
    for (const Case& c : cases) {
        INFO(c.text);
        net::HostPort hp;
        std::string error;
        CHECK_FALSE(net::parse_host_port(c.text, false, hp, error));
        CHECK(error.find(c.message) != std::string::npos);
    }
}

TEST_CASE("port 0 is allowed only where asked for", "[net]") {
    net::HostPort hp;
    std::string error;
    CHECK(net::parse_host_port("127.0.0.1:0", true, hp, error));
    CHECK_FALSE(net::parse_host_port("127.0.0.1:0", false, hp, error));
}

TEST_CASE("addresses print as Go prints them", "[net]") {
    net::HostPort hp;
    std::string error;
    REQUIRE(net::parse_host_port("[::1]:22", false, hp, error));
    CHECK(hp.text() == "[::1]:22");
    std::vector<net::SockAddr> addrs;
    REQUIRE(net::resolve(hp, false, addrs, error));
    REQUIRE(addrs.size() == 1);
    CHECK(addrs[0].text() == "[::1]:22");
    REQUIRE(net::parse_host_port("127.0.0.1:80", false, hp, error));
    REQUIRE(net::resolve(hp, false, addrs, error));
    CHECK(addrs[0].text() == "127.0.0.1:80");
}

TEST_CASE("localhost resolves to loopback addresses of either family", "[net]") {
    net::HostPort hp{"localhost", 22};
    std::vector<net::SockAddr> addrs;
    std::string error;
    REQUIRE(net::resolve(hp, false, addrs, error));
    for (const net::SockAddr& a : addrs) {
        INFO(a.text());
        CHECK((a.text() == "127.0.0.1:22" || a.text() == "[::1]:22"));
    }
}

TEST_CASE("an empty host listens on the IPv6 wildcard first", "[net]") {
    net::HostPort hp{"", 8080};
    std::vector<net::SockAddr> addrs;
    std::string error;
    REQUIRE(net::resolve(hp, true, addrs, error));
    REQUIRE_FALSE(addrs.empty());
    // On a host without IPv6, the IPv4 wildcard is all there is.
    CHECK((addrs[0].text() == "[::]:8080" || addrs[0].text() == "0.0.0.0:8080"));
}

TEST_CASE("an empty host is one dual-stack listener that IPv4 and IPv6 clients reach", "[net]") {
    net::HostPort hp{"", 0};
    std::vector<net::SockAddr> addrs;
    std::string error;
    REQUIRE(net::resolve(hp, true, addrs, error));
    // getaddrinfo gives 0.0.0.0 and ::; two sockets on one port would
    // collide (EADDRINUSE), so there is one.
    REQUIRE(addrs.size() == 1);
    net::Fd listener = net::listen_on(addrs[0], 16, error);
    INFO(error);
    REQUIRE(listener);
    net::SockAddr bound;
    REQUIRE(net::local_address(listener.get(), bound));
    std::vector<std::string> clients{"127.0.0.1"};
    if (bound.family() == AF_INET6) clients.push_back("::1");
    for (const std::string& host : clients) {
        std::vector<net::SockAddr> to;
        REQUIRE(net::resolve(net::HostPort{host, bound.port()}, false, to, error));
        net::Fd client;
        int rc = net::dial_start(to[0], client);
        if (rc == EINPROGRESS) {
            pollfd p{client.get(), POLLOUT, 0};
            REQUIRE(::poll(&p, 1, 5000) == 1);
            rc = net::pending_error(client.get());
        }
        INFO("client " << host);
        CHECK(rc == 0);
    }
}

TEST_CASE("listen, nonblocking dial and accept work on loopback", "[net]") {
    net::SockAddr bound;
    net::Fd listener = loopback_listener(bound);
    CHECK(bound.port() != 0);

    net::Fd client;
    int rc = net::dial_start(bound, client);
    REQUIRE((rc == 0 || rc == EINPROGRESS));
    pollfd p{client.get(), POLLOUT, 0};
    REQUIRE(::poll(&p, 1, 5000) == 1);
    CHECK(net::pending_error(client.get()) == 0);

    pollfd l{listener.get(), POLLIN, 0};
    REQUIRE(::poll(&l, 1, 5000) == 1);
    net::SockAddr peer;
    net::Fd accepted = net::accept_client(listener.get(), peer);
    REQUIRE(accepted);
    CHECK(peer.text().rfind("127.0.0.1:", 0) == 0);
    CHECK(net::connect_error(client.get(), POLLOUT) == 0);
}

// The worker skips tuning accepted sockets where they inherit it.
TEST_CASE("accepted and dialed sockets have TCP_NODELAY and SO_KEEPALIVE", "[net]") {
    net::SockAddr bound;
    net::Fd listener = loopback_listener(bound);
    net::Fd client;
    int rc = net::dial_start(bound, client);
    REQUIRE((rc == 0 || rc == EINPROGRESS));
    pollfd l{listener.get(), POLLIN, 0};
    REQUIRE(::poll(&l, 1, 5000) == 1);
    net::SockAddr peer;
    net::Fd accepted = net::accept_client(listener.get(), peer);
    REQUIRE(accepted);
    if (!net::accepted_sockets_inherit_tuning) net::tune_stream(accepted.get());
    auto option = [](int fd, int level, int name) {
        int value = 0;
        socklen_t size = sizeof value;
        REQUIRE(getsockopt(fd, level, name, &value, &size) == 0);
        return value != 0;
    };
    for (int fd : {accepted.get(), client.get()}) {
        CHECK(option(fd, IPPROTO_TCP, TCP_NODELAY));
        CHECK(option(fd, SOL_SOCKET, SO_KEEPALIVE));
    }
}

TEST_CASE("dialing a closed port reports connection refused", "[net]") {
    net::SockAddr closed;
    loopback_listener(closed);  // closed again at once: nothing listens on that port now
    net::Fd client;
    int rc = net::dial_start(closed, client);
    if (rc == EINPROGRESS) {
        pollfd p{client.get(), POLLOUT, 0};
        REQUIRE(::poll(&p, 1, 5000) == 1);
        rc = net::pending_error(client.get());
    }
    CHECK(rc == ECONNREFUSED);
    CHECK(net::errno_text(rc) == "connection refused");
}

TEST_CASE("binding a port in use names the address and the reason", "[net]") {
    net::SockAddr bound;
    net::Fd first = loopback_listener(bound);
    std::string error;
    net::Fd second = net::listen_on(bound, 16, error);
    CHECK_FALSE(second);
    CHECK(error == "bind " + bound.text() + ": address already in use");
}
