// config.hpp - turns a yaml_lite tree into validated rules.
//
// Every problem in the file is collected (not only the first) as
// "file:line: message", so a user fixes them all in one pass. Nothing here
// touches the network: names are resolved later, by the caller.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "net.hpp"
#include "yaml_lite.hpp"

namespace config {

struct Upstream {
    std::string text;     // as written, for logs
    net::HostPort where;
    int line = 0;
};

struct Rule {
    std::string name;     // defaults to the `from` text
    std::string from_text;
    net::HostPort from;
    int line = 0;         // where the rule starts
    int from_line = 0;
    std::vector<Upstream> to;
};

struct Config {
    std::vector<Rule> rules;
};

struct Diagnostics {
    std::vector<std::string> errors;    // "file:line: message"
    std::vector<std::string> warnings;  // "file:line: warning: message"
};

namespace detail {

class Builder {
public:
    Builder(const std::string& file, Diagnostics& diag) : file_(file), diag_(diag) {}

    void error(int line, const std::string& message) { diag_.errors.push_back(where(line) + message); }
    void warn(int line, const std::string& message) { diag_.warnings.push_back(where(line) + "warning: " + message); }

    bool build(const yaml_lite::Node& root, Config& out) {
        size_t errors_before = diag_.errors.size();
        if (root.kind == yaml_lite::Kind::Null) {
            error(1, "no rules: the file is empty (want a \"rules:\" list)");
            return false;
        }
        if (root.kind != yaml_lite::Kind::Mapping) {
            error(root.line, "the top level must be a mapping with a \"rules:\" key");
            return false;
        }
        const yaml_lite::Node* rules = nullptr;
        for (const yaml_lite::Entry& entry : root.entries) {
            if (entry.key == "rules") rules = &entry.value;
            else if (entry.key != "version") warn(entry.line, "unknown key \"" + entry.key + "\" ignored");
        }
        if (!rules) {
            error(root.line, "missing \"rules:\" list");
            return false;
        }
        build_rules(*rules, out);
        check_duplicate_listeners(out);
        return diag_.errors.size() == errors_before;
    }

private:
    std::string where(int line) const { return file_ + ":" + std::to_string(line < 1 ? 1 : line) + ": "; }

    void build_rules(const yaml_lite::Node& rules, Config& out) {
        if (rules.kind != yaml_lite::Kind::Sequence) {
            error(rules.line, "rules: must be a list of rules");
            return;
        }
        if (rules.items.empty()) {
            error(rules.line, "rules: the list is empty; at least one rule is required");
            return;
        }
        for (const yaml_lite::Node& item : rules.items) {
            Rule rule;
            if (build_rule(item, rule)) out.rules.push_back(std::move(rule));
        }
    }

    bool build_rule(const yaml_lite::Node& node, Rule& rule) {
        if (node.kind != yaml_lite::Kind::Mapping) {
            error(node.line, "a rule must be a mapping with from: and to:");
            return false;
        }
        size_t errors_before = diag_.errors.size();
        rule.line = node.line;
        const yaml_lite::Node* name = nullptr;
        const yaml_lite::Node* from = nullptr;
        const yaml_lite::Node* to = nullptr;
        for (const yaml_lite::Entry& entry : node.entries) {
            if (entry.key == "name") name = &entry.value;
            else if (entry.key == "from") from = &entry.value;
            else if (entry.key == "to") to = &entry.value;
            else warn(entry.line, "unknown key \"" + entry.key + "\" ignored");
        }
        if (!from) error(node.line, "rule: missing \"from:\"");
        else parse_from(*from, rule);
        if (!to) error(node.line, "rule: missing \"to:\"");
        else parse_to(*to, rule);
        if (name) {
            if (name->kind == yaml_lite::Kind::Scalar) rule.name = name->scalar;
            else if (name->kind != yaml_lite::Kind::Null) error(name->line, "name: must be a string");
        }
        if (rule.name.empty()) rule.name = rule.from_text;
        return diag_.errors.size() == errors_before;
    }

    void parse_from(const yaml_lite::Node& node, Rule& rule) {
        rule.from_line = node.line;
        if (node.kind != yaml_lite::Kind::Scalar || node.scalar.empty()) {
            error(node.line, "from: must be an address like 127.0.0.1:8080");
            return;
        }
        std::string why;
        if (!net::parse_host_port(node.scalar, true, rule.from, why)) {
            error(node.line, "from: \"" + node.scalar + "\": " + why);
            return;
        }
        rule.from_text = node.scalar;
    }

    void parse_to(const yaml_lite::Node& node, Rule& rule) {
        if (node.kind == yaml_lite::Kind::Scalar) {
            add_upstream(node, rule);
            return;
        }
        if (node.kind != yaml_lite::Kind::Sequence) {
            error(node.line, "to: must be a list of addresses like [127.0.0.1:8080]");
            return;
        }
        if (node.items.empty()) {
            error(node.line, "to: the list is empty; at least one upstream is required");
            return;
        }
        for (const yaml_lite::Node& item : node.items) add_upstream(item, rule);
    }

    void add_upstream(const yaml_lite::Node& node, Rule& rule) {
        if (node.kind != yaml_lite::Kind::Scalar || node.scalar.empty()) {
            error(node.line, "to: each upstream must be an address like 127.0.0.1:8080");
            return;
        }
        Upstream upstream;
        std::string why;
        if (!net::parse_host_port(node.scalar, false, upstream.where, why)) {
            error(node.line, "to: \"" + node.scalar + "\": " + why);
            return;
        }
        if (upstream.where.host.empty()) {
            error(node.line, "to: \"" + node.scalar + "\": missing host (want host:port)");
            return;
        }
        upstream.text = node.scalar;
        upstream.line = node.line;
        rule.to.push_back(std::move(upstream));
    }

    // Two rules on one address would fail at bind time with a vaguer message.
    void check_duplicate_listeners(const Config& config) {
        for (size_t i = 0; i < config.rules.size(); ++i) {
            const Rule& later = config.rules[i];
            if (later.from.port == 0) continue;  // each port 0 binds its own ephemeral port
            for (size_t j = 0; j < i; ++j) {
                const Rule& earlier = config.rules[j];
                if (same_listener(earlier.from, later.from)) {
                    error(later.from_line, "from: \"" + later.from_text + "\" is already used by rule \"" +
                                               earlier.name + "\" at line " + std::to_string(earlier.from_line));
                    break;
                }
            }
        }
    }

    static bool same_listener(const net::HostPort& a, const net::HostPort& b) {
        if (a.port != b.port) return false;
        return lowercase(a.host) == lowercase(b.host);
    }

    static std::string lowercase(std::string text) {
        for (char& c : text)
            if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        return text;
    }

    const std::string& file_;
    Diagnostics& diag_;
};

}  // namespace detail

inline bool parse_text(std::string_view text, const std::string& file, Config& out, Diagnostics& diag) {
    yaml_lite::Result tree = yaml_lite::parse(text);
    if (!tree.ok()) {
        for (const yaml_lite::Error& e : tree.errors)
            diag.errors.push_back(file + ":" + std::to_string(e.line < 1 ? 1 : e.line) + ": " + e.message);
        return false;
    }
    out.rules.clear();
    return detail::Builder(file, diag).build(tree.root, out);
}

// Config files are small; anything over this is not a rules file.
constexpr size_t max_file_size = 16 * 1024 * 1024;

inline bool read_file(const std::string& path, std::string& text, std::string& error) {
    net::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        error = "open " + path + ": " + net::errno_text(errno);
        return false;
    }
    text.clear();
    char chunk[8192];
    for (;;) {
        ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            error = "read " + path + ": " + net::errno_text(errno);
            return false;
        }
        if (n == 0) return true;
        text.append(chunk, static_cast<size_t>(n));
        if (text.size() > max_file_size) {
            error = "read " + path + ": file is larger than 16 MiB";
            return false;
        }
    }
}

inline bool load_file(const std::string& path, Config& out, Diagnostics& diag) {
    std::string text, error;
    if (!read_file(path, text, error)) {
        diag.errors.push_back(error);
        return false;
    }
    return parse_text(text, path, out, diag);
}

}  // namespace config
