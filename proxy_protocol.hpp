// proxy_protocol.hpp - the PROXY protocol header (HAProxy's spec, v1 and v2) that tells an upstream who the client is.
// Owns the header's bytes; not when or on which socket they are sent (worker.hpp).
//
// It is sent once, before any client byte; a receiver never guesses whether
// one is coming, so it is opt-in per rule.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "net.hpp"

namespace proxy_protocol {

enum class Version { off, v1, v2 };

// An address as the header wants it: IPv4-mapped IPv6 (a v4 client on a
// dual-stack listener) counts as IPv4.
struct Endpoint {
    int family = 0;  // AF_INET or AF_INET6
    unsigned char ip[16] = {};
    uint16_t port = 0;
};

inline Endpoint endpoint(const net::SockAddr& a) {
    Endpoint e;
    if (a.family() == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&a.storage);
        e.family = AF_INET;
        memcpy(e.ip, &in->sin_addr, 4);
        e.port = ntohs(in->sin_port);
    } else if (a.family() == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a.storage);
        e.port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            e.family = AF_INET;
            memcpy(e.ip, &in6->sin6_addr.s6_addr[12], 4);
        } else {
            e.family = AF_INET6;
            memcpy(e.ip, &in6->sin6_addr, 16);
        }
    }
    return e;
}

// v1: "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n", at most 107 bytes.
inline std::string v1(const net::SockAddr& client, const net::SockAddr& local) {
    Endpoint src = endpoint(client), dst = endpoint(local);
    if (src.family == 0 || src.family != dst.family) return "PROXY UNKNOWN\r\n";
    char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
    inet_ntop(src.family, src.ip, a, sizeof a);
    inet_ntop(dst.family, dst.ip, b, sizeof b);
    char line[160];  // the spec's maximum is 107; room to spare keeps the compiler sure
    snprintf(line, sizeof line, "PROXY %s %s %s %u %u\r\n", src.family == AF_INET ? "TCP4" : "TCP6", a, b,
             static_cast<unsigned>(src.port), static_cast<unsigned>(dst.port));
    return line;
}

// v2: 12-byte signature, version 2 + PROXY command, family/transport,
// big-endian length, then addresses and ports.
inline std::string v2(const net::SockAddr& client, const net::SockAddr& local) {
    static const unsigned char signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    Endpoint src = endpoint(client), dst = endpoint(local);
    std::string out(reinterpret_cast<const char*>(signature), sizeof signature);
    out += static_cast<char>(0x21);  // version 2, command PROXY
    if (src.family == 0 || src.family != dst.family) {
        out += static_cast<char>(0x00);  // UNSPEC: the receiver uses the connection's own addresses
        out += std::string(2, '\0');
        return out;
    }
    const size_t ip_size = src.family == AF_INET ? 4 : 16;
    out += static_cast<char>(src.family == AF_INET ? 0x11 : 0x21);  // TCP over IPv4 / IPv6
    const size_t length = 2 * ip_size + 4;
    out += static_cast<char>(length >> 8);
    out += static_cast<char>(length & 0xff);
    out.append(reinterpret_cast<const char*>(src.ip), ip_size);
    out.append(reinterpret_cast<const char*>(dst.ip), ip_size);
    for (uint16_t port : {src.port, dst.port}) {
        out += static_cast<char>(port >> 8);
        out += static_cast<char>(port & 0xff);
    }
    return out;
}

inline std::string header(Version version, const net::SockAddr& client, const net::SockAddr& local) {
    switch (version) {
        case Version::v1: return v1(client, local);
        case Version::v2: return v2(client, local);
        case Version::off: break;
    }
    return std::string();
}

}  // namespace proxy_protocol
