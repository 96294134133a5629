// relay.hpp - moving bytes one way between two nonblocking sockets (read/write or splice), half-close, resets.
// Owns a Direction's buffers and pipes; not the sockets' lifetime or the wait set (worker.hpp).
//
// A Direction reads its source into the worker's scratch buffer and writes
// straight on; only what the destination cannot take right now is parked in
// a buffer of its own, and the source is not read again until that buffer
// has drained. So an idle or fast connection owns no buffer at all, and a
// slow one owns at most one buffer_size per direction.
//
// On Linux the bytes need not pass through user space at all: splice()
// moves them from the source socket into a pipe and from the pipe into the
// destination. The pipe then plays the parked buffer's part (the source is not
// read while it holds bytes); it is taken from a small pool only while data
// flows, so an idle connection still owns nothing. `make NO_SPLICE=1` (and
// POSIX_ONLY) keep the portable read/write path, which CI tests as well.
//
// EOF from the source is passed on as shutdown(SHUT_WR) once everything
// before it is written: half-close is relayed, never turned into a close.
// An abort is relayed as an abort: a reset (or any socket error) on the
// source ends the direction with that error once the bytes read before it
// are out, and the worker then closes with RST. A FIN in its place would
// tell the other side that a truncated stream was complete. Every error
// says whose socket it came from (fault_at_source()).
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.hpp"

#if defined(__linux__) && !defined(MIXCTL_POSIX_ONLY) && !defined(MIXCTL_NO_SPLICE)
#define MIXCTL_SPLICE 1
#endif

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

// A pipe for splice(): both ends nonblocking. Kept in a pool by the worker
// and lent to a direction while bytes sit in it.
struct Pipe {
    net::Fd read_end, write_end;
    bool valid() const { return read_end.valid(); }
};

class PipePool {
public:
    // An empty Pipe when none can be made (EMFILE...): the caller falls back
    // to read/write for that turn.
    Pipe take() {
        if (!free_.empty()) {
            Pipe p = std::move(free_.back());
            free_.pop_back();
            return p;
        }
        Pipe p;
#ifdef MIXCTL_SPLICE
        int ends[2];
        if (::pipe2(ends, O_NONBLOCK | O_CLOEXEC) == 0) {
            p.read_end.reset(ends[0]);
            p.write_end.reset(ends[1]);
        }
#endif
        return p;
    }
    // Only empty pipes come back: a pipe with bytes in it belongs to its stream.
    void give(Pipe pipe) {
        if (free_.size() < keep_at_most) free_.push_back(std::move(pipe));
    }
    // An idle worker keeps no pipes: its descriptor count goes back to
    // where it started.
    void clear() { free_.clear(); }

private:
    static constexpr size_t keep_at_most = 16;
    std::vector<Pipe> free_;
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
    bool has_parked() const { return !parked_.empty() || in_pipe_ > 0; }
    bool wants_read() const { return !eof_ && !has_parked(); }
    uint64_t bytes() const { return bytes_; }
    // Whose socket the last error returned came from: the source's (true)
    // or the destination's.
    bool fault_at_source() const { return fault_at_source_; }

    // The other direction has finished, so the connection is closed as soon
    // as this one passes on its EOF: close() sends that FIN, and a
    // shutdown() just before it would be a system call for nothing.
    void other_way_finished() { close_follows_eof_ = true; }

    // Source readable: move what we can. Returns 0, or the errno that should
    // abort the connection. source_shut: poll() saw the source's FIN
    // (POLLRDHUP), so a read that leaves the socket empty also reached EOF
    // and no extra read() is needed to learn it. source_error: the same
    // wait reported POLLERR on the source (see end_of_source()).
    int pump(int source, int destination, char* scratch, BufferPool& pool, PipePool& pipes, bool source_shut,
             bool source_error) {
        error_reported_ = source_error;
#ifdef MIXCTL_SPLICE
        // Small exchanges are cheaper with read/write; a direction switches to
        // splice once one read fills the whole buffer (a bulk transfer).
        if (bulk_ && parked_.empty()) {
            if (!pipe_.valid()) pipe_ = pipes.take();
            if (pipe_.valid()) return splice_through(source, destination, pipes);
        }
#else
        (void)pipes;
#endif
        // Bounded so one fast connection cannot starve the others in a turn.
        for (int round = 0; round < 4; ++round) {
            ssize_t n = ::read(source, scratch, buffer_size);
            if (n > 0) {
                size_t sent = 0;
                if (int err = send_all(destination, scratch, static_cast<size_t>(n), sent))
                    return at_destination(err);
                if (sent < static_cast<size_t>(n)) park(scratch + sent, static_cast<size_t>(n) - sent, pool);
                if (static_cast<size_t>(n) < buffer_size) {  // drained the socket
                    return source_shut ? end_of_source(source, destination) : 0;
                }
                if (sent < static_cast<size_t>(n)) return 0;
                bulk_ = true;
                continue;
            }
            if (n == 0) return end_of_source(source, destination);
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return at_source(errno);
        }
        return 0;
    }

    // The source's socket failed (POLLERR) after its last bytes were read:
    // those still parked go out first, then the abort.
    int source_failed(int err, int destination) {
        if (err == 0) return 0;
        eof_ = true;
        source_error_ = err;
        if (shut_) return at_source(err);  // its EOF went out already: the abort follows it
        return pass_on_eof(destination);
    }

    // Bytes that must go first, ahead of anything relayed: a PROXY header of
    // our own (not counted as relayed bytes), then the last `client_part`
    // bytes, read from the client before dialing (counted). At most
    // buffer_size bytes: what does not fit the socket is parked.
    int send_first(int destination, const std::string& data, BufferPool& pool, size_t client_part = 0) {
        size_t sent = 0;
        const uint64_t relayed = bytes_;
        int err = send_all(destination, data.data(), data.size(), sent);
        const size_t unsent = data.size() - sent;  // parked: counted when flush() sends it
        bytes_ = relayed + client_part - std::min(client_part, unsent);
        if (err) return at_destination(err);
        if (sent < data.size()) park(data.data() + sent, data.size() - sent, pool);
        return 0;
    }

    // Destination writable: flush the parked bytes, then pass on a pending EOF.
    int flush(int destination, BufferPool& pool, PipePool& pipes) {
#ifdef MIXCTL_SPLICE
        if (in_pipe_ > 0) {
            if (int err = drain_pipe(destination)) return at_destination(err);
            if (in_pipe_ == 0) {
                pipes.give(std::move(pipe_));
                if (eof_) return pass_on_eof(destination);
            }
            return 0;
        }
#else
        (void)pipes;
#endif
        size_t sent = 0;
        if (int err = send_all(destination, parked_.data.get() + parked_.start, parked_.end - parked_.start, sent))
            return at_destination(err);
        parked_.start += static_cast<uint32_t>(sent);
        if (!parked_.empty()) return 0;
        pool.give(std::move(parked_.data));
        parked_ = Parked();
        return eof_ ? pass_on_eof(destination) : 0;
    }

    // The connection is over. A pipe still holding bytes is closed, not
    // pooled: its bytes belong to this stream alone.
    void release(BufferPool& pool, PipePool& pipes) {
        if (parked_.data) pool.give(std::move(parked_.data));
        parked_ = Parked();
        if (pipe_.valid() && in_pipe_ == 0) pipes.give(std::move(pipe_));
        pipe_ = Pipe();
        in_pipe_ = 0;
    }

private:
#ifdef MIXCTL_SPLICE
    static constexpr size_t splice_chunk = 64 * 1024;  // a default pipe's capacity

    int splice_through(int source, int destination, PipePool& pipes) {
        for (int round = 0; round < 4; ++round) {
            ssize_t n = ::splice(source, nullptr, pipe_.write_end.get(), nullptr, splice_chunk,
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n == 0) {
                pipes.give(std::move(pipe_));  // empty: nothing was left in it
                return end_of_source(source, destination);
            }
            if (n < 0) {
                if (errno == EINTR) continue;
                int err = errno;
                pipes.give(std::move(pipe_));
                return (err == EAGAIN || err == EWOULDBLOCK) ? 0 : at_source(err);
            }
            in_pipe_ = static_cast<size_t>(n);
            if (int err = drain_pipe(destination)) return at_destination(err);
            if (in_pipe_ > 0) return 0;  // the destination is full: the pipe holds the rest
            if (static_cast<size_t>(n) < splice_chunk) break;  // the source is drained for now
        }
        pipes.give(std::move(pipe_));
        return 0;
    }

    int drain_pipe(int destination) {
        while (in_pipe_ > 0) {
            ssize_t n = ::splice(pipe_.read_end.get(), nullptr, destination, nullptr, in_pipe_,
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                in_pipe_ -= static_cast<size_t>(n);
                bytes_ += static_cast<uint64_t>(n);
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
            return n < 0 ? errno : EPIPE;
        }
        return 0;
    }
#endif

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

    int at_source(int err) {
        fault_at_source_ = true;
        return err;
    }
    int at_destination(int err) {
        fault_at_source_ = false;
        return err;
    }

    // The read said EOF, or POLLRDHUP let us skip the read that would have.
    // Linux raises POLLRDHUP for a reset as well as for a FIN, and a read
    // returns the bytes that came before a reset first: only the socket's
    // error tells an abort from a finished stream. The kernel sets that
    // error before it marks the socket shut, so a wait that saw the shut
    // without POLLERR saw a FIN, and asking (getsockopt, a system call per
    // EOF) would only say 0. A reset that comes after that wait still
    // arrives as POLLERR and aborts (source_failed()).
    int end_of_source(int source, int destination) {
        eof_ = true;
        source_error_ = error_reported_ ? net::pending_error(source) : 0;
        return pass_on_eof(destination);
    }

    // Once everything before it is out: a finished source becomes our FIN
    // (or the close that follows), a failed one the error that aborts.
    int pass_on_eof(int destination) {
        if (has_parked() || shut_) return 0;
        if (source_error_) return at_source(source_error_);
        if (!close_follows_eof_) ::shutdown(destination, SHUT_WR);
        shut_ = true;
        return 0;
    }

    Parked parked_;
    Pipe pipe_;
    size_t in_pipe_ = 0;  // bytes spliced in from the source, not yet out
    bool bulk_ = false;   // has filled a whole buffer: splice from now on
    bool eof_ = false;
    bool shut_ = false;
    bool close_follows_eof_ = false;
    bool fault_at_source_ = false;
    bool error_reported_ = true;  // this turn's wait said POLLERR on the source (unknown: true)
    int source_error_ = 0;  // the source ended with an error, not a FIN: passed on as an abort
    uint64_t bytes_ = 0;
};

}  // namespace relay
