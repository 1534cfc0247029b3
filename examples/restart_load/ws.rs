//! A member on a WebSocket: it reconnects as the chat's page does, and
//! resumes after its last id.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Error, HandshakeError, Message, WebSocket};

use crate::record::{pause, Log, Outcome, Phase, Rng, Shared};

/// A WebSocket not open by then counts as failed (the page's
/// `OPEN_TIMEOUT_MS`).
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a read waits before the member looks at the clock to say a
/// line.
const TICK: Duration = Duration::from_millis(50);
/// The longest wait before reconnecting (the page's cap).
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Member `i`, until the load finishes: its log.
pub fn member(shared: &Shared, i: usize) -> Log {
    let mut log = Log::new(shared, i, true);
    let mut rng = Rng::new(i);
    // Lines start once every member is in, at a random point of the
    // first period, so that members speak spread over it.
    let mut next_line = None;
    let mut backoff = shared.opts.backoff;
    while !shared.finished.load(Ordering::Acquire) {
        let tried = shared.now();
        match open(shared, &log) {
            Ok(ws) => {
                log.connected(shared, tried);
                backoff = shared.opts.backoff;
                match converse(shared, &mut log, ws, &mut next_line, &mut rng) {
                    Some(why) => log.lost(shared, why),
                    None => break,
                }
            }
            Err(outcome) => log.failed(shared, "upgrade", outcome),
        }
        // The page waits between half and one and a half times the
        // backoff, so that members closed together come back spread out.
        pause(shared, backoff.mul_f64(0.5 + rng.unit()));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    log
}

/// Connects and upgrades, resuming after the member's last id if it has
/// one.
fn open(shared: &Shared, log: &Log) -> Result<WebSocket<TcpStream>, Outcome> {
    let stream =
        TcpStream::connect_timeout(&shared.addr, OPEN_TIMEOUT).map_err(|e| Outcome::of_io(&e))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(OPEN_TIMEOUT))
        .map_err(|e| Outcome::of_io(&e))?;
    let mut url = format!(
        "ws://{}/ws?room={}&name={}",
        shared.addr, shared.opts.room, log.name
    );
    if let Some(last) = log.last {
        url.push_str(&format!("&after={last}"));
    }
    match tungstenite::client(url.as_str(), stream) {
        Ok((ws, _)) => Ok(ws),
        Err(HandshakeError::Interrupted(_)) => Err(Outcome::Timeout),
        Err(HandshakeError::Failure(e)) => Err(match e {
            Error::Http(response) => Outcome::Status(response.status().as_u16()),
            Error::Io(e) => Outcome::of_io(&e),
            Error::Protocol(tungstenite::error::ProtocolError::HandshakeIncomplete) => {
                Outcome::Reset
            }
            other => Outcome::Other(other.to_string()),
        }),
    }
}

/// Reads everything and says a line when one is due, until the connection
/// is lost (why) or the load finishes (`None`).
fn converse(
    shared: &Shared,
    log: &mut Log,
    mut ws: WebSocket<TcpStream>,
    next_line: &mut Option<Instant>,
    rng: &mut Rng,
) -> Option<String> {
    let _ = ws.get_ref().set_read_timeout(Some(TICK));
    let every = shared.opts.every;
    let mut said_end = false;
    loop {
        if shared.finished.load(Ordering::Acquire) {
            leave(&mut ws);
            return None;
        }
        // A line when one is due; a line due while the member was away is
        // said at once, and the next ones keep their steady pace.
        let now = Instant::now();
        let due = match (shared.phase(), *next_line) {
            (Phase::Joining, _) => None,
            (Phase::Ending, _) if !said_end && !log.heard_own_end() => {
                said_end = true;
                Some((None, "end".to_owned()))
            }
            (Phase::Ending, _) => None,
            (_, None) => {
                *next_line = Some(now + every.mul_f64(rng.unit()));
                None
            }
            (_, Some(at)) if now >= at => {
                let mut next = at;
                while next <= now {
                    next += every;
                }
                *next_line = Some(next);
                let (seq, text) = log.next_line(shared);
                Some((Some(seq), text))
            }
            _ => None,
        };
        if let Some((seq, text)) = due {
            if let Err(e) = ws.send(Message::text(text)) {
                return Some(format!("dropped while saying a line: {e}"));
            }
            if let Some(seq) = seq {
                log.said[seq] = true;
            }
        }
        match ws.read() {
            Ok(Message::Text(text)) => match serde_json::from_str(&text) {
                Ok(msg) => log.receive(shared, &msg),
                Err(_) => log.fault(shared, format!("not JSON: {text}")),
            },
            Ok(Message::Close(frame)) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                finish_close(&mut ws);
                return Some(code.to_string());
            }
            Ok(_) => {}
            Err(Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some("dropped".to_owned()),
        }
    }
}

/// After the server's close frame: tungstenite answers it on the next
/// read or flush; read until the server ends the connection, briefly.
fn finish_close(ws: &mut WebSocket<TcpStream>) {
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        match ws.read() {
            Ok(_) => {}
            Err(Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// The load is over: a normal close.
fn leave(ws: &mut WebSocket<TcpStream>) {
    let _ = ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }));
    finish_close(ws);
}
