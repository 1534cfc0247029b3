// The echo server of echo.cpp over TLS, for the TLS bench: uWS::SSLApp
// on OpenSSL, one thread, no compression.
//
//   uws_tls_echo PORT CERT KEY
//
// uSockets' defaults otherwise (TLS 1.2 and up, read-ahead, no
// SSL_MODE_RELEASE_BUFFERS), with one change through the native handle:
// no session tickets and no session cache, as the other servers of the
// bench, so that each handshake is a full one and costs only that.
#include <openssl/ssl.h>

#include "common.h"

struct PerSocket {};

int main(int argc, char **argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: uws_tls_echo PORT CERT KEY\n");
        return 2;
    }
    int port = bench::port_from(argc, argv);
    uWS::SSLApp app({.key_file_name = argv[3], .cert_file_name = argv[2]});
    if (app.constructorFailed()) {
        std::fprintf(stderr, "uws_tls_echo: cannot load %s and %s\n", argv[2], argv[3]);
        return 1;
    }
    SSL_CTX *ctx = static_cast<SSL_CTX *>(app.getNativeHandle());
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    app.ws<PerSocket>("/*", {
           .compression = uWS::DISABLED,
           .maxPayloadLength = bench::MAX_PAYLOAD,
           .maxBackpressure = bench::MAX_BACKPRESSURE,
           .message = [](auto *ws, std::string_view message, uWS::OpCode op) {
               ws->send(message, op);
           },
       })
        .listen("127.0.0.1", port, [](us_listen_socket_t *listener) {
            if (!listener) {
                std::fprintf(stderr, "uws_tls_echo: cannot listen\n");
                std::exit(1);
            }
            int port = us_socket_local_port(1, reinterpret_cast<us_socket_t *>(listener));
            std::printf("uws_tls_echo: listening on wss://127.0.0.1:%d/\n", port);
            std::fflush(stdout);
        })
        .run();
    return 0;
}
