// terminate.hpp - the static build's terminate handler (make static defines
// MIXCTL_STATIC; the dynamic build keeps libstdc++'s own).
//
// mixctl catches no exception: the only ones the library can throw at it
// (std::bad_alloc when memory runs out, std::length_error, std::out_of_range)
// end the process through std::terminate, whose default handler,
// __gnu_cxx::__verbose_terminate_handler, prints the exception and aborts. That
// handler demangles the type name, which links libstdc++'s whole C++
// demangler (about 48 KB) into a static binary. Defining the handler here
// keeps the linker from pulling libstdc++'s: it prints the same first line,
// with the type name as the compiler spells it (St9bad_alloc for
// std::bad_alloc), and aborts, as before.
//
// It prints only what the C++ ABI (the Itanium ABI that GCC and Clang use
// on Linux, BSD and macOS) hands out portably: the type of the exception
// being handled, through abi::__cxa_current_exception_type(). The thrown
// object itself, and so its what(), could only be reached through the
// library's private layout of std::exception_ptr (or by rethrowing into a
// catch, which the static build, without -fexceptions, cannot do); the type
// name already says which exception it was (St9bad_alloc: out of memory).
#pragma once

#include <cstdlib>
#include <cstring>
#include <exception>
#include <typeinfo>

#include <cxxabi.h>
#include <unistd.h>

namespace mixterm {

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

// Replaces libstdc++'s (declared in <exception>): its first line, on stderr.
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
    std::abort();
}

}  // namespace __gnu_cxx
