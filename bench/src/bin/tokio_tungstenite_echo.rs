//! An echo server on tokio-tungstenite, set up as its `echo-server` example
//! does: `accept_async`, then the read half forwarded into the write half,
//! which flushes only when no more input is ready. The runtime is the
//! multi-threaded one with `--threads` workers.

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use wsloop_bench::ServerArgs;

fn main() -> std::io::Result<()> {
    let args = ServerArgs::parse("tokio_tungstenite_echo");
    let runtime = wsloop_bench::tokio_runtime(args.threads)?;
    runtime.block_on(async {
        let listener = TcpListener::bind(&args.addr).await?;
        println!(
            "tokio_tungstenite_echo: listening on ws://{}",
            listener.local_addr()?
        );
        // The accept loop runs as a task, on the workers like everything else.
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(echo(stream));
                    }
                    Err(e) => eprintln!("tokio_tungstenite_echo: accept: {e}"),
                }
            }
        })
        .await
        .map_err(std::io::Error::other)
    })
}

async fn echo(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
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
