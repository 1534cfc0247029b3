//! A fan-out server on tokio-tungstenite, with the broadcast loop its
//! users write: one `tokio::sync::broadcast` channel for the topic; each
//! connection's task subscribes to it, then `select!`s between its socket
//! (a message in is sent to the channel) and the channel (a message out
//! is sent to the socket, encoded and flushed per subscriber). Every
//! message reaches every connection, its sender included, as in the
//! other fan-out servers. The runtime is the multi-threaded one with
//! `--threads` workers, as in `tokio_tungstenite_echo`.
//!
//! A subscriber that falls more than the channel's capacity behind loses
//! messages (`Lagged`); it is disconnected, and the load generator
//! reports that as a failure rather than a figure.

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use wsloop_bench::ServerArgs;

/// Messages the channel holds for its slowest subscriber.
const CAPACITY: usize = 1024;

fn main() -> std::io::Result<()> {
    let args = ServerArgs::parse("tokio_tungstenite_fanout");
    let runtime = wsloop_bench::tokio_runtime(&args)?;
    runtime.block_on(async {
        let listener = TcpListener::bind(&args.addr).await?;
        println!(
            "tokio_tungstenite_fanout: listening on ws://{}",
            listener.local_addr()?
        );
        let (topic, _) = broadcast::channel::<Bytes>(CAPACITY);
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    // Subscribed before the upgrade is answered, so that no
                    // message published after it can be missed.
                    Ok((stream, _)) => {
                        tokio::spawn(member(stream, topic.clone(), topic.subscribe()));
                    }
                    Err(e) => eprintln!("tokio_tungstenite_fanout: accept: {e}"),
                }
            }
        })
        .await
        .map_err(std::io::Error::other)
    })
}

async fn member(
    stream: TcpStream,
    topic: broadcast::Sender<Bytes>,
    mut rx: broadcast::Receiver<Bytes>,
) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    let _ = topic.send(data);
                }
                // Control frames are answered inside tungstenite.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_) | Message::Close(_)) | Err(_)) | None => return,
            },
            out = rx.recv() => match out {
                Ok(data) => {
                    if ws.send(Message::Binary(data)).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
        }
    }
}
