// config_helpers.hpp - loading a rules text for the config tests and reading its diagnostics.
// Owns nothing but these helpers; never touches a file or the network (config::parse_text only).
#pragma once

#include <string>
#include <vector>

#include "config.hpp"

namespace config_helpers {

struct Loaded {
    bool ok = false;
    config::Config cfg;
    config::Diagnostics diag;
};

// Parses `text` as the file "rules.yaml".
inline Loaded load(const std::string& text) {
    Loaded l;
    l.ok = config::parse_text(text, "rules.yaml", l.cfg, l.diag);
    return l;
}

inline bool has_message(const std::vector<std::string>& list, const std::string& needle) {
    for (const std::string& m : list)
        if (m.find(needle) != std::string::npos) return true;
    return false;
}

// Every message, one a line (for INFO).
inline std::string all(const std::vector<std::string>& list) {
    std::string out;
    for (const std::string& m : list) out += m + "\n";
    return out;
}

}  // namespace config_helpers
