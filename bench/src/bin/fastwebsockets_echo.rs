//! An echo server on fastwebsockets, set up as its `echo_server` example
//! does: hyper serves the HTTP/1.1 upgrade, each socket then runs in an
//! `unconstrained` task behind a `FragmentCollector`, with automatic pong
//! and close replies. The runtime is the multi-threaded one with
//! `--threads` workers (the example uses a current-thread runtime, which
//! cannot use more than one core).
//!
//! `--tuned`, the fastest set-up we found: the upgraded stream behind a
//! `BufWriter`, frames echoed as they come (no `FragmentCollector`: a
//! fragment goes back as a fragment), every frame already read written
//! before one flush; with one thread, the current-thread runtime.
//!
//! `--tls-cert FILE --tls-key FILE`: wss://, with tokio-rustls between the
//! socket and hyper.

use fastwebsockets::{upgrade, FragmentCollector, Frame, OpCode, Role, WebSocket, WebSocketError};
use futures_util::FutureExt;
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, BufWriter};
use tokio::net::TcpListener;
use wsloop_bench::ServerArgs;

fn main() -> std::io::Result<()> {
    let args = ServerArgs::parse_with_tls("fastwebsockets_echo");
    let runtime = wsloop_bench::tokio_runtime(&args)?;
    let tuned = args.tuned;
    let tls = args.tls_acceptor()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(&args.addr).await?;
        println!(
            "fastwebsockets_echo: listening on {}://{}",
            if tls.is_some() { "wss" } else { "ws" },
            listener.local_addr()?
        );
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        eprintln!("fastwebsockets_echo: accept: {e}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                serve_http(stream, tuned).await;
                            }
                        }
                        None => serve_http(stream, tuned).await,
                    }
                });
            }
        })
        .await
        .map_err(std::io::Error::other)
    })
}

/// HTTP/1.1 on one connection, until its upgrade.
async fn serve_http<S>(stream: S, tuned: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let _ = http1::Builder::new()
        .serve_connection(io, service_fn(move |req| upgrade_request(req, tuned)))
        .with_upgrades()
        .await;
}

async fn upgrade_request(
    mut req: Request<Incoming>,
    tuned: bool,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        if tuned {
            let _ = tokio::task::unconstrained(echo_tuned(fut)).await;
        } else {
            let _ = tokio::task::unconstrained(echo(fut)).await;
        }
    });
    Ok(response)
}

async fn echo(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

/// Echoes frame by frame into a buffered writer, flushing once for all
/// the frames one read brought in.
async fn echo_tuned(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let io = fut.await?.into_inner();
    let mut ws = WebSocket::after_handshake(BufWriter::new(io), Role::Server);
    loop {
        let frame = ws.read_frame().await?;
        let mut done = echo_frame(&mut ws, frame).await?;
        // Whatever is ready now rides on the same flush.
        while !done {
            match ws.read_frame().now_or_never() {
                Some(frame) => done = echo_frame(&mut ws, frame?).await?,
                None => break,
            }
        }
        ws.flush().await?;
        if done {
            return Ok(());
        }
    }
}

/// Writes a data frame back; true at a close (answered by the library).
async fn echo_frame<S>(ws: &mut WebSocket<S>, frame: Frame<'_>) -> Result<bool, WebSocketError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match frame.opcode {
        OpCode::Close => Ok(true),
        OpCode::Text | OpCode::Binary | OpCode::Continuation => {
            // The client's mask key stays on a frame read; ours go unmasked.
            let reply = Frame::new(frame.fin, frame.opcode, None, frame.payload);
            ws.write_frame(reply).await?;
            Ok(false)
        }
        _ => Ok(false),
    }
}
