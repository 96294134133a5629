// Regression tests from fuzzing (make fuzz: tests/fuzz_yaml.cpp and
// tests/fuzz_config.cpp). Every input the fuzzers ever crashed on, or that
// broke one of their invariants, belongs here: as a named entry in the
// "fuzz edges" list below (with the artifact name and date) and as a file
// in tests/fuzz/corpus, the seed corpus, which the first test replays
// through the same checks in the normal build.
//
// Fuzzing so far (issue 5): about 1.4 million inputs per target with ASan and
// UBSan, no crash and no broken invariant. The cases below are the
// hand-made edges the seed corpus starts from.
#include <catch2/catch.hpp>

#include <dirent.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config.hpp"
#include "yaml_lite.hpp"

namespace {

int count_lines(const std::string& text) {
    int lines = 1;
    for (size_t i = 0; i < text.size(); ++i)
        if (text[i] == '\n' || (text[i] == '\r' && (i + 1 == text.size() || text[i + 1] != '\n'))) ++lines;
    return lines;
}

bool positions_inside(const yaml_lite::Node& node, int lines) {
    if (node.line < 1 || node.line > lines || node.column < 1) return false;
    for (const yaml_lite::Node& item : node.items)
        if (!positions_inside(item, lines)) return false;
    for (const yaml_lite::Entry& entry : node.entries)
        if (entry.line < 1 || entry.line > lines || !positions_inside(entry.value, lines)) return false;
    return true;
}

// The line number of a "fuzz.yaml:LINE: ..." diagnostic, or 0.
int diagnostic_line(const std::string& text) {
    const std::string prefix = "fuzz.yaml:";
    if (text.compare(0, prefix.size(), prefix) != 0) return 0;
    size_t at = prefix.size(), end = text.find(": ", at);
    if (end == std::string::npos || end == at || end - at > 9) return 0;
    for (size_t i = at; i < end; ++i)
        if (text[i] < '0' || text[i] > '9') return 0;
    return std::stoi(text.substr(at, end - at));
}

// The promises both fuzz targets check, as Catch assertions.
void check_input(const std::string& text) {
    const int lines = count_lines(text);
    yaml_lite::Result tree = yaml_lite::parse(text);
    for (const yaml_lite::Error& e : tree.errors) {
        CHECK(e.line >= 1);
        CHECK(e.line <= lines);
        CHECK(e.column >= 1);
        CHECK_FALSE(e.message.empty());
    }
    if (tree.ok() && tree.root.kind != yaml_lite::Kind::Null) CHECK(positions_inside(tree.root, lines));
    if (!tree.ok()) CHECK(tree.root.kind == yaml_lite::Kind::Null);

    config::Config cfg;
    config::Diagnostics diag;
    bool ok = config::parse_text(text, "fuzz.yaml", cfg, diag);
    CHECK(ok == diag.errors.empty());
    if (!tree.ok()) CHECK_FALSE(ok);
    for (const std::string& e : diag.errors) {
        INFO(e);
        int line = diagnostic_line(e);
        CHECK(line >= 1);
        CHECK(line <= lines);
    }
    for (const std::string& w : diag.warnings) {
        INFO(w);
        CHECK(diagnostic_line(w) >= 1);
        CHECK(w.find(": warning: ") != std::string::npos);
    }
    if (ok) {
        CHECK_FALSE(cfg.rules.empty());
        for (const config::Rule& r : cfg.rules) {
            CHECK_FALSE(r.name.empty());
            CHECK_FALSE(r.to.empty());
            for (const config::Upstream& u : r.to) {
                CHECK_FALSE(u.where.host.empty());
                CHECK(u.where.port != 0);
            }
        }
    }
    config::Diagnostics again;
    CHECK(config::parse_text(text, "fuzz.yaml", cfg, again) == ok);
    CHECK(again.errors == diag.errors);
    CHECK(again.warnings == diag.warnings);
}

std::string corpus_dir() {
    // Tests run from the top of the tree; __FILE__ covers a build from elsewhere.
    std::string here = __FILE__;
    size_t slash = here.rfind('/');
    for (std::string dir : {std::string("tests/fuzz/corpus"),
                            (slash == std::string::npos ? std::string(".") : here.substr(0, slash)) + "/fuzz/corpus"}) {
        if (DIR* d = opendir(dir.c_str())) {
            closedir(d);
            return dir;
        }
    }
    return "";
}

std::vector<std::string> corpus_files(const std::string& dir) {
    std::vector<std::string> files;
    DIR* d = opendir(dir.c_str());
    if (!d) return files;
    while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') files.push_back(dir + "/" + e->d_name);
    closedir(d);
    std::sort(files.begin(), files.end());
    return files;
}

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

std::string nested(const char* open, const char* close, int depth) {
    std::string text = "rules: ";
    for (int i = 0; i < depth; ++i) text += open;
    for (int i = 0; i < depth; ++i) text += close;
    return text + "\n";
}

}  // namespace

TEST_CASE("fuzz seed corpus: every file keeps the fuzzers' promises", "[fuzz][config]") {
    std::string dir = corpus_dir();
    REQUIRE_FALSE(dir.empty());
    std::vector<std::string> files = corpus_files(dir);
    REQUIRE(files.size() >= 20);
    int valid = 0;
    for (const std::string& file : files) {
        INFO(file);
        std::string text = read_all(file);
        check_input(text);
        config::Config cfg;
        config::Diagnostics diag;
        if (config::parse_text(text, "fuzz.yaml", cfg, diag)) ++valid;
        // The file names say which ones are meant to be valid.
        bool meant_valid = file.find("/valid_") != std::string::npos;
        bool meant_invalid = file.find("/bad_") != std::string::npos;
        if (meant_valid) {
            INFO((diag.errors.empty() ? std::string() : diag.errors.front()));
            CHECK(diag.errors.empty());
        }
        if (meant_invalid) CHECK_FALSE(diag.errors.empty());
    }
    CHECK(valid >= 5);
}

TEST_CASE("fuzz edges: nesting, sizes, odd bytes and line breaks are handled, not crashed on", "[fuzz][config]") {
    const std::vector<std::string> inputs = {
        "",
        "\n",
        "\r",
        "\r\r\r",
        "\xEF\xBB\xBF",
        std::string("rules:\0\n- from: 127.0.0.1:0\n", 28),
        std::string(1, '\0'),
        nested("[", "]", 63),
        nested("[", "]", 64),
        nested("[", "]", 65),
        nested("{a: ", "}", 65),
        nested("[", "", 200),  // unclosed
        "rules:\n- from: 127.0.0.1:0\n  to: [127.0.0.1:1]\n  max_fails: -99999999999\n",
        "rules:\n- from: 127.0.0.1:0\n  to: [127.0.0.1:1]\n  fail_timeout: 9223372036854775807h\n",
        "rules:\n- from: 127.0.0.1:0\n  to: [127.0.0.1:1]\n  fail_timeout: -.5s\n",
        "rules:\n- from: \"[::1]:0\"\n  to: [\"[::1]:99999\", \"[:\", \"]:1\", \"[]:1\"]\n",
        "rules:\n- from: 127.0.0.1:0\n  to: \"\\x00\\u0000\\U00110000\\uDFFF\"\n",
        "rules:\n- from: 127.0.0.1:0\n  to: [127.0.0.1:1]\n" + std::string(5000, ' ') + "x: y\n",
        "rules: [" + std::string(3000, ',') + "]\n",
        "a: &x 1\nb: *x\n",
        "? complex\n: key\n",
        "rules:\n  - from: 127.0.0.1:0\n    to: [127.0.0.1:1]\n   - from: 127.0.0.1:0\n",
        "rules:\n- {from: 127.0.0.1:0, to: [127.0.0.1:1], health_check: {interval: 0s, rise: 0}}\n",
        "rules:\n- from: 127.0.0.1:0\n  to:\n  - {address: 127.0.0.1:1, weight: 1000001, backup: yes}\n",
    };
    for (size_t i = 0; i < inputs.size(); ++i) {
        INFO("input " << i << ": " << inputs[i].substr(0, 120));
        check_input(inputs[i]);
    }
}
