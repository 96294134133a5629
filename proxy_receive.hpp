// proxy_receive.hpp - reads a PROXY protocol header (HAProxy's spec, v1 and
// v2, told apart by their first bytes) from the start of a connection.
//
// Fed the bytes received so far; says how long the header is, so the bytes
// after it stay the client's and are forwarded unchanged. It only parses:
// no sockets, no policy (proxy_protocol.hpp writes headers; preread.hpp
// decides what to do with one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "net.hpp"

namespace proxy_receive {

constexpr size_t v1_max = 107;   // the spec's longest line, CRLF included
constexpr size_t v2_max = 4096;  // signature .. TLVs; HAProxy's own TLVs stay far below

enum class Status { need_more, done, invalid };

struct Header {
    Status status = Status::need_more;
    size_t length = 0;          // bytes of the header, once done
    bool has_address = false;   // false: LOCAL, UNKNOWN or a family without one; use the connection's own
    net::SockAddr source, destination;
    int version = 0;
    const char* why = "";
};

namespace detail {

constexpr unsigned char v2_signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

inline Header invalid(const char* why) {
    Header h;
    h.status = Status::invalid;
    h.why = why;
    return h;
}

inline void set_address(net::SockAddr& out, int family, const void* ip, uint16_t port) {
    out = net::SockAddr();
    if (family == AF_INET) {
        auto* in = reinterpret_cast<sockaddr_in*>(&out.storage);
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, ip, 4);
        in->sin_port = htons(port);
        out.length = sizeof(sockaddr_in);
    } else {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, ip, 16);
        in6->sin6_port = htons(port);
        out.length = sizeof(sockaddr_in6);
    }
}

// A decimal port: 1 to 5 digits, no sign, no leading zero, at most 65535.
inline bool parse_port(const std::string& text, uint16_t& out) {
    if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) return false;
    unsigned value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return false;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value > 65535) return false;
    out = static_cast<uint16_t>(value);
    return true;
}

// "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n", "PROXY UNKNOWN ...\r\n".
inline Header v1(const unsigned char* data, size_t size) {
    // Printable ASCII up to the CRLF: what the line says is all that is read.
    size_t end = SIZE_MAX;
    for (size_t i = 0; i < size && i < v1_max && end == SIZE_MAX; ++i) {
        unsigned char c = data[i];
        if (c == '\r' && i + 1 < size && data[i + 1] == '\n' && i + 2 <= v1_max) end = i;
        else if (c == '\r' && i + 1 == size && i + 2 <= v1_max) return Header();
        else if (c < 0x20 || c > 0x7e) return invalid("v1 line with a control byte before its CRLF");
    }
    if (end == SIZE_MAX) {
        if (size >= v1_max) return invalid("v1 line longer than 107 bytes");
        return Header();
    }
    std::string line(reinterpret_cast<const char*>(data), end);
    Header h;
    h.version = 1;
    h.length = end + 2;
    if (line.compare(0, 13, "PROXY UNKNOWN") == 0 && (line.size() == 13 || line[13] == ' ')) {
        h.status = Status::done;
        return h;
    }
    std::string fields[6];
    size_t count = 0, at = 0;
    bool more = true;
    while (more && count < 6) {
        size_t space = line.find(' ', at);
        more = space != std::string::npos;
        fields[count++] = line.substr(at, more ? space - at : std::string::npos);
        at = space + 1;
    }
    if (count != 6 || more || fields[0] != "PROXY")
        return invalid("v1 line is not \"PROXY TCP4|TCP6 source destination sport dport\"");
    int family = fields[1] == "TCP4" ? AF_INET : fields[1] == "TCP6" ? AF_INET6 : 0;
    if (!family) return invalid("v1 protocol is not TCP4, TCP6 or UNKNOWN");
    unsigned char src[16], dst[16];
    uint16_t sport = 0, dport = 0;
    if (inet_pton(family, fields[2].c_str(), src) != 1 || inet_pton(family, fields[3].c_str(), dst) != 1)
        return invalid("v1 address does not match its protocol");
    if (!parse_port(fields[4], sport) || !parse_port(fields[5], dport)) return invalid("v1 port is not 0..65535");
    set_address(h.source, family, src, sport);
    set_address(h.destination, family, dst, dport);
    h.has_address = true;
    h.status = Status::done;
    return h;
}

// Signature(12), version/command(1), family/transport(1), length(2, big
// endian), addresses, then TLVs (type 1, length 2, value), all skipped.
inline Header v2(const unsigned char* data, size_t size) {
    if (size < 16) return Header();
    if ((data[12] >> 4) != 2) return invalid("v2 version is not 2");
    int command = data[12] & 0x0F;
    if (command > 1) return invalid("v2 command is neither LOCAL nor PROXY");
    size_t length = static_cast<size_t>(data[14]) << 8 | data[15];
    if (16 + length > v2_max) return invalid("v2 header longer than 4 KiB");
    int family = data[13] >> 4, transport = data[13] & 0x0F;
    if (family > 3 || transport > 2) return invalid("v2 address family or transport unknown");
    size_t address_bytes = family == 1 ? 12 : family == 2 ? 36 : family == 3 ? 216 : 0;
    if (length < address_bytes) return invalid("v2 length shorter than its addresses");
    if (size < 16 + length) return Header();
    const unsigned char* tlv = data + 16 + address_bytes;
    const unsigned char* end = data + 16 + length;
    while (tlv < end) {
        if (end - tlv < 3) return invalid("v2 TLV header past the end");
        size_t value = static_cast<size_t>(tlv[1]) << 8 | tlv[2];
        if (static_cast<size_t>(end - tlv - 3) < value) return invalid("v2 TLV longer than the header");
        tlv += 3 + value;
    }
    Header h;
    h.version = 2;
    h.length = 16 + length;
    h.status = Status::done;
    // LOCAL (the sender's own health check), UNSPEC, UNIX and UDP: the
    // connection's own addresses stand.
    if (command == 1 && transport == 1 && (family == 1 || family == 2)) {
        const unsigned char* a = data + 16;
        size_t ip = family == 1 ? 4 : 16;
        int af = family == 1 ? AF_INET : AF_INET6;
        set_address(h.source, af, a, static_cast<uint16_t>(a[2 * ip] << 8 | a[2 * ip + 1]));
        set_address(h.destination, af, a + ip, static_cast<uint16_t>(a[2 * ip + 2] << 8 | a[2 * ip + 3]));
        h.has_address = true;
    }
    return h;
}

}  // namespace detail

// All bytes received so far (the header is at the very start). need_more
// while they are a prefix of a header that could still be valid.
inline Header parse(const unsigned char* data, size_t size) {
    static const char v1_start[] = "PROXY ";
    size_t v1_check = size < 6 ? size : 6;
    if (memcmp(data, v1_start, v1_check) == 0) return size < 6 ? Header() : detail::v1(data, size);
    size_t v2_check = size < 12 ? size : 12;
    if (memcmp(data, detail::v2_signature, v2_check) == 0) return size < 12 ? Header() : detail::v2(data, size);
    return detail::invalid("no PROXY header");
}

inline Header parse(const char* data, size_t size) { return parse(reinterpret_cast<const unsigned char*>(data), size); }

}  // namespace proxy_receive
