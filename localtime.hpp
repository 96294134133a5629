// localtime.hpp - local time as glibc's localtime_r(3) gives it, without glibc's time-zone code.
// Owns TZ, TZif files and POSIX TZ rules; nothing else (log.hpp formats the time it gives).
//
// Why long: TZif files and POSIX TZ rules are one job, written to match glibc 2.36 case by case
// (tests/localtime_test.cpp compares them); glibc's own code would add ~127 kB to the static binary.
//
// A TimeZone reads TZ when it is made (the Logger makes one at start, as
// glibc reads it at the first localtime_r), the way glibc 2.36 reads it:
//   - TZ unset: the TZif file /etc/localtime; no such file: UTC;
//   - TZ set and empty: the file "Universal" (UTC);
//   - TZ=[:]NAME: first the TZif file NAME (absolute) or $TZDIR/NAME
//     (TZDIR defaults to /usr/share/zoneinfo), else NAME as a POSIX TZ
//     rule string ("UTC0", "CET-1CEST,M3.5.0,M10.5.0/3", "<+03>-3");
//     a string that does not parse gives UTC under the name that parsed,
//     as glibc's partial parse does.
// TZif files (RFC 8536, versions 1 to 4): the 64-bit block when the
// version is 2 or later, its footer rule string past the last transition,
// the first standard-time type before the first one, leap seconds (the
// "right/" zones) applied.
//
// Where it differs from glibc 2.36: a DST rule string without change dates
// ("CET-1CEST", when no zone file has that name) gets the US dates
// M3.2.0,M11.1.0 at 02:00 local time, as glibc does when there is no
// zoneinfo file "posixrules"; with one, glibc moves that file's changes by
// the wrong amount (CET's at 13:00 UTC) and shows its own zone after its
// last change. And past year ~5,881,000, where glibc's rule arithmetic
// overflows an int, the DST rules are still applied as written.
//
// No iostreams, no exceptions, no stdio: for the static build.
#pragma once

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace mixtime {

namespace detail {

inline bool leap_year(int64_t year) { return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0); }

// Days before each month, in a common and in a leap year (13 entries: the
// last is the length of the year).
inline const int* days_before(bool leap) {
    static const int common[13] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365};
    static const int leapy[13] = {0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335, 366};
    return leap ? leapy : common;
}

// `t` + `offset` seconds as a calendar date and time (tm_isdst, tm_gmtoff
// and tm_zone untouched). False when the year does not fit tm_year.
inline bool breakdown(int64_t t, int64_t offset, struct tm& tm) {
    int64_t s;
    if (__builtin_add_overflow(t, offset, &s)) return false;
    int64_t days = s / 86400;
    int64_t rem = s % 86400;
    if (rem < 0) {
        rem += 86400;
        --days;
    }
    // Shift the epoch to 0000-03-01, so that a leap day ends its year, and
    // count in 400-year cycles of 146,097 days.
    int64_t from_march = days + 719468;
    int64_t cycle = (from_march >= 0 ? from_march : from_march - 146096) / 146097;
    int64_t day_of_cycle = from_march - cycle * 146097;                   // 0..146096
    int64_t year_of_cycle = (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36524 -
                             day_of_cycle / 146096) / 365;                // 0..399
    int64_t day_of_year = day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
    int64_t month_from_march = (5 * day_of_year + 2) / 153;               // 0 = March
    int64_t mday = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    int64_t month = month_from_march < 10 ? month_from_march + 2 : month_from_march - 10;  // 0 = January
    int64_t year = cycle * 400 + year_of_cycle + (month < 2 ? 1 : 0);
    if (year - 1900 < INT_MIN || year - 1900 > INT_MAX) return false;
    int64_t weekday = (days + 4) % 7;  // 1970-01-01 was a Thursday
    if (weekday < 0) weekday += 7;
    tm.tm_sec = static_cast<int>(rem % 60);
    tm.tm_min = static_cast<int>(rem / 60 % 60);
    tm.tm_hour = static_cast<int>(rem / 3600);
    tm.tm_mday = static_cast<int>(mday);
    tm.tm_mon = static_cast<int>(month);
    tm.tm_year = static_cast<int>(year - 1900);
    tm.tm_wday = static_cast<int>(weekday);
    tm.tm_yday = days_before(leap_year(year))[month] + static_cast<int>(mday) - 1;
    return true;
}

// One half of a POSIX TZ rule string: a zone name, its offset (seconds east
// of UTC) and the rule for the change into it... as glibc keeps them:
// rule[0] is standard time with the change to DST, rule[1] DST with the
// change back.
struct Rule {
    enum Kind { J0, J1, M };  // n (0-365), Jn (1-365, no Feb 29), Mm.n.d
    std::string name;
    int64_t offset = 0;
    Kind kind = J0;
    int m = 0, n = 0, d = 0;
    int64_t secs = 0;  // time of day of the change, local time
};

struct Rules {
    Rule rule[2];
};

inline bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Decimal digits, at least one; the value as an unsigned short would hold it.
inline bool number(const char*& p, unsigned& out) {
    if (!is_digit(*p)) return false;
    unsigned long value = 0;
    while (is_digit(*p)) value = (value * 10 + static_cast<unsigned long>(*p++ - '0')) & 0xFFFFFFFFUL;
    out = static_cast<unsigned>(value & 0xFFFF);
    return true;
}

// hh[:mm[:ss]] from `p`: how many of the three were read (0 when none).
inline int clock_fields(const char*& p, unsigned& hh, unsigned& mm, unsigned& ss) {
    const char* q = p;
    if (!number(q, hh)) return 0;
    p = q;
    if (*q != ':') return 1;
    ++q;
    if (!number(q, mm)) return 1;
    p = q;
    if (*q != ':') return 2;
    ++q;
    if (!number(q, ss)) return 2;
    p = q;
    return 3;
}

// A name: three or more letters, or <three or more of [A-Za-z0-9+-]>.
inline bool parse_name(const char*& tz, Rule& rule) {
    const char* p = tz;
    while (is_alpha(*p)) ++p;
    const char* start = tz;
    size_t length = static_cast<size_t>(p - tz);
    if (length < 3) {
        p = tz;
        if (*p++ != '<') return false;
        start = p;
        while (is_alpha(*p) || is_digit(*p) || *p == '+' || *p == '-') ++p;
        length = static_cast<size_t>(p - start);
        if (*p++ != '>' || length < 3) return false;
    }
    rule.name.assign(start, length);
    tz = p;
    return true;
}

// [+-]hh[:mm[:ss]], west of UTC positive; hours beyond 24 and minutes or
// seconds beyond 59 are clamped (as glibc does). Standard time's offset is
// required; DST's defaults to one hour ahead of standard time.
inline bool parse_offset(const char*& tz, Rules& rules, int which) {
    const char* p = tz;
    if (which == 0 && *p != '+' && *p != '-' && !is_digit(*p)) return false;
    int64_t sign = -1;
    if (*p == '+' || *p == '-') sign = *p++ == '-' ? 1 : -1;
    tz = p;
    unsigned hh = 0, mm = 0, ss = 0;
    if (clock_fields(p, hh, mm, ss) > 0) {
        rules.rule[which].offset =
            sign * ((hh > 24 ? 24 : hh) * 3600 + (mm > 59 ? 59 : mm) * 60 + (ss > 59 ? 59 : ss));
    } else if (which == 0) {
        rules.rule[0].offset = 0;
        return false;
    } else {
        rules.rule[1].offset = rules.rule[0].offset + 3600;
    }
    tz = p;
    return true;
}

// ,date[/time]: Jn, n or Mm.n.d; time [+-]hh[:mm[:ss]], 02:00:00 by
// default. An empty rule is the US one: M3.2.0 to DST, M11.1.0 back.
inline bool parse_rule(const char*& tz, Rule& rule, int which) {
    const char* p = tz;
    if (*p == ',') ++p;
    if (*p == 'J' || is_digit(*p)) {
        rule.kind = *p == 'J' ? Rule::J1 : Rule::J0;
        if (rule.kind == Rule::J1 && !is_digit(*++p)) return false;
        unsigned day = 0;
        number(p, day);
        if (day > 365 || (rule.kind == Rule::J1 && day == 0)) return false;
        rule.d = static_cast<int>(day);
    } else if (*p == 'M') {
        rule.kind = Rule::M;
        ++p;
        unsigned m = 0, n = 0, d = 0;
        if (!number(p, m) || *p++ != '.' || !number(p, n) || *p++ != '.' || !number(p, d)) return false;
        rule.m = static_cast<int>(m);
        rule.n = static_cast<int>(n);
        rule.d = static_cast<int>(d);
        if (m < 1 || m > 12 || n < 1 || n > 5 || d > 6) return false;
    } else if (*p == '\0') {
        rule.kind = Rule::M;
        rule.m = which == 0 ? 3 : 11;
        rule.n = which == 0 ? 2 : 1;
        rule.d = 0;
    } else {
        return false;
    }
    if (*p != '\0' && *p != '/' && *p != ',') return false;
    if (*p == '/') {
        ++p;
        if (*p == '\0') return false;
        bool negative = *p == '-';
        if (negative) ++p;
        unsigned hh = 2, mm = 0, ss = 0;
        clock_fields(p, hh, mm, ss);
        rule.secs = (negative ? -1 : 1) * static_cast<int64_t>(hh * 3600 + mm * 60 + ss);
    } else {
        rule.secs = 2 * 3600;
    }
    tz = p;
    return true;
}

// A POSIX TZ rule string: std offset [dst [offset] [,rule,rule]]. What
// does not parse is left as glibc leaves it (a name that did parse is kept).
inline Rules parse_rules(const char* tz) {
    Rules rules;
    if (parse_name(tz, rules.rule[0]) && parse_offset(tz, rules, 0)) {
        if (*tz != '\0') {
            if (parse_name(tz, rules.rule[1])) parse_offset(tz, rules, 1);
            if (parse_rule(tz, rules.rule[0], 0)) parse_rule(tz, rules.rule[1], 1);
        } else {
            rules.rule[1].name = rules.rule[0].name;
            rules.rule[1].offset = rules.rule[0].offset;
        }
    }
    return rules;
}

// When `rule` changes zones in `year` (UTC seconds). As glibc, a year
// before 1971 counts its days from 1970-01-01.
inline int64_t change_time(const Rule& rule, int64_t year) {
    int64_t t = 0;
    if (year > 1970) {
        t = ((year - 1970) * 365 + ((year - 1) / 4 - 1970 / 4) - ((year - 1) / 100 - 1970 / 100) +
             ((year - 1) / 400 - 1970 / 400)) * 86400;
    }
    bool leap = leap_year(year);
    switch (rule.kind) {
    case Rule::J1:
        t += (rule.d - 1) * 86400;
        if (rule.d >= 60 && leap) t += 86400;
        break;
    case Rule::J0:
        t += static_cast<int64_t>(rule.d) * 86400;
        break;
    case Rule::M: {
        const int* before = days_before(leap);
        t += static_cast<int64_t>(before[rule.m - 1]) * 86400;
        // The weekday of the month's first day (Zeller's congruence).
        int64_t m1 = (rule.m + 9) % 12 + 1;
        int64_t y = rule.m <= 2 ? year - 1 : year;
        int64_t century = y / 100, in_century = y % 100;
        int64_t first = ((26 * m1 - 2) / 10 + 1 + in_century + in_century / 4 + century / 4 - 2 * century) % 7;
        if (first < 0) first += 7;
        int64_t day = rule.d - first;  // first such weekday of the month, 0-based
        if (day < 0) day += 7;
        int length = before[rule.m] - before[rule.m - 1];
        for (int i = 1; i < rule.n; ++i) {
            if (day + 7 >= length) break;
            day += 7;
        }
        t += day * 86400;
        break;
    }
    }
    return t - rule.offset + rule.secs;
}

// Whether `t` (in UTC year `year`) is in DST under `rules`.
inline int rules_dst(const Rules& rules, int64_t t, int64_t year) {
    int64_t to_dst = change_time(rules.rule[0], year);
    int64_t to_std = change_time(rules.rule[1], year);
    if (to_dst > to_std) return t < to_std || t >= to_dst;  // southern hemisphere
    return t >= to_dst && t < to_std;
}

struct Type {
    int64_t offset;
    int isdst;
    size_t name;  // index into Zone::names
};

struct Leap {
    int64_t when;
    int64_t correction;
};

// What localtime needs of a zone: a TZif file's transitions, or rules.
struct Zone {
    bool from_file = false;
    std::vector<int64_t> transitions;
    std::vector<uint8_t> transition_types;
    std::vector<Type> types;
    std::string names;  // NUL-separated designations
    std::vector<Leap> leaps;
    bool has_footer = false;
    Rules rules;  // the footer's, or TZ's when not from a file
};

inline int64_t be(const unsigned char* p, int width) {
    uint64_t v = 0;
    for (int i = 0; i < width; ++i) v = v << 8 | p[i];
    if (width == 4) return static_cast<int32_t>(static_cast<uint32_t>(v));
    return static_cast<int64_t>(v);
}

inline bool read_all(const char* path, std::string& out) {
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            ::close(fd);
            return false;
        }
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > (1u << 22)) {  // no zone file is this large
            ::close(fd);
            return false;
        }
    }
    ::close(fd);
    return true;
}

// A TZif file (RFC 8536) into `zone`; false when it is missing or malformed.
inline bool parse_tzif(const std::string& data, Zone& zone) {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(data.data());
    size_t size = data.size(), at = 0;
    int width = 4;
    for (int block = 0;; ++block) {
        if (size - at < 44 || std::memcmp(p + at, "TZif", 4) != 0) return false;
        unsigned char version = p[at + 4];
        uint64_t counts[6];
        for (int i = 0; i < 6; ++i) counts[i] = static_cast<uint32_t>(be(p + at + 20 + 4 * i, 4));
        uint64_t isut = counts[0], isstd = counts[1], leapcnt = counts[2], timecnt = counts[3],
                 typecnt = counts[4], charcnt = counts[5];
        at += 44;
        uint64_t body = timecnt * (width + 1) + typecnt * 6 + charcnt + leapcnt * (width + 4) + isstd + isut;
        if (body > size - at) return false;
        if (block == 0 && version >= '2') {  // skip the 32-bit block
            at += body;
            width = 8;
            continue;
        }
        if (typecnt == 0) return false;
        zone.transitions.resize(timecnt);
        zone.transition_types.resize(timecnt);
        for (uint64_t i = 0; i < timecnt; ++i) zone.transitions[i] = be(p + at + i * width, width);
        at += timecnt * width;
        for (uint64_t i = 0; i < timecnt; ++i) {
            zone.transition_types[i] = p[at + i];
            if (p[at + i] >= typecnt) return false;
        }
        at += timecnt;
        zone.types.resize(typecnt);
        for (uint64_t i = 0; i < typecnt; ++i) {
            const unsigned char* t = p + at + i * 6;
            zone.types[i] = Type{be(t, 4), t[4], t[5]};
            if (t[4] > 1 || t[5] >= charcnt) return false;
        }
        at += typecnt * 6;
        zone.names.assign(reinterpret_cast<const char*>(p + at), charcnt);
        zone.names.push_back('\0');
        at += charcnt;
        zone.leaps.resize(leapcnt);
        for (uint64_t i = 0; i < leapcnt; ++i) {
            const unsigned char* l = p + at + i * (width + 4);
            zone.leaps[i] = Leap{be(l, width), be(l + width, 4)};
        }
        at += leapcnt * (width + 4) + isstd + isut;
        if (width == 8 && at < size && p[at] == '\n') {  // footer: \n TZ string \n
            size_t end = data.find('\n', at + 1);
            if (end != std::string::npos && end > at + 1) {
                std::string spec = data.substr(at + 1, end - at - 1);
                zone.rules = parse_rules(spec.c_str());
                zone.has_footer = true;
            }
        }
        zone.from_file = true;
        return true;
    }
}

inline bool load_file(const char* name, Zone& zone) {
    if (*name == '\0') name = "Universal";
    std::string path;
    if (name[0] != '/') {
        const char* dir = std::getenv("TZDIR");
        path = dir != nullptr && *dir != '\0' ? dir : "/usr/share/zoneinfo";
        path += '/';
    }
    path += name;
    std::string data;
    return read_all(path.c_str(), data) && parse_tzif(data, zone);
}

inline Zone load_zone() {
    Zone zone;
    const char* tz = std::getenv("TZ");
    if (tz != nullptr && *tz == '\0') tz = "Universal";
    if (tz != nullptr && *tz == ':') ++tz;
    if (tz == nullptr) tz = "/etc/localtime";
    if (load_file(tz, zone)) return zone;
    zone = Zone();
    if (*tz == '\0' || std::strcmp(tz, "/etc/localtime") == 0) {
        zone.rules.rule[0].name = zone.rules.rule[1].name = "UTC";
    } else {
        zone.rules = parse_rules(tz);
    }
    return zone;
}

// glibc's choice of type for `t` in a TZif zone, or -1 for the footer's rules.
inline int file_type(const Zone& zone, int64_t t) {
    const std::vector<int64_t>& at = zone.transitions;
    if (at.empty() || t < at.front()) {
        for (size_t i = 0; i < zone.types.size(); ++i)
            if (!zone.types[i].isdst) return static_cast<int>(i);
        return 0;
    }
    if (t >= at.back()) return zone.has_footer ? -1 : zone.transition_types.back();
    size_t lo = 0, hi = at.size() - 1;  // at[lo] <= t < at[hi]
    while (lo + 1 < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t < at[mid]) hi = mid;
        else lo = mid;
    }
    return zone.transition_types[lo];
}

}  // namespace detail

// A time zone, as localtime_r(3) would use it.
class TimeZone {
public:
    // The zone TZ names now (see the top of this file).
    static TimeZone from_environment() {
        TimeZone zone;
        zone.zone_ = detail::load_zone();
        return zone;
    }

    // `when` in this zone, as localtime_r(&when, &out). False (out undefined)
    // when the year does not fit tm_year. out.tm_zone points into this zone.
    bool local(time_t when, struct tm& out) const {
        const detail::Zone& zone = zone_;
        int64_t t = when;
        int64_t correction = 0;
        int hit = 0;
        if (zone.from_file) {
            int type = detail::file_type(zone, t);
            if (type < 0 && !detail::breakdown(t, 0, out)) type = zone.transition_types.back();
            if (type >= 0) {
                const detail::Type& info = zone.types[static_cast<size_t>(type)];
                out.tm_isdst = info.isdst;
                out.tm_gmtoff = static_cast<long>(info.offset);
                out.tm_zone = zone.names.c_str() + info.name;
            } else {
                int dst = detail::rules_dst(zone.rules, t, out.tm_year + int64_t{1900});
                out.tm_isdst = dst;
                out.tm_gmtoff = static_cast<long>(zone.rules.rule[dst].offset);
                out.tm_zone = zone.rules.rule[dst].name.c_str();
            }
            // The last leap second at or before t, and whether t is one.
            for (size_t i = zone.leaps.size(); i-- > 0;) {
                if (t < zone.leaps[i].when) continue;
                correction = zone.leaps[i].correction;
                if (t == zone.leaps[i].when && correction > (i == 0 ? 0 : zone.leaps[i - 1].correction)) {
                    hit = 1;
                    while (i > 0 && zone.leaps[i].when == zone.leaps[i - 1].when + 1 &&
                           zone.leaps[i].correction == zone.leaps[i - 1].correction + 1) {
                        ++hit;
                        --i;
                    }
                }
                break;
            }
        } else {
            if (!detail::breakdown(t, 0, out)) return false;
            int dst = detail::rules_dst(zone.rules, t, out.tm_year + int64_t{1900});
            out.tm_isdst = dst;
            out.tm_gmtoff = static_cast<long>(zone.rules.rule[dst].offset);
            out.tm_zone = zone.rules.rule[dst].name.c_str();
        }
        if (!detail::breakdown(t, out.tm_gmtoff - correction, out)) return false;
        out.tm_sec += hit;
        return true;
}

private:
    detail::Zone zone_;
};

}  // namespace mixtime
