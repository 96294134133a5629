// libFuzzer entry point for the ClientHello reader (client_hello.hpp).
// The first byte picks a feed size; the rest is what a client sent. Checks:
// no crash, the outcome does not depend on how the bytes were cut up, a name
// is only ever given for a complete hello and is a lowercase DNS name.
#include "client_hello.hpp"
#include "tests/fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>

namespace {

using fuzz_check::require;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    size_t chunk = 1 + data[0] % 64;
    ++data;
    --size;
    client_hello::Reader whole, pieces;
    whole.feed(data, size);
    for (size_t at = 0; at < size; at += chunk) pieces.feed(data + at, size - at < chunk ? size - at : chunk);
    require(whole.status() == pieces.status());
    require(whole.name() == pieces.name());
    if (whole.has_name()) {
        require(whole.status() == client_hello::Status::done);
        require(whole.name().size() <= 253);
        for (char c : whole.name())
            require((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.');
    }
    if (whole.status() == client_hello::Status::need_more) require(size < client_hello::max_bytes);
    return 0;
}
