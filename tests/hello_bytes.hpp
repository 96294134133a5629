// hello_bytes.hpp - hand-built TLS ClientHello bytes for the tests, with
// every length settable, so a test can make one that lies.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hello_bytes {

inline std::string u16(size_t v) { return std::string{static_cast<char>(v >> 8 & 0xff), static_cast<char>(v & 0xff)}; }
inline std::string u24(size_t v) { return static_cast<char>(v >> 16 & 0xff) + u16(v); }

// server_name extension with one host_name entry.
inline std::string sni_extension(const std::string& name) {
    std::string entry = std::string(1, '\0') + u16(name.size()) + name;
    std::string list = u16(entry.size()) + entry;
    return u16(0) + u16(list.size()) + list;
}

// ClientHello handshake message (type 1, length, body).
inline std::string handshake(const std::string& extensions, bool with_extensions = true) {
    std::string body = "\x03\x03" + std::string(32, 'r');
    body += std::string(1, '\x20') + std::string(32, 's');                    // session id
    body += u16(4) + std::string("\x13\x01\x13\x02", 4);                      // two suites
    body += std::string("\x01\x00", 2);                                       // null compression
    if (with_extensions) body += u16(extensions.size()) + extensions;
    return "\x01" + u24(body.size()) + body;
}

// The handshake bytes cut into records of at most `per_record` bytes.
inline std::string records(const std::string& message, size_t per_record = 16384) {
    std::string out;
    for (size_t at = 0; at < message.size(); at += per_record) {
        std::string part = message.substr(at, per_record);
        out += std::string("\x16\x03\x01", 3) + u16(part.size()) + part;
    }
    return out;
}

inline std::string hello(const std::string& name, size_t per_record = 16384) {
    std::string ext = name.empty() ? std::string() : sni_extension(name);
    ext += u16(43) + u16(3) + std::string("\x02\x03\x04", 3);  // supported_versions
    return records(handshake(ext), per_record);
}

}  // namespace hello_bytes
