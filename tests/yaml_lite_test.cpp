// Tests for yaml_lite.hpp. Trees are compared through two compact renderings:
//   tree:      {key: value, ...}  [item, ...]  plain  "quoted"  <null>
//   positions: M/Q/S/N (mapping, sequence, scalar, null) + line:column,
//              with keys as key@line:column=value
#include <catch2/catch.hpp>

#include "yaml_lite.hpp"

#include <cstdio>
#include <string>
#include <vector>

using yaml_lite::Kind;
using yaml_lite::Node;
using yaml_lite::parse;

namespace {

std::string quoteForDump(const std::string& text) {
    std::string out = "\"";
    for (char c : text) {
        unsigned char byte = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c == '\r') {
            out += "\\r";
        } else if (byte < 0x20 || byte >= 0x7F) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "\\x%02X", byte);
            out += hex;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

std::string tree(const Node& node) {
    std::string out;
    switch (node.kind) {
        case Kind::Null: return "<null>";
        case Kind::Scalar: return node.quoted ? quoteForDump(node.scalar) : node.scalar;
        case Kind::Sequence:
            for (const Node& item : node.items) out += (out.empty() ? "" : ", ") + tree(item);
            return "[" + out + "]";
        case Kind::Mapping:
            for (const auto& entry : node.entries)
                out += (out.empty() ? "" : ", ") + entry.key + ": " + tree(entry.value);
            return "{" + out + "}";
    }
    return "?";
}

std::string where(int line, int column) { return std::to_string(line) + ":" + std::to_string(column); }

std::string positions(const Node& node) {
    std::string out;
    switch (node.kind) {
        case Kind::Null: return "N" + where(node.line, node.column);
        case Kind::Scalar: return "S" + where(node.line, node.column);
        case Kind::Sequence:
            for (const Node& item : node.items) out += (out.empty() ? "" : ", ") + positions(item);
            return "Q" + where(node.line, node.column) + "[" + out + "]";
        case Kind::Mapping:
            for (const auto& entry : node.entries)
                out += (out.empty() ? "" : ", ") + entry.key + "@" + where(entry.line, entry.column) + "=" +
                       positions(entry.value);
            return "M" + where(node.line, node.column) + "{" + out + "}";
    }
    return "?";
}

std::string describeErrors(const yaml_lite::Result& result) {
    std::string out;
    for (const auto& error : result.errors)
        out += where(error.line, error.column) + ": " + error.message + "\n";
    return out;
}

struct Accepted {
    const char* claim;
    std::string yaml;
    const char* tree;
    const char* positions;  // nullptr: not checked
};

void checkAccepted(const std::vector<Accepted>& cases) {
    for (const Accepted& c : cases) {
        INFO(c.claim);
        INFO("yaml:\n" << c.yaml);
        auto result = parse(c.yaml);
        INFO(describeErrors(result));
        CHECK(result.ok());
        CHECK(tree(result.root) == c.tree);
        if (c.positions) CHECK(positions(result.root) == c.positions);
    }
}

struct Rejected {
    const char* claim;
    std::string yaml;
    int line;
    const char* message;  // a substring of the first error at `line`
    int column = 0;       // 0: not checked
    size_t errorCount = 1;
};

void checkRejected(const std::vector<Rejected>& cases) {
    for (const Rejected& c : cases) {
        INFO(c.claim);
        INFO("yaml:\n" << c.yaml);
        auto result = parse(c.yaml);
        INFO(describeErrors(result));
        CHECK_FALSE(result.ok());
        if (result.ok()) continue;
        CHECK(result.errors.size() == c.errorCount);
        CHECK(result.root.kind == Kind::Null);
        const yaml_lite::Error& error = result.errors.front();
        CHECK(error.line == c.line);
        CHECK(error.message.find(c.message) != std::string::npos);
        if (c.column) CHECK(error.column == c.column);
        for (const auto& each : result.errors) {
            // The caller formats "file:line: message", so messages are bare, lowercase, unpunctuated.
            CHECK(each.line >= 1);
            CHECK(each.column >= 1);
            CHECK_FALSE(each.message.empty());
            CHECK(each.message.rfind("line ", 0) == std::string::npos);
            CHECK_FALSE((each.message.front() >= 'A' && each.message.front() <= 'Z'));
            CHECK(each.message.back() != '.');
        }
    }
}

const char* const kGoToolFile =
    "version: 0.1\n"
    "\n"
    "rules:\n"
    "- name: remap-local-ssh-port\n"
    "  from: 127.0.0.1:2222\n"
    "  to:\n"
    "    - 127.0.0.1:22\n"
    "\n"
    "- name: local-web-server\n"
    "  from: 127.0.0.1:3000\n"
    "  to:\n"
    "    - 127.0.0.1:8080\n"
    "    - 127.0.0.1:8081\n";

const char* const kGoToolTree =
    "{version: 0.1, rules: [{name: remap-local-ssh-port, from: 127.0.0.1:2222, to: [127.0.0.1:22]}, "
    "{name: local-web-server, from: 127.0.0.1:3000, to: [127.0.0.1:8080, 127.0.0.1:8081]}]}";

const char* const kGoToolPositions =
    "M1:1{version@1:1=S1:10, rules@3:1=Q4:1["
    "M4:3{name@4:3=S4:9, from@5:3=S5:9, to@6:3=Q7:5[S7:7]}, "
    "M9:3{name@9:3=S9:9, from@10:3=S10:9, to@11:3=Q12:5[S12:7, S13:7]}]}";

std::string replaceAll(std::string text, const std::string& from, const std::string& to) {
    for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
        text.replace(at, from.size(), to);
    return text;
}

std::string repeat(const std::string& piece, int times) {
    std::string out;
    for (int i = 0; i < times; ++i) out += piece;
    return out;
}

// "k0:\n  k1:\n    k2: ... kN-1: leaf": `levels` mappings, one inside the other.
std::string nestedBlockMappings(int levels) {
    std::string out;
    for (int i = 0; i < levels; ++i)
        out += std::string(size_t(i) * 2, ' ') + "k" + std::to_string(i) + (i + 1 == levels ? ": leaf\n" : ":\n");
    return out;
}

}  // namespace

TEST_CASE("the Go tool's example rules file parses into the expected tree", "[yaml_lite]") {
    auto result = parse(kGoToolFile);
    INFO(describeErrors(result));
    REQUIRE(result.ok());
    CHECK(tree(result.root) == kGoToolTree);
    CHECK(positions(result.root) == kGoToolPositions);

    const Node& root = result.root;
    REQUIRE(root.kind == Kind::Mapping);
    REQUIRE(root.find("version") != nullptr);
    CHECK(root.find("version")->scalar == "0.1");
    CHECK_FALSE(root.find("version")->quoted);
    const Node* rules = root.find("rules");
    REQUIRE(rules != nullptr);
    REQUIRE(rules->kind == Kind::Sequence);
    REQUIRE(rules->items.size() == 2);
    const Node& second = rules->items[1];
    CHECK(second.find("name")->scalar == "local-web-server");
    CHECK(second.find("from")->scalar == "127.0.0.1:3000");
    const Node* to = second.find("to");
    REQUIRE(to != nullptr);
    REQUIRE(to->items.size() == 2);
    CHECK(to->items[1].scalar == "127.0.0.1:8081");
    CHECK(to->items[1].line == 13);
    CHECK(root.entries[1].key == "rules");
    CHECK(root.entries[1].line == 3);
}

TEST_CASE("variants of the Go tool's file parse to the same tree", "[yaml_lite]") {
    std::string crlfWithBom = "\xEF\xBB\xBF" + replaceAll(kGoToolFile, "\n", "\r\n");
    std::string loneCr = replaceAll(kGoToolFile, "\n", "\r");
    std::string commented =
        "# mixctl rules\n"
        "--- # the one document\n"
        "version: 0.1   # format version\n"
        "\n"
        "rules:          # list of rules\n"
        "# first rule\n"
        "- name: remap-local-ssh-port  # ssh\n"
        "  from: 127.0.0.1:2222\n"
        "    # an indented comment line\n"
        "  to:\n"
        "    - 127.0.0.1:22  # target\n"
        "\n"
        "  # a comment at the mapping's indentation\n"
        "- name: local-web-server\n"
        "  from: 127.0.0.1:3000 \t\n"
        "  to: # two targets\n"
        "    - 127.0.0.1:8080\n"
        "#   - 127.0.0.1:9999\n"
        "    - 127.0.0.1:8081\n"
        "...\n"
        "# trailing comment\n";
    std::string flowFirstRule =
        "version: \"0.1\"\n"
        "rules:\n"
        "  - {name: remap-local-ssh-port, from: 127.0.0.1:2222, to: [127.0.0.1:22]}\n"
        "  - name: 'local-web-server'\n"
        "    from: \"127.0.0.1:3000\"\n"
        "    to: [\n"
        "      127.0.0.1:8080,\n"
        "      127.0.0.1:8081,\n"
        "    ]\n";

    checkAccepted({
        {"CRLF line endings and a UTF-8 BOM change nothing", crlfWithBom, kGoToolTree, kGoToolPositions},
        {"lone CR line endings are read as line breaks", loneCr, kGoToolTree, kGoToolPositions},
        {"comments, a --- marker and a ... marker change nothing", commented, kGoToolTree, nullptr},
    });

    auto flow = parse(flowFirstRule);
    INFO(describeErrors(flow));
    REQUIRE(flow.ok());
    CHECK(tree(flow.root) ==
          "{version: \"0.1\", rules: [{name: remap-local-ssh-port, from: 127.0.0.1:2222, to: [127.0.0.1:22]}, "
          "{name: \"local-web-server\", from: \"127.0.0.1:3000\", to: [127.0.0.1:8080, 127.0.0.1:8081]}]}");
}

TEST_CASE("the all-flow form of a rules file parses", "[yaml_lite]") {
    checkAccepted({
        {"a flow sequence of flow mappings holds a whole rule set",
         "rules: [{name: a, from: \"127.0.0.1:1\", to: [127.0.0.1:2, '127.0.0.1:3']}]\n",
         "{rules: [{name: a, from: \"127.0.0.1:1\", to: [127.0.0.1:2, \"127.0.0.1:3\"]}]}",
         "M1:1{rules@1:1=Q1:8[M1:9{name@1:10=S1:16, from@1:19=S1:25, to@1:40=Q1:44[S1:45, S1:58]}]}"},
    });
}

TEST_CASE("block mappings and sequences nest by indentation", "[yaml_lite]") {
    checkAccepted({
        {"a block mapping keeps its keys in file order", "b: 1\na: two words\n", "{b: 1, a: two words}",
         "M1:1{b@1:1=S1:4, a@2:1=S2:4}"},
        {"a deeper-indented block under a key is that key's value",
         "server:\n  host: example\n  port: 22\nname: x\n", "{server: {host: example, port: 22}, name: x}",
         "M1:1{server@1:1=M2:3{host@2:3=S2:9, port@3:3=S3:9}, name@4:1=S4:7}"},
        {"a sequence at the key's indentation belongs to the key", "rules:\n- a\n- b\nnext: 1\n",
         "{rules: [a, b], next: 1}", "M1:1{rules@1:1=Q2:1[S2:3, S3:3], next@4:1=S4:7}"},
        {"a sequence indented under its key belongs to the key", "rules:\n  - a\n  - b\nnext: 1\n",
         "{rules: [a, b], next: 1}", "M1:1{rules@1:1=Q2:3[S2:5, S3:5], next@4:1=S4:7}"},
        {"a mapping may start on the dash line and continue aligned with its first key",
         "- name: a\n  from: b\n- name: c\n", "[{name: a, from: b}, {name: c}]",
         "Q1:1[M1:3{name@1:3=S1:9, from@2:3=S2:9}, M3:3{name@3:3=S3:9}]"},
        {"extra spaces after the dash move the mapping's column", "-   name: a\n    from: b\n",
         "[{name: a, from: b}]", "Q1:1[M1:5{name@1:5=S1:11, from@2:5=S2:11}]"},
        {"a sequence item may hold a mapping that starts on the next line", "-\n  name: a\n  from: b\n",
         "[{name: a, from: b}]", "Q1:1[M2:3{name@2:3=S2:9, from@3:3=S3:9}]"},
        {"a dash followed by a comment holds the block below it", "- # rule\n  a: 1\n", "[{a: 1}]", nullptr},
        {"a sequence may start on another sequence's dash line", "- - a\n  - b\n- c\n", "[[a, b], c]",
         "Q1:1[Q1:3[S1:5, S2:5], S3:3]"},
        {"compact sequences nest several levels on one line", "- - - deep\n", "[[[deep]]]", nullptr},
        {"a key-level sequence works inside a mapping that started on a dash line",
         "- name: a\n  to:\n  - x\n  - y\n  from: b\n", "[{name: a, to: [x, y], from: b}]",
         "Q1:1[M1:3{name@1:3=S1:9, to@2:3=Q3:3[S3:5, S4:5], from@5:3=S5:9}]"},
        {"indentation steps need not be two spaces", "a:\n    b:\n          - c: 1\n            d: 2\n",
         "{a: {b: [{c: 1, d: 2}]}}", nullptr},
        {"a whole document may be indented", "  a: 1\n  b: 2\n", "{a: 1, b: 2}", "M1:3{a@1:3=S1:6, b@2:3=S2:6}"},
        {"the root may be a block sequence", "- a\n- b\n", "[a, b]", "Q1:1[S1:3, S2:3]"},
        {"the root may be a single scalar", "hello world\n", "hello world", "S1:1"},
        {"a block mapping key may contain spaces", "my key: v\n", "{my key: v}", nullptr},
    });
}

TEST_CASE("a key or dash with nothing after it holds a null", "[yaml_lite]") {
    checkAccepted({
        {"a key followed by a sibling is null, positioned at the key", "a:\nb: 1\n", "{a: <null>, b: 1}",
         "M1:1{a@1:1=N1:1, b@2:1=S2:4}"},
        {"a key at the end of the file is null", "a:", "{a: <null>}", "M1:1{a@1:1=N1:1}"},
        {"a key followed by only a comment is null", "a: # nothing\nb:\n", "{a: <null>, b: <null>}", nullptr},
        {"a nested key followed by a dedent is null", "outer:\n  inner:\nnext: 1\n",
         "{outer: {inner: <null>}, next: 1}", "M1:1{outer@1:1=M2:3{inner@2:3=N2:3}, next@3:1=S3:7}"},
        {"empty sequence items are null, positioned at the dash", "- \n- a\n-\n", "[<null>, a, <null>]",
         "Q1:1[N1:1, S2:3, N3:1]"},
        {"a null key in a dash-line mapping does not swallow the next item", "- a:\n- b\n", "[{a: <null>}, b]",
         nullptr},
    });
}

TEST_CASE("flow collections parse anywhere a value can go", "[yaml_lite]") {
    checkAccepted({
        {"a flow sequence mixes plain and quoted scalars", "to: [a, \"b\"]\n", "{to: [a, \"b\"]}",
         "M1:1{to@1:1=Q1:5[S1:6, S1:9]}"},
        {"empty flow collections are empty", "s: []\nm: {}\n", "{s: [], m: {}}", "M1:1{s@1:1=Q1:4[], m@2:1=M2:4{}}"},
        {"odd spacing inside flow sequences is ignored", "to: [ a ,b ]\n", "{to: [a, b]}", nullptr},
        {"a trailing comma is allowed", "to: [a, b,]\nm: {a: 1,}\n", "{to: [a, b], m: {a: 1}}", nullptr},
        {"a flow sequence may span lines and close at the key's column", "to: [\n  a,\n  b\n]\n",
         "{to: [a, b]}", "M1:1{to@1:1=Q1:5[S2:3, S3:3]}"},
        {"flow mappings hold scalars, quoted addresses and flow sequences",
         "r: {name: x, from: \"1.2.3.4:5\", to: [a, b]}\n", "{r: {name: x, from: \"1.2.3.4:5\", to: [a, b]}}",
         nullptr},
        {"flow collections nest", "x: [[a, [b]], {c: {d: e}}, []]\n", "{x: [[a, [b]], {c: {d: e}}, []]}",
         nullptr},
        {"a flow mapping may span lines", "r: {name: a,\n    from: b,\n}\n", "{r: {name: a, from: b}}", nullptr},
        {"json-style flow mappings parse", "{\"a\":1, \"b\": [true, null]}\n", "{a: 1, b: [true, null]}",
         "M1:1{a@1:2=S1:6, b@1:9=Q1:14[S1:15, S1:21]}"},
        {"a flow mapping key without a value is null", "s: {a, b: 1, c: }\n", "{s: {a: <null>, b: 1, c: <null>}}",
         nullptr},
        {"a comment may be glued to a closing bracket or quote, as go-yaml allows",
         "a: [x,#c\n  y]#d\nb: 'p'#e\nc: {k: v}#f\n", "{a: [x, y], b: \"p\", c: {k: v}}", nullptr},
        {"comments may sit inside multi-line flow collections", "to: [ # first\n  a, # x\n  b ]\n", "{to: [a, b]}",
         nullptr},
        {"the root may be a flow collection spanning lines", "[a,\nb]\n", "[a, b]", nullptr},
        {"flow collections may be sequence items", "- [a, b]\n- {c: d}\n", "[[a, b], {c: d}]", nullptr},
        {"a closing bracket may sit at the enclosing mapping's column", "- to: [\n    a\n  ]\n", "[{to: [a]}]",
         nullptr},
        {"a plain scalar inside a flow collection may contain colons", "to: [127.0.0.1:22, {a: http://x}]\n",
         "{to: [127.0.0.1:22, {a: http://x}]}", nullptr},
        {"a quote inside a plain scalar is data", "a: [x \"y\", it's]\n", "{a: [x \"y\", it's]}", nullptr},
        {"a bracketed address in a flow sequence is an ipv6 literal", "to: [::1]\n", "{to: [::1]}", nullptr},
    });
}

TEST_CASE("plain scalars keep their text exactly as written", "[yaml_lite]") {
    checkAccepted({
        {"colons not followed by a space are data", "addr: 127.0.0.1:22\n", "{addr: 127.0.0.1:22}", nullptr},
        {"urls keep their colon, query and fragment", "url: http://x.y/z?a=b#frag\n",
         "{url: http://x.y/z?a=b#frag}", nullptr},
        {"inner spaces stay and trailing spaces go", "name: my rule 1   \n", "{name: my rule 1}", nullptr},
        {"a # not preceded by a space is data", "a: x#y\nb: x #y\n", "{a: x#y, b: x}", nullptr},
        {"indicator characters inside a plain scalar are data",
         "a: a&b\nb: x*y\nc: -1\nd: :x\ne: ?y\nf: a!b\ng: x[1]{2}\n",
         "{a: a&b, b: x*y, c: -1, d: :x, e: ?y, f: a!b, g: x[1]{2}}", nullptr},
        {"no type resolution is done", "a: 0.1\nb: true\nc: ~\nd: null\ne: 010\nf: 1e3\n",
         "{a: 0.1, b: true, c: ~, d: null, e: 010, f: 1e3}", nullptr},
        {"a tab may separate a key from its value and sit inside a value", "a:\tvalue\t\nb: x\ty\n",
         "{a: value, b: x\ty}", "M1:1{a@1:1=S1:4, b@2:1=S2:4}"},
    });

    auto result = parse("t: true\nq: 'true'\n");
    REQUIRE(result.ok());
    CHECK_FALSE(result.root.find("t")->quoted);
    CHECK(result.root.find("q")->quoted);
}

TEST_CASE("quoted scalars decode quotes and escapes", "[yaml_lite]") {
    checkAccepted({
        {"two single quotes make one", "a: 'it''s'\n", "{a: \"it's\"}", "M1:1{a@1:1=S1:4}"},
        {"double-quoted scalars decode \\\" \\\\ and \\/", "a: \"q\\\"b\\\\s\\/n\"\n", "{a: \"q\\\"b\\\\s/n\"}",
         nullptr},
        {"control escapes decode to their bytes", "a: \"\\n\\t\\r\\0\"\n", "{a: \"\\n\\t\\r\\x00\"}", nullptr},
        {"hex and unicode escapes encode to utf-8", "a: \"\\x41\\u00e9\\U0001F600\"\n",
         "{a: \"A\\xC3\\xA9\\xF0\\x9F\\x98\\x80\"}", nullptr},
        {"a json surrogate pair decodes to one character", "a: \"\\uD83D\\uDE00\"\n",
         "{a: \"\\xF0\\x9F\\x98\\x80\"}", nullptr},
        {"yaml's other escapes decode too", "a: \"\\e\\N\\_\\ \\a\\b\\v\\f\\L\\P\\\t\"\n",
         "{a: \"\\x1B\\xC2\\x85\\xC2\\xA0 \\x07\\x08\\x0B\\x0C\\xE2\\x80\\xA8\\xE2\\x80\\xA9\\t\"}", nullptr},
        {"quoted keys are keys", "\"from\": x\n'to': y\n", "{from: x, to: y}", "M1:1{from@1:1=S1:9, to@2:1=S2:7}"},
        {"a # inside quotes is data", "a: \"x # y\"\nb: 'p #q'  # real comment\n", "{a: \"x # y\", b: \"p #q\"}",
         nullptr},
        {"empty quoted scalars are empty strings, not null", "a: \"\"\nb: ''\n", "{a: \"\", b: \"\"}", nullptr},
        {"a colon and space inside quotes is data", "a: \"b: c\"\n\"k: v\": w\n", "{a: \"b: c\", k: v: w}", nullptr},
        {"quoting makes a bracketed ipv6 address a scalar", "from: \"[::1]:22\"\n", "{from: \"[::1]:22\"}", nullptr},
        {"a line break inside quotes folds to a space and a blank line to a newline",
         "a: \"one  \n  two\n\n  three\"\n", "{a: \"one two\\nthree\"}", nullptr},
        {"an escaped line break joins the lines", "a: \"abc\\\n   def\"\n", "{a: \"abcdef\"}", nullptr},
        {"single-quoted scalars fold too", "a: 'x  \n  y'\n", "{a: \"x y\"}", nullptr},
        {"escaped whitespace before a line break is kept", "a: \"x\\t\n  y\"\n", "{a: \"x\\t y\"}", nullptr},
    });
}

TEST_CASE("octets read \\xNN escapes as single bytes, scalar as yaml's characters", "[yaml_lite]") {
    auto result = parse("a: \"\\x12\\x81\\x80\\u00e9 z\"\nb: \"\\x41\\x7f\"\nc: '\\x81'\n");
    REQUIRE(result.ok());
    const Node* a = result.root.find("a");
    CHECK(a->scalar == "\x12\xC2\x81\xC2\x80\xC3\xA9 z");
    CHECK(a->has_octets);
    CHECK(a->bytes() == "\x12\x81\x80\xC3\xA9 z");  // \u stays a character: only \x means a byte
    const Node* b = result.root.find("b");  // nothing above \x7f: one form
    CHECK_FALSE(b->has_octets);
    CHECK(b->bytes() == "A\x7f");
    const Node* c = result.root.find("c");  // single quotes have no escapes
    CHECK_FALSE(c->has_octets);
    CHECK(c->bytes() == "\\x81");
}

TEST_CASE("comments, blank lines, markers and line endings are tolerated", "[yaml_lite]") {
    checkAccepted({
        {"comments and blank lines are skipped wherever they are",
         "# head\n\na: 1 # tail\n   # indented comment\n\t# tab-indented comment\n  \t \nb: 2\n#end", "{a: 1, b: 2}",
         "M3:1{a@3:1=S3:4, b@7:1=S7:4}"},
        {"--- may open the document and ... may close it", "---\na: 1\n...\n", "{a: 1}", "M2:1{a@2:1=S2:4}"},
        {"markers may carry comments", "--- # doc\na: 1\n... # end\n# trailing\n", "{a: 1}", nullptr},
        {"a missing final newline is fine", "a: 1", "{a: 1}", nullptr},
        {"a comment line with a tab in front does not count as indentation", "a:\n\t# c\n  b: 1\n", "{a: {b: 1}}",
         nullptr},
        {"crlf endings inside quoted and flow content are line breaks", "a: [x,\r\n  y]\r\nb: \"p\r\n  q\"\r\n",
         "{a: [x, y], b: \"p q\"}", nullptr},
    });
}

TEST_CASE("a document without content is a null root", "[yaml_lite]") {
    for (std::string empty : {"", "\n\n", "# only a comment\n", "---\n", "---\n...\n", "\xEF\xBB\xBF", "  \n\t\n"}) {
        INFO("yaml: " << empty);
        auto result = parse(empty);
        INFO(describeErrors(result));
        CHECK(result.ok());
        CHECK(result.root.kind == Kind::Null);
    }
}

TEST_CASE("find looks up mapping keys only", "[yaml_lite]") {
    auto result = parse("a: 1\nb: [x]\n");
    REQUIRE(result.ok());
    CHECK(result.root.find("a")->scalar == "1");
    CHECK(result.root.find("missing") == nullptr);
    CHECK(result.root.find("b")->find("x") == nullptr);
    CHECK(result.root.find("a")->find("a") == nullptr);
}

// Regression: duplicate detection and the tab check after "- " were once quadratic, and
// these inputs took minutes. They now take milliseconds; a regression shows as a slow suite.
TEST_CASE("large files parse in linear time", "[yaml_lite]") {
    std::string keys, rules = "rules:\n";
    for (int i = 0; i < 20000; ++i) keys += "k" + std::to_string(i) + ": v\n";
    for (int i = 0; i < 4000; ++i)
        rules += "- name: r" + std::to_string(i) + "\n  from: 127.0.0.1:" + std::to_string(i) + "\n  to: [a]\n";

    auto many = parse(keys);
    REQUIRE(many.ok());
    CHECK(many.root.entries.size() == 20000);
    CHECK(many.root.entries[19999].key == "k19999");
    CHECK(many.root.entries[19999].line == 20000);

    auto manyRules = parse(rules);
    REQUIRE(manyRules.ok());
    CHECK(manyRules.root.find("rules")->items.size() == 4000);
    CHECK(manyRules.root.find("rules")->items[3999].find("from")->scalar == "127.0.0.1:3999");

    auto duplicated = parse(keys + "k123: again\n");
    REQUIRE(duplicated.errors.size() == 1);
    CHECK(duplicated.errors[0].line == 20001);
    CHECK(duplicated.errors[0].message == "mapping key \"k123\" already defined at line 124");
}

TEST_CASE("nesting is allowed up to 64 levels", "[yaml_lite]") {
    CHECK(parse(repeat("[", 64) + repeat("]", 64)).ok());
    CHECK(parse(nestedBlockMappings(64)).ok());
    CHECK(parse(repeat("- ", 64) + "x\n").ok());
}

TEST_CASE("unsupported yaml features are rejected by name", "[yaml_lite]") {
    checkRejected({
        {"a tab in indentation is rejected", "a:\n\tb: 1\n", 2, "found a tab character in indentation; use spaces", 1},
        {"spaces then a tab in indentation is rejected", "a:\n  \tb: 1\n", 2, "found a tab character in indentation", 3},
        {"a tab between a dash and a mapping is rejected", "- \tname: a\n  from: b\n", 1,
         "found a tab character in indentation", 3},
        {"an anchor is rejected", "a: &x 1\n", 1, "anchors, aliases and tags are not supported", 4},
        {"an alias is rejected", "a: 1\nb: *x\n", 2, "anchors, aliases and tags are not supported", 4},
        {"a tag is rejected", "a: !x 1\n", 1, "anchors, aliases and tags are not supported"},
        {"a standard tag is rejected", "a: !!str 1\n", 1, "anchors, aliases and tags are not supported"},
        {"an anchor on a key is rejected", "&x a: 1\n", 1, "anchors, aliases and tags are not supported"},
        {"an alias as a sequence item is rejected", "- *x\n", 1, "anchors, aliases and tags are not supported"},
        {"an alias inside a flow sequence is rejected", "a: [b, *x]\n", 1, "anchors, aliases and tags", 8},
        {"a tag inside a flow mapping is rejected", "a: {k: !t v}\n", 1, "anchors, aliases and tags"},
        {"a literal block scalar is rejected", "a: |\n  text\n", 1, "block scalars (| and >) are not supported"},
        {"a folded block scalar is rejected", "x: 1\na: >-\n  text\n", 2, "block scalars (| and >) are not supported"},
        {"a block scalar as a sequence item is rejected", "- |\n  x\n", 1, "block scalars (| and >)"},
        {"an explicit key is rejected", "? a\n: b\n", 1, "explicit keys (\"? \") are not supported"},
        {"a directive is rejected", "%YAML 1.2\n---\na: 1\n", 1, "directives (%) are not supported"},
        {"content on the --- line is rejected", "--- a: 1\n", 1, "content on the \"---\" line is not supported"},
        {"a second document is rejected", "a: 1\n---\nb: 2\n", 2, "multiple documents are not supported"},
        {"a second document after an end marker is rejected", "a: 1\n...\n---\nb: 2\n", 3,
         "multiple documents are not supported"},
        {"content after ... is rejected", "a: 1\n...\nb: 2\n", 3,
         "content after the document end marker \"...\" is not supported"},
        {"content on the ... line is rejected", "a: 1\n... x\n", 2, "content after the document end marker"},
        {"control characters are rejected", "a: 1\nb: x\x01y\n", 2, "control characters are not allowed", 5},
    });
}

TEST_CASE("unterminated quotes and flow collections are reported where they open", "[yaml_lite]") {
    checkRejected({
        {"an unterminated double quote names its line", "a: 1\nb: \"abc\n", 2, "unterminated double-quoted scalar", 4},
        {"an unterminated single quote names its line", "a: 'abc\n", 1, "unterminated single-quoted scalar"},
        {"a quote left open before the next key is reported at the quote", "x: 1\na: \"abc\nb: 2\nc: 3\n", 2,
         "unterminated double-quoted scalar", 4},
        {"a quote left open does not pair with the next key's quote", "a: \"abc\nb: \"def\"\n", 1,
         "unterminated double-quoted scalar"},
        {"an unterminated root quote spanning lines names its first line", "\"abc\n\n def\n", 1,
         "unterminated double-quoted scalar"},
        {"text after a closing quote is rejected", "a: \"x\" y\n", 1, "unexpected text after quoted scalar", 8},
        {"text after a quote that spans lines points back at the quote", "- \"abc\n  def\" x\n", 1,
         "quoted scalar is followed by unexpected text on line 2 (missing closing quote?)", 3},
        {"an unclosed flow sequence names the line of its bracket", "x: 1\nto: [a, b\n", 2,
         "unterminated flow sequence (\"[\" is never closed)", 5},
        {"an unclosed flow mapping names the line of its brace", "m: {a: 1\n", 1, "unterminated flow mapping", 4},
        {"an unclosed flow sequence followed by a key is reported at the bracket", "to: [a,\n  b\nnext: 1\n", 1,
         "unterminated flow sequence (\"[\" is not closed before line 3; continuation lines must be indented)"},
        {"an unclosed flow mapping followed by a key is reported at the brace", "x: 1\nm: {a: 1,\nn: 2\n", 2,
         "unterminated flow mapping"},
        {"an unclosed nested flow reports the outer bracket", "a: [x, {b: c}\n", 1, "unterminated flow sequence"},
    });
}

TEST_CASE("malformed values and flow content are rejected with a hint", "[yaml_lite]") {
    checkRejected({
        {"an unquoted bracketed address is a flow sequence followed by junk", "from: [::1]:22\n", 1,
         "unexpected text after flow sequence (quote addresses like \"[::1]:22\")", 12},
        {"a flow sequence used as a block key is rejected", "- [a, b]: c\n", 1,
         "flow collections as mapping keys are not supported", 9},
        {"a flow mapping used as a block key is rejected", "{a: b}:\n", 1,
         "flow collections as mapping keys are not supported", 7},
        {"text after a flow mapping is rejected", "a: {x: 1} y\n", 1, "unexpected text after flow mapping"},
        {"text after a flow sequence is rejected", "a: [x] y\n", 1, "unexpected text after flow sequence"},
        {"a second colon in a plain value is rejected", "a: b: c\n", 1, "unexpected \":\" after a value", 5},
        {"a block sequence cannot start on the key's line", "a: - b\n", 1,
         "cannot start on the same line as its key"},
        {"an unknown escape is rejected", "a: \"x\\qy\"\n", 1, "unknown escape sequence \"\\q\"", 6},
        {"a short hex escape is rejected", "a: \"\\x4\"\n", 1, "invalid escape sequence \"\\x\" (expected 2 hex digits)"},
        {"an escape beyond unicode is rejected", "a: \"\\UFFFFFFFF\"\n", 1, "not a valid unicode code point"},
        {"a lone surrogate escape is rejected", "a: \"\\uD800x\"\n", 1, "not a valid unicode code point"},
        {"an empty entry in a flow sequence is rejected", "a: [x,,y]\n", 1, "unexpected \",\"", 7},
        {"missing commas in a flow sequence are rejected", "a: [\"x\" y]\n", 1,
         "expected \",\" or \"]\" in flow sequence"},
        {"missing commas in a flow mapping are rejected", "a: {x: \"1\" y: 2}\n", 1,
         "expected \",\" or \"}\" in flow mapping"},
        {"a flow collection as a flow mapping key is rejected", "a: {b: 1, [x]: 2}\n", 1,
         "flow collections as mapping keys are not supported"},
        {"a pair inside a flow sequence is rejected", "a: [b: c]\n", 1,
         "key: value pairs directly inside a flow sequence are not supported"},
        {"reserved characters cannot start a plain scalar", "a: @x\n", 1,
         "\"@\" cannot start a plain scalar; quote the value"},
        {"a backquote cannot start a plain scalar", "a: `x`\n", 1, "\"`\" cannot start a plain scalar"},
        {"a percent sign cannot start a value", "a: %x\n", 1, "\"%\" cannot start a plain scalar"},
        {"a stray closing bracket is rejected", "a: ]\n", 1, "unexpected \"]\""},
        {"a question mark cannot start a flow scalar, which go-yaml would read as a key", "a: [?y]\n", 1,
         "\"?\" cannot start a plain scalar; quote the value", 5},
        {"a key cannot be empty", ": x\n", 1, "missing mapping key before \":\""},
    });
}

TEST_CASE("lines that do not fit the surrounding block are rejected", "[yaml_lite]") {
    checkRejected({
        {"a line without a colon in a mapping is rejected", "a: 1\nfrom\n", 2, "expected \"key: value\", found \"from\"", 1},
        {"a key glued to its value gets a hint", "a: 1\nfrom:127.0.0.1\n", 2,
         "expected \"key: value\", found \"from:127.0.0.1\" (a \":\" must be followed by a space)"},
        {"a stray scalar inside a rule is rejected", "- name: a\n  oops\n", 2, "expected \"key: value\""},
        {"a sequence item where a key is expected is rejected", "a: 1\n- b\n", 2,
         "expected \"key: value\", found a sequence item (\"- \")"},
        {"a sequence item after a nested mapping's keys is rejected", "a:\n  b: 1\n  - c\n", 3,
         "found a sequence item"},
        {"a key where a sequence item is expected is rejected", "- a\nb: 1\n", 2,
         "expected a sequence item (\"- \"), found \"b: 1\""},
        {"a key at an indented sequence's column is rejected", "rules:\n  - name: a\n  from: b\n", 3,
         "expected a sequence item (\"- \"), found \"from: b\""},
        {"a line indented under a plain value is rejected", "a: 1\n  b: 2\n", 2,
         "bad indentation (the value on line 1 is already complete)"},
        {"a second line of a plain scalar is rejected", "a:\n  x\n  y\n", 3,
         "bad indentation (the value on line 2 is already complete)"},
        {"a line indented under a flow value is rejected", "a: [1]\n  b: 2\n", 2, "bad indentation"},
        {"a line indented under a sequence item's scalar is rejected", "- a\n  - b\n", 2, "bad indentation"},
        {"a dedent to a column no block uses is rejected", "a:\n    b: 1\n  c: 2\n", 3,
         "bad indentation (does not match any enclosing block)", 3},
        {"a rule key dedented off its column is rejected", "rules:\n- name: a\n from: b\n", 3, "bad indentation"},
        {"a dedent below an indented root is rejected", "  a: 1\nb: 2\n", 2, "bad indentation"},
        {"a line after a root scalar is rejected", "hello\nworld\n", 2,
         "unexpected content after the top-level value on line 1"},
        {"a line after a root flow collection is rejected", "[a]\nb: 1\n", 2, "unexpected content after the top-level value"},
    });
}

TEST_CASE("duplicate keys name both lines and do not stop the parse", "[yaml_lite]") {
    checkRejected({
        {"a duplicate top-level key names the first definition", "rules: 1\nx: 2\n\n\nrules: 3\n", 5,
         "mapping key \"rules\" already defined at line 1", 1},
        {"a duplicate key in a flow mapping is rejected", "m: {a: 1, a: 2}\n", 1, "mapping key \"a\" already defined at line 1",
         11},
        {"a duplicate key inside a later rule names the line in that rule", "- name: a\n- name: b\n  name: c\n", 3,
         "mapping key \"name\" already defined at line 2", 3},
        {"a quoted key duplicates its plain spelling", "a: 1\n\"a\": 2\n", 2, "already defined at line 1"},
        {"every duplicate is reported", "a: 1\na: 2\na: 3\n", 2, "already defined at line 1", 1, 2},
        {"a duplicate and a later structural error are both reported", "a: 1\na: 2\nb: &x\n", 2,
         "already defined at line 1", 1, 2},
        {"equal keys in different mappings are fine but a later error is still found",
         "- a: 1\n- a: 2\n- a: 3\n  a: 4\n", 4, "already defined at line 3"},
    });
}

TEST_CASE("nesting deeper than 64 levels is rejected", "[yaml_lite]") {
    checkRejected({
        {"deep flow nesting is rejected", repeat("[", 65) + repeat("]", 65) + "\n", 1,
         "nesting too deep (more than 64 levels)", 65},
        {"deep block nesting is rejected", nestedBlockMappings(65), 65, "nesting too deep", 129},
        {"deep compact sequences are rejected", repeat("- ", 65) + "x\n", 1, "nesting too deep", 129},
        {"deep unclosed flow nesting stops at the limit", repeat("{a: ", 100), 1, "nesting too deep"},
    });
}

TEST_CASE("canonical text: layout, comments, quoting and key order do not change it; a value or an item's place does",
          "[yaml_lite]") {
    auto canon = [](const std::string& text) {
        auto result = parse(text);
        INFO(text);
        REQUIRE(result.ok());
        std::string out;
        yaml_lite::canonical(result.root, out);
        return out;
    };
    const std::string flow = canon("a: {b: 1, c: [x, 'y']}\n");
    CHECK(canon("# comment\na:\n  c:\n    - \"x\"\n    - y   # trailing\n  b: '1'\n") == flow);
    CHECK(canon("a: {c: [x, y], b: 1}\r\n") == flow);
    CHECK(canon("a: {b: 2, c: [x, y]}\n") != flow);
    CHECK(canon("a: {b: 1, c: [y, x]}\n") != flow);
    CHECK(canon("a: {b: 1, c: [x, y], d: }\n") != flow);
    // Lengths keep text from passing for structure.
    CHECK(canon("a: \"1\\\"b\"\n") != canon("a: 1\nb: \n"));
    CHECK(canon("[ab, c]\n") != canon("[a, bc]\n"));
    CHECK(canon("a:\n") != canon("a: ''\n"));
}
