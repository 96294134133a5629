// log.hpp - log lines in the Go `log` package's shape, one write(2) per line.
//
// Every process (parent and workers) writes to the same stderr; a single
// write() of a line shorter than PIPE_BUF is never interleaved with another
// process's line, and nothing is buffered, so procd/systemd see each line
// as it happens.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <unistd.h>

namespace mixlog {

class Logger {
public:
    explicit Logger(bool verbose = true) : verbose_(verbose) {}

    bool verbose() const { return verbose_; }
    void set_verbose(bool on) { verbose_ = on; }

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

private:
    static void write_line(const char* format, va_list args) {
        char line[1024];
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
    static size_t timestamp(char* out, size_t size) {
        time_t now = time(nullptr);
        struct tm local;
        localtime_r(&now, &local);
        return strftime(out, size, "%Y/%m/%d %H:%M:%S ", &local);
    }

    bool verbose_;
};

}  // namespace mixlog
