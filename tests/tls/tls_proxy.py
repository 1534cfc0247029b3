"""A TLS-originating proxy: plain TCP in, TLS out, for test runners that
cannot speak TLS themselves (kosoku, the Autobahn runner here, refuses
wss:// URLs).

    python tests/tls/tls_proxy.py HOST:PORT CA_FILE

Listens on 127.0.0.1 at a free port and prints
"tls_proxy: listening on 127.0.0.1:PORT/"; each connection made to it opens
a TLS connection to HOST:PORT as "localhost", trusting CA_FILE alone, and
bytes are copied both ways unchanged. When either side ends, the other is
ended too: a TLS connection cannot be half closed, so the client's FIN
becomes close_notify and the end of the TLS connection.
"""

import asyncio
import ssl
import sys


async def pump(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    context = ssl.create_default_context(cafile=sys.argv[2])

    async def serve(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(
                host, int(port), ssl=context, server_hostname="localhost"
            )
        except (OSError, ssl.SSLError) as e:
            print(f"tls_proxy: cannot reach the server: {e}", file=sys.stderr)
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, server_writer), pump(server_reader, client_writer)
        )

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    addr = listener.sockets[0].getsockname()
    print(f"tls_proxy: listening on {addr[0]}:{addr[1]}/", flush=True)
    async with listener:
        await listener.serve_forever()


asyncio.run(main())
