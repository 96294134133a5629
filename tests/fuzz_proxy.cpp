// libFuzzer entry point for the PROXY header reader (proxy_receive.hpp).
// Checks: no crash; a header that is done is no longer than the input,
// within the spec's bounds, reads the same from exactly its own bytes, and
// every shorter prefix of it asks for more.
#include "proxy_receive.hpp"
#include "tests/fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>

namespace {

using fuzz_check::require;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    proxy_receive::Header h = proxy_receive::parse(data, size);
    if (h.status != proxy_receive::Status::done) {
        require(!h.has_address);
        return 0;
    }
    require(h.length <= size);
    require(h.version == 1 ? h.length <= proxy_receive::v1_max : h.length <= proxy_receive::v2_max);
    proxy_receive::Header again = proxy_receive::parse(data, h.length);
    require(again.status == proxy_receive::Status::done && again.length == h.length);
    require(again.has_address == h.has_address);
    if (h.has_address) require(again.source.text() == h.source.text() && h.source.family() == h.destination.family());
    for (size_t n = 1; n < h.length; n += 1 + n / 8)
        require(proxy_receive::parse(data, n).status == proxy_receive::Status::need_more);
    return 0;
}
