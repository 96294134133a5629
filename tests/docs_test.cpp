// The flag list must agree across the three places a user reads it: the
// usage `mixctl -h` prints (run for real), README.md's flag table and the
// OPTIONS of mixctl.8; so must the defaults. The man page must also carry
// its sections and the Makefile's version.
#include <catch2/catch.hpp>

#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "harness.hpp"

namespace {

using Names = std::set<std::string>;

std::string read_text(const std::string& path) {
    std::string text;
    if (FILE* f = std::fopen(path.c_str(), "rb")) {
        char buf[4096];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
        std::fclose(f);
    }
    return text;
}

using harness::lines_of;
using harness::starts_with;

bool is_name_char(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'; }

std::string show(const Names& names) {
    std::string out;
    for (const std::string& n : names) out += (out.empty() ? "-" : " -") + n;
    return out;
}

// The text between `start` and the next line starting with `next`.
std::string section(const std::string& text, const std::string& start, const std::string& next) {
    size_t at = text.find(start);
    if (at == std::string::npos) return std::string();
    at += start.size();
    size_t end = text.find("\n" + next, at);
    return text.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

// ---- mixctl -h ----------------------------------------------------------------------

struct Usage {
    Names names;
    std::map<std::string, std::string> defaults;  // flag -> default as Go shows it, unquoted
};

// Go's PrintDefaults: "  -name[ type]" then the help, on the same line after
// a tab or on the next lines after "    \t"; "(default X)" at its end.
Usage parse_usage(const std::string& text) {
    Usage u;
    std::string current;
    for (const std::string& line : lines_of(text)) {
        if (starts_with(line, "  -")) {
            size_t end = 3;
            while (end < line.size() && is_name_char(line[end])) ++end;
            current = line.substr(3, end - 3);
            u.names.insert(current);
        }
        size_t d = line.find("(default ");
        if (!current.empty() && d != std::string::npos && line.back() == ')') {
            std::string value = line.substr(d + 9, line.size() - d - 10);
            if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
            u.defaults[current] = value;
        }
    }
    return u;
}

// ---- README.md ------------------------------------------------------------------------

struct Table {
    Names names;
    std::map<std::string, std::string> defaults;  // first flag of a row -> its default cell
};

// Rows of the "## Flags" table: "| `-f FILE` | `rules.yaml` | ... |"; every
// backquoted -name in the first cell is a flag, the second cell the default.
Table parse_readme(const std::string& text) {
    Table t;
    for (const std::string& line : lines_of(section(text, "\n## Flags\n", "## "))) {
        if (!starts_with(line, "| `-")) continue;
        size_t second = line.find('|', 1);
        size_t third = line.find('|', second + 1);
        std::string cell = line.substr(1, second - 1);
        std::string first_flag;
        for (size_t at = cell.find("`-"); at != std::string::npos; at = cell.find("`-", at + 1)) {
            size_t end = at + 2;
            while (end < cell.size() && is_name_char(cell[end])) ++end;
            std::string name = cell.substr(at + 2, end - at - 2);
            t.names.insert(name);
            if (first_flag.empty()) first_flag = name;
            at = cell.find('`', at + 1);
            if (at == std::string::npos) break;
        }
        std::string def = line.substr(second + 1, third - second - 1);
        std::string clean;
        for (char c : def)
            if (c != '`' && c != ' ') clean += c;
        t.defaults[first_flag] = clean;
    }
    return t;
}

// ---- mixctl.8 ---------------------------------------------------------------------------

struct Man {
    Names names;
    std::map<std::string, std::string> text;  // first flag of an entry -> its paragraph, as plain text
};

// man(7) markup to plain words: font macros and escapes dropped.
std::string plain(const std::string& line) {
    std::string s = line;
    if (starts_with(s, ".")) {
        size_t space = s.find(' ');
        s = space == std::string::npos ? std::string() : s.substr(space + 1);
    }
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) {
            if (s[i + 1] == 'f' && i + 2 < s.size()) {
                i += 2;  // \fB, \fR, ...
            } else {
                out += s[i + 1];  // \- and the like
                ++i;
            }
        } else if (s[i] != '"') {
            out += s[i];
        }
    }
    return out;
}

// OPTIONS entries: ".TP", then a tag line naming the flags (every \-name on
// it), then the paragraph up to the next .TP or .SH.
Man parse_man(const std::string& text) {
    Man m;
    std::vector<std::string> lines = lines_of(section(text, "\n.SH OPTIONS\n", ".SH "));
    std::string current;
    for (size_t i = 0; i < lines.size(); ++i) {
        if (lines[i] == ".TP" && i + 1 < lines.size()) {
            const std::string& tag = lines[++i];
            current.clear();
            for (size_t at = tag.find("\\-"); at != std::string::npos; at = tag.find("\\-", at + 2)) {
                size_t end = at + 2;
                while (end < tag.size() && is_name_char(tag[end])) ++end;
                if (end == at + 2) continue;
                std::string name = tag.substr(at + 2, end - at - 2);
                m.names.insert(name);
                if (current.empty()) current = name;
            }
            continue;
        }
        if (!current.empty()) m.text[current] += plain(lines[i]) + " ";
    }
    return m;
}

}  // namespace

TEST_CASE("mixctl -h, the README flag table and mixctl.8 list the same flags", "[docs]") {
    harness::RunResult r = harness::run({"-h"});
    REQUIRE(r.exit.code == 0);
    Usage usage = parse_usage(r.err);
    Table readme = parse_readme(read_text("README.md"));
    Man man = parse_man(read_text("mixctl.8"));
    REQUIRE(usage.names.size() >= 8);

    // Go's usage never lists -h and -help; the two documents do.
    Names expected = usage.names;
    expected.insert("h");
    expected.insert("help");
    INFO("mixctl -h:  " << show(usage.names));
    INFO("README.md:  " << show(readme.names));
    INFO("mixctl.8:   " << show(man.names));
    CHECK(readme.names == expected);
    CHECK(man.names == expected);
    CHECK(usage.names.count("syslog") == 1);
}

TEST_CASE("every default mixctl -h shows is the one README and mixctl.8 give", "[docs]") {
    harness::RunResult r = harness::run({"-h"});
    REQUIRE(r.exit.code == 0);
    Usage usage = parse_usage(r.err);
    Table readme = parse_readme(read_text("README.md"));
    Man man = parse_man(read_text("mixctl.8"));
    REQUIRE(usage.defaults.count("t") == 1);
    for (const auto& entry : usage.defaults) {
        const std::string& flag = entry.first;
        const std::string& value = entry.second;
        INFO("-" << flag << ": mixctl -h says (default " << value << ")");
        INFO("README: " << readme.defaults[flag]);
        INFO("mixctl.8: " << man.text[flag]);
        CHECK(readme.defaults[flag] == value);
        CHECK(man.text[flag].find("(default " + value) != std::string::npos);
    }
}

TEST_CASE("mixctl.8 has its sections and the Makefile's version", "[docs]") {
    std::string man = read_text("mixctl.8");
    REQUIRE(!man.empty());
    for (const char* name : {"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION", "SIGNALS", "EXIT STATUS",
                             "FILES", "EXAMPLES"}) {
        INFO(name);
        CHECK(man.find(std::string("\n.SH ") + name + "\n") != std::string::npos);
    }
    std::string makefile = read_text("Makefile");
    size_t at = makefile.find("\nVERSION");
    REQUIRE(at != std::string::npos);
    at = makefile.find(":=", at) + 2;
    while (makefile[at] == ' ') ++at;
    std::string version = makefile.substr(at, makefile.find('\n', at) - at);
    CHECK(man.find("\"mixctl " + version + "\"") != std::string::npos);
    // Every signal the README's table names is in the man page too.
    for (const char* signal : {"SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"}) {
        INFO(signal);
        CHECK(man.find(signal) != std::string::npos);
    }
}

TEST_CASE("the parsers see through the markup they are given", "[docs]") {
    Usage u = parse_usage("Usage of mixctl:\n  -V\tprint\n  -f string\n    \trules file (default \"rules.yaml\")\n");
    CHECK(u.names == Names{"V", "f"});
    CHECK(u.defaults["f"] == "rules.yaml");
    Table t = parse_readme("x\n## Flags\n\n| flag | default |\n|---|---|\n| `-version`, `-V` | | x |\n| `-t DURATION` | `1.5s` | y |\n## Next\n| `-zzz` | | |\n");
    CHECK(t.names == Names{"version", "V", "t"});
    CHECK(t.defaults["t"] == "1.5s");
    Man m = parse_man("x\n.SH OPTIONS\n.TP\n.BR \\-version \", \" \\-V\nPrint.\n.TP\n.BI \\-t \" duration\"\nTimeout (default\n.BR 1.5s ).\n.SH NEXT\n.TP\n.B \\-zzz\n");
    CHECK(m.names == Names{"version", "V", "t"});
    CHECK(m.text["t"].find("(default 1.5s") != std::string::npos);
}

TEST_CASE("mixctl -h, README and mixctl.8 all document MIXCTL_POLLER and its backends; a bad value exits 1",
          "[docs]") {
    harness::RunResult r = harness::run({"-h"});
    std::string readme = read_text("README.md"), man = read_text("mixctl.8");
    CHECK(r.err.find("MIXCTL_POLLER=") != std::string::npos);
    std::string readme_env = section(readme, "\n## Flags\n", "## ");
    std::string man_env = section(man, "\n.SH ENVIRONMENT\n", ".SH ");
    for (const char* word : {"MIXCTL_POLLER", "epoll", "poll"}) {
        INFO(word);
        CHECK(readme_env.find(word) != std::string::npos);
        CHECK(man_env.find(word) != std::string::npos);
    }
    const char* was = getenv("MIXCTL_POLLER");  // the suite may run under MIXCTL_POLLER=poll
    std::string saved = was ? was : "";
    setenv("MIXCTL_POLLER", "kqueue", 1);
    harness::RunResult bad = harness::run({"-f", "rules.example.yaml"});
    if (was) setenv("MIXCTL_POLLER", saved.c_str(), 1);
    else unsetenv("MIXCTL_POLLER");
    CHECK(bad.exit.code == 1);
    CHECK(bad.err.find("MIXCTL_POLLER=kqueue") != std::string::npos);
}
