// timers.hpp - one deadline per connection id in a binary heap: schedule, cancel, the next due.
// Owns only times and ids; what a deadline means (dial timeout, idle, half-close) is the worker's.
//
// The heap and the id -> heap position table grow with the largest number
// of connections the worker has held and are reused after that: scheduling
// or cancelling allocates nothing (a std::set cost a node per dial).
// Cancel and reschedule are O(log n) through the position table; a worker
// whose connections all carry deadlines looks only at the earliest one per
// turn.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

namespace timers {

using Clock = std::chrono::steady_clock;

class Queue {
public:
    bool empty() const { return heap_.empty(); }
    size_t size() const { return heap_.size(); }
    Clock::time_point next() const { return heap_.front().at; }
    uint32_t next_id() const { return heap_.front().id; }
    size_t capacity() const { return heap_.capacity(); }  // grows only with the peak number of ids
    bool scheduled(uint32_t id) const { return id < position_.size() && position_[id] != none; }

    // Makes room for ids below `ids` ahead of time.
    void reserve(size_t ids) {
        if (position_.size() < ids) position_.resize(ids, none);
        heap_.reserve(ids);
    }

    // Sets (or moves) id's deadline.
    void schedule(uint32_t id, Clock::time_point at) {
        if (id >= position_.size()) position_.resize(static_cast<size_t>(id) + 1 + position_.size(), none);
        uint32_t at_index = position_[id];
        if (at_index == none) {
            heap_.push_back(Entry{at, id});
            at_index = static_cast<uint32_t>(heap_.size() - 1);
            position_[id] = at_index;
            up(at_index);
            return;
        }
        Clock::time_point before = heap_[at_index].at;
        heap_[at_index].at = at;
        if (at < before) up(at_index);
        else down(at_index);
    }

    void cancel(uint32_t id) {
        if (!scheduled(id)) return;
        uint32_t at_index = position_[id];
        position_[id] = none;
        uint32_t last = static_cast<uint32_t>(heap_.size() - 1);
        if (at_index != last) {
            heap_[at_index] = heap_[last];
            position_[heap_[at_index].id] = at_index;
            heap_.pop_back();
            if (at_index > 0 && heap_[at_index].at < heap_[parent(at_index)].at) up(at_index);
            else down(at_index);
        } else {
            heap_.pop_back();
        }
    }

    // Removes and returns the earliest id if it is due at `now`; UINT32_MAX otherwise.
    uint32_t pop_due(Clock::time_point now) {
        if (heap_.empty() || heap_.front().at > now) return UINT32_MAX;
        uint32_t id = heap_.front().id;
        cancel(id);
        return id;
    }

private:
    static constexpr uint32_t none = UINT32_MAX;
    struct Entry {
        Clock::time_point at;
        uint32_t id;
    };

    static uint32_t parent(uint32_t i) { return (i - 1) / 2; }

    void place(uint32_t i, const Entry& e) {
        heap_[i] = e;
        position_[e.id] = i;
    }

    void up(uint32_t i) {
        Entry e = heap_[i];
        while (i > 0 && e.at < heap_[parent(i)].at) {
            place(i, heap_[parent(i)]);
            i = parent(i);
        }
        place(i, e);
    }

    void down(uint32_t i) {
        Entry e = heap_[i];
        const uint32_t n = static_cast<uint32_t>(heap_.size());
        for (;;) {
            uint32_t child = 2 * i + 1;
            if (child >= n) break;
            if (child + 1 < n && heap_[child + 1].at < heap_[child].at) ++child;
            if (!(heap_[child].at < e.at)) break;
            place(i, heap_[child]);
            i = child;
        }
        place(i, e);
    }

    std::vector<Entry> heap_;
    std::vector<uint32_t> position_;  // by id: index in heap_, or none
};

}  // namespace timers
