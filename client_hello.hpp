// client_hello.hpp - reads a TLS ClientHello (RFC 8446 / 5246 record layer,
// RFC 6066 server_name) from the first bytes a client sends, to learn the
// name it asks for. No TLS library and no sockets: it is fed bytes.
//
// It never terminates TLS and never changes a byte: the caller keeps what it
// fed and forwards it unchanged. Every length is checked against the one
// that contains it; anything that does not add up is `malformed`, never a
// guess. Memory is bounded by max_bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace client_hello {

// Record bytes (headers included) read before giving up. TLS allows a
// ClientHello of 2^24 bytes; real ones are 200 B to ~2 KiB (post-quantum key
// shares), so 18 KiB leaves room for one full 16 KiB record and then some.
constexpr size_t max_bytes = 18 * 1024;

enum class Status {
    need_more,  // a prefix of a plausible ClientHello: feed more
    done,       // complete; has_name() says whether it carried server_name
    not_tls,    // the first byte is not a TLS handshake record
    malformed,  // a TLS record, but lengths or contents do not add up
    too_long,   // still incomplete after max_bytes
};

inline const char* status_text(Status s) {
    switch (s) {
        case Status::need_more: return "incomplete TLS ClientHello";
        case Status::done: return "TLS ClientHello";
        case Status::not_tls: return "not TLS";
        case Status::malformed: return "malformed TLS ClientHello";
        case Status::too_long: return "TLS ClientHello longer than 18 KiB";
    }
    return "?";
}

class Reader {
public:
    // Feeds the next bytes the client sent. Once the status is no longer
    // need_more, further bytes are ignored and the status stays.
    Status feed(const unsigned char* data, size_t size) {
        for (size_t i = 0; i < size && status_ == Status::need_more; ++i) byte(data[i]);
        return status_;
    }
    Status feed(const char* data, size_t size) { return feed(reinterpret_cast<const unsigned char*>(data), size); }

    Status status() const { return status_; }
    bool has_name() const { return !name_.empty(); }
    // Lowercase host name from server_name, empty when the hello had none.
    const std::string& name() const { return name_; }
    const char* why() const { return why_; }

private:
    void byte(unsigned char b) {
        if (++total_ > max_bytes) {
            status_ = Status::too_long;
            return;
        }
        if (header_have_ < 5) {
            record_header(b);
            return;
        }
        handshake_ += static_cast<char>(b);
        if (--record_left_ == 0) header_have_ = 0;
        handshake_progress();
    }

    // type 22 (handshake), version 3.x, length 1..2^14 (RFC 8446 5.1: no
    // zero-length handshake fragments).
    void record_header(unsigned char b) {
        header_[header_have_++] = b;
        if (header_have_ == 1 && b != 22) {
            if (total_ == 1) status_ = Status::not_tls;
            else fail("a non-handshake record before the ClientHello ended");
            return;
        }
        if (header_have_ == 2 && b != 3) fail("record version is not 3.x");
        if (header_have_ < 5) return;
        record_left_ = static_cast<size_t>(header_[3]) << 8 | header_[4];
        if (record_left_ == 0 || record_left_ > 16384) fail("record length out of range");
    }

    void handshake_progress() {
        if (handshake_.size() < 4) return;
        if (handshake_.size() == 4) {
            if (u8(0) != 1) return fail("first handshake message is not a ClientHello");
            size_t length = u8(1) << 16 | u8(2) << 8 | u8(3);
            if (length + 4 + 5 > max_bytes) {
                status_ = Status::too_long;
                return;
            }
            want_ = length + 4;
        }
        if (handshake_.size() == want_) parse_body();
    }

    size_t u8(size_t at) const { return static_cast<unsigned char>(handshake_[at]); }
    size_t u16(size_t at) const { return u8(at) << 8 | u8(at + 1); }

    void fail(const char* why) {
        status_ = Status::malformed;
        name_.clear();  // a name read before the lie is not the hello's
        why_ = why;
    }

    // ClientHello: version(2) random(32) session_id<0..32> cipher_suites<2..2^16-2>
    // compression_methods<1..2^8-1> [extensions<0..2^16-1>]
    void parse_body() {
        const size_t end = want_;
        size_t at = 4 + 2 + 32;
        if (at + 1 > end) return fail("ClientHello shorter than its fixed fields");
        size_t session = u8(at);
        if (session > 32) return fail("session_id longer than 32");
        at += 1 + session;
        if (at + 2 > end) return fail("cipher_suites past the end");
        size_t suites = u16(at);
        if (suites < 2 || suites % 2) return fail("cipher_suites length is not even and non-zero");
        at += 2 + suites;
        if (at + 1 > end) return fail("compression_methods past the end");
        size_t methods = u8(at);
        if (methods < 1) return fail("no compression method");
        at += 1 + methods;
        if (at > end) return fail("compression_methods past the end");
        if (at == end) return finish();  // no extensions (allowed before TLS 1.3)
        if (at + 2 > end) return fail("extensions length past the end");
        size_t extensions_end = at + 2 + u16(at);
        if (extensions_end != end) return fail("extensions length does not match the ClientHello length");
        at += 2;
        bool seen_sni = false;
        while (at < extensions_end) {
            if (at + 4 > extensions_end) return fail("extension header past the end");
            size_t type = u16(at), length = u16(at + 2);
            at += 4;
            if (at + length > extensions_end) return fail("extension longer than the extensions");
            if (type == 0) {
                if (seen_sni) return fail("two server_name extensions");
                seen_sni = true;
                if (!server_name(at, at + length)) return;
            }
            at += length;
        }
        finish();
    }

    // ServerNameList: list<1..2^16-1> of (name_type(1), HostName<1..2^16-1>).
    // An empty extension body is what a server sends back; from a client it
    // is a lie about its length.
    bool server_name(size_t at, size_t end) {
        if (at + 2 > end || at + 2 + u16(at) != end) {
            fail("server_name list length does not match the extension");
            return false;
        }
        at += 2;
        if (at == end) {
            fail("empty server_name list");
            return false;
        }
        bool host_seen = false;
        while (at < end) {
            if (at + 3 > end) {
                fail("server_name entry past the end");
                return false;
            }
            size_t type = u8(at), length = u16(at + 1);
            at += 3;
            if (at + length > end) {
                fail("server_name entry longer than the list");
                return false;
            }
            if (type == 0) {
                if (host_seen) {
                    fail("two host names in server_name");
                    return false;
                }
                host_seen = true;
                if (!host_name(at, length)) return false;
            }
            at += length;
        }
        return true;
    }

    // Letters, digits, '-', '_' and '.'; 1..253 bytes, no empty label. The
    // name is compared, never printed unchecked.
    bool host_name(size_t at, size_t length) {
        if (length < 1 || length > 253) {
            fail("host name length out of range");
            return false;
        }
        std::string name;
        char previous = '.';
        for (size_t i = 0; i < length; ++i) {
            char c = handshake_[at + i];
            bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
            if (c >= 'A' && c <= 'Z') {
                c = static_cast<char>(c - 'A' + 'a');
                ok = true;
            }
            if (!ok || (c == '.' && previous == '.')) {
                fail("host name is not a DNS name");
                return false;
            }
            name += c;
            previous = c;
        }
        if (previous == '.') name.pop_back();  // a trailing dot names the same host
        name_ = name;
        return true;
    }

    void finish() {
        status_ = Status::done;
        handshake_.clear();
        handshake_.shrink_to_fit();
    }

    Status status_ = Status::need_more;
    size_t total_ = 0;
    unsigned char header_[5] = {};
    size_t header_have_ = 0, record_left_ = 0;
    std::string handshake_;
    size_t want_ = 0;  // handshake bytes of the whole ClientHello, once known
    std::string name_;
    const char* why_ = "";
};

}  // namespace client_hello
