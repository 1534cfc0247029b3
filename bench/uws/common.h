// What both uWebSockets bench servers share: the port from argv, the
// behaviour's limits, and the address line the runner waits for.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "App.h"

namespace bench {

// argv[1] is the port; 0 (or none) lets the kernel pick one.
inline int port_from(int argc, char **argv) {
    return argc > 1 ? std::atoi(argv[1]) : 0;
}

// The limits wsloop's defaults allow, so that no uWS default decides a
// scenario: 16 KiB messages are echoed (uWS's own maxPayloadLength is
// 16 KiB), and a subscriber that falls behind in fan-out is never
// dropped (uWS drops sends past maxBackpressure, 64 KiB by default).
constexpr unsigned int MAX_PAYLOAD = 16 * 1024 * 1024;
constexpr unsigned int MAX_BACKPRESSURE = 16 * 1024 * 1024;

// Prints `NAME: listening on ws://127.0.0.1:PORT/`, the line the runner
// reads the address from, or exits if the port could not be bound.
inline void announce(const char *name, us_listen_socket_t *listener) {
    if (!listener) {
        std::fprintf(stderr, "%s: cannot listen\n", name);
        std::exit(1);
    }
    int port = us_socket_local_port(0, reinterpret_cast<us_socket_t *>(listener));
    std::printf("%s: listening on ws://127.0.0.1:%d/\n", name, port);
    std::fflush(stdout);
}

}  // namespace bench
