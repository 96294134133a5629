// libFuzzer entry point for the whole rules-file path: yaml_lite::parse and
// config::parse_text (the validation mixctl, -check and a reload run).
//   make fuzz                       (builds build/fuzz/fuzz_config, runs it on a copy of tests/fuzz/corpus)
//   build/fuzz/fuzz_config -max_total_time=30 some_corpus_dir/
// Besides crashes, hangs, leaks and undefined behaviour it checks what mixctl
// relies on: every diagnostic is "file:line: message" with the line inside the
// text, the outcome agrees with the diagnostics, a YAML error always fails the
// config, a valid config is complete (rules, listeners, upstreams, sane policy
// values, no two rules on one listener) and validation is deterministic.
// Nothing here touches the network: names are only parsed, never resolved.
#include "config.hpp"
#include "yaml_lite.hpp"
#include "tests/fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

const std::string kFile = "fuzz.yaml";

using fuzz_check::require;
using fuzz_check::count_lines;

// "fuzz.yaml:LINE: message" with 1 <= LINE <= lines and a non-empty message.
void checkDiagnostic(const std::string& text, int lines, bool warning) {
    require(text.compare(0, kFile.size() + 1, kFile + ":") == 0);
    size_t at = kFile.size() + 1;
    long line = 0;
    size_t digits = 0;
    while (at < text.size() && text[at] >= '0' && text[at] <= '9' && digits < 10) {
        line = line * 10 + (text[at] - '0');
        ++at;
        ++digits;
    }
    require(digits > 0 && line >= 1 && line <= lines);
    require(text.compare(at, 2, ": ") == 0);
    require(text.size() > at + 2);
    if (warning) require(text.compare(at + 2, 9, "warning: ") == 0);
}

bool positive(config::Duration d) { return d.count() > 0; }

void checkConfig(const config::Config& cfg, int lines) {
    require(!cfg.rules.empty());
    for (const config::Rule& rule : cfg.rules) {
        require(!rule.name.empty());
        require(!rule.from_text.empty());
        require(rule.line >= 1 && rule.line <= lines);
        require(rule.from_line >= 1 && rule.from_line <= lines);
        require(!rule.to.empty());
        for (const config::Upstream& up : rule.to) {
            require(!up.text.empty());
            require(!up.where.host.empty());
            require(up.where.port != 0);
            require(up.line >= 1 && up.line <= lines);
            require(up.weight >= 1 && up.weight <= 1000000);
        }
        const config::Policy& p = rule.policy;
        require(p.max_fails >= 1 && p.max_fails <= 1000000);
        require(positive(p.fail_timeout));
        require(positive(p.resolve_interval));
        require(positive(p.health.interval) && positive(p.health.timeout));
        require(p.health.rise >= 1 && p.health.rise <= 1000);
        require(p.health.fall >= 1 && p.health.fall <= 1000);
    }
    // Two rules on one (non-ephemeral) listener must have been refused.
    for (size_t i = 0; i < cfg.rules.size(); ++i) {
        const net::HostPort& a = cfg.rules[i].from;
        if (a.port == 0) continue;
        for (size_t j = 0; j < i; ++j) {
            const net::HostPort& b = cfg.rules[j].from;
            if (a.port != b.port || a.host.size() != b.host.size()) continue;
            bool same = true;
            for (size_t k = 0; same && k < a.host.size(); ++k) {
                char x = a.host[k], y = b.host[k];
                if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
                if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
                same = x == y;
            }
            require(!same);
        }
    }
    if (cfg.has_metrics) require(cfg.metrics_line >= 1 && cfg.metrics_line <= lines);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    const int lines = count_lines(text);

    config::Config cfg;
    config::Diagnostics diag;
    const bool ok = config::parse_text(text, kFile, cfg, diag);

    require(ok == diag.errors.empty());
    if (!yaml_lite::parse(text).ok()) require(!ok);
    for (const std::string& e : diag.errors) checkDiagnostic(e, lines, false);
    for (const std::string& w : diag.warnings) checkDiagnostic(w, lines, true);
    if (ok) checkConfig(cfg, lines);

    // The same text gives the same verdict and the same words (a reload and
    // -check must agree), even into a Config that already holds rules.
    config::Diagnostics again;
    const bool ok_again = config::parse_text(text, kFile, cfg, again);
    require(ok_again == ok);
    require(again.errors == diag.errors);
    require(again.warnings == diag.warnings);
    return 0;
}
