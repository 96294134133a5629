// relay.hpp - moving bytes one way between two nonblocking sockets.
//
// A Direction reads its source into the worker's scratch buffer and writes
// straight on; only what the destination cannot take right now is parked in
// a buffer of its own, and the source is not read again until that buffer
// has drained. So an idle or fast connection owns no buffer at all, and a
// slow one owns at most one buffer_size per direction.
//
// EOF from the source is passed on as shutdown(SHUT_WR) once everything
// before it is written: half-close is relayed, never turned into a close.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <sys/socket.h>
#include <unistd.h>

namespace relay {

constexpr size_t buffer_size = 32 * 1024;

#ifdef MSG_NOSIGNAL
constexpr int send_flags = MSG_NOSIGNAL;
#else
constexpr int send_flags = 0;  // SIGPIPE is ignored process-wide
#endif

// Recycles parked buffers so a busy worker does not malloc per event.
class BufferPool {
public:
    std::unique_ptr<char[]> take() {
        if (free_.empty()) return std::unique_ptr<char[]>(new char[buffer_size]);
        std::unique_ptr<char[]> buffer = std::move(free_.back());
        free_.pop_back();
        return buffer;
    }
    void give(std::unique_ptr<char[]> buffer) {
        if (free_.size() < keep_at_most) free_.push_back(std::move(buffer));
    }

private:
    static constexpr size_t keep_at_most = 64;
    std::vector<std::unique_ptr<char[]>> free_;
};

struct Parked {
    std::unique_ptr<char[]> data;
    uint32_t start = 0, end = 0;
    bool empty() const { return start == end; }
};

class Direction {
public:
    bool source_done() const { return eof_; }
    bool finished() const { return shut_; }   // EOF passed on: nothing more will flow this way
    bool has_parked() const { return !parked_.empty(); }
    bool wants_read() const { return !eof_ && parked_.empty(); }
    uint64_t bytes() const { return bytes_; }

    // Source readable: move what we can. Returns 0, or the errno that should
    // abort the connection.
    int pump(int source, int destination, char* scratch, BufferPool& pool) {
        // Bounded so one fast connection cannot starve the others in a turn.
        for (int round = 0; round < 4; ++round) {
            ssize_t n = ::read(source, scratch, buffer_size);
            if (n > 0) {
                size_t sent = 0;
                if (int err = send_all(destination, scratch, static_cast<size_t>(n), sent)) return err;
                if (sent < static_cast<size_t>(n)) {
                    park(scratch + sent, static_cast<size_t>(n) - sent, pool);
                    return 0;
                }
                if (static_cast<size_t>(n) < buffer_size) return 0;  // drained the socket
                continue;
            }
            if (n == 0) {
                eof_ = true;
                pass_on_eof(destination);
                return 0;
            }
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return errno;
        }
        return 0;
    }

    // Bytes of our own that must go first (a PROXY header), ahead of anything
    // relayed. Not counted as relayed bytes (a part that has to be parked,
    // which a fresh socket's empty send buffer makes all but impossible, is).
    int send_first(int destination, const std::string& data, BufferPool& pool) {
        size_t sent = 0;
        const uint64_t relayed = bytes_;
        int err = send_all(destination, data.data(), data.size(), sent);
        bytes_ = relayed;
        if (err) return err;
        if (sent < data.size()) park(data.data() + sent, data.size() - sent, pool);
        return 0;
    }

    // Destination writable: flush the parked bytes, then pass on a pending EOF.
    int flush(int destination, BufferPool& pool) {
        size_t sent = 0;
        if (int err = send_all(destination, parked_.data.get() + parked_.start, parked_.end - parked_.start, sent))
            return err;
        parked_.start += static_cast<uint32_t>(sent);
        if (!parked_.empty()) return 0;
        pool.give(std::move(parked_.data));
        parked_ = Parked();
        if (eof_) pass_on_eof(destination);
        return 0;
    }

    void release(BufferPool& pool) {
        if (parked_.data) pool.give(std::move(parked_.data));
        parked_ = Parked();
    }

private:
    int send_all(int destination, const char* data, size_t size, size_t& sent) {
        while (sent < size) {
            ssize_t n = ::send(destination, data + sent, size - sent, send_flags);
            if (n > 0) {
                sent += static_cast<size_t>(n);
                bytes_ += static_cast<uint64_t>(n);
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
            return n < 0 ? errno : EPIPE;
        }
        return 0;
    }

    void park(const char* data, size_t size, BufferPool& pool) {
        if (!parked_.data) parked_.data = pool.take();
        memcpy(parked_.data.get(), data, size);
        parked_.start = 0;
        parked_.end = static_cast<uint32_t>(size);
    }

    void pass_on_eof(int destination) {
        if (!parked_.empty() || shut_) return;
        // A peer that already reset shows up as an error on its own socket;
        // nothing to report here.
        ::shutdown(destination, SHUT_WR);
        shut_ = true;
    }

    Parked parked_;
    bool eof_ = false;
    bool shut_ = false;
    uint64_t bytes_ = 0;
};

}  // namespace relay
