// signals.hpp - signal handlers that only record what arrived.
//
// A handler bumps a counter and writes one byte to a nonblocking self-pipe,
// so a process sleeping in poll() wakes up; the work happens in the loops.
// These globals are the only mutable globals in mixctl: handlers need them.
#pragma once

#include <cerrno>
#include <csignal>

#include <unistd.h>

#include "net.hpp"

namespace signals {

struct Arrived {
    volatile sig_atomic_t stop = 0;    // SIGTERM / SIGINT, counted: a second one means "now"
    volatile sig_atomic_t reload = 0;  // SIGHUP
    volatile sig_atomic_t stats = 0;   // SIGUSR1
    volatile sig_atomic_t child = 0;   // SIGCHLD
};

inline Arrived arrived;
inline volatile sig_atomic_t wake_fd = -1;

extern "C" inline void on_signal(int number) {
    int saved = errno;
    switch (number) {
        case SIGTERM:
        case SIGINT: arrived.stop = arrived.stop + 1; break;
        case SIGHUP: arrived.reload = 1; break;
        case SIGUSR1: arrived.stats = 1; break;
        case SIGCHLD: arrived.child = 1; break;
        default: break;
    }
    if (wake_fd >= 0) {
        char byte = 0;
        ssize_t ignored = ::write(wake_fd, &byte, 1);  // a full pipe already means "wake up"
        (void)ignored;
    }
    errno = saved;
}

// Something arrived that a loop has not handled yet.
inline bool pending() { return arrived.stop || arrived.reload || arrived.stats || arrived.child; }

// Owns the self-pipe of one process. After fork(), a worker makes its own.
class SelfPipe {
public:
    bool open() {
        int ends[2];
        if (::pipe(ends) < 0) return false;
        read_end_.reset(ends[0]);
        write_end_.reset(ends[1]);
        if (!net::set_nonblock_cloexec(ends[0]) || !net::set_nonblock_cloexec(ends[1])) return false;
        wake_fd = ends[1];
        // A signal recorded before the pipe existed still wakes the loop.
        if (pending()) {
            char byte = 0;
            ssize_t ignored = ::write(ends[1], &byte, 1);
            (void)ignored;
        }
        return true;
    }

    int fd() const { return read_end_.get(); }

    void drain() const {
        char sink[64];
        while (::read(read_end_.get(), sink, sizeof sink) > 0) {
        }
    }

    void close() {
        wake_fd = -1;
        read_end_.reset();
        write_end_.reset();
    }

private:
    net::Fd read_end_, write_end_;
};

inline void handle(int number) {
    struct sigaction action{};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    if (number == SIGCHLD) action.sa_flags |= SA_NOCLDSTOP;
    sigaction(number, &action, nullptr);
}

inline void set_default(int number) {
    struct sigaction action{};
    action.sa_handler = SIG_DFL;
    sigemptyset(&action.sa_mask);
    sigaction(number, &action, nullptr);
}

inline void ignore(int number) {
    struct sigaction action{};
    action.sa_handler = SIG_IGN;
    sigemptyset(&action.sa_mask);
    sigaction(number, &action, nullptr);
}

}  // namespace signals
