// mixctl.cpp - the process supervisor: flags, config, bind, fork, signals.
//
// The parent does everything that can fail before serving (parse, resolve,
// bind) and then only supervises: workers accept and relay, the parent reaps
// and respawns them and turns signals into orderly shutdowns.
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "balance.hpp"
#include "checker.hpp"
#include "config.hpp"
#include "control.hpp"
#include "flags.hpp"
#include "log.hpp"
#include "net.hpp"
#include "privileges.hpp"
#include "probe.hpp"
#include "signals.hpp"
#include "poller.hpp"
#include "udp_relay.hpp"
#include "upstreams.hpp"
#include "worker.hpp"
#ifdef MIXCTL_STATIC
#include "terminate.hpp"
#endif

#ifndef MIXCTL_VERSION
#define MIXCTL_VERSION "dev"
#endif

namespace {

using Clock = std::chrono::steady_clock;

// ---- start-up: config → resolved addresses → bound listeners --------------

struct Plan {
    std::vector<net::SockAddr> metrics;                             // where GET /metrics listens
    std::vector<std::vector<net::SockAddr>> binds;                  // per rule: addresses to listen on (first port)
    std::vector<std::vector<std::vector<net::SockAddr>>> upstreams;  // per pool (config::pools), per upstream
    dialer::Sources sources;                                         // per pool, per upstream (length 0: none)
};

// A source address must be one of ours: checked when the file is read, so
// -check, the start and a reload all refuse it (a reload keeps the old rules).
bool check_source(const std::string& text, std::vector<net::SockAddr>& targets, const std::string& at,
                  net::SockAddr& out, config::Diagnostics& diag) {
    if (text.empty()) return true;
    std::string why;
    if (!net::parse_ip(text, 0, out) || !net::is_local_address(out, why)) {
        diag.errors.push_back(at + "source: " + text + " is not an address of this host (" + why + ")");
        return false;
    }
    // A socket bound to an IPv4 source cannot reach an IPv6 upstream.
    std::vector<net::SockAddr> kept;
    for (const net::SockAddr& a : targets)
        if (a.family() == out.family()) kept.push_back(a);
    if (kept.empty() && !targets.empty()) {
        diag.errors.push_back(at + "source: " + text + ": the upstream has no " +
                              (out.family() == AF_INET ? "IPv4" : "IPv6") + " address to reach from it");
        return false;
    }
    targets = std::move(kept);
    return true;
}

// Resolves every name now, so a typo fails at start (and in -check), not on
// the first connection.
bool resolve_all(const config::Config& cfg, const std::string& file, Plan& plan, config::Diagnostics& diag) {
    auto at = [&](int line) { return file + ":" + std::to_string(line) + ": "; };
    for (const config::Rule& rule : cfg.rules) {
        std::vector<net::SockAddr> binds;
        std::string why;
        if (!net::resolve(rule.from, true, binds, why)) diag.errors.push_back(at(rule.from_line) + "from: " + why);
        plan.binds.push_back(std::move(binds));
    }
    for (const config::Rule* pool : config::pools(cfg)) {
        std::vector<std::vector<net::SockAddr>> targets;
        std::vector<net::SockAddr> sources;
        for (size_t u = 0; u < pool->to.size(); ++u) {
            const config::Upstream& up = pool->to[u];
            targets.emplace_back();
            sources.emplace_back();
            std::string why;
            if (!net::resolve(up.where, false, targets.back(), why)) diag.errors.push_back(at(up.line) + "to: " + why);
            else check_source(pool->source_of(u), targets.back(), at(pool->source_line_of(u)), sources.back(), diag);
        }
        plan.upstreams.push_back(std::move(targets));
        plan.sources.push_back(std::move(sources));
    }
    std::string why;
    if (cfg.has_metrics && !net::resolve(cfg.metrics, true, plan.metrics, why))
        diag.errors.push_back(at(cfg.metrics_line) + "metrics: " + why);
    return diag.errors.empty();
}

bool load(const std::string& file, const mixlog::Logger& log, config::Config& cfg, Plan& plan) {
    config::Diagnostics diag;
    bool ok = config::load_file(file, cfg, diag) && resolve_all(cfg, file, plan, diag);
    for (const std::string& w : diag.warnings) log.print("%s", w.c_str());
    for (const std::string& e : diag.errors) log.print("%s", e.c_str());
    if (!ok && diag.errors.size() > 1) log.print("%s: %zu errors", file.c_str(), diag.errors.size());
    return ok;
}

// One line per rule and address: a port range shows as first-last, a UDP
// rule's per-worker sockets as one.
void log_forwarding(const config::Config& cfg, const std::vector<worker::Listener>& listeners,
                    const mixlog::Logger& log) {
    for (const worker::Listener& l : listeners) {
        if (l.offset != 0 || l.worker > 0) continue;
        const config::Rule& rule = cfg.rules[l.rule];
        std::string to;
        for (const config::Upstream& up : rule.to) to += (to.empty() ? "" : " ") + up.text;
        std::string last = rule.ports() > 1 ? "-" + std::to_string(rule.from_last) : "";
        const char* udp = rule.policy.protocol == config::Protocol::udp ? " protocol=udp" : "";
        log.print("Forwarding (%s) from: %s%s to: [%s]%s", rule.name.c_str(), l.address.c_str(), last.c_str(),
                  to.c_str(), udp);
        for (const config::Rule& route : rule.routes) {
            std::string names, targets;
            for (const config::SniName& n : route.sni) names += (names.empty() ? "" : " ") + std::string(n.wildcard ? "*" : "") + n.name;
            for (const config::Upstream& up : route.to) targets += (targets.empty() ? "" : " ") + up.text;
            log.print("Forwarding (%s) from: %s%s sni: [%s] to: [%s]", rule.name.c_str(), l.address.c_str(), last.c_str(),
                      names.c_str(), targets.c_str());
        }
    }
}

// Descriptors the file needs: the parent holds every listening socket; a
// worker holds them too, plus one socket per UDP session (up to
// max_sessions per UDP rule). mixctl raises its soft limit to the hard one
// at start, so the hard limit is what counts.
void report_sockets(const config::Config& cfg, const Plan& plan, size_t workers, const mixlog::Logger& log) {
    size_t listening = 0, sessions = 0;
    bool special = false;
    for (size_t r = 0; r < cfg.rules.size(); ++r) {
        const config::Rule& rule = cfg.rules[r];
        bool udp = rule.policy.protocol == config::Protocol::udp;
        special = special || udp || rule.ports() > 1;
        size_t per_port = udp ? static_cast<size_t>(udp_relay::sockets_per_port(workers)) : 1;
        listening += plan.binds[r].size() * rule.ports() * per_port;
        if (udp) sessions += static_cast<size_t>(rule.policy.max_sessions);
    }
    listening += cfg.has_metrics;
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    const size_t needed = listening + sessions + 16;  // 16: the process's own pipes, logs and so on
    const bool over = lim.rlim_max != RLIM_INFINITY && needed > lim.rlim_max;
    if (!special && !over) return;
    log.print("%ssockets: %zu listening (%zu workers) + up to %zu for UDP sessions per worker; RLIMIT_NOFILE %llu%s",
              over ? "warning: " : "", listening, workers, sessions,
              static_cast<unsigned long long>(lim.rlim_max),
              over ? ": raise the limit (ulimit -n, LimitNOFILE=) or lower max_sessions or the ranges" : "");
}

// Every connection costs two descriptors; the soft limit is often 1024.
void raise_fd_limit(const mixlog::Logger& log) {
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == lim.rlim_max) return;
    rlim_t wanted = lim.rlim_max;
    lim.rlim_cur = wanted;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0)
        log.print("warning: setrlimit RLIMIT_NOFILE %llu: %s", static_cast<unsigned long long>(wanted),
                  net::errno_text(errno).c_str());
}

int online_cpus() {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? static_cast<int>(n) : 1;
}

// ---- generations: one reading of the config, ready to serve -------------

struct WorkerProcess {
    pid_t pid = -1;
    Clock::time_point started{};
    Clock::time_point respawn_at{};
    int quick_deaths = 0;  // consecutive exits soon after start: backoff grows
};

// Everything one reading of the config produces. A reload builds a new one
// beside the running one and swaps them only once it is complete, so a bad
// file or a failed bind leaves the running config untouched.
struct Generation {
    config::Config cfg;
    Plan plan;
    std::vector<worker::Listener> listeners;
    net::Fd metrics;
    net::Fd control;  // the control socket, listening (config's `control:`)
    upstreams::Shared shared;
    balance::Board board;
    std::vector<WorkerProcess> processes;  // the workers, then the checker if there is one
    size_t workers = 0;
};

// The previous generation's socket for this address, duplicated: the very
// same listening socket, so no SYN is refused while a reload happens.
net::Fd reuse_listener(const net::SockAddr& addr, config::Protocol protocol, int owner, const Generation* previous) {
    if (!previous || addr.port() == 0) return net::Fd();
    std::string wanted = addr.text();
    for (const worker::Listener& l : previous->listeners)
        if (l.fd && l.address == wanted && l.protocol == protocol && l.worker == owner) {
            net::Fd copy(fcntl(l.fd.get(), F_DUPFD_CLOEXEC, 0));
            if (copy) return copy;
        }
    return net::Fd();
}

// A TCP port: one listening socket for all workers. A UDP port: one
// SO_REUSEPORT socket per worker (see udp_relay.hpp for why).
bool bind_one(Generation& gen, size_t r, const net::SockAddr& addr, uint16_t offset, int backlog,
              const Generation* previous, const mixlog::Logger& log) {
    const config::Rule& rule = gen.cfg.rules[r];
    const bool udp = rule.policy.protocol == config::Protocol::udp;
    const int owners = udp ? udp_relay::sockets_per_port(gen.workers) : 1;
    uint16_t first_port = 0;
    for (int owner = 0; owner < owners; ++owner) {
        std::string why;
        worker::Listener listener;
        listener.protocol = rule.policy.protocol;
        listener.worker = udp ? owner : -1;
        // Port 0 in a UDP rule: every worker's socket must share the port the first one got.
        net::SockAddr where = addr;
        if (owner > 0 && addr.port() == 0) where.set_port(first_port);
        listener.fd = reuse_listener(where, listener.protocol, listener.worker, previous);
        if (!listener.fd)
            listener.fd = udp ? udp_relay::bind_socket(where, owners > 1, why) : net::listen_on(where, backlog, why);
        if (!listener.fd) {
            log.print("error: rule (%s): listen on %s%s: %s", rule.name.c_str(), where.text().c_str(),
                      udp ? "/udp" : "", why.c_str());
            return false;
        }
        net::SockAddr bound;
        listener.address = net::local_address(listener.fd.get(), bound) ? bound.text() : where.text();
        if (owner == 0) first_port = bound.port();
        listener.rule = r;
        listener.offset = offset;
        gen.listeners.push_back(std::move(listener));
    }
    return true;
}

// Binds (or takes over) every listener, or none: a port of a range that
// cannot be bound fails the whole start or reload, naming that port.
bool bind_all(Generation& gen, const Generation* previous, const mixlog::Logger& log) {
    const int backlog = net::listen_backlog();
    for (size_t r = 0; r < gen.cfg.rules.size(); ++r) {
        const config::Rule& rule = gen.cfg.rules[r];
        for (const net::SockAddr& first : gen.plan.binds[r]) {
            for (size_t offset = 0; offset < rule.ports(); ++offset) {
                net::SockAddr addr = first;
                if (offset) addr.set_port(static_cast<uint16_t>(first.port() + offset));
                if (!bind_one(gen, r, addr, static_cast<uint16_t>(offset), backlog, previous, log)) {
                    gen.listeners.clear();
                    return false;
                }
            }
        }
    }
    return true;
}

// The metrics endpoint listens on the first address of its name only: it is
// for a local scraper, not for clients.
bool bind_metrics(Generation& gen, const Generation* previous, const mixlog::Logger& log) {
    if (gen.plan.metrics.empty()) return true;
    const net::SockAddr& addr = gen.plan.metrics.front();
    if (previous && previous->metrics && addr.port() != 0) {
        net::SockAddr old;
        if (net::local_address(previous->metrics.get(), old) && old.text() == addr.text())
            gen.metrics.reset(fcntl(previous->metrics.get(), F_DUPFD_CLOEXEC, 0));
    }
    std::string why;
    if (!gen.metrics) gen.metrics = net::listen_on(addr, 64, why);
    if (!gen.metrics) {
        log.print("error: metrics: listen on %s: %s", addr.text().c_str(), why.c_str());
        return false;
    }
    net::SockAddr bound;
    net::local_address(gen.metrics.get(), bound);
    log.print("Serving metrics on http://%s/metrics", bound.text().c_str());
    return true;
}

// The control socket: taken over from the previous generation when the path
// is the same (no moment without it), else made anew.
bool bind_control(Generation& gen, const Generation* previous, const mixlog::Logger& log) {
    const std::string& path = gen.cfg.control;
    if (path.empty()) return true;
    if (previous && previous->control && previous->cfg.control == path) {
        gen.control.reset(fcntl(previous->control.get(), F_DUPFD_CLOEXEC, 0));
        if (gen.control) return true;
    }
    std::string why;
    gen.control = control::listen_at(path, why);
    if (!gen.control) {
        log.print("error: control: %s", why.c_str());
        return false;
    }
    log.print("Control socket on %s", path.c_str());
    return true;
}

// The socket file goes with the last generation that uses it.
void remove_control(const Generation& gone, const Generation* next) {
    if (gone.control && (!next || next->cfg.control != gone.cfg.control)) ::unlink(gone.cfg.control.c_str());
}

// Counters and health of upstreams that are still there survive a reload
// (a pool is the same when its rule and route names are).
void carry_state(Generation& gen, const Generation& previous) {
    for (size_t r = 0; r < gen.shared.pools(); ++r) {
        const config::Rule& rule = *gen.shared.pool(r).rule;
        for (size_t pr = 0; pr < previous.shared.pools(); ++pr) {
            const config::Rule& old_rule = *previous.shared.pool(pr).rule;
            if (old_rule.name != rule.name || old_rule.route != rule.route) continue;
            const upstreams::Pool& now = gen.shared.pool(r);
            const upstreams::Pool& before = previous.shared.pool(pr);
            now.state->cursor.store(before.state->cursor.load());
            now.state->denied.store(before.state->denied.load());
            now.state->over_client_limit.store(before.state->over_client_limit.load());
            now.state->bad_preread.store(before.state->bad_preread.load());
            now.state->unrouted.store(before.state->unrouted.load());
            for (size_t u = 0; u < rule.to.size(); ++u)
                for (size_t pu = 0; pu < old_rule.to.size(); ++pu)
                    if (old_rule.to[pu].text == rule.to[u].text) {
                        upstreams::copy_history(before.at(pu), now.at(u));
                        upstreams::copy_runtime(before.at(pu), old_rule.to[pu], now.at(u), rule.to[u]);
                    }
            break;
        }
    }
}

// Reads, validates, resolves and binds; nullptr (with every reason logged)
// when any step fails. -check runs the same reading and validation.
std::unique_ptr<Generation> build_generation(const std::string& file, size_t workers, const Generation* previous,
                                             const mixlog::Logger& log) {
    auto gen = std::make_unique<Generation>();
    gen->workers = workers;
    if (!load(file, log, gen->cfg, gen->plan)) return nullptr;
    if (!bind_all(*gen, previous, log) || !bind_metrics(*gen, previous, log) || !bind_control(*gen, previous, log))
        return nullptr;
    if (!gen->shared.map(gen->cfg, gen->plan.upstreams, workers) || !gen->board.map(static_cast<int>(workers))) {
        log.print("error: mmap: %s", net::errno_text(errno).c_str());
        return nullptr;
    }
    if (previous) carry_state(*gen, *previous);
    gen->workers = workers;
    bool with_checker = checker::needed(gen->cfg) || gen->metrics.valid() || gen->control.valid();
    gen->processes.resize(workers + (with_checker ? 1 : 0));
    return gen;
}

// ---- supervision ----------------------------------------------------------

class Supervisor {
public:
    Supervisor(const flags::Options& options, std::unique_ptr<Generation> first, const privileges::Identity* run_as,
               const mixlog::Logger& log, poller::Backend backend)
        : options_(options), current_(std::move(first)), run_as_(run_as), log_(log), backend_(backend) {}

    int run() {
        if (!wake_.open() || !open_lifeline()) {
            log_.print("error: pipe: %s", net::errno_text(errno).c_str());
            return 1;
        }
        for (size_t i = 0; i < current_->processes.size(); ++i) spawn(i);
        for (;;) {
            int rc = turn();
            if (rc >= 0) return rc;
        }
    }

private:
    // Workers of an older generation, finishing their connections.
    struct Retired {
        pid_t pid;
        Clock::time_point kill_at;
    };

    bool open_lifeline() {
        int ends[2];
        if (::pipe(ends) < 0) return false;
        lifeline_read_.reset(ends[0]);
        lifeline_write_.reset(ends[1]);
        return net::set_nonblock_cloexec(ends[0]) && net::set_nonblock_cloexec(ends[1]);
    }

    // One pass of the supervisor loop; returns the exit status when done, -1 otherwise.
    int turn() {
        pollfd p{};
        p.fd = wake_.fd();
        p.events = POLLIN;
        int rc = ::poll(&p, 1, timeout_ms());
        if (rc < 0 && errno != EINTR) {
            log_.print("error: poll: %s", net::errno_text(errno).c_str());
            return 1;
        }
        wake_.drain();
        if (signals::arrived.child) {
            signals::arrived.child = 0;
            reap();
        }
        if (signals::arrived.stop) {
            if (!stopping_) begin_stop();
            if (signals::arrived.stop > 1) return stop_now("second signal");
        }
        if (signals::arrived.reload) {
            signals::arrived.reload = 0;
            if (!stopping_) reload();
        }
        if (signals::arrived.stats) {
            signals::arrived.stats = 0;
            log_stats();
        }
        kill_overdue_retired();
        if (stopping_) {
            if (alive() == 0) {
                log_.print("stopped");
                return 0;
            }
            if (Clock::now() >= stop_deadline_) return stop_now("workers did not finish in time");
            return -1;
        }
        respawn_due();
        return -1;
    }

    int timeout_ms() const {
        Clock::time_point now = Clock::now();
        Clock::time_point wake = now + std::chrono::hours(1);
        if (stopping_) wake = std::min(wake, stop_deadline_);
        for (const WorkerProcess& w : current_->processes)
            if (w.pid < 0 && !stopping_) wake = std::min(wake, w.respawn_at);
        for (const Retired& r : retired_) wake = std::min(wake, r.kill_at);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count() + 1;
        return static_cast<int>(std::max<int64_t>(0, ms));
    }

    size_t alive() const {
        size_t n = retired_.size();
        for (const WorkerProcess& w : current_->processes) n += w.pid > 0;
        return n;
    }

    Clock::duration grace() const { return std::chrono::duration_cast<Clock::duration>(options_.grace); }

    // SIGHUP: the new generation starts serving, the old one stops accepting
    // at once and finishes its connections within -grace.
    void reload() {
        std::unique_ptr<Generation> next = build_generation(options_.file, current_->workers, current_.get(), log_);
        if (!next) {
            log_.print("reload of %s failed: still serving the previous configuration", options_.file.c_str());
            return;
        }
        std::string summary = config::reload_summary(next->cfg, current_->cfg);
        Clock::time_point kill_at = Clock::now() + grace() + std::chrono::seconds(2);
        for (const WorkerProcess& w : current_->processes)
            if (w.pid > 0) {
                kill(w.pid, SIGTERM);
                retired_.push_back(Retired{w.pid, kill_at});
            }
        // Dropping the old generation closes our copies of its sockets before
        // the new workers are forked, so a removed listener really closes.
        remove_control(*current_, next.get());
        current_ = std::move(next);
        log_forwarding(current_->cfg, current_->listeners, log_);
        for (size_t i = 0; i < current_->processes.size(); ++i) spawn(i);
        log_.print("reloaded %s: %s", options_.file.c_str(), summary.c_str());
    }

    void kill_overdue_retired() {
        Clock::time_point now = Clock::now();
        for (Retired& r : retired_)
            if (now >= r.kill_at && r.pid > 0) {
                log_.print("worker %d of a previous configuration did not finish in time: killing it",
                           static_cast<int>(r.pid));
                kill(r.pid, SIGKILL);
                r.kill_at = Clock::time_point::max();
            }
    }

    void spawn(size_t index) {
        Generation& gen = *current_;
        WorkerProcess& w = gen.processes[index];
        if (index < gen.workers) {
            gen.board.restart(static_cast<int>(index), worker::to_ms(Clock::now()));
            gen.shared.forget_worker(index);  // what a killed predecessor still held
        }
        pid_t pid = fork();
        if (pid < 0) {
            log_.print("error: fork: %s; retrying in 1s", net::errno_text(errno).c_str());
            w.respawn_at = Clock::now() + std::chrono::seconds(1);
            return;
        }
        if (pid == 0) _exit(index < gen.workers ? worker_main(gen, index) : checker_main(gen));
        w.pid = pid;
        w.started = Clock::now();
    }

    int checker_main(Generation& gen) {
        wake_.close();
        lifeline_write_.reset();
        gen.listeners.clear();
        for (int number : {SIGTERM, SIGCHLD}) signals::set_default(number);
        for (int number : {SIGINT, SIGHUP, SIGUSR1}) signals::ignore(number);
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
        if (!become_unprivileged()) return 1;
        checker::Checker checker(gen.shared, log_, lifeline_read_.get(), gen.metrics.get(), gen.control.get(),
                                 &gen.plan.sources);
        return checker.run();
    }

    int worker_main(Generation& gen, size_t index) {
        wake_.close();
        lifeline_write_.reset();
        gen.metrics.reset();
        gen.control.reset();
        signals::ignore(SIGINT);   // a terminal's ^C reaches us via the parent's SIGTERM
        signals::ignore(SIGHUP);
        signals::ignore(SIGUSR1);
        signals::set_default(SIGCHLD);
        signals::handle(SIGTERM);
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
        if (!become_unprivileged()) return 1;
        worker::Settings settings;
        settings.index = static_cast<int>(index);
        settings.dial_timeout = std::chrono::duration_cast<Clock::duration>(options_.dial_timeout);
        settings.grace = grace();
        settings.parent_fd = lifeline_read_.get();
        settings.backend = backend_;
        settings.sources = &gen.plan.sources;
        // This worker keeps the TCP listeners and its own UDP sockets; the
        // other workers' UDP sockets are closed here (the parent keeps them).
        std::vector<worker::Listener> mine;
        std::vector<udp_relay::Socket> sockets;
        for (size_t i = 0; i < gen.listeners.size();) {
            worker::Listener& l = gen.listeners[i];
            if (l.protocol != config::Protocol::udp) {
                ++i;
                continue;
            }
            if (l.worker == static_cast<int>(index)) {
                udp_relay::Socket sock;
                sock.fd = l.fd.get();
                sock.rule = l.rule;
                sock.offset = l.offset;
                sock.address = l.address;
                net::local_address(l.fd.get(), sock.bound);
                sock.wildcard = udp_relay::is_wildcard(sock.bound);
                sockets.push_back(std::move(sock));
                mine.push_back(std::move(l));
            }
            gen.listeners.erase(gen.listeners.begin() + static_cast<long>(i));
        }
        std::unique_ptr<udp_relay::Relay> udp;
        if (!sockets.empty())
            udp = std::make_unique<udp_relay::Relay>(gen.shared, std::move(sockets), static_cast<int>(index), log_,
                                                     &gen.plan.sources);
        worker::Worker relay(gen.shared, gen.listeners, settings, log_, gen.board, udp.get());
        return relay.run();
    }

    bool become_unprivileged() const {
        if (!run_as_) return true;
        std::string why;
        if (privileges::drop(*run_as_, why)) return true;
        log_.print("error: -u %s: %s", options_.user.c_str(), why.c_str());
        return false;
    }

    void reap() {
        for (;;) {
            int status = 0;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0) return;
            for (size_t i = 0; i < current_->processes.size(); ++i)
                if (current_->processes[i].pid == pid) process_exited(i, status);
            for (size_t i = 0; i < retired_.size(); ++i)
                if (retired_[i].pid == pid) {
                    if (WIFSIGNALED(status) && WTERMSIG(status) != SIGTERM)
                        log_.print("worker %d of a previous configuration exited: killed by signal %d",
                                   static_cast<int>(pid), WTERMSIG(status));
                    retired_.erase(retired_.begin() + static_cast<long>(i));
                    break;
                }
        }
    }

    void process_exited(size_t index, int status) {
        WorkerProcess& w = current_->processes[index];
        const char* what = index < current_->workers ? "worker" : "checker";
        if (WIFSIGNALED(status) && !(stopping_ && WTERMSIG(status) == SIGTERM))
            log_.print("%s %d exited: killed by signal %d (%s)", what, static_cast<int>(w.pid), WTERMSIG(status),
                       strsignal(WTERMSIG(status)));
        else if (WIFEXITED(status) && (!stopping_ || WEXITSTATUS(status) != 0))
            log_.print("%s %d exited: status %d", what, static_cast<int>(w.pid), WEXITSTATUS(status));
        w.pid = -1;
        if (stopping_) return;
        // A worker that dies right after start would otherwise be forked in
        // a tight loop: back off 100ms, 200ms, ... up to 10s.
        Clock::time_point now = Clock::now();
        if (now - w.started < std::chrono::seconds(5)) ++w.quick_deaths;
        else w.quick_deaths = 0;
        auto delay = std::chrono::milliseconds(w.quick_deaths == 0 ? 0 : 100 << std::min(w.quick_deaths - 1, 7));
        w.respawn_at = now + std::min<Clock::duration>(delay, std::chrono::seconds(10));
    }

    void respawn_due() {
        Clock::time_point now = Clock::now();
        for (size_t i = 0; i < current_->processes.size(); ++i)
            if (current_->processes[i].pid < 0 && now >= current_->processes[i].respawn_at) spawn(i);
    }

    void begin_stop() {
        stopping_ = true;
        log_.print("stopping: no new connections; live ones get up to %s to finish",
                   flags::format_duration(options_.grace).c_str());
        current_->listeners.clear();  // our copies; workers close theirs on SIGTERM
        current_->metrics.reset();
        remove_control(*current_, nullptr);
        current_->control.reset();
        for (const WorkerProcess& w : current_->processes)
            if (w.pid > 0) kill(w.pid, SIGTERM);
        stop_deadline_ = Clock::now() + grace() + std::chrono::seconds(2);
    }

    int stop_now(const char* why) {
        log_.print("stopping now (%s)", why);
        std::vector<pid_t> pids;
        for (const WorkerProcess& w : current_->processes)
            if (w.pid > 0) pids.push_back(w.pid);
        for (const Retired& r : retired_) pids.push_back(r.pid);
        for (pid_t pid : pids) kill(pid, SIGKILL);
        for (pid_t pid : pids) waitpid(pid, nullptr, 0);
        return 0;
    }

    // One line per upstream, plain integers, so scripts can parse them.
    void log_stats() {
        const Generation& gen = *current_;
        int64_t now_ms = worker::to_ms(Clock::now());
        for (size_t r = 0; r < gen.shared.pools(); ++r) {
            const upstreams::Pool& pool = gen.shared.pool(r);
            // UDP rules: active and total count sessions; the extra fields
            // are UDP's own, at the end of the line.
            const bool udp = pool.rule->policy.protocol == config::Protocol::udp;
            char extra[160] = "";
            if (udp && pool.rule->route.empty())
                snprintf(extra, sizeof extra, " evicted=%llu dropped=%llu lost=%llu protocol=udp",
                         static_cast<unsigned long long>(pool.state->evicted.load()),
                         static_cast<unsigned long long>(pool.state->dropped.load()),
                         static_cast<unsigned long long>(pool.state->lost.load()));
            if (pool.rule->route.empty())
                log_.print("stats clients rule=%s active=%u denied=%llu over_client_limit=%llu bad_preread=%llu "
                           "unrouted=%llu%s",
                           pool.rule->name.c_str(), pool.state->active.load(),
                           static_cast<unsigned long long>(pool.state->denied.load()),
                           static_cast<unsigned long long>(pool.state->over_client_limit.load()),
                           static_cast<unsigned long long>(pool.state->bad_preread.load()),
                           static_cast<unsigned long long>(pool.state->unrouted.load()), extra);
            // A route's upstreams: "route=NAME" after the rule.
            std::string route = pool.rule->route.empty() ? "" : " route=" + pool.rule->route;
            for (size_t u = 0; u < pool.size(); ++u) {
                const upstreams::UpstreamState& s = pool.at(u);
                extra[0] = 0;
                if (udp)
                    snprintf(extra, sizeof extra, " datagrams_in=%llu datagrams_out=%llu",
                             static_cast<unsigned long long>(s.datagrams_in.load()),
                             static_cast<unsigned long long>(s.datagrams_out.load()));
                log_.print("stats rule=%s%s upstream=%s state=%s active=%u total=%llu failed=%llu bytes_in=%llu "
                           "bytes_out=%llu resets_by_client=%llu resets_by_upstream=%llu weight=%u%s",
                           pool.rule->name.c_str(), route.c_str(), pool.rule->to[u].text.c_str(),
                           upstreams::state_name(s, now_ms), s.active.load(),
                           static_cast<unsigned long long>(s.total.load()),
                           static_cast<unsigned long long>(s.failed.load()),
                           static_cast<unsigned long long>(s.bytes_in.load()),
                           static_cast<unsigned long long>(s.bytes_out.load()),
                           static_cast<unsigned long long>(s.client_resets.load()),
                           static_cast<unsigned long long>(s.upstream_resets.load()), s.weight.load(), extra);
            }
        }
        for (size_t i = 0; i < gen.workers; ++i) {
            const balance::WorkerSlot& s = gen.board.slot(static_cast<int>(i));
            log_.print("stats worker=%zu pid=%d active=%u accepted=%llu", i, static_cast<int>(gen.processes[i].pid),
                       s.active.load(), static_cast<unsigned long long>(s.accepted.load()));
        }
    }

    const flags::Options& options_;
    std::unique_ptr<Generation> current_;
    const privileges::Identity* run_as_;
    std::vector<Retired> retired_;
    const mixlog::Logger& log_;
    poller::Backend backend_;
    signals::SelfPipe wake_;
    net::Fd lifeline_read_, lifeline_write_;
    bool stopping_ = false;
    Clock::time_point stop_deadline_{};
};

std::string join(const std::vector<std::string>& words) {
    std::string out;
    for (const std::string& w : words) out += (out.empty() ? "" : " ") + w;
    return out;
}

// mixctl -ctl COMMAND: a control client, so a router needs no socat.
int ask_control(const flags::Options& options, const mixlog::Logger& log) {
    config::Config cfg;
    config::Diagnostics diag;
    if (!config::load_file(options.file, cfg, diag)) {
        for (const std::string& e : diag.errors) log.print("%s", e.c_str());
        return 1;
    }
    if (cfg.control.empty()) {
        log.print("error: -ctl: %s has no \"control:\" socket", options.file.c_str());
        return 1;
    }
    std::string reply, why;
    if (!control::ask(cfg.control, options.ctl, reply, why)) {
        log.print("error: -ctl: %s", why.c_str());
        return 1;
    }
    fputs(reply.c_str(), stdout);
    return reply.compare(0, 2, "ok") == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    flags::Options options;
    flags::ParseResult parsed = flags::parse(argc, argv, options);
    if (parsed.outcome == flags::Outcome::Help) {
        fputs(flags::usage(argv[0]).c_str(), stderr);
        fprintf(stderr, "Environment:\n  MIXCTL_POLLER=%s\n    \thow workers wait for their sockets (this build: %s; default %s)\n",
                poller::default_backend() == poller::Backend::epoll ? "epoll|poll" : "poll", poller::choices(),
                poller::name(poller::default_backend()));
        return 0;
    }
    if (parsed.outcome == flags::Outcome::Error) {
        fprintf(stderr, "%s\n%s", parsed.message.c_str(), flags::usage(argv[0]).c_str());
        return 2;
    }
    if (options.version) {
        printf("mixctl %s\n", MIXCTL_VERSION);
        return 0;
    }
    if (!options.probe.empty()) return probe::main(options.probe, options.file, options.dial_timeout);
    mixlog::Logger log(options.verbose, options.syslog);
    if (!options.args.empty())
        log.print("warning: ignoring arguments after the flags: %s (bool flags take a value only as -v=false)",
                  join(options.args).c_str());

    if (options.has_ctl) return ask_control(options, log);
    if (options.check) {
        config::Config cfg;
        Plan plan;
        if (!load(options.file, log, cfg, plan)) return 1;
        report_sockets(cfg, plan, static_cast<size_t>(options.workers > 0 ? options.workers : online_cpus()), log);
        printf("configuration OK\n");
        return 0;
    }

    privileges::Identity identity;
    if (!options.user.empty()) {
        std::string why;
        if (!privileges::lookup(options.user, identity, why)) {
            log.print("error: %s", why.c_str());
            return 1;
        }
    }
    poller::Backend backend = poller::default_backend();
    const char* wanted = nullptr;
    if (!poller::backend_from_env(backend, wanted)) {
        log.print("error: MIXCTL_POLLER=%s: this build can wait with %s", wanted, poller::choices());
        return 1;
    }
    signals::ignore(SIGPIPE);
    // From here on a signal is recorded, not fatal: a reload or a stop sent as
    // soon as the Forwarding lines are out (by a script or a test waiting for
    // them) used to kill the daemon, silently, in the moment between printing
    // them and its first loop. The supervisor acts on it once it runs.
    for (int number : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD}) signals::handle(number);
    raise_fd_limit(log);
    size_t workers = static_cast<size_t>(options.workers > 0 ? options.workers : online_cpus());
    std::unique_ptr<Generation> first = build_generation(options.file, workers, nullptr, log);
    if (!first) return 1;
    log_forwarding(first->cfg, first->listeners, log);
    log.print("mixctl %s started: %zu workers, pid %d, %s", MIXCTL_VERSION, workers, static_cast<int>(getpid()),
              poller::name(backend));
    Supervisor supervisor(options, std::move(first), options.user.empty() ? nullptr : &identity, log, backend);
    return supervisor.run();
}
