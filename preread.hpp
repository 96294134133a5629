// preread.hpp - what a connection sends before mixctl dials for it: a PROXY
// header (accept_proxy), then a TLS ClientHello (routes). Fed the bytes as
// they arrive, it says "need more", "done: this pool, this client" or
// "reject: why". No sockets and no clock: the worker reads, keeps the
// deadline and calls timed_out(); this file only decides.
//
// Outcomes (documented in README and mixctl.8):
//   PROXY header invalid, missing at the deadline, or the client leaves: reject (bad_preread)
//   ClientHello with a server_name that a route names: that route
//   no server_name, not TLS, or nothing sent by the deadline: the default pool (`to`), or reject (unrouted) without one
//   ClientHello malformed, lying about lengths, over 18 KiB, or incomplete at the deadline: reject (bad_preread)
// Every byte after the PROXY header is kept and forwarded unchanged.
#pragma once

#include <cstddef>
#include <string>

#include "client_hello.hpp"
#include "config.hpp"
#include "net.hpp"
#include "proxy_receive.hpp"

namespace preread {

// The most a connection can hold before a decision: a PROXY v2 header and a
// ClientHello at their limits (under relay::buffer_size, which parks them).
constexpr size_t max_bytes = proxy_receive::v2_max + client_hello::max_bytes;

enum class Step { need_more, done, reject };
enum class Refusal { none, bad_preread, unrouted };

class Reader {
public:
    explicit Reader(const config::Rule& rule) : rule_(rule), phase_(first_phase(rule)) {}

    // How many more bytes feed() may be given.
    size_t room() const { return max_bytes - bytes_.size(); }

    Step feed(const char* data, size_t size) {
        if (step_ != Step::need_more) return step_;
        bytes_.append(data, size);
        return advance();
    }

    // The deadline passed before a decision.
    Step timed_out() {
        if (step_ != Step::need_more) return step_;
        if (phase_ == Phase::proxy) return reject(Refusal::bad_preread, "no complete PROXY header in time");
        if (bytes_.empty()) return default_pool("nothing sent in time");
        return reject(Refusal::bad_preread, "incomplete TLS ClientHello in time");
    }

    // The client closed (or failed) before a decision.
    Step ended() {
        if (step_ != Step::need_more) return step_;
        return reject(Refusal::bad_preread, phase_ == Phase::proxy ? "closed before a complete PROXY header"
                                                                   : "closed before a complete TLS ClientHello");
    }

    Step step() const { return step_; }
    // After done: the route (index into rule.routes), or -1 for the default pool.
    int route() const { return route_; }
    // After done: the client and local address the PROXY header gave, if it gave one.
    bool has_address() const { return header_.has_address; }
    const net::SockAddr& client() const { return header_.source; }
    const net::SockAddr& destination() const { return header_.destination; }
    // The client's own bytes (a PROXY header is not one of them), to forward first.
    std::string& bytes() { return bytes_; }
    // After reject: why, for the log. After done: how the pool was chosen.
    const char* why() const { return why_; }
    const std::string& server_name() const { return hello_.name(); }
    Refusal refusal() const { return refusal_; }

private:
    enum class Phase { proxy, hello };

    static Phase first_phase(const config::Rule& rule) {
        return rule.policy.accept_proxy ? Phase::proxy : Phase::hello;
    }

    Step advance() {
        if (phase_ == Phase::proxy) {
            header_ = proxy_receive::parse(bytes_.data(), bytes_.size());
            if (header_.status == proxy_receive::Status::need_more) return step_;
            if (header_.status == proxy_receive::Status::invalid) {
                header_.has_address = false;
                return reject(Refusal::bad_preread, header_.why);
            }
            bytes_.erase(0, header_.length);
            if (rule_.routes.empty()) return done(-1, "PROXY header");
            phase_ = Phase::hello;
        }
        if (bytes_.size() > fed_) {
            hello_.feed(bytes_.data() + fed_, bytes_.size() - fed_);
            fed_ = bytes_.size();
        }
        switch (hello_.status()) {
            case client_hello::Status::need_more: return step_;
            case client_hello::Status::done: {
                int route = config::match_route(rule_, hello_.name());
                if (route >= 0) return done(route, "server_name");
                return default_pool(hello_.has_name() ? "no route for server_name" : "no server_name");
            }
            case client_hello::Status::not_tls: return default_pool("not TLS");
            case client_hello::Status::malformed: return reject(Refusal::bad_preread, hello_.why());
            case client_hello::Status::too_long: return reject(Refusal::bad_preread, "TLS ClientHello over 18 KiB");
        }
        return step_;
    }

    Step default_pool(const char* why) {
        if (rule_.to.empty()) return reject(Refusal::unrouted, why);
        return done(-1, why);
    }

    Step done(int route, const char* why) {
        route_ = route;
        why_ = why;
        return step_ = Step::done;
    }

    Step reject(Refusal refusal, const char* why) {
        refusal_ = refusal;
        why_ = why;
        return step_ = Step::reject;
    }

    const config::Rule& rule_;
    Phase phase_;
    Step step_ = Step::need_more;
    std::string bytes_;
    size_t fed_ = 0;  // bytes_ already given to hello_
    proxy_receive::Header header_;
    client_hello::Reader hello_;
    int route_ = -1;
    const char* why_ = "";
    Refusal refusal_ = Refusal::none;
};

}  // namespace preread
