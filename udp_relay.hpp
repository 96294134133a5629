// udp_relay.hpp - UDP rules: the listening sockets, the per-worker session
// table and the relay of datagrams between clients and upstreams.
// It must not touch TCP connections or the process model (mixctl.cpp forks).
#pragma once

#include <cerrno>
#include <string>

#include <netinet/in.h>
#include <sys/socket.h>

#include "net.hpp"

namespace udp_relay {

// With one UDP socket shared by every worker, any worker could read any
// datagram and a client's flow would be split across session tables. On
// Linux each worker gets its own SO_REUSEPORT socket per port, bound by the
// parent: the kernel hashes a flow (addresses and ports) to one socket, and
// a respawned worker takes over the very same socket, datagrams queued on
// it included. Where SO_REUSEPORT does not balance (BSD, macOS: the last
// socket bound gets everything) or in the POSIX-only build, one socket per
// port is bound and worker 0 serves every UDP rule.
#if defined(__linux__) && defined(SO_REUSEPORT) && !defined(MIXCTL_POSIX_ONLY)
constexpr bool per_worker_sockets = true;
#else
constexpr bool per_worker_sockets = false;
#endif

inline int sockets_per_port(size_t workers) {
    return per_worker_sockets && workers > 1 ? static_cast<int>(workers) : 1;
}

inline bool is_wildcard(const net::SockAddr& a) {
    if (a.family() == AF_INET) return reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_addr.s_addr == INADDR_ANY;
    if (a.family() == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(&a.storage)->sin6_addr);
    return false;
}

// A nonblocking UDP socket bound to `addr`. On a wildcard address the
// kernel is asked for each datagram's destination (IP_PKTINFO,
// IPV6_RECVPKTINFO), so that a reply leaves from the address the client
// sent to: clients drop replies from any other.
inline net::Fd bind_socket(const net::SockAddr& addr, bool reuseport, std::string& error) {
    net::Fd fd(::socket(addr.family(), SOCK_DGRAM, 0));
    if (!fd || !net::set_nonblock_cloexec(fd.get())) {
        error = "socket: " + net::errno_text(errno);
        return net::Fd();
    }
    net::set_int_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1);
#ifdef SO_REUSEPORT
    if (reuseport) net::set_int_option(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1);
#else
    (void)reuseport;
#endif
    if (addr.family() == AF_INET6) net::set_int_option(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0);
    if (is_wildcard(addr)) {
#ifdef IP_PKTINFO
        if (addr.family() == AF_INET) net::set_int_option(fd.get(), IPPROTO_IP, IP_PKTINFO, 1);
#endif
#ifdef IPV6_RECVPKTINFO
        if (addr.family() == AF_INET6) {
            net::set_int_option(fd.get(), IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
#ifdef IP_PKTINFO
            net::set_int_option(fd.get(), IPPROTO_IP, IP_PKTINFO, 1);  // IPv4 clients of a dual-stack socket
#endif
        }
#endif
    }
    if (::bind(fd.get(), addr.get(), addr.length) < 0) {
        error = "bind " + addr.text() + ": " + net::errno_text(errno);
        return net::Fd();
    }
    return fd;
}

}  // namespace udp_relay
