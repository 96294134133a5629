// privileges.hpp - -u USER[:GROUP]: looking the user up and dropping to it in workers and the checker.
// Owns the change of identity only; binds nothing, and never drops the parent's rights (reloads need them).
//
// The parent binds (so ports below 1024 work) and keeps its rights, so a
// reload can bind new low ports; every process that touches client traffic
// drops to the given user and group before it serves, and checks that the
// drop cannot be undone.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include <fcntl.h>
#include <grp.h>
#include <sys/types.h>
#include <unistd.h>

#include "net.hpp"

namespace privileges {

struct Identity {
    std::string user;
    uid_t uid = 0;
    gid_t gid = 0;
};

// One "name:x:id:..." line of /etc/passwd or /etc/group. Read directly, not
// through getpwnam(): a static binary cannot load glibc's NSS modules on a
// router or in an initramfs, and these files are what such systems have.
inline bool find_entry(const char* path, const std::string& name, long& id, long& group_of_user) {
    net::Fd fd(::open(path, O_RDONLY | O_CLOEXEC));
    if (!fd) return false;
    std::string text;
    char chunk[4096];
    ssize_t n;
    while ((n = ::read(fd.get(), chunk, sizeof chunk)) > 0 && text.size() < (1u << 22)) text.append(chunk, static_cast<size_t>(n));
    size_t at = 0;
    while (at < text.size()) {
        size_t end = text.find('\n', at);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(at, end - at);
        at = end + 1;
        std::vector<std::string> fields;
        size_t from = 0;
        for (size_t colon; (colon = line.find(':', from)) != std::string::npos; from = colon + 1)
            fields.push_back(line.substr(from, colon - from));
        fields.push_back(line.substr(from));
        if (fields.size() < 3 || fields[0] != name) continue;
        id = atol(fields[2].c_str());
        group_of_user = fields.size() > 3 ? atol(fields[3].c_str()) : -1;
        return true;
    }
    return false;
}

// Looks up "user" or "user:group" (names from /etc/passwd and /etc/group);
// on failure `error` says what is missing.
inline bool lookup(const std::string& spec, Identity& out, std::string& error) {
    std::string user = spec.substr(0, spec.find(':'));
    std::string group_name = spec.find(':') == std::string::npos ? std::string() : spec.substr(spec.find(':') + 1);
    long uid = -1, gid = -1, unused = -1;
    if (!find_entry("/etc/passwd", user, uid, gid)) {
        error = "-u " + spec + ": no user \"" + user + "\" in /etc/passwd";
        return false;
    }
    if (!group_name.empty() && !find_entry("/etc/group", group_name, gid, unused)) {
        error = "-u " + spec + ": no group \"" + group_name + "\" in /etc/group";
        return false;
    }
    out.user = user;
    out.uid = static_cast<uid_t>(uid);
    out.gid = static_cast<gid_t>(gid);
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
