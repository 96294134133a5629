// 64-bit counters and times shared by processes (shared64.hpp). Run natively
// and, in tests/cross.sh, under qemu-mipsel, where the CPU has no 64-bit
// atomics and the locked kind is the one the daemon uses.
#include <catch2/catch.hpp>

#include <chrono>
#include <new>

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shared64.hpp"

namespace {

// One value of type C in MAP_SHARED memory, as the daemon keeps its counters.
template <class C>
class InShared {
public:
    InShared() {
        void* memory = mmap(nullptr, sizeof(C), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        REQUIRE(memory != MAP_FAILED);
        value_ = new (memory) C();
    }
    ~InShared() { munmap(value_, sizeof(C)); }
    C& operator*() { return *value_; }

private:
    C* value_ = nullptr;
};

// Runs `work` in `count` child processes at once; true when all exit 0.
template <class F>
bool in_processes(int count, F work) {
    std::vector<pid_t> pids;
    for (int i = 0; i < count; ++i) {
        pid_t pid = fork();
        if (pid == 0) _exit(work(i) ? 0 : 1);
        if (pid < 0) return false;
        pids.push_back(pid);
    }
    bool ok = true;
    for (pid_t pid : pids) {
        int status = 0;
        ok = waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 && ok;
    }
    return ok;
}

// Several processes add at once, with carries across the 32-bit halves.
template <class C>
void no_update_is_lost() {
    InShared<C> counter;
    (*counter).store(0xFFFFFF00ULL);  // the low half overflows many times below
    constexpr int processes = 4, adds = 20000;
    REQUIRE(in_processes(processes, [&](int) {
        for (int i = 0; i < adds; ++i) (*counter).fetch_add(0x10000001ULL);
        return true;
    }));
    CHECK((*counter).load() == 0xFFFFFF00ULL + uint64_t{processes} * adds * 0x10000001ULL);
}

// Writers store values whose halves are equal; a reader must never see a mix.
template <class C>
void no_read_is_torn() {
    InShared<C> value;
    (*value).store(0);
    REQUIRE(in_processes(3, [&](int role) {
        if (role > 0) {
            for (uint32_t i = 1; i <= 30000; ++i) (*value).store((uint64_t{i * 2654435761u} << 32) | (i * 2654435761u));
            return true;
        }
        for (int i = 0; i < 60000; ++i) {
            uint64_t v = (*value).load();
            if ((v >> 32) != (v & 0xFFFFFFFFu)) return false;
        }
        return true;
    }));
}

}  // namespace

TEST_CASE("64-bit counters shared by processes lose no update", "[shared64]") {
    INFO("locked on this CPU: " << shared64::locked);
    no_update_is_lost<shared64::U64>();
    no_update_is_lost<shared64::Locked64<uint64_t>>();
}

TEST_CASE("64-bit values shared by processes are never read half-written", "[shared64]") {
    no_read_is_torn<shared64::U64>();
    no_read_is_torn<shared64::Locked64<uint64_t>>();
}

TEST_CASE("compare-exchange on a shared time lets exactly one process win", "[shared64]") {
    InShared<shared64::Locked64<int64_t>> until;
    InShared<shared64::U64> winners;
    (*until).store(-5);
    REQUIRE(in_processes(4, [&](int) {
        int64_t seen = -5;
        if ((*until).compare_exchange(seen, 1000)) (*winners).fetch_add(1);
        else if (seen != 1000) return false;
        return true;
    }));
    CHECK((*until).load() == 1000);
    CHECK((*winners).load() == 1);
}

TEST_CASE("a lock left taken by a killed process does not hang the others", "[shared64]") {
    InShared<shared64::Locked64<uint64_t>> counter;
    (*counter).store(7);
    // What a process SIGKILLed between taking and releasing the lock leaves.
    reinterpret_cast<std::atomic<uint32_t>*>(&*counter)->store(1);
    auto start = std::chrono::steady_clock::now();
    CHECK((*counter).fetch_add(1) == 7);
    CHECK((*counter).load() == 8);
    auto waited = std::chrono::steady_clock::now() - start;
    CHECK(waited >= shared64::Locked64<uint64_t>::takeover_after);
    CHECK(waited < std::chrono::seconds(10));
}
