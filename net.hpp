// net.hpp - sockets and addresses: RAII descriptors, host:port syntax, resolution, listen, accept, dial.
// Owns the system calls on sockets; not policy (which upstream, when to accept) nor any event loop.
//
// Why long: every socket call mixctl makes, each with its POSIX fallback, in one place, so the
// Linux-only paths are easy to find and test; split, they would scatter over the callers.
//
// Linux-only calls (accept4, SOCK_NONBLOCK) sit behind small helpers with a
// POSIX fallback; building with -DMIXCTL_POSIX_ONLY forces the fallback so CI
// keeps the portable path tested.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#if defined(__linux__) && !defined(MIXCTL_POSIX_ONLY)
#define MIXCTL_HAVE_ACCEPT4 1
#endif

namespace net {

// Owns one file descriptor; closing happens here and nowhere else.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& other) noexcept : fd_(other.release()) {}
    Fd& operator=(Fd&& other) noexcept {
        if (this != &other) reset(other.release());
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    explicit operator bool() const { return valid(); }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1) {
        if (fd_ >= 0) {
            int saved = errno;  // close() must not clobber the error a caller is about to report
            ::close(fd_);
            errno = saved;
        }
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

inline std::string errno_text(int err) {
    // Go prints "connection refused", libc "Connection refused": keep Go's case.
    std::string text = strerror(err);
    if (!text.empty() && text[0] >= 'A' && text[0] <= 'Z' && !(text.size() > 1 && text[1] >= 'A' && text[1] <= 'Z'))
        text[0] = static_cast<char>(text[0] - 'A' + 'a');
    return text;
}

// ---- host:port syntax ----------------------------------------------------

struct HostPort {
    std::string host;  // without brackets; empty means "all interfaces"
    uint16_t port = 0;
    std::string text() const {
        std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
        return h + ":" + std::to_string(port);
    }
};

// Parses "host:port", "[v6]:port", ":port". On failure returns false and a
// message naming what is wrong (the caller adds file:line and the field).
inline bool parse_host_port(std::string_view text, bool allow_port_zero, HostPort& out, std::string& error) {
    std::string_view host, port;
    if (!text.empty() && text.front() == '[') {
        size_t close = text.find(']');
        if (close == std::string_view::npos) {
            error = "missing ']' in address";
            return false;
        }
        host = text.substr(1, close - 1);
        std::string_view rest = text.substr(close + 1);
        if (rest.empty() || rest.front() != ':') {
            error = "missing port in address (want [host]:port)";
            return false;
        }
        port = rest.substr(1);
        if (host.find(':') == std::string_view::npos) {
            error = "brackets are only for IPv6 addresses";
            return false;
        }
    } else {
        size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            error = "missing port in address (want host:port)";
            return false;
        }
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) {
            error = "too many colons in address: write IPv6 addresses in brackets, e.g. [::1]:" +
                    std::string(port);
            return false;
        }
    }
    if (host.find_first_of(" \t[]/") != std::string_view::npos) {
        error = "invalid host \"" + std::string(host) + "\"";
        return false;
    }
    if (port.empty()) {
        error = "missing port in address";
        return false;
    }
    unsigned long value = 0;
    for (char c : port) {
        if (c < '0' || c > '9' || value > 65535) {
            error = "invalid port \"" + std::string(port) + "\"";
            return false;
        }
        value = value * 10 + static_cast<unsigned long>(c - '0');
    }
    if (value > 65535 || (value == 0 && !allow_port_zero)) {
        error = "port " + std::string(port) + " out of range (1-65535)";
        return false;
    }
    out.host = std::string(host);
    out.port = static_cast<uint16_t>(value);
    return true;
}

// ---- socket addresses ----------------------------------------------------

struct SockAddr {
    sockaddr_storage storage{};
    socklen_t length = 0;

    const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
    sockaddr* get() { return reinterpret_cast<sockaddr*>(&storage); }
    int family() const { return storage.ss_family; }

    void set_port(uint16_t port) {
        if (family() == AF_INET) reinterpret_cast<sockaddr_in*>(&storage)->sin_port = htons(port);
        if (family() == AF_INET6) reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port = htons(port);
    }

    uint16_t port() const {
        if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
        if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
        return 0;
    }

    // "127.0.0.1:80" or "[::1]:80"; IPv4-mapped IPv6 shown as plain IPv4.
    std::string text() const {
        char host[INET6_ADDRSTRLEN] = "?";
        if (family() == AF_INET) {
            inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr, host, sizeof host);
            return std::string(host) + ":" + std::to_string(port());
        }
        if (family() == AF_INET6) {
            const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage);
            if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
                inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, sizeof host);
                return std::string(host) + ":" + std::to_string(port());
            }
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
            return "[" + std::string(host) + "]:" + std::to_string(port());
        }
        return "?";
    }
};

// Resolves with AF_UNSPEC (an IPv6-only lookup of "localhost" was seen to go
// to DNS). passive: an empty host means all interfaces, IPv6 first so one
// dual-stack socket serves both families, as Go's ":port" does.
inline bool resolve(const HostPort& where, bool passive, std::vector<SockAddr>& out, std::string& error) {
    out.clear();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    std::string port = std::to_string(where.port);
    addrinfo* list = nullptr;
    int rc = getaddrinfo(where.host.empty() ? nullptr : where.host.c_str(), port.c_str(), &hints, &list);
    if (rc != 0) {
        error = "lookup " + (where.host.empty() ? std::string("(any)") : where.host) + ": " +
                (rc == EAI_SYSTEM ? errno_text(errno) : std::string(gai_strerror(rc)));
        return false;
    }
    for (addrinfo* ai = list; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
        SockAddr addr;
        memcpy(&addr.storage, ai->ai_addr, ai->ai_addrlen);
        addr.length = ai->ai_addrlen;
        bool seen = false;
        for (const SockAddr& have : out)
            seen = seen || (have.length == addr.length && memcmp(&have.storage, &addr.storage, addr.length) == 0);
        if (!seen) out.push_back(addr);
    }
    freeaddrinfo(list);
    if (passive && where.host.empty()) {
        // One socket, as Go's ":port": the IPv6 wildcard with V6ONLY off
        // takes IPv4 too, and an IPv4 wildcard beside it on the same port
        // would fail with EADDRINUSE. Only where no IPv6 socket can be made
        // is the IPv4 wildcard the one.
        bool has_v6 = std::any_of(out.begin(), out.end(), [](const SockAddr& a) { return a.family() == AF_INET6; });
        int keep = has_v6 && Fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0)).valid() ? AF_INET6 : AF_INET;
        out.erase(std::remove_if(out.begin(), out.end(), [&](const SockAddr& a) { return a.family() != keep; }),
                  out.end());
        if (out.size() > 1) out.resize(1);
    }
    if (out.empty()) {
        error = "lookup " + where.host + ": no IPv4 or IPv6 address";
        return false;
    }
    return true;
}

// An IP literal (no names, no lookup) as a socket address with `port`.
inline bool parse_ip(const std::string& text, uint16_t port, SockAddr& out) {
    out = SockAddr();
    auto* in = reinterpret_cast<sockaddr_in*>(&out.storage);
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
    if (inet_pton(AF_INET, text.c_str(), &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        out.length = sizeof *in;
    } else if (inet_pton(AF_INET6, text.c_str(), &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        out.length = sizeof *in6;
    } else {
        return false;
    }
    out.set_port(port);
    return true;
}

// Whether `addr` (port 0) is one of this host's addresses: binding a UDP
// socket to it is the test the kernel itself applies to a source address.
inline bool is_local_address(const SockAddr& addr, std::string& error) {
    int fd = ::socket(addr.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error = "socket: " + errno_text(errno);
        return false;
    }
    bool ok = ::bind(fd, addr.get(), addr.length) == 0;
    if (!ok) error = "bind " + addr.text() + ": " + errno_text(errno);
    ::close(fd);
    return ok;
}

// ---- networks (allow/deny lists) ----------------------------------------

struct Cidr {
    int family = AF_INET;
    unsigned char ip[16] = {};
    int bits = 32;
};

// "10.0.0.0/8", "192.168.1.7" (= /32), "fd00::/8", "::1" (= /128).
inline bool parse_cidr(std::string_view text, Cidr& out, std::string& error) {
    std::string ip(text.substr(0, text.find('/')));
    int max_bits = 0;
    if (inet_pton(AF_INET, ip.c_str(), out.ip) == 1) {
        out.family = AF_INET;
        max_bits = 32;
    } else if (inet_pton(AF_INET6, ip.c_str(), out.ip) == 1) {
        out.family = AF_INET6;
        max_bits = 128;
    } else {
        error = "not an IPv4 or IPv6 address";
        return false;
    }
    out.bits = max_bits;
    size_t slash = text.find('/');
    if (slash != std::string_view::npos) {
        std::string_view bits = text.substr(slash + 1);
        int value = 0;
        if (bits.empty() || bits.size() > 3) value = -1;
        for (char c : bits) value = (c >= '0' && c <= '9' && value >= 0) ? value * 10 + (c - '0') : -1;
        if (value < 0 || value > max_bits) {
            error = "prefix length must be 0 to " + std::to_string(max_bits);
            return false;
        }
        out.bits = value;
    }
    return true;
}

// Matches an accepted client; an IPv4 client on a dual-stack listener
// (IPv4-mapped IPv6) matches IPv4 networks.
inline bool cidr_contains(const Cidr& net, const SockAddr& client) {
    const unsigned char* ip = nullptr;
    int family = 0;
    if (client.family() == AF_INET) {
        family = AF_INET;
        ip = reinterpret_cast<const unsigned char*>(&reinterpret_cast<const sockaddr_in*>(&client.storage)->sin_addr);
    } else if (client.family() == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&client.storage);
        family = IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) ? AF_INET : AF_INET6;
        ip = family == AF_INET ? &in6->sin6_addr.s6_addr[12] : in6->sin6_addr.s6_addr;
    }
    if (!ip || family != net.family) return false;
    int full = net.bits / 8, rest = net.bits % 8;
    if (memcmp(ip, net.ip, static_cast<size_t>(full)) != 0) return false;
    if (rest == 0) return true;
    unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
    return (ip[full] & mask) == (net.ip[full] & mask);
}

// ---- descriptor flags ----------------------------------------------------

inline bool set_nonblock_cloexec(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return false;
    int fdfl = fcntl(fd, F_GETFD);
    return fdfl >= 0 && fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) == 0;
}

// Nonblocking and close-on-exec, in one system call where the system can.
inline Fd new_socket(int family, int type = SOCK_STREAM) {
#ifdef MIXCTL_HAVE_ACCEPT4
    return Fd(::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
#else
    Fd fd(::socket(family, type, 0));
    if (fd && !set_nonblock_cloexec(fd.get())) fd.reset();
    return fd;
#endif
}

inline void set_int_option(int fd, int level, int name, int value) {
    setsockopt(fd, level, name, &value, sizeof value);
}

// Relayed bytes go out at once, and a peer that vanished is noticed.
inline void tune_stream(int fd) {
    set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    set_int_option(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
}

// Linux copies TCP_NODELAY and SO_KEEPALIVE from a listening socket to the
// sockets it accepts, which saves two system calls per connection; elsewhere
// each accepted socket is tuned itself.
#ifdef __linux__
constexpr bool accepted_sockets_inherit_tuning = true;
#else
constexpr bool accepted_sockets_inherit_tuning = false;
#endif

// Makes the next close() send RST, so an abort on one side stays an abort
// (not a clean end) on the other.
inline void set_abortive_close(int fd) {
    linger lg{};
    lg.l_onoff = 1;
    lg.l_linger = 0;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

inline int pending_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
    return err;
}

// The outcome of a nonblocking connect that poll() reported on. Linux flags
// a failed connect with POLLERR, so a plain POLLOUT is a success and needs
// no getsockopt(); elsewhere SO_ERROR is always asked.
inline int connect_error(int fd, short revents) {
#if defined(__linux__) && !defined(MIXCTL_POSIX_ONLY)
    if (!(revents & (POLLERR | POLLHUP))) return 0;
#else
    (void)revents;
#endif
    return pending_error(fd);
}

// ---- listening, accepting, dialing ---------------------------------------

inline int listen_backlog() {
    int backlog = SOMAXCONN;
    Fd fd(::open("/proc/sys/net/core/somaxconn", O_RDONLY | O_CLOEXEC));
    char text[16] = {};
    if (fd && ::read(fd.get(), text, sizeof text - 1) > 0) {
        int value = atoi(text);  // no scanf: it would add 35 KiB to a static binary
        if (value > 0) backlog = value;
    }
    return backlog;
}

// Binds and listens; on failure `error` names the call and the reason.
inline Fd listen_on(const SockAddr& addr, int backlog, std::string& error) {
    Fd fd = new_socket(addr.family());
    if (!fd) {
        error = "socket: " + errno_text(errno);
        return Fd();
    }
    set_int_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1);
    if (addr.family() == AF_INET6) set_int_option(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0);
    tune_stream(fd.get());  // for accepted_sockets_inherit_tuning
    if (::bind(fd.get(), addr.get(), addr.length) < 0) {
        error = "bind " + addr.text() + ": " + errno_text(errno);
        return Fd();
    }
    if (::listen(fd.get(), backlog) < 0) {
        error = "listen " + addr.text() + ": " + errno_text(errno);
        return Fd();
    }
    return fd;
}

inline bool local_address(int fd, SockAddr& out) {
    out.length = sizeof out.storage;
    return getsockname(fd, out.get(), &out.length) == 0;
}

// Nonblocking, close-on-exec accept. Returns an invalid Fd and sets errno
// when nothing was accepted.
inline Fd accept_client(int listener, SockAddr& peer) {
    peer.length = sizeof peer.storage;
#ifdef MIXCTL_HAVE_ACCEPT4
    return Fd(::accept4(listener, peer.get(), &peer.length, SOCK_NONBLOCK | SOCK_CLOEXEC));
#else
    Fd fd(::accept(listener, peer.get(), &peer.length));
    if (fd && !set_nonblock_cloexec(fd.get())) fd.reset();
    return fd;
#endif
}

// Binds an upstream socket to a chosen source address before it connects.
// On Linux IP_BIND_ADDRESS_NO_PORT defers the port choice to connect(), so
// each (source, upstream) pair gets the whole ephemeral range instead of
// each source using up one port per socket at bind time.
inline int bind_source(int fd, const SockAddr& source) {
#if defined(IP_BIND_ADDRESS_NO_PORT) && !defined(MIXCTL_POSIX_ONLY)
    set_int_option(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1);
#endif
    return ::bind(fd, source.get(), source.length) == 0 ? 0 : errno;
}

// Starts a nonblocking connect, from `source` when it is set (length > 0).
// Returns 0 when connected already, EINPROGRESS when the result comes later
// (POLLOUT + pending_error), or the errno of an immediate failure (the Fd is
// then invalid).
inline int dial_start(const SockAddr& addr, Fd& out, const SockAddr* source = nullptr) {
    out = new_socket(addr.family());
    if (!out) return errno;
    tune_stream(out.get());
    if (source && source->length > 0) {
        if (int err = bind_source(out.get(), *source)) {
            out.reset();
            return err;
        }
    }
    if (::connect(out.get(), addr.get(), addr.length) == 0) return 0;
    int err = errno;
    if (err == EINPROGRESS || err == EINTR) return EINPROGRESS;
    out.reset();
    return err;
}

}  // namespace net
