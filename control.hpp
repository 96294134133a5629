// control.hpp - the control socket: one command line per connection (show, disable, enable, weight), a text answer.
// Owns the command language and the Unix socket; writes only run-time upstream fields, never runs in a worker.
//
// It touches no listener, relay or health check.
//
// Why long: the command parser, its answers, the socket's safe creation (stale or foreign files)
// and the server's protocol are one feature; -ctl's client (ask) shares their quoting rules.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.hpp"
#include "net.hpp"
#include "request_server.hpp"
#include "upstreams.hpp"

namespace control {

constexpr size_t max_line = 512;  // a longer command line is refused
constexpr uint32_t max_weight = 1000000;  // as in the config
constexpr std::chrono::seconds patience{3};  // for the command line to arrive

// ---- the command language ---------------------------------------------------

enum class Verb { show, disable, enable, weight, help };

struct Command {
    Verb verb = Verb::show;
    std::string rule, upstream;
    uint32_t weight = 0;
};

// Words are split on blanks; a word in double quotes may hold blanks, and
// \" or \\ inside quotes stand for themselves. False with `error` set for
// an unterminated quote or a control character.
inline bool split_words(std::string_view line, std::vector<std::string>& words, std::string& error) {
    words.clear();
    size_t i = 0;
    while (i < line.size()) {
        if (line[i] == ' ' || line[i] == '\t') {
            ++i;
            continue;
        }
        std::string word;
        if (line[i] == '"') {
            bool closed = false;
            for (++i; i < line.size(); ++i) {
                char c = line[i];
                if (c == '\\' && i + 1 < line.size() && (line[i + 1] == '"' || line[i + 1] == '\\')) {
                    word += line[++i];
                } else if (c == '"') {
                    closed = true;
                    ++i;
                    break;
                } else {
                    word += c;
                }
            }
            if (!closed) {
                error = "unterminated quote";
                return false;
            }
        } else {
            while (i < line.size() && line[i] != ' ' && line[i] != '\t') word += line[i++];
        }
        for (char c : word)
            if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
                error = "control character in the command";
                return false;
            }
        words.push_back(std::move(word));
    }
    return true;
}

inline bool parse(std::string_view line, Command& out, std::string& error) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > max_line) {
        error = "line too long (at most " + std::to_string(max_line) + " bytes)";
        return false;
    }
    std::vector<std::string> words;
    if (!split_words(line, words, error)) return false;
    if (words.empty()) {
        error = "empty command (want show, disable, enable, weight or help)";
        return false;
    }
    const std::string& verb = words[0];
    out = Command();
    auto arity = [&](size_t n, const char* usage) {
        if (words.size() == n) return true;
        error = std::string("usage: ") + usage;
        return false;
    };
    if (verb == "show" || verb == "help") {
        out.verb = verb == "show" ? Verb::show : Verb::help;
        return arity(1, verb == "show" ? "show" : "help");
    }
    if (verb == "disable" || verb == "enable") {
        out.verb = verb == "disable" ? Verb::disable : Verb::enable;
        if (!arity(3, verb == "disable" ? "disable RULE ADDRESS" : "enable RULE ADDRESS")) return false;
    } else if (verb == "weight") {
        out.verb = Verb::weight;
        if (!arity(4, "weight RULE ADDRESS N")) return false;
        const std::string& n = words[3];
        uint64_t value = 0;
        bool digits = !n.empty() && n.size() <= 7;
        for (char c : n) {
            digits = digits && c >= '0' && c <= '9';
            if (digits) value = value * 10 + static_cast<uint64_t>(c - '0');
        }
        if (!digits || value < 1 || value > max_weight) {
            error = "weight: \"" + n + "\" must be a whole number from 1 to " + std::to_string(max_weight);
            return false;
        }
        out.weight = static_cast<uint32_t>(value);
    } else {
        error = "unknown command \"" + verb + "\" (want show, disable, enable, weight or help)";
        return false;
    }
    out.rule = words[1];
    out.upstream = words[2];
    return true;
}

// A rule or upstream name as `show` prints it: bare when it is one plain
// word, else in double quotes (so it can be pasted back into a command).
inline std::string word(const std::string& text) {
    bool plain = !text.empty();
    for (char c : text) plain = plain && c != ' ' && c != '\t' && c != '"' && c != '\\' && c != '=';
    if (plain) return text;
    std::string out = "\"";
    for (char c : text) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out + "\"";
}

inline const char* help_text() {
    return "ok\n"
           "show                      one line per upstream: rule= upstream= state= weight= max_conns= active=\n"
           "                          total= failed= bytes_in= bytes_out=\n"
           "disable RULE ADDRESS      no new connections to it; live ones go on (state draining, then disabled)\n"
           "enable RULE ADDRESS       back into the pool (health checks still apply)\n"
           "weight RULE ADDRESS N     its weight from now on (1 to 1000000)\n";
}

inline std::string show(const upstreams::Shared& shared, int64_t now_ms) {
    std::string out = "ok\n";
    char line[256];
    for (size_t r = 0; r < shared.pools(); ++r) {  // every rule's pool and its SNI routes'
        const upstreams::Pool& pool = shared.pool(r);
        for (size_t u = 0; u < pool.size(); ++u) {
            const upstreams::UpstreamState& s = pool.at(u);
            snprintf(line, sizeof line,
                     " state=%s weight=%u max_conns=%d active=%u total=%llu failed=%llu bytes_in=%llu bytes_out=%llu\n",
                     upstreams::state_name(s, now_ms), s.weight.load(), pool.rule->to[u].max_conns, s.active.load(),
                     static_cast<unsigned long long>(s.total.load()), static_cast<unsigned long long>(s.failed.load()),
                     static_cast<unsigned long long>(s.bytes_in.load()),
                     static_cast<unsigned long long>(s.bytes_out.load()));
            out += "rule=" + word(pool.rule->name) + " upstream=" + word(pool.rule->to[u].text) + line;
        }
    }
    return out;
}

// Runs a parsed command; the answer starts with "ok" or "error: ". Changes
// are logged when `log` is given.
inline std::string execute(const Command& cmd, const upstreams::Shared& shared, int64_t now_ms,
                           const mixlog::Logger* log) {
    if (cmd.verb == Verb::show) return show(shared, now_ms);
    if (cmd.verb == Verb::help) return help_text();
    const upstreams::Pool* pool = nullptr;
    // The rule's own pool, or the SNI route of that rule that has the upstream.
    for (size_t r = 0; r < shared.pools(); ++r) {
        const upstreams::Pool& p = shared.pool(r);
        if (p.rule->name != cmd.rule) continue;
        bool has = false;
        for (size_t u = 0; u < p.size(); ++u) has = has || p.rule->to[u].text == cmd.upstream;
        if (!pool || has) pool = &p;
        if (has) break;
    }
    if (!pool) return "error: unknown rule \"" + cmd.rule + "\"\n";
    std::string answer;
    for (size_t u = 0; u < pool->size(); ++u) {
        if (pool->rule->to[u].text != cmd.upstream) continue;
        upstreams::UpstreamState& s = pool->at(u);
        std::string what;
        if (cmd.verb == Verb::weight) {
            uint32_t was = s.weight.exchange(cmd.weight);
            s.weight_changed.store(1);
            what = "weight " + std::to_string(cmd.weight) + " (was " + std::to_string(was) + ")";
        } else {
            s.disabled.store(cmd.verb == Verb::disable ? 1 : 0);
            what = cmd.verb == Verb::disable ? "disabled" : "enabled";
        }
        if (log)
            log->print("control: upstream %s of (%s): %s", cmd.upstream.c_str(), pool->rule->name.c_str(),
                       what.c_str());
        if (answer.empty()) answer = "ok: " + word(cmd.upstream) + " of " + word(pool->rule->name) + " " + what + "\n";
    }
    if (answer.empty()) return "error: unknown upstream \"" + cmd.upstream + "\" in rule \"" + cmd.rule + "\"\n";
    return answer;
}

// One command line in, its answer out: what a control client gets.
inline std::string answer(std::string_view line, const upstreams::Shared& shared, int64_t now_ms,
                          const mixlog::Logger* log) {
    Command cmd;
    std::string error;
    if (!parse(line, cmd, error)) return "error: " + error + "\n";
    return execute(cmd, shared, now_ms, log);
}

// ---- the socket ---------------------------------------------------------------

inline bool fill_address(const std::string& path, sockaddr_un& addr, std::string& why) {
    addr = sockaddr_un{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof addr.sun_path) {
        why = "path too long for a Unix socket";
        return false;
    }
    path.copy(addr.sun_path, path.size());
    return true;
}

// A blocking Unix stream socket, close-on-exec (fcntl: SOCK_CLOEXEC is not POSIX).
inline net::Fd unix_socket() {
    net::Fd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
    if (fd && ::fcntl(fd.get(), F_SETFD, FD_CLOEXEC) != 0) fd.reset();
    return fd;
}

// Whether something accepts connections on the socket file at `path`.
inline bool someone_listens(const std::string& path) {
    sockaddr_un addr;
    std::string ignored;
    if (!fill_address(path, addr, ignored)) return false;
    net::Fd fd = unix_socket();
    if (!fd || !net::set_nonblock_cloexec(fd.get())) return false;
    // Nonblocking: a listener with a full backlog answers EAGAIN at once
    // instead of holding us up; it is alive all the same.
    return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 || errno == EAGAIN ||
           errno == EINPROGRESS;
}

// Binds and listens on `path`, mode 0600, before anyone can connect. A
// socket file left by a dead process is replaced; a live one, or anything
// that is not a socket, is refused.
inline net::Fd listen_at(const std::string& path, std::string& why) {
    sockaddr_un addr;
    if (!fill_address(path, addr, why)) return net::Fd();
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            why = path + " exists and is not a socket: refusing to replace it";
            return net::Fd();
        }
        if (someone_listens(path)) {
            why = path + ": another process listens on it (another mixctl?)";
            return net::Fd();
        }
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
            why = "unlink stale " + path + ": " + net::errno_text(errno);
            return net::Fd();
        }
    }
    net::Fd fd = unix_socket();
    if (!fd || !net::set_nonblock_cloexec(fd.get())) {
        why = "socket AF_UNIX: " + net::errno_text(errno);
        return net::Fd();
    }
    mode_t old_mask = ::umask(0177);  // the file is born 0600: no window with wider rights
    int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    int err = errno;
    ::umask(old_mask);
    if (rc != 0) {
        why = "bind " + path + ": " + net::errno_text(err);
        return net::Fd();
    }
    if (::chmod(path.c_str(), 0600) != 0 || ::listen(fd.get(), 64) != 0) {
        why = "listen " + path + ": " + net::errno_text(errno);
        ::unlink(path.c_str());
        return net::Fd();
    }
    return fd;
}

// Serves the socket from a poll() loop that is not a relay loop (the
// checker's): one command line per connection, a silent client is closed
// after `patience`, at most max_clients at once (request_server.hpp).
class Server : public request_server::Server {
public:
    Server(int listener, const upstreams::Shared& shared, const mixlog::Logger& log)
        : request_server::Server(listener, {max_clients, patience, max_line + 2}, judge(shared, log),
                                 "error: no command within " + std::to_string(patience.count()) + "s\n") {}

    static constexpr size_t max_clients = 32;

private:
    // A line ends at its newline, or at EOF when the client sent no newline.
    static request_server::Judge judge(const upstreams::Shared& shared, const mixlog::Logger& log) {
        return [&shared, &log](std::string& line, bool closed, int64_t now_ms, std::string& reply) {
            size_t newline = line.find('\n');
            if (newline != std::string::npos) {
                line.resize(newline);
            } else if (line.size() > max_line + 1) {
                reply = "error: line too long (at most " + std::to_string(max_line) + " bytes)\n";
                return request_server::Verdict::answer;
            } else if (!closed) {
                return request_server::Verdict::more;
            } else if (line.empty()) {
                return request_server::Verdict::drop;  // closed without a word
            }
            reply = answer(line, shared, now_ms, &log);
            return request_server::Verdict::answer;
        };
    }
};

// ---- the client side (mixctl -ctl) -----------------------------------------------

// Sends one command to the socket at `path` and reads the whole answer,
// with `limit` for each step. False with `why` when it could not talk.
inline bool ask(const std::string& path, const std::string& command, std::string& reply, std::string& why,
                std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
    sockaddr_un addr;
    if (!fill_address(path, addr, why)) return false;
    net::Fd fd = unix_socket();
    if (!fd) {
        why = "socket AF_UNIX: " + net::errno_text(errno);
        return false;
    }
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(limit.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((limit.count() % 1000) * 1000);
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        why = "connect " + path + ": " + net::errno_text(errno);
        return false;
    }
    std::string line = command + "\n";
    for (size_t sent = 0; sent < line.size();) {
        ssize_t n = ::send(fd.get(), line.data() + sent, line.size() - sent, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            why = "send " + path + ": " + net::errno_text(errno);
            return false;
        }
        sent += static_cast<size_t>(n);
    }
    reply.clear();
    char buf[4096];
    for (;;) {
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            why = "read " + path + ": " + net::errno_text(errno);
            return false;
        }
        if (n == 0) return true;
        reply.append(buf, static_cast<size_t>(n));
    }
}

}  // namespace control
