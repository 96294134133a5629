// udp_batch.hpp - a worker's UDP datagram I/O: many datagrams per system call (recvmmsg/sendmmsg) where the
// system has them, one at a time elsewhere, behind one small interface. Must not know sessions or rules.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/udp.h>

#include "net.hpp"

#if defined(__linux__) && !defined(MIXCTL_POSIX_ONLY)
#define MIXCTL_MMSG 1
#endif

namespace udp_batch {

// The largest UDP payload over IPv4 (65,535 - 8 UDP - 20 IP header bytes);
// one byte more in a slot tells a truncated datagram from a full one.
constexpr size_t max_datagram = 65507;
constexpr size_t slot_size = max_datagram + 1;
// Room for an IP_PKTINFO and an IPV6_PKTINFO message (a dual-stack socket
// may report both).
constexpr size_t control_size = 128;

#ifdef MIXCTL_MMSG
using Message = mmsghdr;
#else
struct Message {
    msghdr msg_hdr;
    unsigned int msg_len;
};
#endif

inline bool is_retry(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

// `capacity` datagram slots, each big enough for the largest datagram.
// The arena is allocated once per worker and never written ahead of the
// datagrams: the kernel commits only the pages datagrams touch, so small
// datagrams keep it to a page or two per slot. Sessions own no buffer.
class Batch {
public:
    explicit Batch(int capacity)
        : capacity_(capacity), arena_(new char[static_cast<size_t>(capacity) * slot_size]),
          in_(new Message[static_cast<size_t>(capacity)]), out_(new Message[static_cast<size_t>(capacity)]),
          iov_(new iovec[static_cast<size_t>(capacity)]), out_iov_(new iovec[static_cast<size_t>(capacity)]),
          names_(new net::SockAddr[static_cast<size_t>(capacity)]),
          control_(new Control[static_cast<size_t>(capacity)]) {}

    int capacity() const { return capacity_; }

    // Reads up to n datagrams from fd into slots 0..count-1, with each
    // sender's address when `names` and the ancillary data when `control`.
    // Returns count (0: nothing waiting). A count below n means the socket
    // was emptied, or it reported an error: error() is then its errno (0 for
    // an empty socket), which may have come after some datagrams were read.
    int receive(int fd, int n, bool names, bool control) {
        error_ = 0;
        if (n > capacity_) n = capacity_;
        for (int i = 0; i < n; ++i) {
            size_t u = static_cast<size_t>(i);
            iov_[u] = iovec{arena_.get() + u * slot_size, slot_size};
            msghdr& h = in_[u].msg_hdr;
            h = msghdr{};
            h.msg_iov = &iov_[u];
            h.msg_iovlen = 1;
            if (names) {
                h.msg_name = names_[u].get();
                h.msg_namelen = sizeof names_[u].storage;
            }
            if (control) {
                h.msg_control = control_[u].bytes;
                h.msg_controllen = control_size;
            }
            in_[u].msg_len = 0;
        }
        int count = receive_many(fd, n);
        for (int i = 0; i < count; ++i) {
            size_t u = static_cast<size_t>(i);
            if (names) names_[u].length = in_[u].msg_hdr.msg_namelen;
        }
        return count;
    }
    int error() const { return error_; }

    char* data(int i) { return arena_.get() + static_cast<size_t>(i) * slot_size; }
    size_t size(int i) const { return in_[static_cast<size_t>(i)].msg_len; }
    // Cut by the slot (cannot happen below 65,508 bytes) or by the kernel.
    bool truncated(int i) const {
        const Message& m = in_[static_cast<size_t>(i)];
        return (m.msg_hdr.msg_flags & MSG_TRUNC) != 0 || m.msg_len > max_datagram;
    }
    const net::SockAddr& sender(int i) const { return names_[static_cast<size_t>(i)]; }
    msghdr& header(int i) { return in_[static_cast<size_t>(i)].msg_hdr; }

    // Sending: clear(), add() each slot to go out (to `to`, with `control`
    // as ancillary data; null for a connected socket), then send().
    void clear() { outgoing_ = 0; }
    void add(int slot, size_t size, const net::SockAddr* to, void* control, size_t control_length) {
        size_t u = static_cast<size_t>(outgoing_++);
        out_iov_[u] = iovec{data(slot), size};
        msghdr& h = out_[u].msg_hdr;
        h = msghdr{};
        h.msg_iov = &out_iov_[u];
        h.msg_iovlen = 1;
        if (to) {
            h.msg_name = const_cast<sockaddr*>(to->get());
            h.msg_namelen = to->length;
        }
        if (control) {
            h.msg_control = control;
            h.msg_controllen = control_length;
        }
        out_[u].msg_len = 0;
    }
    int outgoing() const { return outgoing_; }
    size_t outgoing_size(int i) const { return out_iov_[static_cast<size_t>(i)].iov_len; }

    // Sends the added datagrams from the first'th on, in order. Returns how
    // many went out before one that did not, or -1 with errno when the
    // first'th did not: the caller asks again from where it stopped (to
    // learn the error) and, on -1, drops that one and goes on after it.
    int send(int fd, int first) {
        int n = outgoing_ - first;
        if (n <= 0) return 0;
#ifdef MIXCTL_MMSG
        int sent;
        do sent = ::sendmmsg(fd, out_.get() + first, static_cast<unsigned>(n), 0);
        while (sent < 0 && errno == EINTR);
        return sent;
#else
        for (int i = 0; i < n; ++i) {
            ssize_t r;
            do r = ::sendmsg(fd, &out_[static_cast<size_t>(first + i)].msg_hdr, 0);
            while (r < 0 && errno == EINTR);
            if (r < 0) return i == 0 ? -1 : i;
        }
        return n;
#endif
    }

#if defined(MIXCTL_MMSG) && defined(UDP_SEGMENT)
    // The added datagrams from first on, count of them, as one UDP GSO send
    // (UDP_SEGMENT): the kernel cuts them back into the same datagrams, and
    // the path below pays once instead of count times. Only for a run of
    // equal sizes (the last may be shorter) the kernel takes; false when not
    // taken (errno set, the caller sends them one by one instead).
    bool send_segmented(int fd, int first, int count) {
        if (count < 2 || count > 64) return false;
        const size_t segment = out_iov_[static_cast<size_t>(first)].iov_len;
        size_t total = 0;
        for (int i = first; i < first + count; ++i) {
            size_t len = out_iov_[static_cast<size_t>(i)].iov_len;
            if (len > segment || (len < segment && i != first + count - 1)) return false;
            total += len;
        }
        if (segment == 0 || total > max_datagram) return false;
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(uint16_t))] = {};
        msghdr h{};
        h.msg_iov = &out_iov_[static_cast<size_t>(first)];
        h.msg_iovlen = static_cast<size_t>(count);
        h.msg_control = control;
        h.msg_controllen = sizeof control;
        cmsghdr* c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        const uint16_t size16 = static_cast<uint16_t>(segment);
        memcpy(CMSG_DATA(c), &size16, sizeof size16);
        ssize_t r;
        do r = ::sendmsg(fd, &h, 0);
        while (r < 0 && errno == EINTR);
        return r == static_cast<ssize_t>(total);
    }
#endif

private:
    struct Control {
        alignas(cmsghdr) char bytes[control_size];
    };

    int receive_many(int fd, int n) {
#ifdef MIXCTL_MMSG
        int count;
        do count = ::recvmmsg(fd, in_.get(), static_cast<unsigned>(n), 0, nullptr);
        while (count < 0 && errno == EINTR);
        if (count < 0) {
            error_ = is_retry(errno) ? 0 : errno;
            return 0;
        }
        return count;
#else
        for (int i = 0; i < n; ++i) {
            msghdr& h = in_[static_cast<size_t>(i)].msg_hdr;
            ssize_t r;
            do r = ::recvmsg(fd, &h, 0);
            while (r < 0 && errno == EINTR);
            if (r < 0) {
                // A socket error (ECONNREFUSED) is consumed by the call that
                // reports it: it is handed on even after some datagrams.
                error_ = is_retry(errno) ? 0 : errno;
                return i;
            }
            in_[static_cast<size_t>(i)].msg_len = static_cast<unsigned int>(r);
        }
        return n;
#endif
    }

    int capacity_;
    std::unique_ptr<char[]> arena_;
    std::unique_ptr<Message[]> in_, out_;
    std::unique_ptr<iovec[]> iov_, out_iov_;
    std::unique_ptr<net::SockAddr[]> names_;
    std::unique_ptr<Control[]> control_;
    int outgoing_ = 0;
    int error_ = 0;
};

}  // namespace udp_batch
