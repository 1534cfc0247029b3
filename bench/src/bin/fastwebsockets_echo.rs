//! An echo server on fastwebsockets, set up as its `echo_server` example
//! does: hyper serves the HTTP/1.1 upgrade, each socket then runs in an
//! `unconstrained` task behind a `FragmentCollector`, with automatic pong
//! and close replies. The runtime is the multi-threaded one with
//! `--threads` workers (the example uses a current-thread runtime, which
//! cannot use more than one core).

use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use wsloop_bench::ServerArgs;

fn main() -> std::io::Result<()> {
    let args = ServerArgs::parse("fastwebsockets_echo");
    let runtime = wsloop_bench::tokio_runtime(args.threads)?;
    runtime.block_on(async {
        let listener = TcpListener::bind(&args.addr).await?;
        println!(
            "fastwebsockets_echo: listening on ws://{}",
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
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = http1::Builder::new()
                        .serve_connection(io, service_fn(upgrade_request))
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
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        let _ = tokio::task::unconstrained(echo(fut)).await;
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
