// terminate.hpp - the static build's terminate handler (make static defines MIXCTL_STATIC).
// Owns what std::terminate prints in that build; nothing else, and not the dynamic build (libstdc++'s own).
//
// mixctl catches no exception: the only ones the library can throw at it
// (std::bad_alloc when memory runs out, std::length_error, std::out_of_range)
// end the process through std::terminate, whose default handler,
// __gnu_cxx::__verbose_terminate_handler, prints the exception and aborts. That
// handler demangles the type name, which links libstdc++'s whole C++
// demangler (about 48 KB) into a static binary. Defining the handler here
// keeps the linker from pulling libstdc++'s: it prints the same lines with
// the type name as the compiler spells it (St9bad_alloc for std::bad_alloc)
// and aborts, as before.
//
// It works without -fexceptions (the static build has none): the thrown
// object is reached through std::current_exception, not through a catch.
#pragma once

#include <cstdlib>
#include <cstring>
#include <exception>
#include <typeinfo>

#include <cxxabi.h>
#include <unistd.h>

namespace mixterm {

// The exception being handled, as libstdc++'s std::exception_ptr holds it: a
// pointer to the thrown object (its ABI: exception_ptr is one such pointer).
inline void* current_object() {
    static_assert(sizeof(std::exception_ptr) == sizeof(void*), "libstdc++'s exception_ptr");
    std::exception_ptr held = std::current_exception();
    void* object = nullptr;
    std::memcpy(static_cast<void*>(&object), static_cast<const void*>(&held), sizeof object);
    return object;  // the exception being handled keeps it alive after `held` goes
}

inline void say(const char* text) {
    size_t left = std::strlen(text);
    while (left > 0) {
        ssize_t n = ::write(STDERR_FILENO, text, left);
        if (n <= 0) return;
        text += n;
        left -= static_cast<size_t>(n);
    }
}

}  // namespace mixterm

namespace __gnu_cxx {

// Replaces libstdc++'s (declared in <exception>): same messages, on stderr.
void __verbose_terminate_handler() {
    static bool entered = false;
    if (entered) {
        mixterm::say("terminate called recursively\n");
        std::abort();
    }
    entered = true;
    const std::type_info* type = abi::__cxa_current_exception_type();
    if (type == nullptr) {
        mixterm::say("terminate called without an active exception\n");
        std::abort();
    }
    mixterm::say("terminate called after throwing an instance of '");
    mixterm::say(type->name());
    mixterm::say("'\n");
    // what(), when the object is a std::exception: the test a catch clause
    // for const std::exception& makes.
    void* object = mixterm::current_object();
    if (object != nullptr && typeid(std::exception).__do_catch(type, &object, 1)) {
        mixterm::say("  what():  ");
        mixterm::say(static_cast<const std::exception*>(object)->what());
        mixterm::say("\n");
    }
    std::abort();
}

}  // namespace __gnu_cxx
