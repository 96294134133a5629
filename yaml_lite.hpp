// yaml_lite.hpp - a small, strict YAML-subset parser for mixctl rule files.
// Owns YAML syntax and line numbers; knows nothing of rules or what a key means (config.hpp does).
//
// Why long: one grammar (block and flow forms, three kinds of scalar, escapes), every rejection with
// its line; the parts share one cursor and one error list, and split they would hide the grammar.
//
// It accepts the block and flow forms people write in configuration files and
// rejects everything else with a positioned error instead of guessing: anchors,
// tags, block scalars, multi-line plain scalars, multiple documents. Scalars come
// back exactly as written; deciding what "true", "0.1" or "~" mean is the caller's
// job, so no value is ever silently retyped.
//
// Pure: no I/O, no iostreams, no exceptions of its own (only std::bad_alloc can
// escape parse()).
#ifndef MIXCTL_YAML_LITE_HPP
#define MIXCTL_YAML_LITE_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace yaml_lite {

enum class Kind { Null, Scalar, Sequence, Mapping };

struct Node;
struct Entry;  // one key: value pair of a mapping

struct Node {
    Kind kind = Kind::Null;
    int line = 0, column = 0;     // 1-based position where the node starts (for Null from "key:" with nothing after it: the key's position)
    std::string scalar;           // Kind::Scalar: the decoded text
    bool quoted = false;          // Kind::Scalar: was written with ' or "
    // Kind::Scalar, double-quoted with a \x80..\xFF escape: the text again with each
    // \xNN as the one byte NN. YAML reads \xNN as the character U+00NN (two
    // bytes of UTF-8 in `scalar`); a binary payload (a DNS query) wants the byte.
    std::string octets;
    bool has_octets = false;
    const std::string& bytes() const { return has_octets ? octets : scalar; }
    std::vector<Node> items;      // Kind::Sequence
    std::vector<Entry> entries;   // Kind::Mapping, in file order
    const Node* find(std::string_view key) const;   // Mapping lookup, nullptr if absent or not a mapping
};

struct Entry { std::string key; int line = 0, column = 0; Node value; };
struct Error { int line = 0, column = 0; std::string message; };
struct Result { Node root; std::vector<Error> errors; bool ok() const { return errors.empty(); } };

// When errors is non-empty, root is a Null node: a half-parsed tree is never handed out.
inline Result parse(std::string_view text);

inline const Node* Node::find(std::string_view key) const {
    if (kind != Kind::Mapping) return nullptr;
    for (const Entry& entry : entries)
        if (entry.key == key) return &entry.value;
    return nullptr;
}

namespace detail {

inline constexpr int kMaxNesting = 64;

inline bool isBlank(char c) { return c == ' ' || c == '\t'; }
inline bool isFlowIndicator(char c) { return c == ',' || c == '[' || c == ']' || c == '{' || c == '}'; }

inline int hexDigitValue(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// One line-break convention and a guaranteed final '\n' let every scanner stop at
// '\n' without separate end-of-text checks.
inline std::string normalizeText(std::string_view in) {
    constexpr std::string_view bom = "\xEF\xBB\xBF";
    if (in.substr(0, bom.size()) == bom) in.remove_prefix(bom.size());
    std::string out;
    out.reserve(in.size() + 1);
    for (size_t i = 0; i < in.size(); ++i) {
        if (in[i] != '\r') {
            out += in[i];
            continue;
        }
        out += '\n';
        if (i + 1 < in.size() && in[i + 1] == '\n') ++i;
    }
    if (out.empty() || out.back() != '\n') out += '\n';
    return out;
}

inline void appendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
        return;
    }
    if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
    }
    out += char(0x80 | (cp & 0x3F));
}

// Recursive descent over the whole text with a cursor. Block structure is decided
// line by line from indentation; flow collections and quoted scalars are scanned
// character by character and may run over several lines.
//
// The first structural error stops the parse: whatever the parser would report
// after losing its footing is more likely noise than a real second mistake. Only
// duplicate keys, which leave the structure intact, are collected and parsing goes on.
class Parser {
public:
    explicit Parser(std::string_view input) : text_(normalizeText(input)) {
        lineStarts_.push_back(0);
        for (size_t i = 0; i < text_.size(); ++i)
            if (text_[i] == '\n') lineStarts_.push_back(i + 1);
    }

    Result run() {
        Result result;
        if (rejectControlCharacters()) result.root = parseDocument();
        std::stable_sort(errors_.begin(), errors_.end(), [](const Error& a, const Error& b) {
            return a.line != b.line ? a.line < b.line : a.column < b.column;
        });
        result.errors = std::move(errors_);
        if (!result.ok()) result.root = Node{};
        return result;
    }

private:
    // A line that is neither blank nor only a comment, as the block parser sees it.
    struct Line {
        int indent = 0;       // -1 for "---" and "...", so that every open block closes
        size_t content = 0;   // offset of the first non-space character
        bool marker = false;
    };

    // Bounds recursion so that hostile input cannot overflow the stack.
    class NestingGuard {
    public:
        NestingGuard(Parser& parser, size_t at) : parser_(parser) {
            entered_ = parser_.nesting_ < kMaxNesting;
            if (entered_) ++parser_.nesting_;
            else parser_.fail(at, "nesting too deep (more than 64 levels)");
        }
        ~NestingGuard() { if (entered_) --parser_.nesting_; }
        NestingGuard(const NestingGuard&) = delete;
        NestingGuard& operator=(const NestingGuard&) = delete;
        bool entered() const { return entered_; }

    private:
        Parser& parser_;
        bool entered_ = false;
    };

    std::string text_;
    std::vector<size_t> lineStarts_;
    size_t pos_ = 0;
    int nesting_ = 0;
    bool failed_ = false;
    bool rawHex_ = false;  // scanQuoted: \xNN appends the byte NN (Node::octets)
    std::vector<Error> errors_;

    // ---- positions -------------------------------------------------------------

    char at(size_t p) const { return p < text_.size() ? text_[p] : '\0'; }
    bool isLineEnd(size_t p) const { return p >= text_.size() || text_[p] == '\n'; }
    bool isSpaceOrLineEnd(size_t p) const { return isLineEnd(p) || isBlank(text_[p]); }
    bool isSequenceDash(size_t p) const { return at(p) == '-' && isSpaceOrLineEnd(p + 1); }
    // Between tokens "#" starts a comment even when glued on ("[a]#c"), as in libyaml and
    // so go-yaml. Inside a plain scalar it needs a blank before it; parsePlain sees to that.
    bool startsComment(size_t p) const { return at(p) == '#'; }
    bool isDocumentMarker(size_t p) const {
        return (text_.compare(p, 3, "---") == 0 || text_.compare(p, 3, "...") == 0) && isSpaceOrLineEnd(p + 3);
    }

    int lineOf(size_t p) const {
        return int(std::upper_bound(lineStarts_.begin(), lineStarts_.end(), p) - lineStarts_.begin());
    }
    size_t lineStartOf(size_t p) const { return lineStarts_[size_t(lineOf(p)) - 1]; }
    size_t lineEndOf(size_t p) const {
        size_t end = text_.find('\n', p);
        return end == std::string::npos ? text_.size() : end;
    }
    int columnOf(size_t p) const { return int(p - lineStartOf(p)) + 1; }
    size_t offsetOf(const Node& node) const {
        return lineStarts_[size_t(node.line) - 1] + size_t(node.column) - 1;
    }

    void skipBlanks() { while (isBlank(at(pos_))) ++pos_; }
    bool consume(char c) { return at(pos_) == c ? (++pos_, true) : false; }
    void skipRestOfLine() { pos_ = std::min(lineEndOf(pos_) + 1, text_.size()); }
    // Blanks, then optionally a comment, then the line break.
    bool atCommentOrLineEnd() {
        skipBlanks();
        return isLineEnd(pos_) || startsComment(pos_);
    }

    // ---- errors and nodes ------------------------------------------------------

    // Always false, so that predicates can `return fail(...)`.
    bool fail(size_t p, std::string message) {
        if (!failed_) errors_.push_back(Error{lineOf(p), columnOf(p), std::move(message)});
        failed_ = true;
        return false;
    }
    // The same, for parse functions that hand back a node.
    Node failNode(size_t p, std::string message) {
        fail(p, std::move(message));
        return {};
    }

    std::string snippet(size_t p) const {
        std::string text = text_.substr(p, lineEndOf(p) - p);
        while (!text.empty() && isBlank(text.back())) text.pop_back();
        if (text.size() > 40) text = text.substr(0, 37) + "...";
        return "\"" + text + "\"";
    }

    Node nodeAt(Kind kind, size_t p) const {
        Node node;
        node.kind = kind;
        node.line = lineOf(p);
        node.column = columnOf(p);
        return node;
    }
    static Node nullAt(int line, int column) {
        Node node;
        node.line = line;
        node.column = column;
        return node;
    }
    // Scalars and flow collections end on a known line, so nothing may be indented under them.
    bool isInlineValue(const Node& node) const {
        if (node.kind == Kind::Null || node.kind == Kind::Scalar) return true;
        char first = at(offsetOf(node));
        return first == '[' || first == '{';
    }

    // Checked once a mapping is complete, by sorting: a pairwise scan is quadratic and a
    // mapping with 100k keys would take minutes. Later duplicates are reported and dropped.
    void removeDuplicateKeys(Node& map) {
        std::vector<Entry>& entries = map.entries;
        if (entries.size() < 2) return;
        std::vector<size_t> order(entries.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::stable_sort(order.begin(), order.end(),
                         [&entries](size_t a, size_t b) { return entries[a].key < entries[b].key; });
        std::vector<bool> duplicate(entries.size(), false);
        size_t first = order[0];  // stable: the earliest entry of each run of equal keys
        for (size_t i = 1; i < order.size(); ++i) {
            const Entry& entry = entries[order[i]];
            if (entry.key != entries[first].key) {
                first = order[i];
                continue;
            }
            duplicate[order[i]] = true;
            errors_.push_back(Error{entry.line, entry.column,
                                    "mapping key \"" + entry.key + "\" already defined at line " +
                                        std::to_string(entries[first].line)});
        }
        size_t kept = 0;
        for (size_t i = 0; i < entries.size(); ++i) {
            if (duplicate[i]) continue;
            if (kept != i) entries[kept] = std::move(entries[i]);  // a self-move would empty the entry
            ++kept;
        }
        entries.erase(entries.begin() + std::ptrdiff_t(kept), entries.end());
    }

    // YAML forbids them and they would corrupt line/column bookkeeping and messages.
    bool rejectControlCharacters() {
        for (size_t p = 0; p < text_.size(); ++p) {
            unsigned char c = static_cast<unsigned char>(text_[p]);
            if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7F) return fail(p, "control characters are not allowed");
        }
        return true;
    }

    // ---- document --------------------------------------------------------------

    Node parseDocument() {
        Line line;
        if (!nextContentLine(line)) return nullAt(1, 1);
        if (line.indent == 0 && text_[line.content] == '%')
            return failNode(line.content, "directives (%) are not supported");
        if (line.marker && text_[line.content] == '-') {
            pos_ = line.content + 3;
            if (!atCommentOrLineEnd())
                return failNode(pos_, "content on the \"---\" line is not supported; start it on the next line");
            skipRestOfLine();
        }
        Node root = parseBlockNode(-1, false, 1, 1);
        if (!failed_) checkNothingAfterRoot(root);
        return root;
    }

    bool checkNothingAfterRoot(const Node& root) {
        Line line;
        if (!nextContentLine(line)) return true;
        bool ended = false;
        if (line.marker && text_[line.content] == '.') {
            pos_ = line.content + 3;
            if (!atCommentOrLineEnd()) return fail(pos_, "content after the document end marker \"...\" is not supported");
            skipRestOfLine();
            if (!nextContentLine(line)) return true;
            ended = true;
        }
        if (line.marker && text_[line.content] == '-') return fail(line.content, "multiple documents are not supported");
        if (ended) return fail(line.content, "content after the document end marker \"...\" is not supported");
        if (isInlineValue(root))
            return fail(line.content, "unexpected content after the top-level value on line " + std::to_string(root.line));
        return fail(line.content, "bad indentation (does not match any enclosing block)");
    }

    // Skips blank and comment-only lines, starting with the line that holds pos_, and
    // leaves pos_ at the start of the content line found (it is only peeked at).
    bool nextContentLine(Line& line) {
        size_t p = lineStartOf(pos_);
        while (p < text_.size()) {
            size_t content = p;
            while (text_[content] == ' ') ++content;
            size_t afterBlanks = content;
            while (isBlank(text_[afterBlanks])) ++afterBlanks;
            if (text_[afterBlanks] == '\n' || text_[afterBlanks] == '#') {
                p = lineEndOf(afterBlanks) + 1;
                continue;
            }
            if (afterBlanks != content) return fail(content, "found a tab character in indentation; use spaces");
            pos_ = p;
            line.content = content;
            line.marker = content == p && isDocumentMarker(p);
            line.indent = line.marker ? -1 : int(content - p);
            return true;
        }
        pos_ = text_.size();
        return false;
    }

    // ---- block collections -----------------------------------------------------

    // The node under a "key:" or "-" that has nothing after it on its line. A key's
    // sequence may sit at the key's own indentation ("rules:\n- a"), which YAML allows.
    Node parseBlockNode(int parentIndent, bool keyLevelSequenceAllowed, int nullLine, int nullColumn) {
        Line line;
        if (!nextContentLine(line)) return nullAt(nullLine, nullColumn);
        bool keyLevel = keyLevelSequenceAllowed && line.indent == parentIndent && isSequenceDash(line.content);
        if (line.indent <= parentIndent && !keyLevel) return nullAt(nullLine, nullColumn);
        pos_ = line.content;
        if (isSequenceDash(pos_)) return parseBlockSequence(line.indent, keyLevel);
        if (looksLikeKey(pos_)) return parseBlockMapping(line.indent);
        return parseInlineValue(parentIndent);
    }

    // Finds the next line of the block at `indent`; false when the block has ended.
    bool continueBlock(int indent, const Node& previousValue, Line& line) {
        if (failed_ || !nextContentLine(line) || line.indent < indent) return false;
        if (line.indent == indent) return true;
        if (isInlineValue(previousValue))
            return fail(line.content, "bad indentation (the value on line " + std::to_string(previousValue.line) +
                                          " is already complete)");
        return fail(line.content, "bad indentation (does not match any enclosing block)");
    }

    // pos_ is at the first key, which may be mid-line ("- name: a"); `indent` is its column.
    Node parseBlockMapping(int indent) {
        NestingGuard guard(*this, pos_);
        if (!guard.entered()) return {};
        Node map = nodeAt(Kind::Mapping, pos_);
        Line line;
        while (true) {
            Entry entry;
            if (!parseMappingEntry(entry, indent)) break;
            bool more = continueBlock(indent, entry.value, line);
            map.entries.push_back(std::move(entry));
            if (!more) break;
            pos_ = line.content;
        }
        removeDuplicateKeys(map);
        return map;
    }

    bool parseMappingEntry(Entry& entry, int indent) {
        const size_t keyPos = pos_;
        if (!checkNodeStart(keyPos)) return false;
        if (isSequenceDash(keyPos)) return fail(keyPos, "expected \"key: value\", found a sequence item (\"- \")");
        if (!looksLikeKey(keyPos)) {
            std::string found = snippet(keyPos);
            bool colonWithoutSpace = found.find(':') != std::string::npos;
            return fail(keyPos, "expected \"key: value\", found " + found +
                                    (colonWithoutSpace ? " (a \":\" must be followed by a space)" : ""));
        }
        Node key = parseScalarOrFlow(indent, false);  // looksLikeKey ruled out brackets
        if (failed_) return false;
        skipBlanks();
        ++pos_;  // the ':' that looksLikeKey found
        entry.key = std::move(key.scalar);
        entry.line = key.line;
        entry.column = key.column;
        entry.value = parseValueAfterIndicator(indent, true, key.line, key.column);
        return !failed_;
    }

    // pos_ is at the first "-", which may be mid-line ("- - a"); `indent` is its column.
    // A key-level sequence ends quietly at a non-item line so its mapping can go on.
    Node parseBlockSequence(int indent, bool keyLevel) {
        NestingGuard guard(*this, pos_);
        if (!guard.entered()) return {};
        Node seq = nodeAt(Kind::Sequence, pos_);
        Line line;
        while (true) {
            seq.items.push_back(parseSequenceItem(indent));
            if (failed_ || !continueBlock(indent, seq.items.back(), line)) break;
            if (!isSequenceDash(line.content)) {
                if (!keyLevel)
                    fail(line.content, "expected a sequence item (\"- \"), found " + snippet(line.content));
                break;
            }
            pos_ = line.content;
        }
        return seq;
    }

    Node parseSequenceItem(int indent) {
        const size_t dash = pos_;
        const size_t gap = ++pos_;
        skipBlanks();
        if (isLineEnd(pos_) || startsComment(pos_)) {
            skipRestOfLine();
            return parseBlockNode(indent, false, lineOf(dash), columnOf(dash));
        }
        // "- name: a" and "- - a" open a collection whose indentation is its column.
        bool nestedSequence = isSequenceDash(pos_);
        if (!nestedSequence && !looksLikeKey(pos_)) return parseInlineValue(indent);
        for (size_t p = gap; p < pos_; ++p)
            if (text_[p] == '\t') return failNode(p, "found a tab character in indentation; use spaces");
        int column = int(pos_ - lineStartOf(pos_));
        return nestedSequence ? parseBlockSequence(column, false) : parseBlockMapping(column);
    }

    // After a "key:" or "-": a value on the same line, or a block on the next lines.
    Node parseValueAfterIndicator(int ownerIndent, bool keyLevelSequenceAllowed, int line, int column) {
        skipBlanks();
        if (isLineEnd(pos_) || startsComment(pos_)) {
            skipRestOfLine();
            return parseBlockNode(ownerIndent, keyLevelSequenceAllowed, line, column);
        }
        return parseInlineValue(ownerIndent);
    }

    // A scalar or flow collection in block context: it must end its line.
    Node parseInlineValue(int blockIndent) {
        if (isSequenceDash(pos_))
            return failNode(pos_, "a sequence item (\"- \") cannot start on the same line as its key; move it to the next line");
        Node value = parseScalarOrFlow(blockIndent, false);
        if (failed_) return value;
        if (atCommentOrLineEnd())
            skipRestOfLine();
        else
            failTextAfterValue(value);
        return value;
    }

    void failTextAfterValue(const Node& value) {
        if (value.kind == Kind::Scalar && !value.quoted)  // a block plain scalar only stops early at ": "
            fail(pos_, "unexpected \":\" after a value (quote values that contain \": \")");
        else if (value.kind == Kind::Scalar && lineOf(pos_) == value.line)
            fail(pos_, "unexpected text after quoted scalar");
        else if (value.kind == Kind::Scalar)
            fail(offsetOf(value), "quoted scalar is followed by unexpected text on line " +
                                      std::to_string(lineOf(pos_)) + " (missing closing quote?)");
        else if (at(pos_) == ':' && isSpaceOrLineEnd(pos_ + 1))
            fail(pos_, "flow collections as mapping keys are not supported");
        else if (value.kind == Kind::Mapping)
            fail(pos_, "unexpected text after flow mapping");
        else if (at(pos_) == ':')
            fail(pos_, "unexpected text after flow sequence (quote addresses like \"[::1]:22\")");
        else
            fail(pos_, "unexpected text after flow sequence");
    }

    // Is the text at p a "key:" (with a space or line end after the colon)?
    bool looksLikeKey(size_t p) const {
        char c = at(p);
        if (c == '"' || c == '\'') {
            p = afterClosingQuoteOnLine(p);
            if (p == std::string::npos) return false;
            while (isBlank(at(p))) ++p;
        } else {
            if (c == '[' || c == '{' || isSequenceDash(p)) return false;
            while (!isLineEnd(p) && !(text_[p] == ':' && isSpaceOrLineEnd(p + 1)) &&
                   !(isBlank(text_[p]) && at(p + 1) == '#'))
                ++p;
        }
        return at(p) == ':' && isSpaceOrLineEnd(p + 1);
    }

    size_t afterClosingQuoteOnLine(size_t p) const {
        const char quote = text_[p];
        for (++p; !isLineEnd(p); ++p) {
            if (quote == '"' && text_[p] == '\\') {
                if (isLineEnd(++p)) break;
                continue;
            }
            if (text_[p] != quote) continue;
            if (quote == '\'' && at(p + 1) == '\'') {
                ++p;
                continue;
            }
            return p + 1;
        }
        return std::string::npos;
    }

    // ---- scalars and flow collections -----------------------------------------

    // Things YAML allows at the start of a node that this parser refuses by name.
    bool checkNodeStart(size_t p) {
        char c = at(p);
        if (c == '&' || c == '*' || c == '!') return fail(p, "anchors, aliases and tags are not supported");
        if (c == '|' || c == '>') return fail(p, "block scalars (| and >) are not supported");
        if (c == '?' && isSpaceOrLineEnd(p + 1)) return fail(p, "explicit keys (\"? \") are not supported");
        return true;
    }

    bool plainCanStart(size_t p, bool flow) const {
        char c = at(p);
        if (isLineEnd(p) || std::string_view(",[]{}#&*!|>'\"%@`").find(c) != std::string_view::npos) return false;
        // libyaml, and so go-yaml, reads "[?a]" as [{a: null}]: refuse rather than differ.
        if (c == '?' && flow) return false;
        if (c == '-' || c == '?' || c == ':')
            return !isSpaceOrLineEnd(p + 1) && !(flow && isFlowIndicator(at(p + 1)));
        return true;
    }

    static std::string cannotStartMessage(char c) {
        if (c == ':') return "missing mapping key before \":\"";
        if (isFlowIndicator(c)) return std::string("unexpected \"") + c + "\"";
        if (c == '\n' || c == '\0') return "unexpected end of line";
        return std::string("\"") + c + "\" cannot start a plain scalar; quote the value";
    }

    Node parseScalarOrFlow(int blockIndent, bool flow) {
        if (!checkNodeStart(pos_)) return {};
        char c = at(pos_);
        if (c == '[') return parseFlowSequence(blockIndent);
        if (c == '{') return parseFlowMapping(blockIndent);
        // Inside brackets a forgotten quote is caught by the collection's own checks.
        if (c == '"' || c == '\'') return parseQuoted(flow ? -1 : blockIndent);
        if (!plainCanStart(pos_, flow)) return failNode(pos_, cannotStartMessage(at(pos_)));
        return parsePlain(flow);
    }

    // Plain scalars never span lines here. One ends at a comment, at ": ", and inside
    // flow collections also at a flow indicator; trailing blanks are not part of it.
    Node parsePlain(bool flow) {
        Node node = nodeAt(Kind::Scalar, pos_);
        const size_t start = pos_;
        size_t end = pos_;
        for (size_t p = pos_; !isLineEnd(p); ++p) {
            char c = text_[p];
            if (c == ':' && (isSpaceOrLineEnd(p + 1) || (flow && isFlowIndicator(at(p + 1))))) break;
            if (flow && isFlowIndicator(c)) break;
            if (isBlank(c)) {
                if (at(p + 1) == '#') break;
                continue;
            }
            end = p + 1;
        }
        node.scalar.assign(text_, start, end - start);
        pos_ = end;
        return node;
    }

    // Flow collections may span lines. A continuation line must still be indented past
    // the enclosing block (a closing bracket excepted), which turns a forgotten "]"
    // into an error at the line that opened it instead of somewhere further down.
    bool skipFlowSpace(size_t open, int blockIndent) {
        while (!failed_) {
            if (isBlank(at(pos_))) {
                ++pos_;
            } else if (startsComment(pos_)) {
                pos_ = lineEndOf(pos_);
            } else if (consume('\n')) {
                checkFlowContinuation(open, blockIndent);
            } else {
                return pos_ < text_.size() || failUnclosed(open, 0);
            }
        }
        return false;
    }

    void checkFlowContinuation(size_t open, int blockIndent) {
        size_t p = pos_;
        while (at(p) == ' ') ++p;
        int indent = int(p - pos_);
        while (isBlank(at(p))) ++p;
        if (isLineEnd(p) || at(p) == '#' || at(p) == ']' || at(p) == '}' || indent > blockIndent) return;
        failUnclosed(open, lineOf(p));
    }

    bool failUnclosed(size_t open, int endedAtLine) {
        std::string message = text_[open] == '[' ? "unterminated flow sequence (\"[\" is " : "unterminated flow mapping (\"{\" is ";
        if (endedAtLine == 0) return fail(open, message + "never closed)");
        return fail(open, message + "not closed before line " + std::to_string(endedAtLine) +
                              "; continuation lines must be indented)");
    }

    // After an entry, "," continues a flow collection and its closing bracket ends it.
    bool continueFlow(char close) {
        if (consume(',')) return true;
        if (consume(close)) return false;
        if (close == '}') return fail(pos_, "expected \",\" or \"}\" in flow mapping");
        if (at(pos_) == ':')
            return fail(pos_, "key: value pairs directly inside a flow sequence are not supported; use {key: value}");
        return fail(pos_, "expected \",\" or \"]\" in flow sequence");
    }

    Node parseFlowSequence(int blockIndent) {
        const size_t open = pos_;
        NestingGuard guard(*this, open);
        if (!guard.entered()) return {};
        Node seq = nodeAt(Kind::Sequence, open);
        ++pos_;
        while (skipFlowSpace(open, blockIndent) && !consume(']')) {
            seq.items.push_back(parseScalarOrFlow(blockIndent, true));
            if (failed_ || !skipFlowSpace(open, blockIndent) || !continueFlow(']')) break;
        }
        return seq;
    }

    Node parseFlowMapping(int blockIndent) {
        const size_t open = pos_;
        NestingGuard guard(*this, open);
        if (!guard.entered()) return {};
        Node map = nodeAt(Kind::Mapping, open);
        ++pos_;
        while (skipFlowSpace(open, blockIndent) && !consume('}')) {
            Entry entry;
            if (!parseFlowEntry(entry, open, blockIndent)) break;
            map.entries.push_back(std::move(entry));
            if (!skipFlowSpace(open, blockIndent) || !continueFlow('}')) break;
        }
        removeDuplicateKeys(map);
        return map;
    }

    bool parseFlowEntry(Entry& entry, size_t open, int blockIndent) {
        if (at(pos_) == '[' || at(pos_) == '{') return fail(pos_, "flow collections as mapping keys are not supported");
        Node key = parseScalarOrFlow(blockIndent, true);
        if (failed_ || !skipFlowSpace(open, blockIndent)) return false;
        entry.key = std::move(key.scalar);
        entry.line = key.line;
        entry.column = key.column;
        entry.value = nullAt(key.line, key.column);  // "{a, b}" lists keys whose values are null
        if (!consume(':')) return true;
        if (!skipFlowSpace(open, blockIndent)) return false;
        if (at(pos_) == ',' || at(pos_) == '}') return true;
        entry.value = parseScalarOrFlow(blockIndent, true);
        return !failed_;
    }

    // ---- quoted scalars --------------------------------------------------------

    static const char* unterminatedQuoteMessage(char quote) {
        return quote == '"' ? "unterminated double-quoted scalar" : "unterminated single-quoted scalar";
    }

    Node parseQuoted(int blockIndent) {
        const size_t open = pos_;
        Node node = scanQuoted(blockIndent);
        if (failed_ || text_[open] != '"') return node;
        const size_t end = pos_;
        pos_ = open;
        rawHex_ = true;  // the same scalar again, \xNN as bytes
        node.octets = scanQuoted(blockIndent).scalar;
        rawHex_ = false;
        pos_ = end;
        node.has_octets = node.octets != node.scalar;
        if (!node.has_octets) node.octets.clear();
        return node;
    }

    Node scanQuoted(int blockIndent) {
        const size_t open = pos_;
        const char quote = text_[open];
        Node node = nodeAt(Kind::Scalar, open);
        node.quoted = true;
        std::string& out = node.scalar;
        size_t kept = 0;  // blanks after this length are dropped if a line break follows
        ++pos_;
        while (!failed_) {
            if (pos_ >= text_.size()) {
                fail(open, unterminatedQuoteMessage(quote));
                break;
            }
            const char c = text_[pos_];
            if (c == quote && quote == '\'' && at(pos_ + 1) == '\'') {
                out += '\'';
                pos_ += 2;
            } else if (c == quote) {
                ++pos_;
                break;
            } else if (c == '\\' && quote == '"') {
                decodeEscape(out, open, blockIndent);
            } else if (c == '\n') {
                out.resize(kept);
                foldLineBreak(out, open, blockIndent, false);
            } else {
                out += c;
                ++pos_;
                if (isBlank(c)) continue;
            }
            kept = out.size();
        }
        return node;
    }

    // YAML folds line breaks inside quotes: one break reads as a space, each blank line
    // as "\n", and an escaped break ("\" at the end of a line) joins the lines.
    void foldLineBreak(std::string& out, size_t open, int blockIndent, bool escaped) {
        ++pos_;
        size_t blankLines = 0;
        while (pos_ < text_.size()) {
            const size_t lineStart = pos_;
            while (at(pos_) == ' ') ++pos_;
            const int indent = int(pos_ - lineStart);
            while (isBlank(at(pos_))) ++pos_;
            if (at(pos_) != '\n') {
                // An unindented continuation almost always means a missing closing quote.
                if (pos_ < text_.size() && indent <= blockIndent)
                    fail(open, std::string(unterminatedQuoteMessage(text_[open])) + " (not closed before line " +
                                   std::to_string(lineOf(pos_)) + "; continuation lines must be indented)");
                break;
            }
            ++blankLines;
            ++pos_;
        }
        if (blankLines > 0)
            out.append(blankLines, '\n');
        else if (!escaped)
            out += ' ';
    }

    void decodeEscape(std::string& out, size_t open, int blockIndent) {
        const size_t escape = pos_;
        const char e = at(pos_ + 1);
        if (e == '\n') {
            ++pos_;
            return foldLineBreak(out, open, blockIndent, true);
        }
        pos_ += 2;
        switch (e) {
            case '0': out += '\0'; return;
            case 'a': out += '\a'; return;
            case 'b': out += '\b'; return;
            case 't': case '\t': out += '\t'; return;
            case 'n': out += '\n'; return;
            case 'v': out += '\v'; return;
            case 'f': out += '\f'; return;
            case 'r': out += '\r'; return;
            case 'e': out += '\x1b'; return;
            case ' ': case '"': case '/': case '\\': out += e; return;
            case 'N': appendUtf8(out, 0x85); return;
            case '_': appendUtf8(out, 0xA0); return;
            case 'L': appendUtf8(out, 0x2028); return;
            case 'P': appendUtf8(out, 0x2029); return;
            case 'x': decodeCodePoint(out, escape, 2); return;
            case 'u': decodeCodePoint(out, escape, 4); return;
            case 'U': decodeCodePoint(out, escape, 8); return;
            default: break;
        }
        fail(escape, std::string("unknown escape sequence \"\\") + e + "\" in double-quoted scalar");
    }

    bool readHex(size_t p, int digits, uint32_t& value) const {
        value = 0;
        for (int i = 0; i < digits; ++i) {
            int digit = hexDigitValue(at(p + size_t(i)));
            if (digit < 0) return false;
            value = value * 16 + uint32_t(digit);
        }
        return true;
    }

    bool decodeCodePoint(std::string& out, size_t escape, int digits) {
        uint32_t cp = 0;
        if (!readHex(pos_, digits, cp))
            return fail(escape, std::string("invalid escape sequence \"\\") + text_[escape + 1] + "\" (expected " +
                                          std::to_string(digits) + " hex digits)");
        pos_ += size_t(digits);
        // JSON spells characters beyond U+FFFF as surrogate pairs; accept that spelling too.
        uint32_t low = 0;
        if (digits == 4 && cp >= 0xD800 && cp <= 0xDBFF && at(pos_) == '\\' && at(pos_ + 1) == 'u' &&
            readHex(pos_ + 2, 4, low) && low >= 0xDC00 && low <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            pos_ += 6;
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return fail(escape, "escape sequence is not a valid unicode code point");
        if (rawHex_ && digits == 2) out += char(cp);
        else appendUtf8(out, cp);
        return true;
    }
};

}  // namespace detail

inline Result parse(std::string_view text) { return detail::Parser(text).run(); }

// The tree as one string that layout, comments, quoting, flow or block style,
// line numbers and the order of a mapping's keys do not change: two trees
// with equal canonical texts say the same thing. Scalars are length-prefixed,
// so no text can pass for structure.
inline void canonical(const Node& node, std::string& out) {
    switch (node.kind) {
        case Kind::Null: out += '~'; return;
        case Kind::Scalar:
            out += std::to_string(node.scalar.size()) + '"';
            out += node.scalar;
            return;
        case Kind::Sequence:
            out += '[';
            for (const Node& item : node.items) canonical(item, out);
            out += ']';
            return;
        case Kind::Mapping: {
            std::vector<const Entry*> sorted;
            for (const Entry& entry : node.entries) sorted.push_back(&entry);
            std::sort(sorted.begin(), sorted.end(), [](const Entry* a, const Entry* b) { return a->key < b->key; });
            out += '{';
            for (const Entry* entry : sorted) {
                out += std::to_string(entry->key.size()) + '"';
                out += entry->key;
                canonical(entry->value, out);
            }
            out += '}';
            return;
        }
    }
}

}  // namespace yaml_lite

#endif  // MIXCTL_YAML_LITE_HPP
