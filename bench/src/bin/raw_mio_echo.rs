//! The ceiling: a TCP echo server on mio with no WebSocket framing at all.
//!
//! Same shape as wsloop: `--threads` event loops, each with its own
//! SO_REUSEPORT listener, its own slab of connections and one read buffer.
//! Bytes go back as they came; what the socket does not take waits in a
//! per-connection queue, and reading pauses until it drains.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use wsloop_bench::ServerArgs;

const LISTENER: Token = Token(usize::MAX);

fn main() -> io::Result<()> {
    let args = ServerArgs::parse("raw_mio_echo");
    let addr: SocketAddr = args
        .addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // The first listener fixes the port (port 0 picks one); the others
    // share it through SO_REUSEPORT.
    let first = listen(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..args.threads {
        listeners.push(listen(addr)?);
    }
    println!("raw_mio_echo: listening on tcp://{addr}");
    let workers: Vec<_> = listeners
        .into_iter()
        .map(|listener| std::thread::spawn(move || serve(listener)))
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| io::Error::other("a worker panicked"))??;
    }
    Ok(())
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(TcpListener::from_std(socket.into()))
}

struct Connection {
    stream: TcpStream,
    /// Bytes read but not yet written back.
    pending: Vec<u8>,
}

fn serve(mut listener: TcpListener) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns = slab::Slab::<Connection>::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept(&poll, &mut listener, &mut conns)?;
                continue;
            }
            let key = event.token().0;
            // A spurious event for a closed connection is ignored.
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if !ready(conn, &mut buf) {
                let mut conn = conns.remove(key);
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
}

fn accept(
    poll: &Poll,
    listener: &mut TcpListener,
    conns: &mut slab::Slab<Connection>,
) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let entry = conns.vacant_entry();
                poll.registry().register(
                    &mut stream,
                    Token(entry.key()),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                entry.insert(Connection {
                    stream,
                    pending: Vec::new(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Out of descriptors, or a connection reset in the queue: try
            // again on the next readiness.
            Err(e) => {
                eprintln!("raw_mio_echo: accept: {e}");
                return Ok(());
            }
        }
    }
}

/// Echoes what can be echoed. Returns false once the connection is over.
fn ready(conn: &mut Connection, buf: &mut [u8]) -> bool {
    // The queue first; nothing new is read while it is not empty.
    if !conn.pending.is_empty() {
        match write_some(&mut conn.stream, &conn.pending) {
            Some(n) => {
                conn.pending.drain(..n);
            }
            None => return false,
        }
        if !conn.pending.is_empty() {
            return true;
        }
    }
    loop {
        match conn.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => match write_some(&mut conn.stream, &buf[..n]) {
                Some(w) if w == n => {}
                Some(w) => {
                    conn.pending.extend_from_slice(&buf[w..n]);
                    return true;
                }
                None => return false,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Writes as much of `bytes` as the socket takes; `None` on a dead socket.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> Option<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match stream.write(&bytes[done..]) {
            Ok(0) => return None,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(done)
}
