// request_server.hpp: one request and one answer per connection, from a
// poll() loop like the checker's, against real loopback clients: the
// answer, the deadline, a client that never sends, one that sends too much,
// and the bound on clients.
#include <catch2/catch.hpp>

#include <atomic>
#include <string>
#include <thread>

#include "harness.hpp"
#include "request_server.hpp"

using namespace harness;

namespace {

using request_server::Verdict;

constexpr size_t max_request = 64;

// A line protocol: "got LINE\n" for a line, dropped past max_request bytes.
Verdict echo_line(std::string& request, bool, int64_t, std::string& reply) {
    if (request.size() > max_request) return Verdict::drop;
    size_t newline = request.find('\n');
    if (newline == std::string::npos) return Verdict::more;
    reply = "got " + request.substr(0, newline) + "\n";
    return Verdict::answer;
}

// The server on a loopback port, run by a thread as the checker runs it:
// wait on the listener and the clients, serve, then accept.
class Running {
public:
    Running(request_server::Limits limits, request_server::Judge judge, std::string late_word = std::string())
        : listener_(listen()), server_(listener_.get(), limits, std::move(judge), std::move(late_word)),
          thread_([this] { loop(); }) {}
    ~Running() {
        stop_ = true;
        thread_.join();
    }
    uint16_t port() const {
        net::SockAddr bound;
        net::local_address(listener_.get(), bound);
        return bound.port();
    }
    size_t clients() const { return clients_.load(); }

private:
    static net::Fd listen() {
        std::string why;
        net::Fd fd = net::listen_on(loopback(0), 64, why);
        INFO(why);
        REQUIRE(fd);
        return fd;
    }
    void loop() {
        std::vector<pollfd> fds;
        std::vector<short> ready;
        while (!stop_) {
            fds.assign({pollfd{listener_.get(), POLLIN, 0}});
            server_.want(fds);
            Clock::time_point wake = server_.next_deadline(Clock::now() + 50ms);
            auto wait = std::chrono::duration_cast<Ms>(wake - Clock::now()).count();
            ::poll(fds.data(), fds.size(), static_cast<int>(std::max<long>(0, wait)));
            ready.clear();
            for (size_t i = 1; i < fds.size(); ++i) ready.push_back(fds[i].revents);
            server_.serve(ready, 0);
            if (fds[0].revents) server_.accept_all();
            clients_ = server_.clients();
        }
    }

    net::Fd listener_;
    request_server::Server server_;
    std::atomic<bool> stop_{false};
    std::atomic<size_t> clients_{0};
    std::thread thread_;
};

const request_server::Limits roomy{8, 10000ms, 16};

}  // namespace

TEST_CASE("request server: a request sent in pieces gets its one answer, then EOF", "[request_server]") {
    Running server(roomy, echo_line);
    net::Fd c = dial(server.port());
    REQUIRE(c);
    REQUIRE(send_all(c.get(), "a request longer"));  // the chunk is 16 bytes: several reads
    std::this_thread::sleep_for(20ms);
    REQUIRE(send_all(c.get(), " than one read\n"));
    std::string reply;
    CHECK(read_to_eof(c.get(), reply));
    CHECK(reply == "got a request longer than one read\n");
    CHECK(wait_until([&] { return server.clients() == 0; }));
}

TEST_CASE("request server: a client that never sends is closed at its deadline, after the late word",
          "[request_server]") {
    Running server({8, 300ms, 16}, echo_line, "too late\n");
    Clock::time_point start = Clock::now();
    net::Fd c = dial(server.port());
    REQUIRE(c);
    std::string reply;
    CHECK(read_to_eof(c.get(), reply));
    CHECK(reply == "too late\n");
    CHECK(elapsed_ms(start) >= 250);
    CHECK(wait_until([&] { return server.clients() == 0; }));
}

TEST_CASE("request server: a client that sends too much is closed unanswered", "[request_server]") {
    Running server(roomy, echo_line);
    net::Fd c = dial(server.port());
    REQUIRE(c);
    REQUIRE(send_all(c.get(), std::string(max_request + 1, 'x')));
    CHECK(closed_by_peer(c.get()));  // EOF or a reset (unread input), no byte of answer
    CHECK(wait_until([&] { return server.clients() == 0; }));
}

TEST_CASE("request server: a client that closes mid-request is dropped, one that closes after it is answered",
          "[request_server]") {
    Running server(roomy, echo_line);
    net::Fd partial = dial(server.port()), whole = dial(server.port());
    REQUIRE(partial);
    REQUIRE(whole);
    REQUIRE(send_all(partial.get(), "no newline"));
    REQUIRE(send_all(whole.get(), "line\n"));
    ::shutdown(partial.get(), SHUT_WR);
    ::shutdown(whole.get(), SHUT_WR);
    std::string nothing, reply;
    CHECK(read_to_eof(partial.get(), nothing));
    CHECK(nothing.empty());
    CHECK(read_to_eof(whole.get(), reply));
    CHECK(reply == "got line\n");
}

TEST_CASE("request server: at most max_clients at once; the oldest still sending makes room", "[request_server]") {
    Running server({2, 10000ms, 16}, echo_line);
    net::Fd oldest = dial(server.port());
    REQUIRE(oldest);
    REQUIRE(wait_until([&] { return server.clients() == 1; }));
    net::Fd second = dial(server.port());
    REQUIRE(second);
    REQUIRE(wait_until([&] { return server.clients() == 2; }));
    net::Fd newcomer = dial(server.port());
    REQUIRE(newcomer);
    CHECK(closed_by_peer(oldest.get()));
    CHECK(server.clients() == 2);
    for (net::Fd* c : {&second, &newcomer}) {
        std::string reply;
        REQUIRE(send_all(c->get(), "still here\n"));
        CHECK(read_to_eof(c->get(), reply));
        CHECK(reply == "got still here\n");
    }
}

TEST_CASE("request server: when every client is being answered, a newcomer is closed and the answers finish",
          "[request_server]") {
    const size_t big = 32u << 20;  // more than the sockets' buffers hold: the answer waits on the reader
    auto big_answer = [&](std::string& request, bool, int64_t, std::string& reply) {
        if (request.find('\n') == std::string::npos) return Verdict::more;
        reply = pattern(big, 7);
        return Verdict::answer;
    };
    Running server({1, 10000ms, 16}, big_answer);
    net::Fd reader = dial(server.port());
    REQUIRE(reader);
    REQUIRE(send_all(reader.get(), "go\n"));
    REQUIRE(wait_until([&] { return server.clients() == 1; }));
    std::this_thread::sleep_for(100ms);  // the answer is under way and stuck on the full socket
    net::Fd newcomer = dial(server.port());
    REQUIRE(newcomer);
    CHECK(closed_by_peer(newcomer.get()));
    std::string reply;
    CHECK(read_to_eof(reader.get(), reply));
    CHECK(reply.size() == big);
    CHECK(checksum(reply) == checksum(pattern(big, 7)));
}
