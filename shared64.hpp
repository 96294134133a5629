// shared64.hpp - 64-bit counters and times in memory that processes share.
// Owns how such a value is read and written (atomics, or a lock on MIPS32); not what is counted.
//
// Workers, the checker and the parent update one MAP_SHARED page. Where the
// CPU has 64-bit atomic instructions (x86_64, aarch64, ARMv7 with ldrexd)
// a Shared64 is a plain std::atomic. 32-bit MIPS has none: there the
// compiler calls libatomic, whose locks live in each process's own memory
// and so do not exclude a write from another process - updates get lost and
// readers see half-written values. On such CPUs the value is guarded by a
// 32-bit spinlock that sits next to it in the shared memory.
//
// A process killed inside the few instructions that hold the lock would
// leave it taken; a waiter that has yielded for 200 ms takes it over, so the
// worst case is one imprecise counter, never a hung daemon.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include <sched.h>

#if !defined(__GCC_ATOMIC_LLONG_LOCK_FREE) || __GCC_ATOMIC_LLONG_LOCK_FREE != 2
#define MIXCTL_SHARED64_LOCKED 1
#endif

namespace shared64 {

// For CPUs with 64-bit atomic instructions.
template <class T>
class Atomic64 {
public:
    explicit Atomic64(T initial = 0) : value_(initial) {}
    T load() const { return value_.load(std::memory_order_relaxed); }
    void store(T v) { value_.store(v, std::memory_order_relaxed); }
    T fetch_add(T n) { return value_.fetch_add(n, std::memory_order_relaxed); }
    bool compare_exchange(T& expected, T desired) { return value_.compare_exchange_strong(expected, desired); }

private:
    std::atomic<T> value_;
};

// For the others. The lock word comes first (tests rely on that to play a
// holder that died).
template <class T>
class Locked64 {
public:
    explicit Locked64(T initial = 0) : value_(initial) {}
    T load() const {
        Hold hold(lock_);
        return value_;
    }
    void store(T v) {
        Hold hold(lock_);
        value_ = v;
    }
    T fetch_add(T n) {
        Hold hold(lock_);
        T before = value_;
        value_ = static_cast<T>(before + n);
        return before;
    }
    bool compare_exchange(T& expected, T desired) {
        Hold hold(lock_);
        if (value_ != expected) {
            expected = value_;
            return false;
        }
        value_ = desired;
        return true;
    }

    // Far longer than any live holder keeps the lock (a few instructions,
    // unless it is descheduled right then).
    static constexpr std::chrono::milliseconds takeover_after{200};

private:
    static_assert(std::atomic<uint32_t>::is_always_lock_free, "a 32-bit lock must need no lock itself");

    class Hold {
    public:
        explicit Hold(std::atomic<uint32_t>& lock) : lock_(lock) {
            static constexpr int spins = 100;
            std::chrono::steady_clock::time_point give_up{};
            for (int tries = 0; lock_.exchange(1, std::memory_order_acquire) != 0; ++tries) {
                if (tries < spins) continue;
                auto now = std::chrono::steady_clock::now();
                if (tries == spins) give_up = now + takeover_after;
                if (now >= give_up) break;  // the holder died holding it
                sched_yield();
            }
        }
        ~Hold() { lock_.store(0, std::memory_order_release); }
        Hold(const Hold&) = delete;
        Hold& operator=(const Hold&) = delete;

    private:
        std::atomic<uint32_t>& lock_;
    };

    mutable std::atomic<uint32_t> lock_{0};
    T value_;
};

#ifdef MIXCTL_SHARED64_LOCKED
constexpr bool locked = true;
template <class T>
using Shared64 = Locked64<T>;
#else
constexpr bool locked = false;
template <class T>
using Shared64 = Atomic64<T>;
#endif

using U64 = Shared64<uint64_t>;
using I64 = Shared64<int64_t>;

}  // namespace shared64
