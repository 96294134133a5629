// flags.hpp - command line parsing with the semantics of Go's `flag` package
// (FlagSet with ExitOnError), so mixctl accepts exactly what the Go binary
// accepted: `-f x`, `--f x`, `-f=x`, `--f=x`; `--` ends the flags; the first
// non-flag argument stops parsing; bool flags only take a value with `=`;
// `-h`/`-help` ask for usage; errors are worded as Go words them.
//
// Durations follow time.ParseDuration and Duration.String.
//
// Header-only, no iostreams.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace flags {

using Duration = std::chrono::nanoseconds;

namespace detail {

constexpr std::uint64_t kOneShl63 = std::uint64_t{1} << 63;

// time.quote: bytes below ' ' and non-ASCII bytes become \xNN, '"' and '\\'
// are backslash-escaped, everything else is copied.
inline std::string time_quote(std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    std::string out = "\"";
    for (char ch : s) {
        unsigned char c = static_cast<unsigned char>(ch);
        if (c >= 0x80 || c < 0x20) {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xF];
        } else {
            if (c == '"' || c == '\\') out += '\\';
            out += ch;
        }
    }
    out += '"';
    return out;
}

// Decodes one UTF-8 sequence at s[i] the way Go does (rejects overlong forms,
// surrogates and values above U+10FFFF). Returns the byte width, or 0 when
// the byte at s[i] does not start a valid sequence.
inline std::size_t decode_utf8(std::string_view s, std::size_t i, std::uint32_t& rune) {
    auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
    auto cont = [&](std::size_t k) { return i + k < s.size() && (b(k) & 0xC0) == 0x80; };
    unsigned char c0 = b(0);
    if (c0 < 0x80) {
        rune = c0;
        return 1;
    }
    if (c0 >= 0xC2 && c0 <= 0xDF) {
        if (!cont(1)) return 0;
        rune = (std::uint32_t{c0} & 0x1F) << 6 | (b(1) & 0x3F);
        return 2;
    }
    if (c0 >= 0xE0 && c0 <= 0xEF) {
        if (!cont(1) || !cont(2)) return 0;
        rune = (std::uint32_t{c0} & 0x0F) << 12 | (std::uint32_t{b(1)} & 0x3F) << 6 | (b(2) & 0x3F);
        if (rune < 0x800 || (rune >= 0xD800 && rune <= 0xDFFF)) return 0;
        return 3;
    }
    if (c0 >= 0xF0 && c0 <= 0xF4) {
        if (!cont(1) || !cont(2) || !cont(3)) return 0;
        rune = (std::uint32_t{c0} & 0x07) << 18 | (std::uint32_t{b(1)} & 0x3F) << 12 |
               (std::uint32_t{b(2)} & 0x3F) << 6 | (b(3) & 0x3F);
        if (rune < 0x10000 || rune > 0x10FFFF) return 0;
        return 4;
    }
    return 0;
}

// An approximation of strconv.IsPrint for non-ASCII runes: spaces other than
// U+0020, controls, format characters and private-use code points are not
// printable; every other valid rune is treated as printable.
inline bool nonascii_printable(std::uint32_t r) {
    if (r <= 0xA0 || r == 0xAD) return false;
    if (r == 0x1680 || r == 0x180E || r == 0x3000 || r == 0xFEFF) return false;
    if (r >= 0x2000 && r <= 0x200F) return false;
    if (r >= 0x2028 && r <= 0x202F) return false;
    if (r >= 0x205F && r <= 0x206F) return false;
    if (r >= 0xE000 && r <= 0xF8FF) return false;
    if (r >= 0xFFF9 && r <= 0xFFFB) return false;
    if (r >= 0xE0000) return false;  // tags, variation selectors supplement, private use planes
    return true;
}

// strconv.Quote (what Go's %q prints for a string).
inline std::string go_quote(std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    std::string out = "\"";
    std::size_t i = 0;
    while (i < s.size()) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        std::uint32_t r = 0;
        std::size_t width = decode_utf8(s, i, r);
        if (width == 0) {  // invalid UTF-8: one byte, escaped
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xF];
            ++i;
            continue;
        }
        if (width == 1) {
            switch (c) {
                case '"': out += "\\\""; break;
                case '\\': out += "\\\\"; break;
                case '\a': out += "\\a"; break;
                case '\b': out += "\\b"; break;
                case '\f': out += "\\f"; break;
                case '\n': out += "\\n"; break;
                case '\r': out += "\\r"; break;
                case '\t': out += "\\t"; break;
                case '\v': out += "\\v"; break;
                default:
                    if (c < 0x20 || c == 0x7F) {
                        out += "\\x";
                        out += hex[c >> 4];
                        out += hex[c & 0xF];
                    } else {
                        out += static_cast<char>(c);
                    }
            }
        } else if (nonascii_printable(r)) {
            out.append(s.data() + i, width);
        } else {
            char buf[16];
            if (r < 0x10000) {
                std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(r));
            } else {
                std::snprintf(buf, sizeof buf, "\\U%08x", static_cast<unsigned>(r));
            }
            out += buf;
        }
        i += width;
    }
    out += '"';
    return out;
}

// strconv.ParseBool.
inline bool parse_bool(std::string_view s, bool& out) {
    if (s == "1" || s == "t" || s == "T" || s == "TRUE" || s == "true" || s == "True") {
        out = true;
        return true;
    }
    if (s == "0" || s == "f" || s == "F" || s == "FALSE" || s == "false" || s == "False") {
        out = false;
        return true;
    }
    return false;
}

inline char lower(char c) { return static_cast<char>(c | ('x' - 'X')); }

// strconv's underscoreOK: underscores may only separate digits (or follow a
// base prefix).
inline bool underscore_ok(std::string_view s) {
    char saw = '^';
    std::size_t i = 0;
    if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
    bool hex = false;
    if (s.size() >= 2 && s[0] == '0' &&
        (lower(s[1]) == 'b' || lower(s[1]) == 'o' || lower(s[1]) == 'x')) {
        i = 2;
        saw = '0';
        hex = lower(s[1]) == 'x';
    }
    for (; i < s.size(); ++i) {
        char c = s[i];
        if ((c >= '0' && c <= '9') || (hex && lower(c) >= 'a' && lower(c) <= 'f')) {
            saw = '0';
            continue;
        }
        if (c == '_') {
            if (saw != '0') return false;
            saw = '_';
            continue;
        }
        if (saw == '_') return false;
        saw = '!';
    }
    return saw != '_';
}

enum class IntStatus { Ok, Syntax, Range };

// strconv.ParseUint(s, 0, 64).
inline IntStatus parse_uint64_base0(std::string_view s, std::uint64_t& out) {
    if (s.empty()) return IntStatus::Syntax;
    const std::string_view s0 = s;
    unsigned base = 10;
    if (s[0] == '0') {
        if (s.size() >= 3 && lower(s[1]) == 'b') {
            base = 2;
            s.remove_prefix(2);
        } else if (s.size() >= 3 && lower(s[1]) == 'o') {
            base = 8;
            s.remove_prefix(2);
        } else if (s.size() >= 3 && lower(s[1]) == 'x') {
            base = 16;
            s.remove_prefix(2);
        } else {
            base = 8;
            s.remove_prefix(1);
        }
    }
    const std::uint64_t cutoff = UINT64_MAX / base + 1;
    std::uint64_t n = 0;
    bool underscores = false;
    for (char c : s) {
        unsigned d;
        if (c == '_') {
            underscores = true;
            continue;
        } else if (c >= '0' && c <= '9') {
            d = static_cast<unsigned>(c - '0');
        } else if (lower(c) >= 'a' && lower(c) <= 'z') {
            d = static_cast<unsigned>(lower(c) - 'a') + 10;
        } else {
            return IntStatus::Syntax;
        }
        if (d >= base) return IntStatus::Syntax;
        if (n >= cutoff) return IntStatus::Range;
        n *= base;
        std::uint64_t n1 = n + d;
        if (n1 < n) return IntStatus::Range;
        n = n1;
    }
    if (underscores && !underscore_ok(s0)) return IntStatus::Syntax;
    out = n;
    return IntStatus::Ok;
}

// strconv.ParseInt(s, 0, 64).
inline IntStatus parse_int64_base0(std::string_view s, std::int64_t& out) {
    if (s.empty()) return IntStatus::Syntax;
    bool neg = false;
    if (s[0] == '+' || s[0] == '-') {
        neg = s[0] == '-';
        s.remove_prefix(1);
    }
    std::uint64_t un = 0;
    IntStatus st = parse_uint64_base0(s, un);
    if (st != IntStatus::Ok) return st;
    if (!neg && un >= kOneShl63) return IntStatus::Range;
    if (neg && un > kOneShl63) return IntStatus::Range;
    if (neg) {
        out = un == kOneShl63 ? INT64_MIN : -static_cast<std::int64_t>(un);
    } else {
        out = static_cast<std::int64_t>(un);
    }
    return IntStatus::Ok;
}

// time's leadingInt: consumes [0-9]*; false on overflow.
inline bool leading_int(std::string_view& s, std::uint64_t& x) {
    x = 0;
    std::size_t i = 0;
    for (; i < s.size(); ++i) {
        char c = s[i];
        if (c < '0' || c > '9') break;
        if (x > kOneShl63 / 10) return false;
        x = x * 10 + static_cast<std::uint64_t>(c - '0');
        if (x > kOneShl63) return false;
    }
    s.remove_prefix(i);
    return true;
}

// time's leadingFraction: consumes [0-9]*, silently dropping precision that
// does not fit.
inline void leading_fraction(std::string_view& s, std::uint64_t& x, double& scale) {
    x = 0;
    scale = 1;
    bool overflow = false;
    std::size_t i = 0;
    for (; i < s.size(); ++i) {
        char c = s[i];
        if (c < '0' || c > '9') break;
        if (overflow) continue;
        if (x > (kOneShl63 - 1) / 10) {
            overflow = true;
            continue;
        }
        std::uint64_t y = x * 10 + static_cast<std::uint64_t>(c - '0');
        if (y > kOneShl63) {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10;
    }
    s.remove_prefix(i);
}

inline bool unit_nanoseconds(std::string_view u, std::uint64_t& unit) {
    struct Unit {
        const char* name;
        std::uint64_t ns;
    };
    static const Unit units[] = {
        {"ns", 1},
        {"us", 1000},
        {"\xC2\xB5s", 1000},  // U+00B5 micro sign
        {"\xCE\xBCs", 1000},  // U+03BC Greek small letter mu
        {"ms", 1000000},
        {"s", 1000000000},
        {"m", 60ull * 1000000000},
        {"h", 3600ull * 1000000000},
    };
    for (const Unit& entry : units) {
        if (u == entry.name) {
            unit = entry.ns;
            return true;
        }
    }
    return false;
}

// fmtFrac: writes the fraction of v/10**prec (without trailing zeros, and
// without the point when the fraction is zero) in front of buf[w], returns
// the new start and v/10**prec.
inline std::uint64_t fmt_frac(char* buf, int& w, std::uint64_t v, int prec) {
    bool print = false;
    for (int i = 0; i < prec; ++i) {
        std::uint64_t digit = v % 10;
        print = print || digit != 0;
        if (print) buf[--w] = static_cast<char>('0' + digit);
        v /= 10;
    }
    if (print) buf[--w] = '.';
    return v;
}

inline void fmt_int(char* buf, int& w, std::uint64_t v) {
    if (v == 0) {
        buf[--w] = '0';
        return;
    }
    while (v > 0) {
        buf[--w] = static_cast<char>('0' + v % 10);
        v /= 10;
    }
}

inline std::string basename_of(const char* path) {
    if (path == nullptr) return std::string();
    std::string_view p(path);
    while (p.size() > 1 && p.back() == '/') p.remove_suffix(1);
    std::size_t slash = p.rfind('/');
    if (slash != std::string_view::npos && p.size() > 1) p.remove_prefix(slash + 1);
    return std::string(p);
}

enum class Kind { String, Duration, Bool, Int };

struct FlagSpec {
    const char* name;
    Kind kind;
    const char* help;
};

// Sorted by name (byte order, as Go's VisitAll sorts), which is the order the
// usage text lists them in.
inline const std::vector<FlagSpec>& flag_specs() {
    static const std::vector<FlagSpec> specs = [] {
        std::vector<FlagSpec> v = {
            {"f", Kind::String,
             "rules file (YAML: rules of from/to; also routes (SNI), accept_proxy,\n"
             "max_conns_per_client ...: see README.md or mixctl(8))"},
            {"t", Kind::Duration, "upstream dial timeout (with -probe: the whole probe's); 0 means no deadline"},
            {"v", Kind::Bool, "verbose: log every connection"},
            {"w", Kind::Int, "worker processes (default: number of online CPUs)"},
            {"check", Kind::Bool, "validate the config file, print \"configuration OK\" and exit"},
            {"version", Kind::Bool, "print the version and exit"},
            {"V", Kind::Bool, "print the version and exit (same as -version)"},
            {"grace", Kind::Duration,
             "on SIGTERM/SIGINT, time live connections get to finish"},
            {"syslog", Kind::Bool, "log to syslog(3) (facility daemon, ident mixctl) instead of stderr"},
            {"u", Kind::String, "after binding, run workers as USER[:GROUP] (the parent keeps its rights for reloads)"},
            {"probe", Kind::String,
             "send one request through the listener of RULE (a rule name or listen address in -f) and exit:\n"
             "0 when an upstream replies within -t, 1 otherwise, with one line why (for keepalived's vrrp_script)"},
            {"ctl", Kind::String,
             "send a command (show, disable, enable, weight) to the control socket of -f's file, print the answer and exit"},
        };
        std::sort(v.begin(), v.end(), [](const FlagSpec& a, const FlagSpec& b) {
            return std::string_view(a.name) < std::string_view(b.name);
        });
        return v;
    }();
    return specs;
}

inline const FlagSpec* find_flag(std::string_view name) {
    for (const FlagSpec& spec : flag_specs()) {
        if (name == spec.name) return &spec;
    }
    return nullptr;
}

}  // namespace detail

// time.ParseDuration.
inline bool parse_duration(std::string_view text, Duration& out, std::string& error) {
    using detail::kOneShl63;
    const std::string_view orig = text;
    std::string_view s = text;
    auto invalid = [&] {
        error = "time: invalid duration " + detail::time_quote(orig);
        return false;
    };
    bool neg = false;
    if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        s.remove_prefix(1);
    }
    if (s == "0") {
        out = Duration(0);
        return true;
    }
    if (s.empty()) return invalid();

    std::uint64_t d = 0;
    while (!s.empty()) {
        if (!(s[0] == '.' || (s[0] >= '0' && s[0] <= '9'))) return invalid();

        std::size_t before = s.size();
        std::uint64_t v = 0;
        if (!detail::leading_int(s, v)) return invalid();
        bool pre = before != s.size();

        std::uint64_t f = 0;
        double scale = 1;
        bool post = false;
        if (!s.empty() && s[0] == '.') {
            s.remove_prefix(1);
            std::size_t at = s.size();
            detail::leading_fraction(s, f, scale);
            post = at != s.size();
        }
        if (!pre && !post) return invalid();

        std::size_t i = 0;
        for (; i < s.size(); ++i) {
            char c = s[i];
            if (c == '.' || (c >= '0' && c <= '9')) break;
        }
        if (i == 0) {
            error = "time: missing unit in duration " + detail::time_quote(orig);
            return false;
        }
        std::string_view u = s.substr(0, i);
        s.remove_prefix(i);
        std::uint64_t unit = 0;
        if (!detail::unit_nanoseconds(u, unit)) {
            error = "time: unknown unit " + detail::time_quote(u) + " in duration " +
                    detail::time_quote(orig);
            return false;
        }
        if (v > kOneShl63 / unit) return invalid();
        v *= unit;
        if (f > 0) {
            v += static_cast<std::uint64_t>(static_cast<double>(f) *
                                            (static_cast<double>(unit) / scale));
            if (v > kOneShl63) return invalid();
        }
        // Go adds without checking for wrap-around (2^63 + 2^63 wraps to 0);
        // we reject that sum as the overflow it is.
        if (v > kOneShl63 - d) return invalid();
        d += v;
    }
    if (neg) {
        out = Duration(d == kOneShl63 ? INT64_MIN : -static_cast<std::int64_t>(d));
        return true;
    }
    if (d > kOneShl63 - 1) return invalid();
    out = Duration(static_cast<std::int64_t>(d));
    return true;
}

// time.Duration.String.
inline std::string format_duration(Duration duration) {
    char buf[32];
    int w = static_cast<int>(sizeof buf);
    const std::int64_t d = duration.count();
    const bool neg = d < 0;
    std::uint64_t u = static_cast<std::uint64_t>(d);
    if (neg) u = 0 - u;

    if (u < 1000000000ull) {
        // Below one second: ns, µs or ms with a fraction, e.g. "1.2ms".
        int prec = 0;
        buf[--w] = 's';
        --w;
        if (u == 0) {
            buf[w] = '0';
            return std::string(buf + w, sizeof buf - static_cast<std::size_t>(w));
        } else if (u < 1000ull) {
            prec = 0;
            buf[w] = 'n';
        } else if (u < 1000000ull) {
            prec = 3;
            // U+00B5 micro sign, two bytes.
            --w;
            buf[w] = '\xC2';
            buf[w + 1] = '\xB5';
        } else {
            prec = 6;
            buf[w] = 'm';
        }
        u = detail::fmt_frac(buf, w, u, prec);
        detail::fmt_int(buf, w, u);
    } else {
        buf[--w] = 's';
        u = detail::fmt_frac(buf, w, u, 9);
        detail::fmt_int(buf, w, u % 60);
        u /= 60;
        if (u > 0) {
            buf[--w] = 'm';
            detail::fmt_int(buf, w, u % 60);
            u /= 60;
            if (u > 0) {
                buf[--w] = 'h';
                detail::fmt_int(buf, w, u);
            }
        }
    }
    if (neg) buf[--w] = '-';
    return std::string(buf + w, sizeof buf - static_cast<std::size_t>(w));
}

struct Options {
    std::string file = "rules.yaml";                          // -f
    Duration dial_timeout = std::chrono::milliseconds(1500);  // -t
    bool verbose = true;                                      // -v
    int workers = 0;                    // -w; 0 = number of online CPUs (resolved by the caller)
    bool check = false;                 // -check
    bool version = false;               // -version and -V (both set this)
    Duration grace = std::chrono::seconds(10);  // -grace
    bool syslog = false;                // -syslog
    std::string user;                   // -u USER[:GROUP]; empty: stay who we are
    std::string probe;                  // -probe RULE; empty: run the daemon
    bool has_ctl = false;               // -ctl given
    std::string ctl;                    // -ctl COMMAND
    std::vector<std::string> args;      // positional arguments left after parsing stops
};

// Help: the caller prints usage() on stderr and exits 0 (message is empty).
// Error: the caller prints message, a newline and usage() on stderr, exits 2.
enum class Outcome { Run, Help, Error };

struct ParseResult {
    Outcome outcome = Outcome::Run;
    std::string message;  // e.g. "flag provided but not defined: -x"
};

constexpr int kMaxWorkers = 4096;

namespace detail {

inline ParseResult fail(std::string message) {
    ParseResult r;
    r.outcome = Outcome::Error;
    r.message = std::move(message);
    return r;
}

// flag.Value.Set for our flags; on failure `why` is what Go prints after
// "invalid value %q for flag -%s: ".
inline bool set_value(const FlagSpec& spec, std::string_view value, Options& options,
                      std::string& why) {
    const std::string_view name = spec.name;
    if (name == "f") {
        options.file = std::string(value);
        return true;
    }
    if (name == "u") {
        options.user = std::string(value);
        return true;
    }
    if (name == "probe") {
        if (value.empty()) {
            why = "want a rule name or a listen address";
            return false;
        }
        options.probe = std::string(value);
        return true;
    }
    if (name == "ctl") {
        options.ctl = std::string(value);
        options.has_ctl = true;
        return true;
    }
    if (name == "t" || name == "grace") {
        Duration d{};
        std::string ignored;
        if (!parse_duration(value, d, ignored)) {
            why = "parse error";
            return false;
        }
        if (d.count() < 0) {
            why = "must not be negative";
            return false;
        }
        (name == "t" ? options.dial_timeout : options.grace) = d;
        return true;
    }
    if (name == "w") {
        std::int64_t n = 0;
        switch (parse_int64_base0(value, n)) {
            case IntStatus::Syntax: why = "parse error"; return false;
            case IntStatus::Range: why = "value out of range"; return false;
            case IntStatus::Ok: break;
        }
        if (n < 1 || n > kMaxWorkers) {
            why = "must be between 1 and " + std::to_string(kMaxWorkers);
            return false;
        }
        options.workers = static_cast<int>(n);
        return true;
    }
    why = "parse error";
    return false;
}

inline void set_bool(std::string_view name, bool value, Options& options) {
    if (name == "v") {
        options.verbose = value;
    } else if (name == "check") {
        options.check = value;
    } else if (name == "syslog") {
        options.syslog = value;
    } else {  // "version", "V"
        options.version = value;
    }
}

// The default as Go's PrintDefaults shows it, or "" when it is the zero
// value (and so not shown).
inline std::string default_text(const FlagSpec& spec, const Options& defaults) {
    const std::string_view name = spec.name;
    if (name == "f") return defaults.file.empty() ? std::string() : go_quote(defaults.file);
    if (name == "u" || name == "probe" || name == "ctl") return std::string();
    if (name == "t" || name == "grace") {
        Duration d = name == "t" ? defaults.dial_timeout : defaults.grace;
        return d.count() == 0 ? std::string() : format_duration(d);
    }
    if (name == "w") return defaults.workers == 0 ? std::string() : std::to_string(defaults.workers);
    bool b = name == "v"        ? defaults.verbose
             : name == "check"  ? defaults.check
             : name == "syslog" ? defaults.syslog
                                : defaults.version;
    return b ? "true" : "";
}

}  // namespace detail

// FlagSet.Parse(argv[1:]) with ExitOnError semantics (the caller does the
// printing and exiting, as described at Outcome).
inline ParseResult parse(int argc, const char* const* argv, Options& options) {
    std::vector<std::string_view> rest;
    for (int i = 1; i < argc; ++i) rest.emplace_back(argv[i] != nullptr ? argv[i] : "");
    std::size_t next = 0;

    auto finish = [&](std::size_t from) {
        options.args.assign(rest.begin() + static_cast<std::ptrdiff_t>(from), rest.end());
        return ParseResult{};
    };

    while (next < rest.size()) {
        const std::string_view s = rest[next];
        if (s.size() < 2 || s[0] != '-') return finish(next);  // positional (incl. "-")
        std::size_t minuses = 1;
        if (s[1] == '-') {
            minuses = 2;
            if (s.size() == 2) return finish(next + 1);  // "--" ends the flags
        }
        std::string_view name = s.substr(minuses);
        if (name.empty() || name[0] == '-' || name[0] == '=') {
            return detail::fail("bad flag syntax: " + std::string(s));
        }
        ++next;

        bool has_value = false;
        std::string_view value;
        std::size_t eq = name.find('=', 1);
        if (eq != std::string_view::npos) {
            value = name.substr(eq + 1);
            name = name.substr(0, eq);
            has_value = true;
        }

        const detail::FlagSpec* spec = detail::find_flag(name);
        if (spec == nullptr) {
            if (name == "help" || name == "h") {
                ParseResult r;
                r.outcome = Outcome::Help;
                return r;
            }
            return detail::fail("flag provided but not defined: -" + std::string(name));
        }

        if (spec->kind == detail::Kind::Bool) {
            bool b = true;
            if (has_value && !detail::parse_bool(value, b)) {
                return detail::fail("invalid boolean value " + detail::go_quote(value) + " for -" +
                                    std::string(name) + ": parse error");
            }
            detail::set_bool(name, b, options);
            continue;
        }

        if (!has_value && next < rest.size()) {
            value = rest[next++];
            has_value = true;
        }
        if (!has_value) return detail::fail("flag needs an argument: -" + std::string(name));
        std::string why;
        if (!detail::set_value(*spec, value, options, why)) {
            return detail::fail("invalid value " + detail::go_quote(value) + " for flag -" +
                                std::string(name) + ": " + why);
        }
    }
    return finish(next);
}

// FlagSet.Usage as Go's default prints it: "Usage of NAME:" and then
// PrintDefaults (flags sorted by name; a one-letter bool flag's help on the
// same line after a tab, every other flag's on the next line after "    \t").
inline std::string usage(const char* program_name) {
    std::string name = detail::basename_of(program_name);
    if (name.empty()) name = "mixctl";
    std::string out = "Usage of " + name + ":\n";
    const Options defaults;
    for (const detail::FlagSpec& spec : detail::flag_specs()) {
        std::string line = "  -";
        line += spec.name;
        switch (spec.kind) {
            case detail::Kind::String: line += " string"; break;
            case detail::Kind::Duration: line += " duration"; break;
            case detail::Kind::Int: line += " int"; break;
            case detail::Kind::Bool: break;
        }
        line += line.size() <= 4 ? "\t" : "\n    \t";
        for (const char* p = spec.help; *p != '\0'; ++p) {
            if (*p == '\n') {
                line += "\n    \t";
            } else {
                line += *p;
            }
        }
        std::string def = detail::default_text(spec, defaults);
        if (!def.empty()) line += " (default " + def + ")";
        out += line;
        out += '\n';
    }
    return out;
}

}  // namespace flags
