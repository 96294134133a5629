// udp_load.cpp - the UDP bench's two ends on loopback (bench/udp.py runs them).
//   udp_load echo PORT                         echo server on 127.0.0.1:PORT until killed
//   udp_load client PORT SIZE SOCKETS WINDOW SECONDS
//       SOCKETS client sockets (distinct sources) each keep WINDOW datagrams
//       of SIZE bytes in flight to 127.0.0.1:PORT for SECONDS; prints
//       "sent N received M lost L" (a datagram unanswered for 200 ms is
//       counted lost and replaced). With new_source=1 in the environment each
//       request goes out from a fresh socket (a new session every time).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

using Clock = std::chrono::steady_clock;

static sockaddr_in at(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    return a;
}

static int echo(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a = at(port);
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
        perror("bind");
        return 1;
    }
    std::vector<char> buf(65536);
    for (;;) {
        sockaddr_in from{};
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
        if (n >= 0) sendto(fd, buf.data(), static_cast<size_t>(n), 0, reinterpret_cast<sockaddr*>(&from), len);
    }
}

struct Client {
    int fd = -1;
    int in_flight = 0;
    Clock::time_point last{};
};

static int open_client(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    sockaddr_in a = at(port);
    connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    return fd;
}

static int client(int port, size_t size, int sockets, int window, double seconds) {
    const bool fresh = getenv("new_source") && atoi(getenv("new_source")) == 1;
    std::vector<Client> clients(static_cast<size_t>(sockets));
    std::vector<char> msg(size, 'q'), buf(65536);
    unsigned long long sent = 0, received = 0, lost = 0;
    auto send_one = [&](Client& c) {
        if (send(c.fd, msg.data(), msg.size(), 0) == static_cast<ssize_t>(msg.size())) {
            ++sent;
            ++c.in_flight;
        }
        c.last = Clock::now();
    };
    for (Client& c : clients) {
        c.fd = open_client(port);
        for (int i = 0; i < window; ++i) send_one(c);
    }
    std::vector<pollfd> fds(clients.size());
    const Clock::time_point end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                     std::chrono::duration<double>(seconds));
    while (Clock::now() < end) {
        for (size_t i = 0; i < clients.size(); ++i) fds[i] = pollfd{clients[i].fd, POLLIN, 0};
        poll(fds.data(), fds.size(), 50);
        Clock::time_point now = Clock::now();
        for (size_t i = 0; i < clients.size(); ++i) {
            Client& c = clients[i];
            if (fds[i].revents & POLLIN) {
                while (recv(c.fd, buf.data(), buf.size(), 0) >= 0) {
                    ++received;
                    --c.in_flight;
                    if (fresh) {
                        close(c.fd);
                        c.fd = open_client(port);
                        c.in_flight = 0;
                    }
                    send_one(c);
                    if (fresh) break;
                }
            } else if (now - c.last > std::chrono::milliseconds(200)) {
                lost += static_cast<unsigned long long>(c.in_flight);
                c.in_flight = 0;
                if (fresh) {
                    close(c.fd);
                    c.fd = open_client(port);
                }
                for (int k = 0; k < window; ++k) send_one(c);
            }
        }
    }
    printf("sent %llu received %llu lost %llu\n", sent, received, lost);
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 3 && strcmp(argv[1], "echo") == 0) return echo(atoi(argv[2]));
    if (argc == 7 && strcmp(argv[1], "client") == 0)
        return client(atoi(argv[2]), static_cast<size_t>(atol(argv[3])), atoi(argv[4]), atoi(argv[5]), atof(argv[6]));
    fprintf(stderr, "usage: udp_load echo PORT | udp_load client PORT SIZE SOCKETS WINDOW SECONDS\n");
    return 2;
}
