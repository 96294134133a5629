// tls_hello.hpp - builds a TLS ClientHello by hand for health checks, and
// judges the first bytes of the server's answer. No TLS library and no
// handshake beyond the first record: a ServerHello is proof enough.
#pragma once

#include <cstdint>
#include <string>

namespace tls_hello {

namespace detail {

inline void u8(std::string& out, unsigned v) { out += static_cast<char>(v & 0xff); }
inline void u16(std::string& out, unsigned v) {
    u8(out, v >> 8);
    u8(out, v);
}
inline void u24(std::string& out, unsigned v) {
    u8(out, v >> 16);
    u16(out, v);
}

// An extension: type, then its body with a 16-bit length.
inline void extension(std::string& out, unsigned type, const std::string& body) {
    u16(out, type);
    u16(out, static_cast<unsigned>(body.size()));
    out += body;
}

}  // namespace detail

// A TLS 1.2 ClientHello record (RFC 5246 7.4.1.2) that also offers TLS 1.3
// (RFC 8446 4.1.2) with an empty key_share, so a 1.3-only server answers
// with a HelloRetryRequest - itself a ServerHello message. `sni` (a host
// name, may be empty) goes into server_name (RFC 6066 3). `random` fills
// the 32-byte random field.
inline std::string client_hello(const std::string& sni, uint64_t random) {
    using namespace detail;
    std::string body;
    u16(body, 0x0303);  // legacy_version: TLS 1.2
    for (int i = 0; i < 32; ++i) {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        u8(body, static_cast<unsigned>(random));
    }
    u8(body, 0);  // no session id
    static const unsigned suites[] = {
        0x1301, 0x1302, 0x1303,                  // TLS 1.3 AES-GCM, ChaCha20
        0xc02b, 0xc02f, 0xc02c, 0xc030,          // ECDHE ECDSA/RSA AES-GCM
        0xcca9, 0xcca8,                          // ECDHE ChaCha20-Poly1305
        0xc009, 0xc013, 0xc00a, 0xc014,          // ECDHE AES-CBC
        0x009c, 0x009d, 0x002f, 0x0035,          // RSA AES-GCM / AES-CBC
    };
    u16(body, static_cast<unsigned>(sizeof suites / sizeof suites[0] * 2));
    for (unsigned s : suites) u16(body, s);
    u8(body, 1);  // compression methods: null only
    u8(body, 0);

    std::string ext, e;
    if (!sni.empty()) {
        std::string names;
        u8(names, 0);  // host_name
        u16(names, static_cast<unsigned>(sni.size()));
        names += sni;
        u16(e, static_cast<unsigned>(names.size()));
        e += names;
        extension(ext, 0x0000, e);
    }
    e.clear();
    static const unsigned groups[] = {0x001d, 0x0017, 0x0018, 0x0019};  // x25519, P-256, P-384, P-521
    u16(e, sizeof groups / sizeof groups[0] * 2);
    for (unsigned g : groups) u16(e, g);
    extension(ext, 0x000a, e);  // supported_groups
    e.clear();
    u8(e, 1);
    u8(e, 0);
    extension(ext, 0x000b, e);  // ec_point_formats: uncompressed
    e.clear();
    static const unsigned signatures[] = {0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501,
                                          0x0806, 0x0601, 0x0807, 0x0201, 0x0203};
    u16(e, sizeof signatures / sizeof signatures[0] * 2);
    for (unsigned s : signatures) u16(e, s);
    extension(ext, 0x000d, e);  // signature_algorithms
    e.clear();
    u8(e, 4);
    u16(e, 0x0304);
    u16(e, 0x0303);
    extension(ext, 0x002b, e);  // supported_versions: 1.3, 1.2
    e.clear();
    u8(e, 1);
    u8(e, 1);
    extension(ext, 0x002d, e);  // psk_key_exchange_modes: psk_dhe_ke (1.3 servers want it present)
    e.clear();
    u16(e, 0);
    extension(ext, 0x0033, e);  // key_share: none yet (the server asks for one it likes)
    u16(body, static_cast<unsigned>(ext.size()));
    body += ext;

    std::string handshake;
    u8(handshake, 1);  // client_hello
    u24(handshake, static_cast<unsigned>(body.size()));
    handshake += body;

    std::string record;
    u8(record, 0x16);    // handshake
    u16(record, 0x0301); // record version: 1.0, as clients send for compatibility
    u16(record, static_cast<unsigned>(handshake.size()));
    record += handshake;
    return record;
}

enum class Verdict { more, ok, fail };

// The server's first bytes: a handshake record (22) of version 3.x whose
// first message is a ServerHello (2) passes. An alert, anything else, or a
// close before six bytes fails, with `why` saying what came instead.
inline Verdict judge_reply(const std::string& got, bool closed, std::string& why) {
    auto byte = [&](size_t i) { return static_cast<unsigned char>(got[i]); };
    if (!got.empty() && byte(0) == 0x15) {
        why = "no TLS handshake record: the server sent a TLS alert";
        if (got.size() >= 7) why += " (description " + std::to_string(byte(6)) + ")";
        return Verdict::fail;
    }
    if ((!got.empty() && byte(0) != 0x16) || (got.size() >= 2 && byte(1) != 0x03)) {
        why = "no TLS handshake record: got " + std::to_string(got.size()) + " bytes starting 0x";
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < got.size() && i < 4; ++i) {
            why += hex[byte(i) >> 4];
            why += hex[byte(i) & 15];
        }
        return Verdict::fail;
    }
    if (got.size() >= 6) {
        if (byte(5) == 2) return Verdict::ok;
        why = "no TLS handshake record: the first handshake message is type " + std::to_string(byte(5)) +
              ", not a ServerHello";
        return Verdict::fail;
    }
    if (closed) {
        why = "no TLS handshake record: the server closed after " + std::to_string(got.size()) + " bytes";
        return Verdict::fail;
    }
    return Verdict::more;
}

}  // namespace tls_hello
