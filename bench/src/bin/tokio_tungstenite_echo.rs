//! An echo server on tokio-tungstenite, set up as its `echo-server` example
//! does: `accept_async`, then the read half forwarded into the write half,
//! which flushes only when no more input is ready. The runtime is the
//! multi-threaded one with `--threads` workers.
//!
//! `--tuned`, the fastest set-up we found: no split (the halves share a
//! lock), each message fed to the sink as it is read, everything already
//! read fed after it, then one flush; with one thread, the current-thread
//! runtime.
//!
//! `--tls-cert FILE --tls-key FILE`: wss://, with tokio-rustls between the
//! socket and tungstenite, as tokio-rustls's server example accepts.

use futures_util::{future, FutureExt, SinkExt, StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use wsloop_bench::ServerArgs;

fn main() -> std::io::Result<()> {
    let args = ServerArgs::parse_with_tls("tokio_tungstenite_echo");
    let runtime = wsloop_bench::tokio_runtime(&args)?;
    let tuned = args.tuned;
    let tls = args.tls_acceptor()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(&args.addr).await?;
        println!(
            "tokio_tungstenite_echo: listening on {}://{}",
            if tls.is_some() { "wss" } else { "ws" },
            listener.local_addr()?
        );
        // The accept loop runs as a task, on the workers like everything else.
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, tls.clone(), tuned));
                    }
                    Err(e) => eprintln!("tokio_tungstenite_echo: accept: {e}"),
                }
            }
        })
        .await
        .map_err(std::io::Error::other)
    })
}

/// One connection: the TLS handshake first if there is TLS, then the echo.
async fn serve(stream: TcpStream, tls: Option<TlsAcceptor>, tuned: bool) {
    let _ = stream.set_nodelay(true);
    match tls {
        Some(tls) => {
            let Ok(stream) = tls.accept(stream).await else {
                return;
            };
            if tuned {
                echo_tuned(stream).await
            } else {
                echo(stream).await
            }
        }
        None if tuned => echo_tuned(stream).await,
        None => echo(stream).await,
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (write, read) = ws.split();
    // Control frames are answered inside tungstenite; only data is echoed.
    let _ = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await;
}

/// Echoes without splitting, one flush for all the replies to what one
/// read brought in.
async fn echo_tuned<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let is_data = |msg: &tokio_tungstenite::tungstenite::Message| msg.is_text() || msg.is_binary();
    while let Some(Ok(msg)) = ws.next().await {
        if is_data(&msg) && ws.feed(msg).await.is_err() {
            return;
        }
        // Whatever is ready now rides on the same flush.
        while let Some(next) = ws.next().now_or_never() {
            match next {
                Some(Ok(msg)) if is_data(&msg) => {
                    if ws.feed(msg).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}
