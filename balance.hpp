// balance.hpp - spreads accepted connections over pre-forked workers.
//
// Every worker polls the shared listeners, and the kernel wakes them LIFO:
// left alone, one worker takes most connections (measured 142/56/1/1 over
// four). So each worker publishes how many connections it has accepted, and
// one that is ahead of the slowest live worker by more than `lead` stops
// polling the listeners until the others catch up (it looks again every
// recheck_every_ms). The lead is wide enough that in a burst all workers
// accept at full speed, and narrow enough that sequential connections still
// rotate through every worker.
//
// Liveness: a worker stamps the board each time round its loop. A worker
// that has not done so for `stale_after` drops out of the comparison, so a
// stalled (or SIGSTOPped) one can never strand connections in the backlog.
// A worker that runs but cannot accept (out of descriptors or memory, or
// stopping) would stay fresh all the same, and hold the others back to its
// pace: it says so on the board at once (`accepting`), and is left out of
// the comparison until it accepts again.
// An idle worker needs no timed wakeup to stay counted: it polls the
// listeners, so the next connection wakes it (poll() wakes every waiter) and
// it stamps again before anyone could be held back on its account. Timed
// wakeups cost poll() a look at every descriptor the worker holds (~0.5-2 us
// each; a held-back worker with 1,000 idle connections re-polling every
// 5 ms burned most of a CPU), so only a held-back worker has one, paced by
// its size: at most one wakeup per 50 us of descriptors.
//
// The board lives in MAP_SHARED memory that the parent maps before forking.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <new>

#include <sys/mman.h>

#include "shared64.hpp"

namespace balance {

struct WorkerSlot {
    shared64::U64 accepted;
    shared64::I64 heartbeat_ms;  // CLOCK_MONOTONIC, ms: the last turn of its loop
    std::atomic<uint32_t> active{0};
    std::atomic<uint32_t> accepting{1};  // 0 while paused for lack of resources, or stopping
};

class Board {
public:
    static constexpr uint64_t lead = 32;
    static constexpr int recheck_every_ms = 5;
    static constexpr int64_t stale_after_ms = 1000;

    Board() = default;
    Board(const Board&) = delete;
    Board& operator=(const Board&) = delete;
    ~Board() { unmap(); }

    bool map(int workers) {
        unmap();
        bytes_ = sizeof(WorkerSlot) * static_cast<size_t>(workers);
        void* memory = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED) return false;
        slots_ = static_cast<WorkerSlot*>(memory);
        count_ = workers;
        for (int i = 0; i < count_; ++i) new (&slots_[i]) WorkerSlot();
        return true;
    }

    int count() const { return count_; }
    WorkerSlot& slot(int worker) { return slots_[worker]; }
    const WorkerSlot& slot(int worker) const { return slots_[worker]; }

    // A respawned worker starts level with the others instead of at zero,
    // which would make it take every new connection until it caught up.
    void restart(int worker, int64_t now_ms) {
        uint64_t lowest = UINT64_MAX;
        for (int i = 0; i < count_; ++i)
            if (i != worker) lowest = std::min(lowest, slots_[i].accepted.load());
        slots_[worker].accepted.store(lowest == UINT64_MAX ? 0 : lowest);
        slots_[worker].active.store(0, std::memory_order_relaxed);
        slots_[worker].heartbeat_ms.store(now_ms);
        slots_[worker].accepting.store(1, std::memory_order_relaxed);
    }

    // A timed wakeup every `every_ms`, unless the worker holds so many
    // descriptors that one poll() over them costs more than that allows.
    static int paced(int every_ms, size_t descriptors) {
        return std::max(every_ms, static_cast<int>(std::min<size_t>(descriptors / 20, 60000)));
    }

    void heartbeat(int worker, int64_t now_ms) { slots_[worker].heartbeat_ms.store(now_ms); }

    // Stored only when it changes: the slot's cache line is read by every
    // other worker on each accept. A worker coming back starts level with
    // the lowest of the others (as a respawned one does), so the connections
    // they took meanwhile do not hold them back now.
    void set_accepting(int worker, bool accepting) {
        WorkerSlot& me = slots_[worker];
        if ((me.accepting.load(std::memory_order_relaxed) != 0) == accepting) return;
        if (accepting) {
            uint64_t lowest = UINT64_MAX;
            for (int i = 0; i < count_; ++i)
                if (i != worker && slots_[i].accepting.load(std::memory_order_relaxed))
                    lowest = std::min(lowest, slots_[i].accepted.load());
            if (lowest != UINT64_MAX && lowest > me.accepted.load()) me.accepted.store(lowest);
        }
        me.accepting.store(accepting ? 1 : 0);
    }

    bool may_accept(int worker, int64_t now_ms) const {
        if (count_ <= 1) return true;
        uint64_t mine = slots_[worker].accepted.load();
        for (int i = 0; i < count_; ++i) {
            if (i == worker) continue;
            const WorkerSlot& other = slots_[i];
            if (!other.accepting.load(std::memory_order_relaxed)) continue;
            if (now_ms - other.heartbeat_ms.load() > stale_after_ms) continue;
            if (mine > other.accepted.load() + lead) return false;
        }
        return true;
    }

    // Long-lived connections (keep-alive, tunnels) arrive in bursts that one
    // worker would take whole: the accept lead above lets it run 32 ahead.
    // So a worker that holds more than active_lead connections above the
    // least loaded live, accepting worker also lets the others take the next
    // ones. Measured (16 connections opened at once, -w 2): 16/0, 15/1, 14/2
    // without this, 8/8 to 10/6 with it.
    static constexpr uint32_t active_lead = 2;

    bool ahead_in_active(int worker, int64_t now_ms) const {
        if (count_ <= 1) return false;
        uint32_t mine = slots_[worker].active.load(std::memory_order_relaxed);
        for (int i = 0; i < count_; ++i) {
            if (i == worker) continue;
            const WorkerSlot& other = slots_[i];
            if (!other.accepting.load(std::memory_order_relaxed)) continue;
            if (now_ms - other.heartbeat_ms.load() > stale_after_ms) continue;
            if (mine > other.active.load(std::memory_order_relaxed) + active_lead) return true;
        }
        return false;
    }

private:
    void unmap() {
        if (slots_) munmap(slots_, bytes_);
        slots_ = nullptr;
        count_ = 0;
    }

    WorkerSlot* slots_ = nullptr;
    size_t bytes_ = 0;
    int count_ = 0;
};

}  // namespace balance
