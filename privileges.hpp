// privileges.hpp - -u USER[:GROUP]: who the workers run as.
//
// The parent binds (so ports below 1024 work) and keeps its rights, so a
// reload can bind new low ports; every process that touches client traffic
// drops to the given user and group before it serves, and checks that the
// drop cannot be undone.
#pragma once

#include <cerrno>
#include <string>

#include <grp.h>
#include <pwd.h>
#include <sys/types.h>
#include <unistd.h>

#include "net.hpp"

namespace privileges {

struct Identity {
    std::string user;
    uid_t uid = 0;
    gid_t gid = 0;
};

// Looks up "user" or "user:group"; on failure `error` says what is missing.
inline bool lookup(const std::string& spec, Identity& out, std::string& error) {
    std::string user = spec.substr(0, spec.find(':'));
    std::string group_name = spec.find(':') == std::string::npos ? std::string() : spec.substr(spec.find(':') + 1);
    errno = 0;
    const passwd* pw = getpwnam(user.c_str());
    if (!pw) {
        error = "-u " + spec + ": no user \"" + user + "\"" + (errno ? ": " + net::errno_text(errno) : std::string());
        return false;
    }
    out.user = user;
    out.uid = pw->pw_uid;
    out.gid = pw->pw_gid;
    if (!group_name.empty()) {
        errno = 0;
        const group* gr = getgrnam(group_name.c_str());
        if (!gr) {
            error = "-u " + spec + ": no group \"" + group_name + "\"" + (errno ? ": " + net::errno_text(errno) : std::string());
            return false;
        }
        out.gid = gr->gr_gid;
    }
    if (geteuid() != 0 && geteuid() != out.uid) {
        error = "-u " + spec + ": only root can switch users";
        return false;
    }
    return true;
}

// setgroups, setgid, setuid, in that order, then proof that root is gone.
inline bool drop(const Identity& who, std::string& error) {
    if (geteuid() == 0 && setgroups(1, &who.gid) != 0) {
        error = "setgroups: " + net::errno_text(errno);
        return false;
    }
    if (setgid(who.gid) != 0) {
        error = "setgid " + std::to_string(who.gid) + ": " + net::errno_text(errno);
        return false;
    }
    if (setuid(who.uid) != 0) {
        error = "setuid " + std::to_string(who.uid) + ": " + net::errno_text(errno);
        return false;
    }
    if (getuid() != who.uid || geteuid() != who.uid || getgid() != who.gid || getegid() != who.gid ||
        (who.uid != 0 && setuid(0) == 0)) {
        error = "privileges were not dropped to " + who.user;
        return false;
    }
    return true;
}

}  // namespace privileges
