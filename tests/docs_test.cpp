// The docs say what the code does. Flags: the usage `mixctl -h` prints
// (run for real), the flag tables of README.md and docs/configuration.md and
// the OPTIONS of mixctl.8 list the same flags with the same defaults. Config
// keys: every key the parser accepts (read out of config*.hpp, confirmed by
// running `mixctl -check`) is in docs/configuration.md's key tables and in
// mixctl.8, and nothing else is. Examples: every ```yaml block of README.md
// and docs/*.md passes `mixctl -check`, or fails with the error its marker
// shows. Headers: each opens with what it owns and what it must not touch.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <dirent.h>

#include "config.hpp"
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

// The pages with a "## Flags" table of every flag.
const char* const flag_table_pages[] = {"docs/configuration.md"};

TEST_CASE("mixctl -h, the flag tables of the docs and mixctl.8 list the same flags", "[docs]") {
    harness::RunResult r = harness::run({"-h"});
    REQUIRE(r.exit.code == 0);
    Usage usage = parse_usage(r.err);
    Man man = parse_man(read_text("mixctl.8"));
    REQUIRE(usage.names.size() >= 8);

    // Go's usage never lists -h and -help; the documents do.
    Names expected = usage.names;
    expected.insert("h");
    expected.insert("help");
    INFO("mixctl -h:  " << show(usage.names));
    INFO("mixctl.8:   " << show(man.names));
    CHECK(man.names == expected);
    CHECK(usage.names.count("syslog") == 1);
    for (const char* page : flag_table_pages) {
        Table table = parse_readme(read_text(page));
        INFO(page << ": " << show(table.names));
        CHECK(table.names == expected);
    }
}

TEST_CASE("every default mixctl -h shows is the one the flag tables and mixctl.8 give", "[docs]") {
    harness::RunResult r = harness::run({"-h"});
    REQUIRE(r.exit.code == 0);
    Usage usage = parse_usage(r.err);
    Man man = parse_man(read_text("mixctl.8"));
    REQUIRE(usage.defaults.count("t") == 1);
    for (const char* page : flag_table_pages) {
        Table table = parse_readme(read_text(page));
        for (const auto& entry : usage.defaults) {
            const std::string& flag = entry.first;
            const std::string& value = entry.second;
            INFO("-" << flag << ": mixctl -h says (default " << value << ")");
            INFO(page << ": " << table.defaults[flag]);
            INFO("mixctl.8: " << man.text[flag]);
            CHECK(table.defaults[flag] == value);
            CHECK(man.text[flag].find("(default " + value) != std::string::npos);
        }
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

namespace {

// ---- files ----------------------------------------------------------------------------

bool ends_with(const std::string& text, const std::string& suffix) {
    return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The names of the files in `dir` that end in `suffix`, sorted.
std::vector<std::string> files_in(const std::string& dir, const std::string& suffix) {
    std::vector<std::string> names;
    if (DIR* d = opendir(dir.c_str())) {
        while (dirent* e = readdir(d)) {
            std::string name = e->d_name;
            if (name[0] != '.' && ends_with(name, suffix)) names.push_back(name);
        }
        closedir(d);
    }
    std::sort(names.begin(), names.end());
    return names;
}

// README.md and every page under docs/.
std::vector<std::string> doc_pages() {
    std::vector<std::string> pages{"README.md"};
    for (const std::string& name : files_in("docs", ".md")) pages.push_back("docs/" + name);
    return pages;
}

// ---- headers ---------------------------------------------------------------------------

std::vector<std::string> headers() {
    std::vector<std::string> all = files_in(".", ".hpp");
    for (const std::string& name : files_in("tests", ".hpp")) all.push_back("tests/" + name);
    return all;
}

std::string base_name(const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// ---- config keys: what the parser accepts ---------------------------------------------

// The config layer (config.hpp, and any config_*.hpp it grows into) reads
// a mapping by comparing each key with a literal: `entry.key == "strategy"`,
// `key == "health_check"`, `entry.key != "version"`. Those literals are the
// keys it accepts; reading them out of the source keeps this list from
// drifting. The test below confirms each one by running mixctl -check.
Names keys_in_source(const std::string& text) {
    Names keys;
    for (const std::string op : {"key == \"", "key != \""}) {
        for (size_t at = text.find(op); at != std::string::npos; at = text.find(op, at + 1)) {
            size_t start = at + op.size();
            size_t end = text.find('"', start);
            if (end != std::string::npos && end > start) keys.insert(text.substr(start, end - start));
        }
    }
    return keys;
}

Names parser_keys() {
    Names keys;
    for (const std::string& file : files_in(".", ".hpp"))
        if (starts_with(file, "config"))
            for (const std::string& key : keys_in_source(read_text(file))) keys.insert(key);
    return keys;
}

// Places a key can sit in a rules file, "KEY: x" marking the spot (several
// keys go there joined by `sep`): each is a valid file around it, so a key
// mixctl does not know there draws `unknown key "KEY"` and one it knows
// does not (a bad value is an error, not an unknown key).
struct Context {
    const char* name;
    const char* text;
    const char* sep;
};
const Context key_contexts[] = {
    {"top level", "KEY: x\nrules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n", "\n"},
    {"defaults", "defaults: {KEY: x}\nrules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n", ", "},
    {"rule", "rules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1], KEY: x}\n", ", "},
    {"upstream", "rules:\n- {from: 127.0.0.1:0, to: [{address: 127.0.0.1:1, KEY: x}]}\n", ", "},
    {"health_check", "rules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1], health_check: {KEY: x}}\n", ", "},
    {"route", "rules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1], routes: [{sni: [a.example], to: [127.0.0.1:2], KEY: x}]}\n",
     ", "},
};

std::string with_keys(const Context& c, const Names& keys) {
    std::string spot;
    for (const std::string& key : keys) spot += (spot.empty() ? "" : c.sep) + key + ": x";
    std::string out = c.text;
    out.replace(out.find("KEY: x"), 6, spot);
    return out;
}

// The keys a context's own text uses (`rules`, `from`, ...): a name right
// after the start, a newline, a space or a '{', and before a ':'.
Names keys_of_context(const std::string& text) {
    Names keys;
    for (size_t colon = text.find(':'); colon != std::string::npos; colon = text.find(':', colon + 1)) {
        size_t start = colon;
        while (start > 0 && is_name_char(text[start - 1])) --start;
        if (start == colon) continue;
        if (start == 0 || text[start - 1] == '\n' || text[start - 1] == ' ' || text[start - 1] == '{')
            keys.insert(text.substr(start, colon - start));
    }
    keys.erase("KEY");
    return keys;
}

harness::RunResult check_text(const std::string& text) {
    harness::TempDir dir;
    std::string file = dir.write("rules.yaml", text);
    harness::RunResult r = harness::run({"-check", "-f", file});
    // Messages as a user sees them for ./rules.yaml.
    for (std::string* s : {&r.out, &r.err})
        for (size_t at = s->find(dir.path() + "/"); at != std::string::npos; at = s->find(dir.path() + "/", at))
            s->erase(at, dir.path().size() + 1);
    return r;
}

bool says_unknown(const harness::RunResult& r, const std::string& key) {
    return r.err.find("unknown key \"" + key + "\"") != std::string::npos;
}

// ---- docs/configuration.md's key tables -------------------------------------------------

// Every backquoted name in the first cell of the rows of tables whose header
// starts "| key |"; a path names its last part (`rules[].to`, `health_check.rise`).
Names table_keys(const std::string& text) {
    Names keys;
    bool in_table = false;
    for (const std::string& line : lines_of(text)) {
        if (starts_with(line, "| key |")) {
            in_table = true;
            continue;
        }
        if (!starts_with(line, "|")) in_table = false;
        if (!in_table || starts_with(line, "|---") || starts_with(line, "| ---")) continue;
        std::string cell = line.substr(1, line.find('|', 1) - 1);
        for (size_t at = cell.find('`'); at != std::string::npos; at = cell.find('`', at + 1)) {
            size_t end = cell.find('`', at + 1);
            if (end == std::string::npos) break;
            std::string key = cell.substr(at + 1, end - at - 1);
            size_t last = key.find_last_of(".]");
            keys.insert(last == std::string::npos ? key : key.substr(last + 1));
            at = end;
        }
    }
    return keys;
}

// ---- mixctl.8's CONFIGURATION: the words it sets in bold ------------------------------------

// Splits a macro line's arguments, honouring "quoted strings".
std::vector<std::string> macro_args(const std::string& line) {
    std::vector<std::string> args;
    size_t i = line.find(' ');
    while (i != std::string::npos && i < line.size()) {
        while (i < line.size() && line[i] == ' ') ++i;
        if (i >= line.size()) break;
        std::string arg;
        if (line[i] == '"') {
            size_t end = line.find('"', i + 1);
            arg = line.substr(i + 1, end == std::string::npos ? std::string::npos : end - i - 1);
            i = end == std::string::npos ? line.size() : end + 1;
        } else {
            size_t end = line.find(' ', i);
            arg = line.substr(i, end == std::string::npos ? std::string::npos : end - i);
            i = end;
        }
        args.push_back(arg);
    }
    return args;
}

std::string unescape(const std::string& word) {
    std::string out;
    for (size_t i = 0; i < word.size(); ++i) {
        if (word[i] == '\\' && i + 1 < word.size()) {
            out += word[++i];
        } else {
            out += word[i];
        }
    }
    return out;
}

// .B word, the bold arguments of .BR/.BI (1st, 3rd, ...) and .RB/.IB
// (2nd, 4th, ...), and \fBword\fR inside the text; a bold "key: value"
// also counts as its key.
struct BoldSet : Names {
    void insert(const std::string& word) {
        Names::insert(word);
        size_t end = 0;
        while (end < word.size() && is_name_char(word[end])) ++end;
        if (end > 0 && end < word.size() && word[end] == ':') Names::insert(word.substr(0, end));
    }
};

Names bold_words(const std::string& text) {
    BoldSet words;
    for (const std::string& line : lines_of(text)) {
        std::vector<std::string> args = macro_args(line);
        if (starts_with(line, ".B ")) {
            for (const std::string& a : args) words.insert(unescape(a));
        } else if (starts_with(line, ".BR ") || starts_with(line, ".BI ")) {
            for (size_t k = 0; k < args.size(); k += 2) words.insert(unescape(args[k]));
        } else if (starts_with(line, ".RB ") || starts_with(line, ".IB ")) {
            for (size_t k = 1; k < args.size(); k += 2) words.insert(unescape(args[k]));
        }
        for (size_t at = line.find("\\fB"); at != std::string::npos; at = line.find("\\fB", at + 3)) {
            size_t end = line.find("\\f", at + 3);
            words.insert(unescape(line.substr(at + 3, end == std::string::npos ? std::string::npos : end - at - 3)));
        }
    }
    return words;
}

// ---- ```yaml blocks -----------------------------------------------------------------

// A block may be marked as showing a mistake: the last line before its
// fence (blank lines aside) is `<!-- error: TEXT -->`, and mixctl -check
// must then fail with TEXT in its messages; `<!-- warning: TEXT -->` means
// it passes with that warning. Unmarked blocks pass with no warning.
struct YamlBlock {
    std::string page;
    int line = 0;  // of the opening fence
    std::string text;
    std::string expect;  // "", "error" or "warning"
    std::string message;
};

std::vector<YamlBlock> yaml_blocks(const std::string& page, const std::string& text) {
    std::vector<YamlBlock> blocks;
    std::vector<std::string> lines = lines_of(text);
    std::string last;  // the last non-blank line outside a block
    for (size_t i = 0; i < lines.size(); ++i) {
        std::string line = lines[i];
        while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
        if (starts_with(line, "```")) {
            bool yaml = line == "```yaml";
            YamlBlock block;
            block.page = page;
            block.line = static_cast<int>(i + 1);
            for (const char* kind : {"error", "warning"}) {
                std::string open = std::string("<!-- ") + kind + ": ";
                if (starts_with(last, open) && ends_with(last, " -->")) {
                    block.expect = kind;
                    block.message = last.substr(open.size(), last.size() - open.size() - 4);
                }
            }
            for (++i; i < lines.size() && !starts_with(lines[i], "```"); ++i) block.text += lines[i] + "\n";
            if (yaml) blocks.push_back(block);
            last = "```";
            continue;
        }
        if (!line.empty()) last = line;
    }
    return blocks;
}

}  // namespace

TEST_CASE("every key the config layer compares against is one mixctl -check accepts", "[docs]") {
    Names keys = parser_keys();
    INFO("keys read from config*.hpp: " << show(keys));
    // The scan itself must work, or every check below would pass on nothing.
    for (const char* known : {"rules", "from", "to", "name", "version", "strategy", "address", "interval"})
        REQUIRE(keys.count(known) == 1);
    Names accepted;
    std::string seen;
    for (const Context& c : key_contexts) {
        // Each context is a valid file that reaches the config layer.
        harness::RunResult control = check_text(with_keys(c, {"zz_not_a_key"}));
        INFO(c.name << ":\n" << control.err);
        REQUIRE(control.exit.code == 0);
        REQUIRE(says_unknown(control, "zz_not_a_key"));
        // Every key at once: those it does not call unknown are known here.
        Names own = keys_of_context(c.text), tried;
        for (const std::string& key : keys) (own.count(key) ? accepted : tried).insert(key);
        harness::RunResult r = check_text(with_keys(c, tried));
        seen += std::string(c.name) + ":\n" + r.err;
        for (const std::string& key : tried)
            if (!says_unknown(r, key)) accepted.insert(key);
    }
    for (const std::string& key : keys) {
        INFO("key " << key << " is unknown in every context:\n" << seen);
        CHECK(accepted.count(key) == 1);
    }
}

TEST_CASE("docs/configuration.md's key tables list exactly the keys the parser accepts", "[docs]") {
    Names keys = parser_keys();
    Names documented = table_keys(read_text("docs/configuration.md"));
    INFO("parser:             " << show(keys));
    INFO("configuration.md:   " << show(documented));
    for (const std::string& key : keys) {
        INFO("not in a | key | table of docs/configuration.md: " << key);
        CHECK(documented.count(key) == 1);
    }
    for (const std::string& key : documented) {
        INFO("documented but not a key the parser knows: " << key);
        CHECK(keys.count(key) == 1);
    }
}

// ---- the reload summary counts a change to any documented key ------------------------

namespace {

// Two values for a key, each valid where the key is (spots in
// `change_contexts`). A key may bring a companion it needs (proxy_trusted
// wants accept_proxy).
const std::map<std::string, std::pair<std::string, std::string>> changed_values = {
    {"strategy", {"random", "round-robin"}},
    {"max_fails", {"1", "2"}},
    {"fail_timeout", {"10s", "20s"}},
    {"health_check", {"{interval: 5s}", "{interval: 6s}"}},
    {"resolve_interval", {"30s", "31s"}},
    {"proxy_protocol", {"v1", "v2"}},
    {"connect_timeout", {"1s", "2s"}},
    {"retries", {"1", "2"}},
    {"idle_timeout", {"1m", "2m"}},
    {"halfclose_timeout", {"1m", "2m"}},
    {"protocol", {"tcp", "udp"}},
    {"responses", {"1", "2"}},
    {"max_sessions", {"10", "20"}},
    {"source", {"127.0.0.1", "127.0.0.2"}},
    {"max_conns", {"1", "2"}},
    {"routes", {"[{sni: [a.example], to: [127.0.0.1:2]}]", "[{sni: [b.example], to: [127.0.0.1:2]}]"}},
    {"accept_proxy", {"false", "true"}},
    {"proxy_trusted", {"127.0.0.1, accept_proxy: true", "127.0.0.2, accept_proxy: true"}},
    {"preread_timeout", {"5s", "6s"}},
    {"max_conns_per_client", {"1", "2"}},
    {"allow", {"127.0.0.1", "127.0.0.2"}},
    {"deny", {"127.0.0.1", "127.0.0.2"}},
    {"weight", {"1", "2"}},
    {"backup", {"false", "true"}},
    {"interval", {"5s", "6s"}},
    {"timeout", {"1s", "2s"}},
    {"rise", {"1", "2"}},
    {"fall", {"1", "2"}},
    {"send", {"\"PING\\r\\n\"", "\"PONG\\r\\n\""}},
    {"expect", {"\"+PONG\"", "\"+PING\""}},
    {"tls", {"false", "true"}},
    {"sni", {"a.example", "b.example"}},
};

// Where a rule's settings sit; "KEY: x" marks the spot.
const Context change_contexts[] = {
    {"defaults", "defaults: {KEY: x}\nrules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n", ""},
    {"rule", "rules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1], KEY: x}\n", ""},
    {"udp rule", "rules:\n- {from: 127.0.0.1:0, protocol: udp, to: [127.0.0.1:1], KEY: x}\n", ""},
    {"upstream", "rules:\n- {from: 127.0.0.1:0, to: [{address: 127.0.0.1:1, KEY: x}]}\n", ""},
    {"health_check", "rules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1], health_check: {KEY: x}}\n", ""},
    {"health_check tls", "rules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1], health_check: {tls: true, KEY: x}}\n", ""},
    {"route", "rules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1], routes: [{sni: [a.example], to: [127.0.0.1:2], KEY: x}]}\n",
     ""},
};

// Keys whose change is not a rule's setting, and the summary that says so.
const std::map<std::string, std::pair<std::string, std::string>> whole_file_changes = {
    {"rules", {"rules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n",
               "rules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n- {from: 127.0.0.1:5, to: [127.0.0.1:1]}\n"}},
    {"from", {"rules:\n- {name: r, from: 127.0.0.1:0, to: [127.0.0.1:1]}\n",
              "rules:\n- {name: r, from: 127.0.0.1:5, to: [127.0.0.1:1]}\n"}},
    {"to", {"rules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n", "rules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:2]}\n"}},
    {"address", {"rules:\n- {from: 127.0.0.1:0, to: [{address: 127.0.0.1:1}]}\n",
                 "rules:\n- {from: 127.0.0.1:0, to: [{address: 127.0.0.1:2}]}\n"}},
    {"defaults", {"defaults: {max_fails: 2}\nrules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n",
                  "defaults: {max_fails: 3}\nrules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n"}},
    {"name", {"rules:\n- {name: r, from: 127.0.0.1:0, to: [127.0.0.1:1]}\n",
              "rules:\n- {name: s, from: 127.0.0.1:0, to: [127.0.0.1:1]}\n"}},
    {"metrics", {"metrics: 127.0.0.1:0\nrules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n",
                 "metrics: 127.0.0.1:9\nrules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n"}},
    {"control", {"control: /tmp/a.sock\nrules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n",
                 "control: /tmp/b.sock\nrules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n"}},
    {"version", {"version: 0.1\nrules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n",
                 "version: 0.2\nrules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1]}\n"}},
};
const std::map<std::string, std::string> whole_file_summaries = {
    {"rules", "2 rules (1 added, 0 removed, 0 changed)"}, {"from", "1 rules (0 added, 0 removed, 1 changed)"},
    {"to", "1 rules (0 added, 0 removed, 1 changed)"},    {"address", "1 rules (0 added, 0 removed, 1 changed)"},
    {"name", "1 rules (1 added, 1 removed, 0 changed)"},  {"defaults", "1 rules (0 added, 0 removed, 1 changed)"},  {"metrics", "1 rules (0 added, 0 removed, 0 changed)"},
    {"control", "1 rules (0 added, 0 removed, 0 changed)"}, {"version", "1 rules (0 added, 0 removed, 0 changed)"},
};

struct Parsed {
    config::Config cfg;
    config::Diagnostics diag;
    bool ok = false;
    explicit Parsed(const std::string& text) { ok = config::parse_text(text, "rules.yaml", cfg, diag); }
    bool calls_unknown(const std::string& key) const {
        for (const std::string& w : diag.warnings)
            if (w.find("unknown key \"" + key + "\"") != std::string::npos) return true;
        return false;
    }
};

}  // namespace

TEST_CASE("a reload that changes any key of docs/configuration.md alone reports its rule changed",
          "[docs][reload]") {
    Names documented = table_keys(read_text("docs/configuration.md"));
    REQUIRE(documented.count("max_conns") == 1);  // the table scan works
    for (const std::string& key : documented) {
        INFO("key " << key);
        if (whole_file_changes.count(key)) {
            const auto& texts = whole_file_changes.at(key);
            Parsed before(texts.first), after(texts.second);
            INFO(texts.first << "->\n" << texts.second);
            REQUIRE(before.ok);
            REQUIRE(after.ok);
            CHECK(config::reload_summary(after.cfg, before.cfg) == whole_file_summaries.at(key));
            continue;
        }
        INFO("no pair of values for it in changed_values: add one (and a context where it is valid)");
        REQUIRE(changed_values.count(key) == 1);
        const auto& values = changed_values.at(key);
        int places = 0;
        std::string tried;
        for (const Context& c : change_contexts) {
            std::string a = c.text, b = c.text;
            a.replace(a.find("KEY: x"), 6, key + ": " + values.first);
            b.replace(b.find("KEY: x"), 6, key + ": " + values.second);
            Parsed before(a), after(b);
            tried += a + (before.diag.errors.empty() ? "" : before.diag.errors[0] + "\n") + b +
                     (after.diag.errors.empty() ? "" : after.diag.errors[0] + "\n");
            if (!before.ok || !after.ok || before.calls_unknown(key)) continue;
            ++places;
            INFO(c.name << ":\n" << a << "->\n" << b);
            CHECK(config::reload_summary(after.cfg, before.cfg) == "1 rules (0 added, 0 removed, 1 changed)");
            CHECK(config::reload_summary(before.cfg, before.cfg) == "1 rules (0 added, 0 removed, 0 changed)");
        }
        INFO("valid in no context:\n" << tried);
        CHECK(places >= 1);
    }
}

TEST_CASE("a reload that only reformats a rule, reorders its keys or moves a default into it reports no change",
          "[reload]") {
    Parsed flow("rules:\n- {name: r, from: 127.0.0.1:0, to: [127.0.0.1:1, 127.0.0.1:2], max_conns: 5}\n");
    Parsed block("# the same, in blocks\nrules:\n  - to:\n      - \"127.0.0.1:1\"\n      - 127.0.0.1:2   # second\n"
                 "    max_conns: 5\n    from: '127.0.0.1:0'\n    name: r\n");
    Parsed inherited("defaults:\n  max_conns: 5\nrules:\n- {name: r, from: 127.0.0.1:0, to: [127.0.0.1:1, 127.0.0.1:2]}\n");
    Parsed overridden("defaults: {max_conns: 7}\nrules:\n- {name: r, from: 127.0.0.1:0, to: [127.0.0.1:1, 127.0.0.1:2], "
                      "max_conns: 5}\n");
    Parsed reordered("rules:\n- {name: r, from: 127.0.0.1:0, to: [127.0.0.1:2, 127.0.0.1:1], max_conns: 5}\n");
    for (const Parsed* p : {&flow, &block, &inherited, &overridden, &reordered}) REQUIRE(p->ok);
    const std::string same = "1 rules (0 added, 0 removed, 0 changed)";
    CHECK(config::reload_summary(block.cfg, flow.cfg) == same);
    CHECK(config::reload_summary(inherited.cfg, flow.cfg) == same);
    CHECK(config::reload_summary(overridden.cfg, flow.cfg) == same);
    // The order of `to` is meaningful (round-robin goes in it): a change.
    CHECK(config::reload_summary(reordered.cfg, flow.cfg) == "1 rules (0 added, 0 removed, 1 changed)");
}

TEST_CASE("mixctl.8's CONFIGURATION names every key the parser accepts", "[docs]") {
    Names keys = parser_keys();
    Names bold = bold_words(section(read_text("mixctl.8"), "\n.SH CONFIGURATION\n", ".SH "));
    REQUIRE(!bold.empty());
    for (const std::string& key : keys) {
        INFO("not set in bold in mixctl.8's CONFIGURATION: " << key);
        CHECK(bold.count(key) == 1);
    }
}

TEST_CASE("every yaml example in README.md and docs/ passes mixctl -check, or fails as its marker says", "[docs]") {
    std::vector<YamlBlock> blocks;
    for (const std::string& page : doc_pages())
        for (const YamlBlock& b : yaml_blocks(page, read_text(page))) blocks.push_back(b);
    REQUIRE(blocks.size() >= 3);
    YamlBlock example;
    example.page = "rules.example.yaml";
    example.line = 1;
    example.text = read_text("rules.example.yaml");
    blocks.push_back(example);
    for (const YamlBlock& b : blocks) {
        harness::RunResult r = check_text(b.text);
        INFO(b.page << ":" << b.line << (b.expect.empty() ? "" : " (marked " + b.expect + ": " + b.message + ")")
                    << "\n" << b.text << "mixctl -check said:\n" << r.out << r.err);
        if (b.expect == "error") {
            CHECK(r.exit.code == 1);
            CHECK(r.err.find(b.message) != std::string::npos);
        } else {
            CHECK(r.exit.code == 0);
            CHECK(r.out.find("configuration OK") != std::string::npos);
            if (b.expect == "warning") CHECK(r.err.find(b.message) != std::string::npos);
            else CHECK(r.err.find("warning") == std::string::npos);
        }
    }
}

TEST_CASE("every header opens with what it owns and what it must not touch; a long one says why", "[docs]") {
    std::vector<std::string> files = headers();
    REQUIRE(files.size() >= 10);
    for (const std::string& file : files) {
        std::vector<std::string> lines = lines_of(read_text(file));
        INFO(file << " begins:\n" << (lines.size() > 0 ? lines[0] : "") << "\n" << (lines.size() > 1 ? lines[1] : ""));
        REQUIRE(lines.size() > 2);
        CHECK(starts_with(lines[0], "// " + base_name(file) + " - "));
        CHECK(starts_with(lines[1], "// "));
        std::string opening = lines[0] + " " + lines[1];
        bool bounds = opening.find(" not ") != std::string::npos || opening.find("never") != std::string::npos ||
                      opening.find("nothing") != std::string::npos;
        CHECK(bounds);
        if (lines.size() > 400) {
            bool says_why = false;
            for (size_t i = 0; i < 40 && i < lines.size(); ++i) says_why = says_why || starts_with(lines[i], "// Why long:");
            INFO(file << " has " << lines.size() << " lines and no \"// Why long:\" line in its first 40");
            CHECK(says_why);
        }
    }
}

TEST_CASE("the key, bold-word and yaml-block readers see through their markup", "[docs]") {
    CHECK(keys_in_source("if (entry.key == \"a_b\") x; else if (key == \"c\") y; if (e.key != \"v\")") ==
          Names{"a_b", "c", "v"});
    CHECK(keys_of_context("defaults: {KEY: x}\nrules:\n- {from: 127.0.0.1:0, to: [{address: 1.2.3.4:5}]}\n") ==
          Names{"defaults", "rules", "from", "to", "address"});
    CHECK(table_keys("| key | default |\n|---|---|\n| `a` | 1 |\n| `b`, `rules[].c` | |\n| `h.i` | |\n\n| `d` | |\n"
                     "| flag | x |\n| `-e` | |\n") == Names{"a", "b", "c", "i"});
    CHECK(bold_words(".TP\n.B max_fails\n.BR allow \", \" deny\nsee \\fBhealth_check\\fR and\n.RB [ \\-f ]\n.BR \"tls: true\" ,\n") ==
          Names{"max_fails", "allow", "deny", "health_check", "-f", "tls: true", "tls"});
    std::vector<YamlBlock> b = yaml_blocks("p.md", "x\n```yaml\na: 1\n```\n<!-- error: bad thing -->\n\n```yaml\nb: 2\n```\n"
                                                    "```sh\nc\n```\n<!-- warning: w -->\n```yaml\nd: 3\n```\n");
    REQUIRE(b.size() == 3);
    CHECK(b[0].text == "a: 1\n");
    CHECK(b[0].expect.empty());
    CHECK(b[1].line == 7);
    CHECK(b[1].expect == "error");
    CHECK(b[1].message == "bad thing");
    CHECK(b[2].expect == "warning");
    CHECK(b[2].message == "w");
}

namespace {

// GitHub's anchor for a heading: lower case, spaces to '-', punctuation
// other than '-' and '_' dropped.
std::string anchor_of(const std::string& heading) {
    std::string out;
    for (char c : heading) {
        if (c >= 'A' && c <= 'Z') out += static_cast<char>(c - 'A' + 'a');
        else if (is_name_char(c) || c == '-') out += c;
        else if (c == ' ') out += '-';
    }
    return out;
}

Names anchors_in(const std::string& text) {
    Names anchors;
    bool in_fence = false;
    for (const std::string& line : lines_of(text)) {
        if (starts_with(line, "```")) in_fence = !in_fence;
        if (in_fence || !starts_with(line, "#")) continue;
        size_t start = line.find_first_not_of('#');
        if (start == std::string::npos || line[start] != ' ') continue;
        anchors.insert(anchor_of(line.substr(start + 1)));
    }
    return anchors;
}

// The targets of [text](target) links that stay in the repository.
std::vector<std::string> local_links(const std::string& text) {
    std::vector<std::string> links;
    for (size_t at = text.find("]("); at != std::string::npos; at = text.find("](", at + 2)) {
        size_t end = text.find(')', at + 2);
        if (end == std::string::npos) break;
        std::string target = text.substr(at + 2, end - at - 2);
        if (target.find("://") != std::string::npos || starts_with(target, "mailto:") || target.find(' ') != std::string::npos)
            continue;
        links.push_back(target);
    }
    return links;
}

bool is_directory(const std::string& path) {
    DIR* d = opendir(path.c_str());
    if (d) closedir(d);
    return d != nullptr;
}

std::string directory_of(const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
}

}  // namespace

TEST_CASE("every link between the docs reaches a file, and a heading when it names one", "[docs]") {
    size_t checked = 0;
    std::vector<std::string> pages = doc_pages();
    for (const std::string& name : files_in("bench", ".md")) pages.push_back("bench/" + name);
    for (const std::string& page : pages) {
        std::string text = read_text(page);
        for (const std::string& link : local_links(text)) {
            size_t hash = link.find('#');
            std::string file = link.substr(0, hash);
            std::string target = file.empty() ? page : directory_of(page) + file;
            std::string body = read_text(target);
            INFO(page << " links to " << link << " (" << target << ")");
            bool exists = !body.empty() || is_directory(target);
            CHECK(exists);
            if (hash != std::string::npos && exists) CHECK(anchors_in(body).count(link.substr(hash + 1)) == 1);
            ++checked;
        }
    }
    CHECK(checked >= 3);
    CHECK(anchor_of("Side by side with HAProxy and nginx `stream`") == "side-by-side-with-haproxy-and-nginx-stream");
    CHECK(local_links("see [a](docs/a.md#x), [b](https://e.org/) and [c](#y)") ==
          std::vector<std::string>{"docs/a.md#x", "#y"});
}

namespace {

bool has_word(const std::string& text, const std::string& word) {
    for (size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) {
        bool starts = at == 0 || !is_name_char(text[at - 1]);
        bool ends = at + word.size() >= text.size() || !is_name_char(text[at + word.size()]);
        if (starts && ends) return true;
    }
    return false;
}

// The names a page quotes from the code: backquoted `ns::Name`,
// `Class::method`, `snake_case` identifiers (a trailing "(...)" dropped),
// and file names ending in .hpp or .cpp.
struct Quoted {
    Names identifiers, files;
};

Quoted quoted_names(const std::string& text) {
    Quoted q;
    for (size_t at = text.find('`'); at != std::string::npos; at = text.find('`', at + 1)) {
        size_t end = text.find('`', at + 1);
        if (end == std::string::npos) break;
        std::string span = text.substr(at + 1, end - at - 1);
        at = end;
        if (span.find('\n') != std::string::npos) continue;
        size_t paren = span.find('(');
        if (paren != std::string::npos && span.back() == ')') span = span.substr(0, paren);
        if ((ends_with(span, ".hpp") || ends_with(span, ".cpp")) && span.find('*') == std::string::npos) {
            q.files.insert(span);
            continue;
        }
        bool identifier = !span.empty() && !(span[0] >= '0' && span[0] <= '9');
        for (char c : span) identifier = identifier && (is_name_char(c) || c == ':');
        if (identifier && (span.find("::") != std::string::npos || span.find('_') != std::string::npos))
            q.identifiers.insert(span);
    }
    return q;
}

std::string all_sources() {
    std::string text;
    for (const char* suffix : {".hpp", ".cpp"}) {
        for (const std::string& name : files_in(".", suffix)) text += read_text(name) + "\n";
        for (const std::string& name : files_in("tests", suffix)) text += read_text("tests/" + name) + "\n";
    }
    return text;
}

}  // namespace

TEST_CASE("every file, class and function docs/architecture.md names is in the code", "[docs]") {
    Quoted q = quoted_names(read_text("docs/architecture.md"));
    std::string code = all_sources();
    REQUIRE(q.identifiers.size() >= 40);
    for (const std::string& name : q.identifiers) {
        size_t start = 0;
        for (size_t sep = name.find("::"); start != std::string::npos; sep = name.find("::", start)) {
            std::string part = name.substr(start, sep == std::string::npos ? std::string::npos : sep - start);
            INFO("docs/architecture.md names " << name << ": no \"" << part << "\" in the sources");
            CHECK(has_word(code, part));
            start = sep == std::string::npos ? sep : sep + 2;
        }
    }
    for (const std::string& file : q.files) {
        INFO("docs/architecture.md names " << file);
        CHECK((!read_text(file).empty() || !read_text("tests/" + file).empty()));
    }
    Quoted t = quoted_names("`worker::Worker::run` `a_b(x, y)` `finish` `poller.hpp` `-t` `1_000` `x::y z` `tests/f_*.cpp`");
    CHECK(t.identifiers == Names{"worker::Worker::run", "a_b"});
    CHECK(t.files == Names{"poller.hpp"});
}

TEST_CASE("mixctl -h, docs/configuration.md and mixctl.8 all document MIXCTL_POLLER and its backends; a bad value exits 1",
          "[docs]") {
    harness::RunResult r = harness::run({"-h"});
    std::string readme = read_text("docs/configuration.md"), man = read_text("mixctl.8");
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

TEST_CASE("README.md is a landing page: short, and one click from every page under docs/", "[docs]") {
    std::string readme = read_text("README.md");
    size_t lines = lines_of(readme).size();
    INFO("README.md has " << lines << " lines; the reference belongs in docs/");
    CHECK(lines <= 260);
    std::vector<std::string> pages = files_in("docs", ".md");
    REQUIRE(pages.size() >= 5);
    for (const std::string& page : pages) {
        INFO("README.md does not link docs/" << page);
        CHECK(readme.find("](docs/" + page + ")") != std::string::npos);
    }
}

TEST_CASE("no draft or scratch file sits beside the sources or the docs", "[docs]") {
    for (const char* dir : {".", "docs", "tests", "contrib", "bench"}) {
        for (const std::string& name : files_in(dir, "")) {
            std::string lower;
            for (char c : name) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
            INFO(dir << "/" << name);
            CHECK(lower.find("draft") == std::string::npos);
            CHECK(lower.find("scratch") == std::string::npos);
            CHECK(!ends_with(lower, ".orig"));
            CHECK(!ends_with(lower, ".rej"));
            CHECK(!ends_with(lower, "~"));
        }
    }
}
