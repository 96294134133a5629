// libFuzzer entry point for the control socket's command language:
// control::parse and control::answer over a small mapped shared state.
//   make fuzz                        (builds build/fuzz/fuzz_control, runs it on tests/fuzz/corpus-control)
// Besides crashes, hangs, leaks and undefined behaviour it checks what a
// control client relies on: every answer starts with "ok" or "error: " and
// ends with a newline, parse and answer agree, a parsed command names its
// words so that `show`'s quoting reads back as the same word, and a weight
// is only ever set within 1..1000000.
#include "control.hpp"
#include "tests/fuzz_check.hpp"

#include <arpa/inet.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

using fuzz_check::require;

struct World {
    config::Config cfg;
    upstreams::Shared shared;
    World() {
        config::Diagnostics diag;
        require(config::parse_text("rules:\n- name: web\n  from: 127.0.0.1:0\n  to: [127.0.0.1:1, \"[::1]:2\"]\n"
                                   "- name: \"a \\\"b\\\" c\"\n  from: 127.0.0.1:0\n  to: [x.test:3]\n",
                                   "fuzz.yaml", cfg, diag));
        net::SockAddr a;
        auto* in = reinterpret_cast<sockaddr_in*>(&a.storage);
        in->sin_family = AF_INET;
        inet_pton(AF_INET, "127.0.0.1", &in->sin_addr);
        a.length = sizeof(sockaddr_in);
        std::vector<std::vector<std::vector<net::SockAddr>>> resolved;
        for (const config::Rule& r : cfg.rules) resolved.emplace_back(r.to.size(), std::vector<net::SockAddr>{a});
        require(shared.map(cfg, resolved));
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static World world;
    std::string_view line(reinterpret_cast<const char*>(data), size);
    control::Command cmd;
    std::string error;
    bool ok = control::parse(line, cmd, error);
    require(ok == error.empty());
    std::string reply = control::answer(line, world.shared, 1000000, nullptr);
    require(!reply.empty() && reply.back() == '\n');
    require(reply.compare(0, 2, "ok") == 0 || reply.compare(0, 7, "error: ") == 0);
    if (!ok) require(reply == "error: " + error + "\n");
    if (ok && (cmd.verb == control::Verb::disable || cmd.verb == control::Verb::enable)) {
        // What show prints for these words parses back to the same words
        // (unless quoting made the line longer than a command may be).
        std::string rebuilt = "disable " + control::word(cmd.rule) + " " + control::word(cmd.upstream);
        control::Command again;
        std::string why;
        if (rebuilt.size() <= control::max_line) {
            require(control::parse(rebuilt, again, why));
            require(again.rule == cmd.rule && again.upstream == cmd.upstream);
        }
    }
    for (size_t r = 0; r < world.shared.rules(); ++r)
        for (size_t u = 0; u < world.shared.pool(r).size(); ++u) {
            uint32_t w = world.shared.pool(r).at(u).weight.load();
            require(w >= 1 && w <= control::max_weight);
            require(world.shared.pool(r).at(u).disabled.load() <= 1);
        }
    return 0;
}
