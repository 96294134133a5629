// fuzz_check.hpp - what the libFuzzer targets (tests/fuzz_NAME.cpp) share: a check that fails as a crash, line counting.
// Owns nothing else; never touches a file, the network or the parsers it checks.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <string_view>

namespace fuzz_check {

// A broken promise aborts: libFuzzer keeps the input as a crash.
inline void require(bool condition) {
    if (!condition) std::abort();
}

// Lines as yaml_lite counts them: "\r\n" is one break, a lone '\r' is one too.
inline int count_lines(std::string_view text) {
    int lines = 1;
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\n' || (text[i] == '\r' && (i + 1 == text.size() || text[i + 1] != '\n'))) ++lines;
    }
    return lines;
}

}  // namespace fuzz_check
