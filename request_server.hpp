// request_server.hpp - a small nonblocking server of one request and one answer per connection, for a poll() loop.
// Owns the clients' sockets, their deadline and the bound on their number; knows no protocol and does not touch the listener.
//
// The control socket and GET /metrics both serve through it: the protocol
// only says, of the bytes received so far, whether to wait, answer or drop.
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <poll.h>
#include <sys/socket.h>

#include "net.hpp"

namespace request_server {

using Clock = std::chrono::steady_clock;

struct Limits {
    size_t max_clients;                  // served at once
    std::chrono::milliseconds patience;  // for the whole request to arrive
    size_t chunk;                        // bytes read per recv
};

// What the protocol makes of the request received so far.
enum class Verdict {
    more,    // incomplete: wait for more (a client that has closed is dropped)
    answer,  // send `reply`, then close
    drop,    // close without a word
};

// `request`: every byte received, the protocol may trim it; `closed`: the
// client sent EOF; `reply`: the answer, for Verdict::answer.
using Judge = std::function<Verdict(std::string& request, bool closed, int64_t now_ms, std::string& reply)>;

// Nonblocking throughout: a client is closed at its deadline (given
// `late_word` first, when it has not sent its whole request), and at most
// max_clients are served at once. When every place is taken the oldest
// client still sending makes room: idle connections can not lock others
// out, and the listener never stays readable unserved (which would spin).
class Server {
public:
    Server(int listener, Limits limits, Judge judge, std::string late_word = std::string())
        : listener_(listener), limits_(limits), judge_(std::move(judge)), late_word_(std::move(late_word)),
          buffer_(limits.chunk) {}

    int listener() const { return listener_; }

    // pollfds for the clients being served, appended to `fds`.
    void want(std::vector<pollfd>& fds) const {
        for (const Client& c : clients_)
            fds.push_back(pollfd{c.fd.get(), static_cast<short>(c.reply.empty() ? POLLIN : POLLOUT), 0});
    }

    Clock::time_point next_deadline(Clock::time_point fallback) const {
        for (const Client& c : clients_) fallback = std::min(fallback, c.deadline);
        return fallback;
    }

    void accept_all() {
        if (listener_ < 0) return;
        for (int n = 0; n < 16; ++n) {
            net::SockAddr peer;
            net::Fd fd = net::accept_client(listener_, peer);
            if (!fd) return;
            if (clients_.size() >= limits_.max_clients) evict_oldest_waiting();
            if (clients_.size() >= limits_.max_clients) return;  // every one is being answered: drop the newcomer
            clients_.push_back(Client{std::move(fd), std::string(), std::string(), 0, Clock::now() + limits_.patience});
        }
    }

    // `ready`: the revents of the clients, in the order want() listed them.
    void serve(const std::vector<short>& ready, int64_t now_ms) {
        Clock::time_point now = Clock::now();
        for (size_t i = clients_.size(); i-- > 0;) {
            Client& c = clients_[i];
            bool done = now >= c.deadline;
            if (done && c.reply.empty() && !late_word_.empty())  // it may not read it
                (void)::send(c.fd.get(), late_word_.data(), late_word_.size(), send_flags());
            if (!done && i < ready.size() && ready[i]) done = c.reply.empty() ? read_request(c, now_ms) : write_reply(c);
            if (done) clients_.erase(clients_.begin() + static_cast<long>(i));
        }
    }

    size_t clients() const { return clients_.size(); }

private:
    struct Client {
        net::Fd fd;
        std::string request, reply;
        size_t sent;
        Clock::time_point deadline;
    };

    void evict_oldest_waiting() {
        for (size_t i = 0; i < clients_.size(); ++i)
            if (clients_[i].reply.empty()) {
                clients_.erase(clients_.begin() + static_cast<long>(i));
                return;
            }
    }

    // True when the client is finished with.
    bool read_request(Client& c, int64_t now_ms) {
        ssize_t n = ::recv(c.fd.get(), buffer_.data(), buffer_.size(), 0);
        if (n < 0) return !(errno == EAGAIN || errno == EINTR);
        c.request.append(buffer_.data(), static_cast<size_t>(n));
        Verdict verdict = judge_(c.request, n == 0, now_ms, c.reply);
        if (verdict == Verdict::drop || (verdict == Verdict::more && n == 0)) return true;
        if (verdict == Verdict::more) return false;
        return write_reply(c);
    }

    bool write_reply(Client& c) {
        ssize_t n = ::send(c.fd.get(), c.reply.data() + c.sent, c.reply.size() - c.sent, send_flags());
        if (n < 0) return !(errno == EAGAIN || errno == EINTR);
        c.sent += static_cast<size_t>(n);
        if (c.sent < c.reply.size()) return false;
        ::shutdown(c.fd.get(), SHUT_WR);  // the request was read whole: close() sends no RST
        return true;
    }

    // The clients' sockets are nonblocking already (net::accept_client).
    static int send_flags() {
#ifdef MSG_NOSIGNAL
        return MSG_NOSIGNAL;
#else
        return 0;
#endif
    }

    int listener_;
    Limits limits_;
    Judge judge_;
    std::string late_word_;
    std::vector<char> buffer_;  // one recv's bytes, before the request takes them
    std::vector<Client> clients_;
};

}  // namespace request_server
