// A fan-out server on uWebSockets for the bench: every connection
// subscribes to one topic when it opens, and every message any connection
// sends is published to that topic with App::publish, so that it reaches
// every subscriber, its sender included. One thread, no TLS, no
// compression.
//
//   uws_pubsub [PORT]
#include "common.h"

struct PerSocket {};

static const std::string_view TOPIC = "bench";

int main(int argc, char **argv) {
    int port = bench::port_from(argc, argv);
    uWS::App app;
    app.ws<PerSocket>("/*", {
        .compression = uWS::DISABLED,
        .maxPayloadLength = bench::MAX_PAYLOAD,
        .maxBackpressure = bench::MAX_BACKPRESSURE,
        .open = [](auto *ws) { ws->subscribe(TOPIC); },
        .message = [&app](auto *, std::string_view message, uWS::OpCode op) {
            app.publish(TOPIC, message, op);
        },
    });
    app.listen("127.0.0.1", port, [](us_listen_socket_t *listener) {
        bench::announce("uws_pubsub", listener);
    });
    app.run();
    return 0;
}
