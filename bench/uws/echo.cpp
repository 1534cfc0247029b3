// An echo server on uWebSockets for the side-by-side bench: one thread,
// one event loop, no TLS, no compression. Every message goes back to its
// sender as it came, text or binary.
//
//   uws_echo [PORT]
#include "common.h"

struct PerSocket {};

int main(int argc, char **argv) {
    int port = bench::port_from(argc, argv);
    uWS::App()
        .ws<PerSocket>("/*", {
            .compression = uWS::DISABLED,
            .maxPayloadLength = bench::MAX_PAYLOAD,
            .maxBackpressure = bench::MAX_BACKPRESSURE,
            .message = [](auto *ws, std::string_view message, uWS::OpCode op) {
                ws->send(message, op);
            },
        })
        .listen("127.0.0.1", port, [](us_listen_socket_t *listener) {
            bench::announce("uws_echo", listener);
        })
        .run();
    return 0;
}
