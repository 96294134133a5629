// mixctl.cpp - the process supervisor: flags, config, bind, fork, signals.
//
// The parent does everything that can fail before serving (parse, resolve,
// bind) and then only supervises: workers accept and relay, the parent reaps
// and respawns them and turns signals into orderly shutdowns.
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

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
#include "flags.hpp"
#include "log.hpp"
#include "net.hpp"
#include "signals.hpp"
#include "upstreams.hpp"
#include "worker.hpp"

#ifndef MIXCTL_VERSION
#define MIXCTL_VERSION "dev"
#endif

namespace {

using Clock = std::chrono::steady_clock;

// ---- start-up: config → resolved routes → bound listeners -----------------

struct Plan {
    std::vector<net::SockAddr> metrics;                             // where GET /metrics listens
    std::vector<std::vector<net::SockAddr>> binds;                  // per rule: addresses to listen on
    std::vector<std::vector<std::vector<net::SockAddr>>> upstreams;  // per rule, per upstream
};

// Resolves every name now, so a typo fails at start (and in -check), not on
// the first connection.
bool resolve_all(const config::Config& cfg, const std::string& file, Plan& plan, config::Diagnostics& diag) {
    auto at = [&](int line) { return file + ":" + std::to_string(line) + ": "; };
    for (const config::Rule& rule : cfg.rules) {
        std::vector<net::SockAddr> binds;
        std::string why;
        if (!net::resolve(rule.from, true, binds, why)) diag.errors.push_back(at(rule.from_line) + "from: " + why);
        std::vector<std::vector<net::SockAddr>> targets;
        for (const config::Upstream& up : rule.to) {
            targets.emplace_back();
            if (!net::resolve(up.where, false, targets.back(), why)) diag.errors.push_back(at(up.line) + "to: " + why);
        }
        plan.binds.push_back(std::move(binds));
        plan.upstreams.push_back(std::move(targets));
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

// Binds every listener or none: on any failure the ones already bound close
// as the vector goes out of scope.
bool bind_all(const config::Config& cfg, const Plan& plan, const mixlog::Logger& log,
              std::vector<worker::Listener>& listeners) {
    const int backlog = net::listen_backlog();
    for (size_t r = 0; r < cfg.rules.size(); ++r) {
        for (const net::SockAddr& addr : plan.binds[r]) {
            std::string why;
            worker::Listener listener;
            listener.fd = net::listen_on(addr, backlog, why);
            if (!listener.fd) {
                log.print("error: rule (%s): listen on %s: %s", cfg.rules[r].name.c_str(), addr.text().c_str(),
                          why.c_str());
                listeners.clear();
                return false;
            }
            net::SockAddr bound;
            listener.address = net::local_address(listener.fd.get(), bound) ? bound.text() : addr.text();
            listener.rule = r;
            listeners.push_back(std::move(listener));
        }
    }
    return true;
}

// The metrics endpoint listens on the first address of its name only: it is
// for a local scraper, not for clients.
net::Fd bind_metrics(const Plan& plan, const mixlog::Logger& log) {
    if (plan.metrics.empty()) return net::Fd();
    std::string why;
    net::Fd fd = net::listen_on(plan.metrics.front(), 64, why);
    if (!fd) {
        log.print("error: metrics: listen on %s: %s", plan.metrics.front().text().c_str(), why.c_str());
        return fd;
    }
    net::SockAddr bound;
    net::local_address(fd.get(), bound);
    log.print("Serving metrics on http://%s/metrics", bound.text().c_str());
    return fd;
}

void log_forwarding(const config::Config& cfg, const std::vector<worker::Listener>& listeners,
                    const mixlog::Logger& log) {
    for (const worker::Listener& l : listeners) {
        const config::Rule& rule = cfg.rules[l.rule];
        std::string to;
        for (const config::Upstream& up : rule.to) to += (to.empty() ? "" : " ") + up.text;
        log.print("Forwarding (%s) from: %s to: [%s]", rule.name.c_str(), l.address.c_str(), to.c_str());
    }
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

// ---- supervision ----------------------------------------------------------

struct WorkerProcess {
    pid_t pid = -1;
    Clock::time_point started{};
    Clock::time_point respawn_at{};
    int quick_deaths = 0;  // consecutive exits soon after start: backoff grows
};

class Supervisor {
public:
    Supervisor(const flags::Options& options, const upstreams::Shared& shared, std::vector<worker::Listener>& listeners,
               net::Fd& metrics, const mixlog::Logger& log)
        : options_(options), shared_(shared), listeners_(listeners), metrics_(metrics), log_(log) {}

    // The checker, when there is one, is the process after the workers.
    int run(int worker_count, bool with_checker) {
        if (!wake_.open() || !open_lifeline()) {
            log_.print("error: pipe: %s", net::errno_text(errno).c_str());
            return 1;
        }
        if (!board_.map(worker_count)) {
            log_.print("error: mmap: %s", net::errno_text(errno).c_str());
            return 1;
        }
        // Handlers go in before the first fork, so no signal is lost in between.
        for (int number : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD}) signals::handle(number);
        worker_count_ = static_cast<size_t>(worker_count);
        workers_.resize(worker_count_ + (with_checker ? 1 : 0));
        for (size_t i = 0; i < workers_.size(); ++i) spawn(i);
        for (;;) {
            int rc = turn();
            if (rc >= 0) return rc;
        }
    }

private:
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
            else if (signals::arrived.stop > 1) return stop_now("second signal");
        }
        if (signals::arrived.reload) {
            signals::arrived.reload = 0;
            log_.print("SIGHUP: reload is not supported yet; restart mixctl to apply config changes");
        }
        if (signals::arrived.stats) {
            signals::arrived.stats = 0;
            log_stats();
        }
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
        for (const WorkerProcess& w : workers_)
            if (w.pid < 0 && !stopping_) wake = std::min(wake, w.respawn_at);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count() + 1;
        return static_cast<int>(std::max<int64_t>(0, ms));
    }

    size_t alive() const {
        size_t n = 0;
        for (const WorkerProcess& w : workers_) n += w.pid > 0;
        return n;
    }

    void spawn(size_t index) {
        WorkerProcess& w = workers_[index];
        if (index < worker_count_) board_.restart(static_cast<int>(index), worker::to_ms(Clock::now()));
        pid_t pid = fork();
        if (pid < 0) {
            log_.print("error: fork: %s; retrying in 1s", net::errno_text(errno).c_str());
            w.respawn_at = Clock::now() + std::chrono::seconds(1);
            return;
        }
        if (pid == 0) _exit(index < worker_count_ ? worker_main(index) : checker_main());
        w.pid = pid;
        w.started = Clock::now();
    }

    int checker_main() {
        wake_.close();
        lifeline_write_.reset();
        listeners_.clear();
        for (int number : {SIGTERM, SIGCHLD}) signals::set_default(number);
        for (int number : {SIGINT, SIGHUP, SIGUSR1}) signals::ignore(number);
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
        checker::Checker checker(shared_, log_, lifeline_read_.get(), metrics_.get());
        return checker.run();
    }

    int worker_main(size_t index) {
        wake_.close();
        lifeline_write_.reset();
        metrics_.reset();
        signals::ignore(SIGINT);   // a terminal's ^C reaches us via the parent's SIGTERM
        signals::ignore(SIGHUP);
        signals::ignore(SIGUSR1);
        signals::set_default(SIGCHLD);
        signals::handle(SIGTERM);
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
        worker::Settings settings;
        settings.index = static_cast<int>(index);
        settings.dial_timeout = std::chrono::duration_cast<Clock::duration>(options_.dial_timeout);
        settings.grace = std::chrono::duration_cast<Clock::duration>(options_.grace);
        settings.parent_fd = lifeline_read_.get();
        worker::Worker relay(shared_, listeners_, settings, log_, board_);
        return relay.run();
    }

    void reap() {
        for (;;) {
            int status = 0;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0) return;
            for (size_t i = 0; i < workers_.size(); ++i) {
                if (workers_[i].pid == pid) worker_exited(i, status);
            }
        }
    }

    void worker_exited(size_t index, int status) {
        WorkerProcess& w = workers_[index];
        const char* what = index < worker_count_ ? "worker" : "checker";
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
        for (size_t i = 0; i < workers_.size(); ++i)
            if (workers_[i].pid < 0 && now >= workers_[i].respawn_at) spawn(i);
    }

    void begin_stop() {
        stopping_ = true;
        log_.print("stopping: no new connections; live ones get up to %s to finish",
                   flags::format_duration(options_.grace).c_str());
        listeners_.clear();  // our copies; workers close theirs on SIGTERM
        metrics_.reset();
        for (const WorkerProcess& w : workers_)
            if (w.pid > 0) kill(w.pid, SIGTERM);
        stop_deadline_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(options_.grace) +
                         std::chrono::seconds(2);
    }

    int stop_now(const char* why) {
        log_.print("stopping now (%s)", why);
        for (const WorkerProcess& w : workers_)
            if (w.pid > 0) kill(w.pid, SIGKILL);
        for (WorkerProcess& w : workers_) {
            if (w.pid > 0) waitpid(w.pid, nullptr, 0);
            w.pid = -1;
        }
        return 0;
    }

    // One line per upstream, plain integers, so scripts can parse them.
    void log_stats() {
        int64_t now_ms = worker::to_ms(Clock::now());
        for (size_t r = 0; r < shared_.rules(); ++r) {
            const upstreams::Pool& pool = shared_.pool(r);
            for (size_t u = 0; u < pool.size(); ++u) {
                const upstreams::UpstreamState& s = pool.at(u);
                log_.print("stats rule=%s upstream=%s state=%s active=%u total=%llu failed=%llu bytes_in=%llu "
                           "bytes_out=%llu",
                           pool.rule->name.c_str(), pool.rule->to[u].text.c_str(),
                           upstreams::is_up(s, now_ms) ? "up" : "down", s.active.load(),
                           static_cast<unsigned long long>(s.total.load()),
                           static_cast<unsigned long long>(s.failed.load()),
                           static_cast<unsigned long long>(s.bytes_in.load()),
                           static_cast<unsigned long long>(s.bytes_out.load()));
            }
        }
        for (int i = 0; i < board_.count(); ++i) {
            balance::WorkerSlot& s = board_.slot(i);
            log_.print("stats worker=%d pid=%d active=%u accepted=%llu", i,
                       static_cast<int>(workers_[static_cast<size_t>(i)].pid), s.active.load(),
                       static_cast<unsigned long long>(s.accepted.load()));
        }
    }

    const flags::Options& options_;
    const upstreams::Shared& shared_;
    size_t worker_count_ = 0;
    std::vector<worker::Listener>& listeners_;
    net::Fd& metrics_;
    const mixlog::Logger& log_;
    signals::SelfPipe wake_;
    net::Fd lifeline_read_, lifeline_write_;
    balance::Board board_;
    std::vector<WorkerProcess> workers_;
    bool stopping_ = false;
    Clock::time_point stop_deadline_{};
};

std::string join(const std::vector<std::string>& words) {
    std::string out;
    for (const std::string& w : words) out += (out.empty() ? "" : " ") + w;
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    flags::Options options;
    flags::ParseResult parsed = flags::parse(argc, argv, options);
    if (parsed.outcome == flags::Outcome::Help) {
        fputs(flags::usage(argv[0]).c_str(), stderr);
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
    mixlog::Logger log(options.verbose, options.syslog);
    if (!options.args.empty())
        log.print("warning: ignoring arguments after the flags: %s (bool flags take a value only as -v=false)",
                  join(options.args).c_str());

    config::Config cfg;
    Plan plan;
    if (!load(options.file, log, cfg, plan)) return 1;
    if (options.check) {
        printf("configuration OK\n");
        return 0;
    }

    signals::ignore(SIGPIPE);
    raise_fd_limit(log);
    std::vector<worker::Listener> listeners;
    if (!bind_all(cfg, plan, log, listeners)) return 1;
    net::Fd metrics = bind_metrics(plan, log);
    if (cfg.has_metrics && !metrics) return 1;
    log_forwarding(cfg, listeners, log);
    upstreams::Shared shared;
    if (!shared.map(cfg, plan.upstreams)) {
        log.print("error: mmap: %s", net::errno_text(errno).c_str());
        return 1;
    }

    int workers = options.workers > 0 ? options.workers : online_cpus();
    log.print("mixctl %s started: %d workers, pid %d", MIXCTL_VERSION, workers, static_cast<int>(getpid()));
    Supervisor supervisor(options, shared, listeners, metrics, log);
    return supervisor.run(workers, checker::needed(cfg) || metrics.valid());
}
