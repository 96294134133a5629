// syslog_client.hpp - the messages glibc's syslog(3) sends to /dev/log, sent without it.
// Owns the syslog socket and the message format; not what is logged or when (log.hpp).
//
// glibc's syslog formats its timestamp with localtime_r, which links the
// time-zone code (see localtime.hpp): that is why this file exists.
//
// SyslogClient(ident, facility).send(priority, message) sends what glibc
// 2.36 sends for openlog(ident, LOG_PID, facility) and then
// syslog(priority, "%s", message):
//     <PRI>Mmm dd hh:mm:ss ident[PID]: message
// PRI is facility | priority, the day is space-padded, the time local, PID
// is read at each call (a forked child sends its own). It goes to an
// AF_UNIX datagram socket connected to /dev/log; when the socket there is a
// stream one (connect fails with EPROTOTYPE), to a stream socket, each
// message followed by its NUL. The socket is opened on the first message;
// when a send fails it is reopened and the message sent once more, and
// when that fails too the message is dropped (no console fallback:
// mixctl's openlog had no LOG_CONS) and the next message opens it again.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "localtime.hpp"
#include "net.hpp"

namespace mixlog {

class SyslogClient {
public:
    // `zone` gives the timestamps' local time; `path` is the syslog socket
    // (for tests: one of their own).
    SyslogClient(const mixtime::TimeZone& zone, const char* ident, int facility, const char* path = "/dev/log")
        : zone_(zone), ident_(ident), facility_(facility), path_(path) {}
    SyslogClient(const SyslogClient&) = delete;
    SyslogClient& operator=(const SyslogClient&) = delete;

    void send(int priority, const char* message) {
        char buf[1400];
        size_t size = format(buf, sizeof buf, priority, message, time(nullptr), getpid());
        if (!connected_) connect();
        if (type_ == SOCK_STREAM) ++size;  // the NUL ends the message
        if (!connected_ || ::send(fd_.get(), buf, size, MSG_NOSIGNAL) < 0) {
            if (connected_) {  // syslogd restarted, perhaps: once more on a new socket
                disconnect();
                connect();
            }
            if (!connected_ || ::send(fd_.get(), buf, size, MSG_NOSIGNAL) < 0) disconnect();
        }
    }

    // The message for `priority` and `message` at `now` from `pid` into
    // `out` (NUL-terminated, cut to fit); its length without the NUL.
    size_t format(char* out, size_t size, int priority, const char* message, time_t now, long pid) const {
        static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
        priority &= 0x3ff;  // as glibc: bits beyond facility and level dropped
        if ((priority & 0x3f8) == 0) priority |= facility_;
        struct tm local;
        char stamp[32] = "";
        if (zone_.local(now, local)) {
            std::snprintf(stamp, sizeof stamp, "%.3s %2d %02d:%02d:%02d ", months + 3 * local.tm_mon, local.tm_mday,
                          local.tm_hour, local.tm_min, local.tm_sec);
        }
        int n = std::snprintf(out, size, "<%d>%s%s[%ld]: %s", priority, stamp, ident_.c_str(), pid, message);
        if (n < 0) {
            out[0] = '\0';
            return 0;
        }
        return static_cast<size_t>(n) < size ? static_cast<size_t>(n) : size - 1;
    }

    bool connected() const { return connected_; }

private:
    // Opens the socket and connects it, switching between datagram and
    // stream on EPROTOTYPE (the type found is kept for the next time).
    void connect() {
        struct sockaddr_un addr;
        std::memset(&addr, 0, sizeof addr);
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
        for (int attempt = 0; attempt < 2; ++attempt) {
            if (!fd_) {
                fd_.reset(::socket(AF_UNIX, type_ | SOCK_CLOEXEC, 0));
                if (!fd_) return;
            }
            int saved = errno;
            if (::connect(fd_.get(), reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) == 0) {
                connected_ = true;
                return;
            }
            int error = errno;
            fd_.reset();
            errno = saved;
            if (error != EPROTOTYPE) return;
            type_ = type_ == SOCK_DGRAM ? SOCK_STREAM : SOCK_DGRAM;
        }
    }

    void disconnect() {
        fd_.reset();
        connected_ = false;
    }

    const mixtime::TimeZone& zone_;
    std::string ident_;
    int facility_;
    std::string path_;
    net::Fd fd_;
    int type_ = SOCK_DGRAM;
    bool connected_ = false;
};

}  // namespace mixlog
