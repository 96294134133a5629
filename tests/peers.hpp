// peers.hpp - other programs as test peers (openssl, curl, HAProxy, nginx), each bounded in time.
// Owns the processes it starts and stops them by pid; never dials off loopback.
//
// Run to completion with a deadline, or kept running as a child that dies
// with the test and is stopped by its pid.
#pragma once

#include <string>
#include <vector>

#include <sys/prctl.h>

#include "harness.hpp"

namespace peers {

using namespace harness;

// The program's path: on $PATH, else in the usual places (sbin too, where
// Debian puts haproxy and nginx).
inline std::string find_program(const std::string& name) {
    std::string path = getenv("PATH") ? getenv("PATH") : "";
    path += ":/usr/bin:/usr/sbin:/bin:/sbin:/usr/local/bin:/usr/local/sbin";
    for (size_t at = 0; at <= path.size();) {
        size_t end = std::min(path.find(':', at), path.size());
        std::string dir = path.substr(at, end - at);
        if (!dir.empty() && ::access((dir + "/" + name).c_str(), X_OK) == 0) return dir + "/" + name;
        at = end + 1;
    }
    return "";
}

// A shell command under `timeout`, its stdout and stderr together.
inline std::string shell(const std::string& command, int seconds = 20) {
    std::string full = "timeout " + std::to_string(seconds) + " sh -c '" + command + "' 2>&1";
    FILE* p = popen(full.c_str(), "r");
    if (!p) return "";
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    pclose(p);
    return out;
}

// A program running in the background: output to `log`, killed with the test.
class Child {
public:
    Child(std::vector<std::string> args, const std::string& log) {
        pid_ = fork();
        if (pid_ == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            int in = ::open("/dev/null", O_RDONLY);
            dup2(in, 0);
            dup2(out, 1);
            dup2(out, 2);
            std::vector<char*> argv;
            for (std::string& a : args) argv.push_back(&a[0]);
            argv.push_back(nullptr);
            execv(argv[0], argv.data());
            _exit(127);
        }
    }
    ~Child() { stop(); }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    bool running() {
        if (pid_ <= 0) return false;
        int status;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            return false;
        }
        return true;
    }

    void stop() {
        if (pid_ <= 0) return;
        kill(pid_, SIGTERM);
        int status;
        if (!wait_until([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, 3000ms)) {
            kill(pid_, SIGKILL);
            waitpid(pid_, &status, 0);
        }
        pid_ = -1;
    }

private:
    pid_t pid_ = -1;
};

// Until something accepts on 127.0.0.1:port.
inline bool listening(uint16_t port, Ms limit = 10000ms) {
    return wait_until([&] { return static_cast<bool>(dial(port, AF_INET, 500ms)); }, limit);
}

inline std::string file_text(const std::string& path) {
    net::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    return fd ? drain_fd(fd.get()) : "";
}

}  // namespace peers
