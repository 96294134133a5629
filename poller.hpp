// poller.hpp - the one way a worker waits: which sockets are ready, with epoll or poll().
// Owns the wait set and nothing else: it never reads, writes, accepts or closes a socket.
//
// Interest is registered once per socket and changed only when what the
// caller wants from it changes: want() compares with what is registered and
// makes no system call when nothing differs, so the worker can state its
// wishes every time without paying for them.
//
// Backends:
//   epoll  Linux's default. One epoll instance per worker, made after fork()
//          (never shared with the parent or a respawned worker). Level-
//          triggered: the relay moves at most a bounded amount per event so
//          one fast stream cannot starve the others, and level triggering
//          reports the rest next turn without a re-arm. Edge triggering would
//          not save a call: measured (strace -c, -w 1, 2,000 keep-alive
//          request/replies of 64 bytes) a request costs exactly 6 calls,
//          epoll_wait + read + sendto on each hop, and no epoll_ctl at all
//          (the relay already treats a short read as "drained"); with edges
//          the bounded rounds would need a ready list of our own.
//   poll   POSIX (BSD, macOS, `make POSIX_ONLY=1`), and on Linux when the
//          environment says MIXCTL_POLLER=poll. It hands the kernel every
//          watched descriptor on each wait: fine for a few hundred sockets.
//
// Events use poll()'s bits (POLLIN, POLLOUT, POLLRDHUP, POLLERR, POLLHUP);
// on Linux the EPOLL* values are the same numbers. POLLERR and POLLHUP are
// always reported. `silent` takes a socket out of the wait set entirely
// (a socket shut both ways reports POLLHUP for ever; with nothing to ask of
// it, it must not wake the loop).
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <poll.h>
#include <unistd.h>

#if defined(__linux__) && !defined(MIXCTL_POSIX_ONLY)
#include <sys/epoll.h>
#define MIXCTL_EPOLL 1
#endif

#include "net.hpp"

namespace poller {

constexpr uint32_t silent = 0x80000000u;  // not an event bit of either backend

enum class Backend { epoll, poll };

struct Event {
    uint64_t token;
    uint32_t events;
};

inline const char* name(Backend b) { return b == Backend::epoll ? "epoll" : "poll"; }

// What MIXCTL_POLLER may say in this build.
inline const char* choices() {
#ifdef MIXCTL_EPOLL
    return "epoll or poll";
#else
    return "only poll";
#endif
}

// The backend this build uses unless told otherwise: epoll where there is one.
inline Backend default_backend() {
#ifdef MIXCTL_EPOLL
    return Backend::epoll;
#else
    return Backend::poll;
#endif
}

// MIXCTL_POLLER=poll|epoll picks the backend at run time (tests and the
// bench run both from one build). Returns false, leaving `out` alone, for
// a value this build cannot honour.
inline bool backend_from_env(Backend& out, const char*& value) {
    value = getenv("MIXCTL_POLLER");
    if (!value || !*value) return true;
    if (strcmp(value, "poll") == 0) {
        out = Backend::poll;
        return true;
    }
#ifdef MIXCTL_EPOLL
    if (strcmp(value, "epoll") == 0) {
        out = Backend::epoll;
        return true;
    }
#endif
    return false;
}

class Poller {
public:
    explicit Poller(Backend backend) : backend_(backend) {}

    // Makes the kernel object. 0, or the errno of the failed call.
    int open() {
#ifdef MIXCTL_EPOLL
        if (backend_ == Backend::epoll) {
            epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
            if (!epoll_) return errno;
            ready_.resize(256);
        }
#endif
        return 0;
    }

    Backend backend() const { return backend_; }
    size_t watched() const { return watched_; }

    // Starts watching fd. 0, or the errno (epoll_ctl: ENOMEM, ENOSPC when
    // max_user_watches is reached): then fd is not watched.
    int watch(int fd, uint64_t token, uint32_t events) {
        if (static_cast<size_t>(fd) >= table_.size()) table_.resize(static_cast<size_t>(fd) + 64);
        Entry& e = table_[static_cast<size_t>(fd)];
        e = Entry{token, silent, true, -1};
        ++watched_;
        if (int err = want(fd, events)) {
            e.used = false;
            --watched_;
            return err;
        }
        return 0;
    }

    // Changes what fd is watched for; no system call when nothing changes.
    int want(int fd, uint32_t events) {
        Entry& e = table_[static_cast<size_t>(fd)];
        if (e.events == events) return 0;
        int err = 0;
#ifdef MIXCTL_EPOLL
        if (backend_ == Backend::epoll) err = epoll_change(fd, e, events);
        else
#endif
            poll_change(fd, e, events);
        if (!err) e.events = events;
        return err;
    }

    // Stops watching fd. closing: the caller closes fd right after and
    // holds its only copy, so the kernel drops it from the epoll set by
    // itself and the system call is saved. Listeners are shared with other
    // processes: they are always forgotten explicitly.
    void forget(int fd, bool closing) {
        if (fd < 0 || static_cast<size_t>(fd) >= table_.size()) return;
        Entry& e = table_[static_cast<size_t>(fd)];
        if (!e.used) return;
        if (!closing || backend_ == Backend::poll) want(fd, silent);
        e = Entry();
        --watched_;
    }

    // Waits up to timeout_ms (-1: no limit) and returns the ready sockets.
    // A negative count is an error (errno set; EINTR is the caller's to retry).
    int wait(int timeout_ms, const Event*& events) {
        out_.clear();
#ifdef MIXCTL_EPOLL
        if (backend_ == Backend::epoll) {
            int n = ::epoll_wait(epoll_.get(), ready_.data(), static_cast<int>(ready_.size()), timeout_ms);
            if (n < 0) return n;
            for (int i = 0; i < n; ++i) out_.push_back(Event{ready_[static_cast<size_t>(i)].data.u64,
                                                             ready_[static_cast<size_t>(i)].events});
            // A full batch: more may be waiting, so take more next time.
            if (static_cast<size_t>(n) == ready_.size() && ready_.size() < 4096) ready_.resize(ready_.size() * 2);
            events = out_.data();
            return n;
        }
#endif
        int n = ::poll(pollfds_.data(), pollfds_.size(), timeout_ms);
        if (n < 0) return n;
        for (size_t i = 0; i < pollfds_.size() && out_.size() < static_cast<size_t>(n); ++i) {
            if (pollfds_[i].revents == 0) continue;
            out_.push_back(Event{tokens_[i], static_cast<uint32_t>(static_cast<unsigned short>(pollfds_[i].revents))});
        }
        events = out_.data();
        return static_cast<int>(out_.size());
    }

private:
    struct Entry {
        uint64_t token = 0;
        uint32_t events = silent;  // as registered; silent: not in the kernel's set
        bool used = false;
        int slot = -1;             // poll backend: index in pollfds_
    };

#ifdef MIXCTL_EPOLL
    int epoll_change(int fd, const Entry& e, uint32_t events) {
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = e.token;
        int op = e.events == silent ? EPOLL_CTL_ADD : events == silent ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
        return ::epoll_ctl(epoll_.get(), op, fd, &ev) == 0 ? 0 : errno;
    }
#endif

    // Swap-remove keeps the array dense: a wait costs the watched sockets,
    // not every descriptor number ever used.
    void poll_change(int fd, Entry& e, uint32_t events) {
        if (events == silent) {
            size_t at = static_cast<size_t>(e.slot), last = pollfds_.size() - 1;
            if (at != last) {
                pollfds_[at] = pollfds_[last];
                tokens_[at] = tokens_[last];
                table_[static_cast<size_t>(pollfds_[at].fd)].slot = static_cast<int>(at);
            }
            pollfds_.pop_back();
            tokens_.pop_back();
            e.slot = -1;
            return;
        }
        if (e.slot < 0) {
            e.slot = static_cast<int>(pollfds_.size());
            pollfd p{};
            p.fd = fd;
            pollfds_.push_back(p);
            tokens_.push_back(e.token);
        }
        pollfds_[static_cast<size_t>(e.slot)].events = static_cast<short>(events);
    }

    Backend backend_;
    std::vector<Entry> table_;  // by descriptor number
    size_t watched_ = 0;
    std::vector<Event> out_;
    std::vector<pollfd> pollfds_;  // poll backend
    std::vector<uint64_t> tokens_;
#ifdef MIXCTL_EPOLL
    net::Fd epoll_;
    std::vector<epoll_event> ready_;
#endif
};

}  // namespace poller
