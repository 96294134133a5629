// libFuzzer entry point for yaml_lite::parse.
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz_yaml.cpp -o fuzz_yaml
//   ./fuzz_yaml -max_total_time=30 corpus/
// Besides crashes and hangs it checks the promises callers rely on: positions are
// 1-based and inside the text, a failed parse hands out no tree, and a parse is
// deterministic.
#include "yaml_lite.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace {

void require(bool condition) {
    if (!condition) std::abort();
}

int countLines(std::string_view text) {
    int lines = 1;
    for (size_t i = 0; i < text.size(); ++i) {
        // "\r\n" is one break, a lone '\r' is one too.
        if (text[i] == '\n' || (text[i] == '\r' && (i + 1 == text.size() || text[i + 1] != '\n'))) ++lines;
    }
    return lines;
}

void checkPosition(int line, int column, int lines) {
    require(line >= 1 && line <= lines);
    require(column >= 1);
}

void checkNode(const yaml_lite::Node& node, int lines) {
    using yaml_lite::Kind;
    checkPosition(node.line, node.column, lines);
    if (node.kind != Kind::Scalar) require(node.scalar.empty() && !node.quoted);
    // octets: only for a quoted scalar, only when it differs; each \xNN byte is
    // one byte where scalar has two, so it is never longer.
    require(node.has_octets ? node.quoted && node.octets != node.scalar && node.octets.size() < node.scalar.size()
                            : node.octets.empty());
    if (node.kind != Kind::Sequence) require(node.items.empty());
    if (node.kind != Kind::Mapping) require(node.entries.empty());
    for (const yaml_lite::Node& item : node.items) checkNode(item, lines);
    for (const yaml_lite::Entry& entry : node.entries) {
        checkPosition(entry.line, entry.column, lines);
        require(node.find(entry.key) == &entry.value);  // keys are unique after a clean parse
        checkNode(entry.value, lines);
    }
}

bool sameTree(const yaml_lite::Node& a, const yaml_lite::Node& b) {
    if (a.kind != b.kind || a.line != b.line || a.column != b.column || a.scalar != b.scalar ||
        a.quoted != b.quoted || a.items.size() != b.items.size() || a.entries.size() != b.entries.size())
        return false;
    for (size_t i = 0; i < a.items.size(); ++i)
        if (!sameTree(a.items[i], b.items[i])) return false;
    for (size_t i = 0; i < a.entries.size(); ++i)
        if (a.entries[i].key != b.entries[i].key || !sameTree(a.entries[i].value, b.entries[i].value)) return false;
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    const yaml_lite::Result result = yaml_lite::parse(text);
    const int lines = countLines(text);

    for (const yaml_lite::Error& error : result.errors) {
        checkPosition(error.line, error.column, lines);
        require(!error.message.empty());
        require(error.message.back() != '.');
        require(error.message.compare(0, 5, "line ") != 0);
    }
    if (result.ok()) {
        if (result.root.kind != yaml_lite::Kind::Null) checkNode(result.root, lines);
    } else {
        require(result.root.kind == yaml_lite::Kind::Null && result.root.entries.empty() && result.root.items.empty());
    }

    const yaml_lite::Result again = yaml_lite::parse(text);
    require(again.errors.size() == result.errors.size());
    require(sameTree(again.root, result.root));
    return 0;
}
