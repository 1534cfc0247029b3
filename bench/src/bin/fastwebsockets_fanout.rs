//! A fan-out server on fastwebsockets, with the broadcast loop its users
//! write: hyper serves the upgrade as in `fastwebsockets_echo`; one
//! `tokio::sync::broadcast` channel is the topic. Each connection is split
//! (fastwebsockets' reads are not cancel-safe, so one task cannot
//! `select!` over a read): its read half sends every message to the
//! channel, and a second task writes every message from the channel to
//! its write half, one frame per write. Every message reaches every
//! connection, its sender included. The runtime is the multi-threaded one
//! with `--threads` workers.
//!
//! A subscriber that falls more than the channel's capacity behind loses
//! messages (`Lagged`); it is disconnected, and the load generator reports
//! that as a failure rather than a figure.

use fastwebsockets::{upgrade, Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use wsloop_bench::ServerArgs;

/// Messages the channel holds for its slowest subscriber.
const CAPACITY: usize = 1024;

fn main() -> std::io::Result<()> {
    let args = ServerArgs::parse("fastwebsockets_fanout");
    let runtime = wsloop_bench::tokio_runtime(&args)?;
    runtime.block_on(async {
        let listener = TcpListener::bind(&args.addr).await?;
        println!(
            "fastwebsockets_fanout: listening on ws://{}",
            listener.local_addr()?
        );
        let (topic, _) = broadcast::channel::<Bytes>(CAPACITY);
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        eprintln!("fastwebsockets_fanout: accept: {e}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let topic = topic.clone();
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let service = service_fn(move |req| upgrade_request(req, topic.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(io, service)
                        .with_upgrades()
                        .await;
                });
            }
        })
        .await
        .map_err(std::io::Error::other)
    })
}

async fn upgrade_request(
    mut req: Request<Incoming>,
    topic: broadcast::Sender<Bytes>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    // Subscribed before the upgrade is answered, so that no message
    // published after it can be missed.
    let rx = topic.subscribe();
    tokio::spawn(async move {
        let _ = member(fut, topic, rx).await;
    });
    Ok(response)
}

async fn member(
    fut: upgrade::UpgradeFut,
    topic: broadcast::Sender<Bytes>,
    mut rx: broadcast::Receiver<Bytes>,
) -> Result<(), WebSocketError> {
    let ws = fut.await?;
    let (mut read, mut write) = ws.split(tokio::io::split);
    let writer = tokio::spawn(async move {
        while let Ok(data) = rx.recv().await {
            let frame = Frame::binary(Payload::Borrowed(&data));
            if write.write_frame(frame).await.is_err() {
                return;
            }
        }
    });
    // Pongs and close replies the read half owes are not sent: the
    // load generator sends neither pings nor closes.
    let mut ignore = |_: Frame<'_>| async { Ok::<_, WebSocketError>(()) };
    let result = loop {
        match read.read_frame(&mut ignore).await {
            Ok(frame) => match frame.opcode {
                OpCode::Binary => {
                    let _ = topic.send(Bytes::copy_from_slice(&frame.payload));
                }
                OpCode::Close => break Ok(()),
                _ => {}
            },
            Err(e) => break Err(e),
        }
    };
    writer.abort();
    result
}
