// log.hpp - log lines in the Go `log` package's shape, one write(2) per line, or one syslog message each.
// Owns formatting and writing a line (and throttling repeats); not what is logged, which each caller decides.
//
// Every process (parent and workers) writes to the same stderr; a single
// write() of a line shorter than PIPE_BUF is never interleaved with another
// process's line, and nothing is buffered, so procd/systemd see each line
// as it happens.
//
// In syslog mode (facility LOG_DAEMON, ident "mixctl", each process's pid:
// what glibc's openlog("mixctl", LOG_PID, LOG_DAEMON) and syslog() send)
// lines starting with "error" or holding ": error" go out at LOG_ERR,
// lines holding "warning:" at LOG_WARNING, the rest at LOG_INFO. The pid is
// read at each message, so a worker's lines carry the worker's pid.
//
// Local time (the stderr timestamp, syslog's) comes from localtime.hpp,
// not glibc's localtime_r: same result, ~127 kB less in the static build.
#pragma once

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <unordered_map>
#include <syslog.h>  // the LOG_* constants only
#include <unistd.h>

#include "localtime.hpp"
#include "syslog_client.hpp"

namespace mixlog {

class Logger {
public:
    explicit Logger(bool verbose = true, bool use_syslog = false)
        : verbose_(verbose), syslog_(use_syslog), zone_(mixtime::TimeZone::from_environment()),
          syslog_client_(zone_, "mixctl", LOG_DAEMON) {}
    Logger(const Logger&) = delete;
    Logger& operator=(const Logger&) = delete;

    bool verbose() const { return verbose_; }
    void set_verbose(bool on) { verbose_ = on; }
    bool uses_syslog() const { return syslog_; }

    // Startup lines, errors and warnings: always written.
    void print(const char* format, ...) const __attribute__((format(printf, 2, 3))) {
        va_list args;
        va_start(args, format);
        write_line(format, args);
        va_end(args);
    }

    // Per-connection lines: only with -v.
    void trace(const char* format, ...) const __attribute__((format(printf, 2, 3))) {
        if (!verbose_) return;
        va_list args;
        va_start(args, format);
        write_line(format, args);
        va_end(args);
    }

    // The syslog priority a line is sent with (see the top of this file).
    static int priority_of(const char* line) {
        if (std::strncmp(line, "error", 5) == 0 || std::strstr(line, ": error") != nullptr) return LOG_ERR;
        if (std::strstr(line, "warning:") != nullptr) return LOG_WARNING;
        return LOG_INFO;
    }

private:
    void write_line(const char* format, va_list args) const {
        char line[1024];
        if (syslog_) {
            if (vsnprintf(line, sizeof line, format, args) < 0) return;
            syslog_client_.send(priority_of(line), line);
            return;
        }
        size_t used = timestamp(line, sizeof line);
        int n = vsnprintf(line + used, sizeof line - used - 1, format, args);
        if (n < 0) return;
        used += static_cast<size_t>(n) < sizeof line - used - 1 ? static_cast<size_t>(n)
                                                               : sizeof line - used - 2;
        line[used++] = '\n';
        const char* p = line;
        while (used > 0) {
            ssize_t w = ::write(STDERR_FILENO, p, used);
            if (w < 0) return;  // nowhere left to report it
            p += w;
            used -= static_cast<size_t>(w);
        }
    }

    // Go's log.LstdFlags: "2006/01/02 15:04:05 " in local time.
    size_t timestamp(char* out, size_t size) const {
        struct tm local;
        if (!zone_.local(time(nullptr), local)) return 0;
        int n = snprintf(out, size, "%04lld/%02d/%02d %02d:%02d:%02d ", static_cast<long long>(local.tm_year) + 1900,
                         local.tm_mon + 1, local.tm_mday, local.tm_hour, local.tm_min, local.tm_sec);
        return n > 0 && static_cast<size_t>(n) < size ? static_cast<size_t>(n) : 0;
    }

    bool verbose_;
    bool syslog_;
    mixtime::TimeZone zone_;
    // Opened on the first message; forked workers inherit the socket, as
    // with glibc's syslog().
    mutable SyslogClient syslog_client_;
};

// Keeps a repeated message (dial failures to one upstream, denied clients)
// from flooding the log: up to `burst` lines per key and period; the next
// line let through after a quiet spell says how many were held back.
class Throttle {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr int burst = 5;
    static constexpr std::chrono::seconds period{10};

    // `more` becomes " (N more)" when lines were held back since the last one.
    bool allow(const std::string& key, Clock::time_point now, std::string& more) {
        if (keys_.size() > 4096) keys_.clear();  // bounded, whatever the keys
        Window& w = keys_[key];
        if (now - w.start >= period) {
            w.start = now;
            w.lines = 0;
        }
        if (w.lines >= burst) {
            ++w.held;
            return false;
        }
        ++w.lines;
        more = w.held ? " (" + std::to_string(w.held) + " more)" : std::string();
        w.held = 0;
        return true;
    }

private:
    struct Window {
        Clock::time_point start{};
        int lines = 0;
        unsigned long long held = 0;
    };
    std::unordered_map<std::string, Window> keys_;
};

}  // namespace mixlog
