// The metrics endpoint: `metrics: ADDR` serves GET /metrics in the
// Prometheus text format (version 0.0.4). Checked with a strict parser of
// that format, against counters from known traffic, over a raw socket and
// with curl when it is installed.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <set>

#include "harness.hpp"
#include "peers.hpp"

using namespace harness;

namespace {

// ---- a strict parser of the Prometheus text format ----------------------------------

struct Sample {
    std::string name;
    std::map<std::string, std::string> labels;
    double value = 0;
};

struct Exposition {
    std::map<std::string, std::string> type, help;
    std::vector<Sample> samples;
    std::vector<std::string> errors;  // "line N: why"

    // The value of the one sample with exactly these labels; NAN if absent.
    double value(const std::string& name, const std::map<std::string, std::string>& labels) const {
        for (const Sample& s : samples)
            if (s.name == name && s.labels == labels) return s.value;
        return NAN;
    }
    size_t count(const std::string& name) const {
        size_t n = 0;
        for (const Sample& s : samples) n += s.name == name;
        return n;
    }
};

bool metric_name(const std::string& s) {
    if (s.empty()) return false;
    for (size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

bool label_name(const std::string& s) {
    if (s.empty()) return false;
    for (size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

// A float as Go's strconv.ParseFloat takes it, plus the format's +Inf/-Inf/NaN.
bool number(const std::string& s, double& out) {
    if (s == "+Inf" || s == "Inf") return out = INFINITY, true;
    if (s == "-Inf") return out = -INFINITY, true;
    if (s == "NaN") return out = NAN, true;
    if (s.empty() || s.find_first_not_of("0123456789+-.eE") != std::string::npos) return false;
    char* end = nullptr;
    out = strtod(s.c_str(), &end);
    return end == s.c_str() + s.size();
}

// Every line is "# HELP name text", "# TYPE name counter|gauge" or
// "name{label="value",...} number"; a family's HELP and TYPE come once,
// before its samples, and its samples are one group; the text ends in "\n".
Exposition parse(const std::string& text) {
    Exposition e;
    std::set<std::string> finished;  // families whose group has ended
    std::set<std::string> series;    // name + labels, to catch duplicates
    std::string current;             // the family of the previous line
    if (!text.empty() && text.back() != '\n') e.errors.push_back("the text does not end with a newline");
    size_t at = 0;
    int number_of_line = 0;
    while (at < text.size()) {
        size_t end = text.find('\n', at);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(at, end - at);
        at = end + 1;
        ++number_of_line;
        auto fail = [&](const std::string& why) {
            e.errors.push_back("line " + std::to_string(number_of_line) + ": " + why + ": " + line);
        };
        std::string family;
        if (line.compare(0, 2, "# ") == 0) {
            bool is_help = line.compare(0, 7, "# HELP ") == 0, is_type = line.compare(0, 7, "# TYPE ") == 0;
            if (!is_help && !is_type) {
                fail("a comment other than HELP or TYPE");
                continue;
            }
            size_t space = line.find(' ', 7);
            family = line.substr(7, space == std::string::npos ? std::string::npos : space - 7);
            std::string rest = space == std::string::npos ? "" : line.substr(space + 1);
            if (!metric_name(family)) fail("bad metric name");
            if (is_help) {
                if (e.help.count(family)) fail("second HELP");
                for (size_t i = 0; i < rest.size(); ++i)
                    if (rest[i] == '\\' && (i + 1 >= rest.size() || (rest[++i] != '\\' && rest[i] != 'n')))
                        fail("bad escape in HELP");
                if (rest.empty()) fail("empty HELP");
                e.help[family] = rest;
            } else {
                if (e.type.count(family)) fail("second TYPE");
                if (rest != "counter" && rest != "gauge") fail("type is not counter or gauge");
                e.type[family] = rest;
            }
            if (e.count(family)) fail("HELP or TYPE after the family's samples");
        } else {
            Sample s;
            size_t i = 0;
            while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
            s.name = line.substr(0, i);
            if (!metric_name(s.name)) fail("bad metric name");
            family = s.name;
            if (i < line.size() && line[i] == '{') {
                ++i;
                while (i < line.size() && line[i] != '}') {
                    size_t eq = line.find('=', i);
                    if (eq == std::string::npos) {
                        fail("label without '='");
                        break;
                    }
                    std::string key = line.substr(i, eq - i);
                    if (!label_name(key)) fail("bad label name \"" + key + "\"");
                    i = eq + 1;
                    if (i >= line.size() || line[i] != '"') {
                        fail("label value not quoted");
                        break;
                    }
                    std::string value;
                    bool closed = false;
                    for (++i; i < line.size(); ++i) {
                        if (line[i] == '"') {
                            closed = true;
                            ++i;
                            break;
                        }
                        if (line[i] == '\\') {
                            char next = i + 1 < line.size() ? line[++i] : '\0';
                            if (next == '\\' || next == '"') value += next;
                            else if (next == 'n') value += '\n';
                            else fail("bad escape in label value");
                        } else {
                            value += line[i];
                        }
                    }
                    if (!closed) {
                        fail("unterminated label value");
                        break;
                    }
                    if (s.labels.count(key)) fail("label \"" + key + "\" twice");
                    s.labels[key] = value;
                    if (i < line.size() && line[i] == ',') {
                        ++i;
                        if (i < line.size() && line[i] == '}') fail("trailing comma in labels");
                    } else if (i >= line.size() || line[i] != '}') {
                        fail("expected ',' or '}' after a label");
                        break;
                    }
                }
                if (i >= line.size() || line[i] != '}') {
                    fail("labels not closed");
                    continue;
                }
                ++i;
            }
            if (i >= line.size() || line[i] != ' ') {
                fail("no space before the value");
                continue;
            }
            std::string value = line.substr(i + 1);
            size_t space = value.find(' ');
            if (space != std::string::npos) {  // an optional timestamp: an integer
                std::string ts = value.substr(space + 1);
                value = value.substr(0, space);
                if (ts.empty() || ts.find_first_not_of("-0123456789") != std::string::npos) fail("bad timestamp");
            }
            if (!number(value, s.value)) fail("bad value \"" + value + "\"");
            if (!e.help.count(family) || !e.type.count(family)) fail("sample before its family's HELP and TYPE");
            std::string key = s.name;
            for (auto& l : s.labels) key += "\x01" + l.first + "\x02" + l.second;
            if (!series.insert(key).second) fail("the same series twice");
            e.samples.push_back(s);
        }
        if (family != current) {
            if (finished.count(family)) fail("family " + family + " continues after another family");
            if (!current.empty()) finished.insert(current);
            current = family;
        }
    }
    for (auto& t : e.type)
        if (!e.help.count(t.first)) e.errors.push_back("family " + t.first + " has TYPE but no HELP");
    for (auto& h : e.help)
        if (!e.type.count(h.first)) e.errors.push_back("family " + h.first + " has HELP but no TYPE");
    return e;
}

std::string all(const std::vector<std::string>& lines) {
    std::string out;
    for (const std::string& l : lines) out += l + "\n";
    return out;
}

// ---- HTTP -----------------------------------------------------------------------------

struct Response {
    int status = 0;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body, raw;
};

Response parse_response(const std::string& raw) {
    Response r;
    r.raw = raw;
    size_t head_end = raw.find("\r\n\r\n");
    if (raw.compare(0, 5, "HTTP/") != 0 || head_end == std::string::npos) return r;
    size_t space = raw.find(' ');
    r.status = atoi(raw.c_str() + space + 1);
    size_t at = raw.find("\r\n") + 2;
    while (at < head_end) {
        size_t end = raw.find("\r\n", at);
        std::string line = raw.substr(at, end - at);
        size_t colon = line.find(':');
        if (colon != std::string::npos) {
            std::string name = line.substr(0, colon);
            for (char& c : name) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
            size_t v = line.find_first_not_of(' ', colon + 1);
            r.headers[name] = v == std::string::npos ? "" : line.substr(v);
        }
        at = end + 2;
    }
    r.body = raw.substr(head_end + 4);
    return r;
}

Response http(uint16_t port, const std::string& request, int family = AF_INET, Ms limit = 3000ms) {
    net::Fd fd = dial(port, family, limit);
    std::string raw;
    if (fd && send_all(fd.get(), request)) read_to_eof(fd.get(), raw, 1 << 20);
    return parse_response(raw);
}

Response scrape(uint16_t port, int family = AF_INET, Ms limit = 3000ms) {
    return http(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n", family, limit);
}

// The port of "Serving metrics on http://ADDR:PORT/metrics"; 0 if it never came.
uint16_t metrics_port(const Daemon& d) {
    const std::string needle = "Serving metrics on http://";
    if (!d.wait_log(needle)) return 0;
    std::string text = d.log();
    size_t at = text.find(needle) + needle.size();
    size_t end = text.find("/metrics", at);
    size_t colon = text.rfind(':', end);
    return static_cast<uint16_t>(atoi(text.substr(colon + 1, end - colon - 1).c_str()));
}

using Labels = std::map<std::string, std::string>;

const char* const families[] = {
    "mixctl_upstream_up",
    "mixctl_upstream_active_connections",
    "mixctl_upstream_connections_total",
    "mixctl_upstream_connect_failures_total",
    "mixctl_upstream_bytes_in_total",
    "mixctl_upstream_bytes_out_total",
    "mixctl_upstream_datagrams_in_total",
    "mixctl_upstream_datagrams_out_total",
};

}  // namespace

TEST_CASE("the test's exposition parser rejects what the text format forbids", "[metrics]") {
    const std::string good =
        "# HELP m_total Things, with \\\\ and \\n.\n"
        "# TYPE m_total counter\n"
        "m_total{rule=\"a \\\"b\\\" \\\\ c\\nd\",upstream=\"x:1\"} 3\n"
        "m_total 4.5e3\n"
        "# HELP g A gauge.\n"
        "# TYPE g gauge\n"
        "g NaN\n";
    Exposition e = parse(good);
    INFO(all(e.errors));
    REQUIRE(e.errors.empty());
    CHECK(e.value("m_total", Labels{{"rule", "a \"b\" \\ c\nd"}, {"upstream", "x:1"}}) == 3);
    CHECK(e.value("m_total", Labels{}) == 4500);
    const char* bad[] = {
        "m 1\n",                                                     // no HELP/TYPE
        "# HELP m x\nm 1\n",                                         // no TYPE
        "# TYPE m counter\n# HELP m x\nm 1\n# TYPE m counter\n",     // second TYPE
        "# HELP m x\n# TYPE m summary\nm 1\n",                       // not counter/gauge
        "# HELP m x\n# TYPE m gauge\nm{a=\"1\\t\"} 1\n",              // bad escape
        "# HELP m x\n# TYPE m gauge\nm{a=\"1} 1\n",                   // unterminated
        "# HELP m x\n# TYPE m gauge\nm{a=1} 1\n",                     // unquoted
        "# HELP m x\n# TYPE m gauge\nm{1a=\"1\"} 1\n",                // bad label name
        "# HELP m x\n# TYPE m gauge\nm{a=\"1\",a=\"2\"} 1\n",          // label twice
        "# HELP m x\n# TYPE m gauge\nm 1\nm 2\n",                     // same series twice
        "# HELP m x\n# TYPE m gauge\nm one\n",                        // not a number
        "# HELP m x\n# TYPE m gauge\nm 1",                            // no final newline
        "# HELP 9m x\n# TYPE 9m gauge\n9m 1\n",                       // bad metric name
        "# HELP m x\n# TYPE m gauge\nm 1\n\n",                        // blank line
        "# HELP m x\n# TYPE m gauge\n# just a comment\nm 1\n",        // other comment
        "# HELP m x\n# TYPE m gauge\nm{a=\"1\"}1\n",                  // no space
        "# HELP m x\n# TYPE m gauge\n# HELP n y\n# TYPE n gauge\nm 1\nn 1\nm{a=\"\"} 2\n",  // split group
    };
    for (const char* text : bad) {
        INFO(text);
        CHECK(!parse(text).errors.empty());
    }
}

TEST_CASE("GET /metrics counts known traffic per rule and upstream", "[metrics]") {
    Server a(digest);
    Server held(echo);
    RefusedPort refused, probed;  // B refuses; C is probed, refused, then listens
    REQUIRE((a.ok() && held.ok() && refused.port() && probed.port()));
    // The held rule's name needs escaping as a label value: " and \.
    const std::string odd_name = "held \"open\" \\ one";
    Daemon d("metrics: 127.0.0.1:0\n"
             "rules:\n"
             "- {name: a, from: 127.0.0.1:0, to: ['" + a.address() + "']}\n"
             "- {name: b, from: 127.0.0.1:0, to: ['" + refused.address() + "']}\n"
             "- {name: 'held \"open\" \\ one', from: 127.0.0.1:0, to: ['" + held.address() + "']}\n"
             "- name: c\n"
             "  from: 127.0.0.1:0\n"
             "  health_check: {interval: 100ms, timeout: 500ms, rise: 1, fall: 1}\n"
             "  to: ['" + probed.address() + "']\n");
    uint16_t mport = metrics_port(d);
    INFO(d.log());
    REQUIRE(mport != 0);
    uint16_t pa = d.port("a"), pb = d.port("b"), pheld = d.port(odd_name);
    REQUIRE((pa && pb && pheld));

    // Before any traffic: every family, every upstream, all zero but "up".
    Response first = scrape(mport);
    REQUIRE(first.status == 200);
    Exposition e0 = parse(first.body);
    INFO(first.body);
    INFO(all(e0.errors));
    CHECK(e0.errors.empty());
    for (const char* family : families) {
        INFO(family);
        CHECK(e0.count(family) == 4);
    }
    CHECK(e0.value("mixctl_upstream_up", Labels{{"rule", "a"}, {"upstream", a.address()}}) == 1);
    CHECK(e0.value("mixctl_upstream_connections_total", Labels{{"rule", "a"}, {"upstream", a.address()}}) == 0);

    // Three connections to A with known sizes; the digest upstream answers
    // one line each, so bytes_out is known too.
    uint64_t in = 0, out = 0;
    for (size_t size : {1000u, 20000u, 300000u}) {
        net::Fd fd = dial(pa);
        REQUIRE(fd);
        REQUIRE(send_pattern(fd.get(), size, size));
        ::shutdown(fd.get(), SHUT_WR);
        std::string reply;
        REQUIRE(read_to_eof(fd.get(), reply));
        CHECK(reply == digest_line(pattern(size, size)));
        in += size;
        out += reply.size();
    }
    // One to B, which refuses: the client is closed, B's failure counted.
    {
        net::Fd fd = dial(pb);
        REQUIRE(fd);
        CHECK(closed_by_peer(fd.get()));
    }
    // One held open through the oddly named rule.
    net::Fd open_fd = dial(pheld);
    REQUIRE(open_fd);
    REQUIRE(send_all(open_fd.get(), std::string("hello")));
    std::string echoed;
    REQUIRE(read_exact(open_fd.get(), echoed, 5));

    const Labels la{{"rule", "a"}, {"upstream", a.address()}};
    const Labels lb{{"rule", "b"}, {"upstream", refused.address()}};
    const Labels lheld{{"rule", odd_name}, {"upstream", held.address()}};
    const Labels lc{{"rule", "c"}, {"upstream", probed.address()}};
    // Counters are added by the workers as bytes flow and read by another
    // process: wait (bounded) until they settle at the expected values.
    Exposition e;
    std::string body;
    bool settled = wait_until([&] {
        body = scrape(mport).body;
        e = parse(body);
        return e.value("mixctl_upstream_bytes_in_total", la) == static_cast<double>(in) &&
               e.value("mixctl_upstream_bytes_out_total", la) == static_cast<double>(out) &&
               e.value("mixctl_upstream_active_connections", la) == 0 &&
               e.value("mixctl_upstream_active_connections", lheld) == 1 &&
               // The worker counts relayed bytes after the write that lets the
               // client read them: the held connection's echo may show late.
               e.value("mixctl_upstream_bytes_in_total", lheld) == 5 &&
               e.value("mixctl_upstream_bytes_out_total", lheld) == 5 &&
               e.value("mixctl_upstream_up", lc) == 0;
    });
    INFO(body);
    INFO(all(e.errors));
    CHECK(settled);
    CHECK(e.errors.empty());
    CHECK(e.value("mixctl_upstream_connections_total", la) == 3);
    CHECK(e.value("mixctl_upstream_connect_failures_total", la) == 0);
    CHECK(e.value("mixctl_upstream_bytes_in_total", la) == static_cast<double>(in));
    CHECK(e.value("mixctl_upstream_bytes_out_total", la) == static_cast<double>(out));
    CHECK(e.value("mixctl_upstream_active_connections", la) == 0);
    CHECK(e.value("mixctl_upstream_up", la) == 1);

    CHECK(e.value("mixctl_upstream_connect_failures_total", lb) >= 1);
    CHECK(e.value("mixctl_upstream_connections_total", lb) == 0);
    CHECK(e.value("mixctl_upstream_up", lb) == 0);  // max_fails 1: down for fail_timeout

    CHECK(e.value("mixctl_upstream_active_connections", lheld) == 1);
    CHECK(e.value("mixctl_upstream_connections_total", lheld) == 1);
    CHECK(e.value("mixctl_upstream_bytes_in_total", lheld) == 5);
    CHECK(e.value("mixctl_upstream_bytes_out_total", lheld) == 5);

    CHECK(e.value("mixctl_upstream_up", lc) == 0);  // probes refused, no connection ever made
    for (auto& t : e.type) {
        INFO(t.first);
        CHECK(t.second == (t.first.size() > 6 && t.first.compare(t.first.size() - 6, 6, "_total") == 0 ? "counter" : "gauge"));
    }

    // The held connection ends: active goes back to 0. C starts listening:
    // the next probe brings it up.
    open_fd.reset();
    REQUIRE(::listen(probed.fd(), 16) == 0);
    CHECK(wait_until([&] {
        Exposition now = parse(scrape(mport).body);
        return now.value("mixctl_upstream_active_connections", lheld) == 0 && now.value("mixctl_upstream_up", lc) == 1;
    }));
}

TEST_CASE("the metrics reply is HTTP with the text format's content type, also to curl", "[metrics]") {
    Server a(echo);
    Daemon d("metrics: 127.0.0.1:0\nrules:\n- {name: a, from: 127.0.0.1:0, to: ['" + a.address() + "']}\n");
    uint16_t mport = metrics_port(d);
    INFO(d.log());
    REQUIRE(mport != 0);

    for (const char* request : {"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "GET /metrics HTTP/1.0\r\n\r\n",
                                "GET /metrics?name[]=x HTTP/1.1\r\nHost: x\r\n\r\n"}) {
        INFO(request);
        Response r = http(mport, request);
        CHECK(r.status == 200);
        CHECK(r.headers["content-type"].compare(0, 25, "text/plain; version=0.0.4") == 0);
        CHECK(r.headers["content-length"] == std::to_string(r.body.size()));
        Exposition e = parse(r.body);
        INFO(all(e.errors));
        CHECK(e.errors.empty());
        CHECK(e.count("mixctl_upstream_up") == 1);
    }
    for (const char* request : {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET /metricsx HTTP/1.0\r\n\r\n",
                                "GET /other HTTP/1.0\r\n\r\n"}) {
        INFO(request);
        CHECK(http(mport, request).status == 404);
    }

    std::string curl = peers::find_program("curl");
    if (curl.empty()) {
        WARN("curl not found (Debian package curl): the curl half of this test is skipped");
        return;
    }
    // -q: no ~/.curlrc; --noproxy: never a proxy from the environment.
    std::string cmd = curl + " -q -s -S --noproxy '*' --max-time 5 -D - http://127.0.0.1:" + std::to_string(mport) +
                      "/metrics 2>&1";
    FILE* pipe = popen(cmd.c_str(), "r");
    REQUIRE(pipe);
    std::string raw;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) raw.append(buf, n);
    int rc = pclose(pipe);
    INFO(raw);
    CHECK(rc == 0);
    Response r = parse_response(raw);
    CHECK(r.status == 200);
    CHECK(r.headers["content-type"].compare(0, 25, "text/plain; version=0.0.4") == 0);
    Exposition e = parse(r.body);
    INFO(all(e.errors));
    CHECK(e.errors.empty());
    CHECK(e.value("mixctl_upstream_up", Labels{{"rule", "a"}, {"upstream", a.address()}}) == 1);
}

TEST_CASE("a client that sends nothing does not hold up other scrapes", "[metrics]") {
    Server a(echo);
    Daemon d("metrics: '[::1]:0'\nrules:\n- {name: a, from: 127.0.0.1:0, to: ['" + a.address() + "']}\n");
    uint16_t mport = metrics_port(d);
    INFO(d.log());
    REQUIRE(mport != 0);
    CHECK(d.log().find("Serving metrics on http://[::1]:") != std::string::npos);

    net::Fd silent = dial(mport, AF_INET6);                 // connects, sends nothing
    net::Fd partial = dial(mport, AF_INET6);                // half a request, never finished
    REQUIRE((silent && partial));
    REQUIRE(send_all(partial.get(), std::string("GET /metr")));
    Clock::time_point start = Clock::now();
    for (int i = 0; i < 3; ++i) {
        Response r = scrape(mport, AF_INET6, 2000ms);
        CHECK(r.status == 200);
    }
    CHECK(Clock::now() - start < 2000ms);
    // The idle ones are closed after a while (5 s), not kept forever.
    CHECK(closed_by_peer(silent.get(), 8000ms));
    CHECK(closed_by_peer(partial.get(), 2000ms));
}

// Past 32 clients that send nothing, the oldest idle one makes room: a
// scrape is never locked out and the checker never spins on its listener.
TEST_CASE("many clients that send nothing neither block a scrape nor spin the checker", "[metrics]") {
    Server a(echo);
    Daemon d("metrics: 127.0.0.1:0\nrules:\n- {name: a, from: 127.0.0.1:0, to: ['" + a.address() + "']}\n");
    uint16_t mport = metrics_port(d);
    INFO(d.log());
    REQUIRE(mport != 0);
    std::vector<pid_t> kids = d.workers(2);  // the worker and the checker
    REQUIRE(kids.size() == 2);
    std::vector<net::Fd> idle;
    for (int i = 0; i < 40; ++i) idle.push_back(dial(mport));
    std::this_thread::sleep_for(200ms);
    long before = cpu_ticks(kids[0]) + cpu_ticks(kids[1]);
    Clock::time_point start = Clock::now();
    Response r = scrape(mport, AF_INET, 1500ms);
    CHECK(r.status == 200);
    CHECK(Clock::now() - start < 1000ms);
    std::this_thread::sleep_for(Ms(1000) - std::min<Ms>(Ms(1000), std::chrono::duration_cast<Ms>(Clock::now() - start)));
    long used = cpu_ticks(kids[0]) + cpu_ticks(kids[1]) - before;
    CHECK(used < sysconf(_SC_CLK_TCK) / 4);  // under a quarter of a CPU second in ~1 s
}

TEST_CASE("a bad metrics address is a config error with its line", "[metrics]") {
    struct Bad {
        const char* value;
        const char* says;
    } cases[] = {
        {"127.0.0.1", "x.yaml:2: metrics: \"127.0.0.1\": missing port"},
        {"127.0.0.1:99999", "x.yaml:2: metrics: \"127.0.0.1:99999\""},
        {"'::1:9100'", "x.yaml:2: metrics: \"::1:9100\": too many colons"},
        {"[127.0.0.1:9100]", "x.yaml:2: metrics:"},
    };
    for (const Bad& b : cases) {
        INFO(b.value);
        TempDir dir;
        std::string file = dir.write("x.yaml", std::string("version: 0.1\nmetrics: ") + b.value +
                                                   "\nrules:\n- {from: 127.0.0.1:1, to: [127.0.0.1:2]}\n");
        RunResult r = run({"-check", "-f", file});
        INFO(r.err);
        CHECK(r.exit.code == 1);
        CHECK(r.err.find(b.says) != std::string::npos);
    }
    // A good one passes -check.
    TempDir dir;
    RunResult ok = run({"-check", "-f", dir.write("x.yaml", "metrics: 127.0.0.1:9100\nrules:\n- {from: 127.0.0.1:1, to: [127.0.0.1:2]}\n")});
    INFO(ok.err);
    CHECK(ok.exit.code == 0);
}

TEST_CASE("a metrics port already in use stops mixctl at start with exit 1", "[metrics]") {
    Server busy(echo);  // something already listens there
    Server a(echo);
    REQUIRE(busy.ok());
    Daemon d("metrics: " + busy.address() + "\nrules:\n- {name: a, from: 127.0.0.1:0, to: ['" + a.address() + "']}\n");
    Exit e = d.wait_exit(5000ms);
    CHECK(e.code == 1);
    CHECK(d.wait_log("error: metrics: listen on " + busy.address() + ": ", 2000ms));
    CHECK(d.log().find("address already in use") != std::string::npos);
    INFO(d.log());
    CHECK(d.log().find("started") == std::string::npos);
}
