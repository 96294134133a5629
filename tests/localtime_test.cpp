// localtime.hpp against glibc's localtime_r (which this test binary may
// use: only the static mixctl must do without it), and syslog_client.hpp
// against a syslog socket of the test's own.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "localtime.hpp"
#include "syslog_client.hpp"

namespace {

// The zone under test, made again whenever a test changes TZ (as the
// daemon's Logger makes one at start).
mixtime::TimeZone& zone() {
    static mixtime::TimeZone current = mixtime::TimeZone::from_environment();
    return current;
}
void reload_zone() { zone() = mixtime::TimeZone::from_environment(); }

// Sets TZ (nullptr: unsets it) for glibc and for mixtime; restores the
// test binary's own TZ when it goes.
class ZoneScope {
public:
    explicit ZoneScope(const char* tz) {
        const char* old = std::getenv("TZ");
        had_ = old != nullptr;
        if (had_) old_ = old;
        set(tz);
    }
    ~ZoneScope() { set(had_ ? old_.c_str() : nullptr); }

private:
    static void set(const char* tz) {
        if (tz != nullptr) setenv("TZ", tz, 1);
        else unsetenv("TZ");
        tzset();
        reload_zone();
    }
    bool had_ = false;
    std::string old_;
};

std::string describe(const struct tm& tm) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%lld-%02d-%02d %02d:%02d:%02d wday=%d yday=%d isdst=%d gmtoff=%ld zone=%s",
                  static_cast<long long>(tm.tm_year) + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_wday,
                  tm.tm_yday, tm.tm_isdst, tm.tm_gmtoff, tm.tm_zone ? tm.tm_zone : "(null)");
    return buf;
}

// "" when zone().local and localtime_r agree on `t`, else both.
std::string differ(time_t t) {
    struct tm want, got;
    std::memset(&want, 0, sizeof want);
    std::memset(&got, 0, sizeof got);
    bool glibc = localtime_r(&t, &want) != nullptr;
    bool ours = zone().local(t, got);
    if (!glibc && !ours) return "";
    std::string a = glibc ? describe(want) : "fails";
    std::string b = ours ? describe(got) : "fails";
    if (a == b) return "";
    return "t=" + std::to_string(static_cast<long long>(t)) + ": glibc " + a + ", mixtime " + b;
}

long glibc_offset(time_t t) {
    struct tm tm;
    return localtime_r(&t, &tm) ? tm.tm_gmtoff * 2 + tm.tm_isdst : LONG_MIN;
}

// The instants compared: every hour of 2024-2026, each second around each
// change of offset found in 1900-2100 (and the minute before and after),
// a day every ~97 days from year 1000 to 3000, and far ends (years
// -5,000,000 to 5,000,000, and beyond tm_year's range).
std::vector<time_t> instants() {
    std::vector<time_t> out;
    const int64_t y2024 = 1704067200, y2027 = 1798761600;
    for (int64_t t = y2024 - 86400; t <= y2027 + 86400; t += 3600) out.push_back(static_cast<time_t>(t));
    const int64_t y1900 = -2208988800LL, y2100 = 4102444800LL;
    int64_t lo = sizeof(time_t) < 8 ? INT32_MIN : y1900;
    int64_t hi = sizeof(time_t) < 8 ? INT32_MAX - 3 * 3600 : y2100;
    const int64_t step = 3 * 3600;
    long previous = glibc_offset(static_cast<time_t>(lo));
    for (int64_t t = lo; t < hi; t += step) {
        long next = glibc_offset(static_cast<time_t>(t + step));
        bool changed = next != previous;
        previous = next;
        if (!changed) continue;
        int64_t a = t, b = t + step;  // the change is in (a, b]
        while (b - a > 1) {
            int64_t mid = a + (b - a) / 2;
            if (glibc_offset(static_cast<time_t>(mid)) == glibc_offset(static_cast<time_t>(a))) a = mid;
            else b = mid;
        }
        for (int64_t d : {-61, -60, -2, -1, 0, 1, 2, 59, 60})
            out.push_back(static_cast<time_t>(b + d));
    }
    if (sizeof(time_t) >= 8) {
        for (int64_t t = -30610224000LL; t < 32503680000LL; t += 97 * 86400 + 3607)  // 1000 to 3000
            out.push_back(static_cast<time_t>(t));
        // Up to year 5,000,000 both ways: beyond ~5,881,000 glibc's rule
        // arithmetic overflows an int (it computes DST changes in garbage).
        // Past the years tm_year holds, both fail.
        static const int64_t ends[] = {-1000000000000000LL, -157766400000000LL, -62135596800LL, -1LL, 0LL, 1LL,
                                       2147483647LL, 2147483648LL, 253402300799LL, 157766400000000LL,
                                       67768036191676800LL, INT64_MAX - 86400, INT64_MAX, INT64_MIN,
                                       INT64_MIN + 1, -67768040609740801LL};
        for (int64_t t : ends) out.push_back(static_cast<time_t>(t));
    } else {
        for (int64_t t : {int64_t{INT32_MIN}, int64_t{-1}, int64_t{0}, int64_t{INT32_MAX}})
            out.push_back(static_cast<time_t>(t));
    }
    return out;
}

// The first disagreement under TZ=`tz` ("" when none), and how many.
std::string compare_under(const char* tz) {
    ZoneScope scope(tz);
    std::string first;
    size_t count = 0;
    for (time_t t : instants()) {
        std::string d = differ(t);
        if (d.empty()) continue;
        if (first.empty()) first = d;
        ++count;
    }
    return count ? std::to_string(count) + " differ, first " + first : "";
}

bool exists(const char* path) { return access(path, R_OK) == 0; }

}  // namespace

TEST_CASE("local time without TZ (/etc/localtime or UTC) is glibc's", "[localtime]") {
    CHECK(compare_under(nullptr) == "");
}

TEST_CASE("local time under zoneinfo names is glibc's, DST edges included", "[localtime]") {
    REQUIRE(exists("/usr/share/zoneinfo/Europe/Berlin"));  // Debian: package tzdata
    for (const char* tz : {"UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
                           ":Europe/Berlin", "/usr/share/zoneinfo/America/New_York", "Europe/Dublin",
                           "Antarctica/Troll", "Pacific/Apia", "America/Sao_Paulo", "Africa/Casablanca",
                           "America/Nuuk", "Australia/Sydney", "EST5EDT", "Universal", "", ":"}) {
        INFO("TZ=" << tz);
        CHECK(compare_under(tz) == "");
    }
}

TEST_CASE("local time under POSIX TZ rule strings is glibc's", "[localtime]") {
    for (const char* tz : {"UTC0", "CET-1CEST,M3.5.0,M10.5.0/3", "EST5EDT,M3.2.0,M11.1.0", "<+03>-3",
                           "NZST-12NZDT,M9.5.0,M4.1.0/3", "<-03>3<-02>,M3.5.0/-2,M10.5.0/-1",
                           "EST5EDT4,0/0,J365/25", "AAA3BBB,J60/1:30,J300/25:30", "XXX-5:30YYY-6:45:10,10,300",
                           "IST-5:30", "<+0545>-5:45", "ABC+25DEF-25:70:70,M2.5.6/167,M12.1.1/-167",
                           "STD-1DST,M3.5.0,M10.5.0/3 trailing", "UTC+0"}) {
        INFO("TZ=" << tz);
        CHECK(compare_under(tz) == "");
    }
}

TEST_CASE("local time under a TZ that is no file and no rule is glibc's (UTC, under the name that parsed)",
          "[localtime]") {
    for (const char* tz : {"garbage!!", "Nowhere/Nothing", "!!", "ab", "Europe", "<AB>1", "FOO+", "ABC1 DEF"}) {
        INFO("TZ=" << tz);
        CHECK(compare_under(tz) == "");
    }
}

TEST_CASE("local time from a leap-second zone (right/) is glibc's", "[localtime]") {
    if (!exists("/usr/share/zoneinfo/right/Europe/Berlin")) {
        WARN("no /usr/share/zoneinfo/right: not compared");
        return;
    }
    CHECK(compare_under("right/Europe/Berlin") == "");
    CHECK(compare_under("right/UTC") == "");
}

TEST_CASE("local time from a version 1 TZif file (32-bit times, no footer) is glibc's", "[localtime]") {
    int fd = open("/usr/share/zoneinfo/Europe/Berlin", O_RDONLY);
    REQUIRE(fd >= 0);
    std::string data;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) data.append(buf, static_cast<size_t>(n));
    close(fd);
    REQUIRE(data.size() > 44);
    // Keep only the first (32-bit) block and call it version 1.
    auto count = [&](int i) {
        const unsigned char* p = reinterpret_cast<const unsigned char*>(data.data()) + 20 + 4 * i;
        return static_cast<size_t>(p[0]) << 24 | static_cast<size_t>(p[1]) << 16 | static_cast<size_t>(p[2]) << 8 | p[3];
    };
    size_t body = count(3) * 5 + count(4) * 6 + count(5) + count(2) * 8 + count(1) + count(0);
    data.resize(44 + body);
    data[4] = '\0';
    char path[] = "/tmp/mixctl-tzif1.XXXXXX";
    int out = mkstemp(path);
    REQUIRE(out >= 0);
    REQUIRE(write(out, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    close(out);
    CHECK(compare_under(path) == "");
    unlink(path);
}

TEST_CASE("a zone keeps what TZ said when it was made: a TZ change shows in the next one", "[localtime]") {
    ZoneScope scope("UTC0");
    struct tm tm;
    REQUIRE(zone().local(1700000000, tm));
    CHECK(tm.tm_hour == 22);
    setenv("TZ", "<+03>-3", 1);
    REQUIRE(zone().local(1700000000, tm));
    CHECK(tm.tm_hour == 22);
    reload_zone();
    REQUIRE(zone().local(1700000000, tm));
    CHECK(tm.tm_hour == 1);
    CHECK(std::string(tm.tm_zone) == "+03");
}

// ---- syslog_client.hpp ----------------------------------------------------------

namespace {

// A syslog socket of the test's own, in a fresh temporary folder.
class LogSocket {
public:
    explicit LogSocket(int type = SOCK_DGRAM) {
        char dir[] = "/tmp/mixctl-syslog.XXXXXX";
        REQUIRE(mkdtemp(dir) != nullptr);
        dir_ = dir;
        path_ = dir_ + "/log";
        open_socket(type);
    }
    ~LogSocket() {
        close_socket();
        rmdir(dir_.c_str());
    }
    void open_socket(int type) {
        fd_ = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
        REQUIRE(fd_ >= 0);
        struct sockaddr_un addr;
        std::memset(&addr, 0, sizeof addr);
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
        REQUIRE(bind(fd_, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) == 0);
        if (type == SOCK_STREAM) REQUIRE(listen(fd_, 4) == 0);
    }
    void close_socket() {
        if (conn_ >= 0) close(conn_);
        if (fd_ >= 0) close(fd_);
        conn_ = fd_ = -1;
        unlink(path_.c_str());
    }
    const char* path() const { return path_.c_str(); }

    // The next datagram, or "" after 2 s.
    std::string receive() {
        struct pollfd p = {fd_, POLLIN, 0};
        if (poll(&p, 1, 2000) != 1) return "";
        char buf[2048];
        ssize_t n = recv(fd_, buf, sizeof buf, 0);
        return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    }
    // `want` bytes from the first stream connection (fewer after 2 s).
    std::string receive_stream(size_t want) {
        if (conn_ < 0) {
            struct pollfd p = {fd_, POLLIN, 0};
            if (poll(&p, 1, 2000) != 1) return "";
            conn_ = accept(fd_, nullptr, nullptr);
        }
        std::string out;
        while (out.size() < want) {
            struct pollfd p = {conn_, POLLIN, 0};
            if (poll(&p, 1, 2000) != 1) break;
            char buf[2048];
            ssize_t n = recv(conn_, buf, std::min(sizeof buf, want - out.size()), 0);
            if (n <= 0) break;
            out.append(buf, static_cast<size_t>(n));
        }
        return out;
    }

private:
    std::string dir_, path_;
    int fd_ = -1, conn_ = -1;
};

// What glibc's syslog(3) sends after openlog("mixctl", LOG_PID, LOG_DAEMON),
// at `now`, its timestamp from glibc's localtime_r and strftime.
std::string glibc_message(int pri, time_t now, long pid, const char* message) {
    struct tm tm;
    localtime_r(&now, &tm);
    char stamp[64];
    strftime(stamp, sizeof stamp, "%h %e %T ", &tm);
    return "<" + std::to_string(pri) + ">" + stamp + "mixctl[" + std::to_string(pid) + "]: " + message;
}

// True when `got` is glibc's message at one of the seconds in [from, to].
bool glibc_sent(const std::string& got, int pri, time_t from, time_t to, long pid, const char* message) {
    for (time_t t = from; t <= to; ++t)
        if (got == glibc_message(pri, t, pid, message)) return true;
    return false;
}

}  // namespace

TEST_CASE("syslog messages are glibc's: <PRI>Mmm dd hh:mm:ss mixctl[PID]: line, local time", "[syslog]") {
    for (const char* tz : {"Europe/Berlin", "UTC0", "<+0545>-5:45"}) {
        ZoneScope scope(tz);
        char buf[256];
        mixlog::SyslogClient client(zone(), "mixctl", LOG_DAEMON, "/nonexistent");
        // 2026-03-05 07:08:09 UTC: a one-digit day is space-padded
        for (time_t t : {time_t{1772694489}, time_t{1798761599}, time(nullptr)}) {
            size_t n = client.format(buf, sizeof buf, LOG_INFO, "Forwarding (a) from: x", t, 42);
            CHECK(std::string(buf, n) == glibc_message(30, t, 42, "Forwarding (a) from: x"));
        }
        size_t n = client.format(buf, sizeof buf, LOG_ERR, "error: x", 1772694489, 7);
        CHECK(std::string(buf, n) == glibc_message(27, 1772694489, 7, "error: x"));
        n = client.format(buf, sizeof buf, LOG_LOCAL0 | LOG_WARNING, "w", 1772694489, 7);
        CHECK(std::string(buf, n) == glibc_message(LOG_LOCAL0 | LOG_WARNING, 1772694489, 7, "w"));
    }
    ZoneScope scope("UTC0");
    char buf[256];
    mixlog::SyslogClient client(zone(), "mixctl", LOG_DAEMON, "/nonexistent");
    size_t n = client.format(buf, sizeof buf, LOG_INFO, "x", 1772694489, 42);
    CHECK(std::string(buf, n) == "<30>Mar  5 07:08:09 mixctl[42]: x");
    std::string longer(2000, 'a');
    n = client.format(buf, sizeof buf, LOG_INFO, longer.c_str(), 1772694489, 42);
    CHECK(n == sizeof buf - 1);
    CHECK(buf[n] == '\0');
}

TEST_CASE("syslog lines go to a datagram socket, one per message, with the sender's pid", "[syslog]") {
    LogSocket log;
    mixlog::SyslogClient client(zone(), "mixctl", LOG_DAEMON, log.path());
    time_t before = time(nullptr);
    client.send(LOG_INFO, "Forwarding (busybox) from: 127.0.0.1:1");
    client.send(LOG_ERR, "error: dial");
    std::string first = log.receive(), second = log.receive();
    time_t after = time(nullptr);
    CHECK(client.connected());
    CHECK(glibc_sent(first, 30, before, after, getpid(), "Forwarding (busybox) from: 127.0.0.1:1"));
    CHECK(glibc_sent(second, 27, before, after, getpid(), "error: dial"));
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        client.send(LOG_INFO, "Closed");
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(glibc_sent(log.receive(), 30, before, time(nullptr), child, "Closed"));
}

TEST_CASE("syslog reconnects when syslogd's socket is replaced, and waits for one that is not there yet",
          "[syslog]") {
    LogSocket log;
    log.close_socket();
    mixlog::SyslogClient client(zone(), "mixctl", LOG_DAEMON, log.path());
    client.send(LOG_INFO, "lost");  // nobody listens: dropped
    CHECK_FALSE(client.connected());
    log.open_socket(SOCK_DGRAM);
    time_t before = time(nullptr);
    client.send(LOG_INFO, "first");
    CHECK(glibc_sent(log.receive(), 30, before, time(nullptr), getpid(), "first"));
    log.close_socket();  // syslogd restarts
    log.open_socket(SOCK_DGRAM);
    client.send(LOG_INFO, "second");
    CHECK(glibc_sent(log.receive(), 30, before, time(nullptr), getpid(), "second"));
}

TEST_CASE("syslog falls back to a stream socket, each message ending in a NUL, when the socket is one",
          "[syslog]") {
    LogSocket log(SOCK_STREAM);
    mixlog::SyslogClient client(zone(), "mixctl", LOG_DAEMON, log.path());
    time_t before = time(nullptr);
    client.send(LOG_INFO, "one");
    client.send(LOG_WARNING, "warning: two");
    std::string want1 = glibc_message(30, before, getpid(), "one");
    std::string want2 = glibc_message(28, before, getpid(), "warning: two");
    std::string got = log.receive_stream(want1.size() + want2.size() + 2);
    time_t after = time(nullptr);
    size_t nul = got.find('\0');
    REQUIRE(nul != std::string::npos);
    CHECK(glibc_sent(got.substr(0, nul), 30, before, after, getpid(), "one"));
    CHECK(glibc_sent(got.substr(nul + 1, got.size() - nul - 2), 28, before, after, getpid(), "warning: two"));
    CHECK(got.back() == '\0');
}
