//! A live auction: state shared by every worker, private replies, and
//! per-item history. The step after `rooms` for state that is not the
//! connection's own.
//!
//! ```text
//! cargo run --release --example auction
//! ```
//!
//! - `ws://127.0.0.1:9004/ws?item=lamp&name=ann[&after=ID]` watches an
//!   item and bids on it: each text message is a whole number, a bid.
//!   A watcher first gets the item's latest accepted bid (or, with
//!   `after`, every bid since that id), then every bid accepted from then
//!   on, as JSON with its id: `{"id":"…","kind":"bid","name":"ann","amount":12}`.
//! - A bid that does not beat the top is refused to its bidder alone:
//!   `{"kind":"refused","amount":9,"top":12}`.
//! - `GET /items` answers every item's top bid, as JSON.
//! - Bidding closes `--close-after SECS` (default 300) after an item's
//!   first bid: its watchers hear `{"kind":"closed",…}` from a timer.
//!
//! Why a lock here, when `rooms` needs none: each worker thread has its
//! own handler, so what a handler holds is per worker. That is enough for
//! state that belongs to one connection (it rides in `Handler::Data`) or
//! that wsloop keeps (topics, history). An item's top bid belongs to
//! every worker: two bids on two workers must be compared with the same
//! top. So the top bids sit behind one `Mutex`, shared by the factory
//! with every worker's handler, and a bid is checked, recorded and
//! published while the lock is held: released before publishing, a bid of
//! 12 could be published after a bid of 15 that came later, and watchers
//! would see the top go down.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wsloop::{
    Config, Conn, Handler, HistoryConfig, Message, MessageId, PublishStatus, Publisher, Reply,
    Request, Response, Upgrade,
};

mod common;

/// Items and names are topics and JSON strings: short, and of these bytes.
fn is_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Every item's top bid and whether bidding on it has closed: shared by
/// all workers.
#[derive(Debug, Default)]
struct Book {
    top: BTreeMap<String, (u64, String)>,
    /// When bidding on each item closes, from its first bid on.
    closes: BTreeMap<String, Instant>,
    closed: BTreeMap<String, bool>,
}

/// What each connection carries: its item and name, and its cursor.
#[derive(Debug, Default)]
struct Watcher {
    item: String,
    name: String,
    after: Option<MessageId>,
}

/// Bids are closed with this timer token.
const CLOSE: u64 = 1;

struct Auction {
    book: Arc<Mutex<Book>>,
    close_after: Duration,
}

impl Auction {
    /// Checks a bid against the top, and records and publishes it if it
    /// beats it: all under the book's lock, so that bids are published in
    /// the order they were accepted.
    fn bid(&self, conn: &mut Conn<'_, Watcher>, amount: u64) {
        let (item, name) = (conn.data().item.clone(), conn.data().name.clone());
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let top = book.top.get(&item).map_or(0, |(amount, _)| *amount);
        if book.closed.get(&item) == Some(&true) || amount <= top {
            drop(book);
            let reply = format!(r#"{{"kind":"refused","amount":{amount},"top":{top}}}"#);
            let _ = conn.send_text(&reply);
            return;
        }
        let bid = format!(r#"{{"kind":"bid","name":"{name}","amount":{amount}}}"#);
        if conn.publish(&item, Message::Text(&bid)) == PublishStatus::Refused {
            drop(book);
            let _ = conn.send_text(r#"{"kind":"busy"}"#);
            return;
        }
        book.top.insert(item.clone(), (amount, name));
        // The first bid starts the clock. Every accepted bidder's
        // connection sets a timer for the close, so that it comes while
        // any of them is still here; the first to fire closes the item.
        let closes = *book
            .closes
            .entry(item)
            .or_insert_with(|| Instant::now() + self.close_after);
        drop(book);
        conn.set_timer(closes.saturating_duration_since(Instant::now()), CLOSE);
    }
}

impl Handler for Auction {
    type Data = Watcher;

    fn on_upgrade(&mut self, req: &Request<'_>, _: SocketAddr) -> Upgrade<Watcher> {
        let (Some(item), Some(name)) = (req.query("item"), req.query("name")) else {
            return Upgrade::reject(Response::status(400));
        };
        let after = match req.query("after").map(str::parse) {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(_)) => return Upgrade::reject(Response::status(400)),
        };
        if req.path_only() != "/ws" || !is_name(item) || !is_name(name) {
            return Upgrade::reject(Response::status(400));
        }
        Upgrade::accept(Watcher {
            item: item.to_owned(),
            name: name.to_owned(),
            after,
        })
    }

    fn on_open(&mut self, conn: &mut Conn<'_, Watcher>) {
        let (item, after) = (conn.data().item.clone(), conn.data().after);
        // A returning watcher gets every bid since its cursor; a new one
        // the top bid only. Either way, then every bid from there on.
        let (entries, latest) = match after {
            Some(after) => {
                let catchup = conn.history(&item, Some(after));
                if catchup.reset {
                    let _ = conn.send_text(r#"{"kind":"reset"}"#);
                }
                (catchup.entries, catchup.latest)
            }
            None => {
                let last = conn.last(&item, 1);
                let latest = last.last().map(|e| e.id());
                (last, latest)
            }
        };
        for entry in &entries {
            let _ = conn.send_entry(entry);
        }
        conn.subscribe_after(&item, latest);
    }

    fn on_message(&mut self, conn: &mut Conn<'_, Watcher>, msg: Message<'_>) {
        match msg {
            Message::Text(text) => match text.trim().parse() {
                Ok(amount) => self.bid(conn, amount),
                Err(_) => {
                    let _ = conn.send_text(r#"{"kind":"error","error":"a bid is a whole number"}"#);
                }
            },
            _ => {
                let _ = conn.send_text(r#"{"kind":"error","error":"text only"}"#);
            }
        }
    }

    fn on_timer(&mut self, conn: &mut Conn<'_, Watcher>, token: u64) {
        if token != CLOSE {
            return;
        }
        let item = conn.data().item.clone();
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        if book.closed.insert(item.clone(), true) == Some(true) {
            return;
        }
        let (amount, name) = book.top.get(&item).cloned().unwrap_or_default();
        let closed = format!(r#"{{"kind":"closed","name":"{name}","amount":{amount}}}"#);
        let _ = conn.publish(&item, Message::Text(&closed));
    }

    fn on_http(
        &mut self,
        req: &Request<'_>,
        _: SocketAddr,
        _: &mut Publisher<'_>,
    ) -> Reply<Watcher> {
        if (req.method, req.path_only()) != ("GET", "/items") {
            return Response::status(404).into();
        }
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let items: Vec<String> = book
            .top
            .iter()
            .map(|(item, (amount, name))| {
                format!(r#""{item}":{{"amount":{amount},"name":"{name}"}}"#)
            })
            .collect();
        Response::json(format!("{{{}}}", items.join(","))).into()
    }
}

/// The history envelope: the bid's JSON with its id first.
fn envelope(id: MessageId, msg: Message<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(format!(r#"{{"id":"{id}","#).as_bytes());
    out.extend_from_slice(msg.as_bytes().strip_prefix(b"{").unwrap_or(b"}"));
}

fn main() -> ExitCode {
    let args = match common::Args::parse("127.0.0.1:9004") {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}\nauction flags: --close-after SECS (default 300)");
            return ExitCode::from(2);
        }
    };
    let mut close_after = Duration::from_secs(300);
    for (flag, value) in &args.extra {
        match (flag.as_str(), value.as_deref().map(str::parse::<f64>)) {
            ("--close-after", Some(Ok(secs))) if secs > 0.0 && secs.is_finite() => {
                close_after = Duration::from_secs_f64(secs)
            }
            _ => {
                eprintln!("auction: unknown flag or bad value: {flag}");
                return ExitCode::from(2);
            }
        }
    }
    let history = HistoryConfig::default().envelope(envelope);
    let config = args.config(Config::default().history(Some(history)));
    // One book for every worker: the factory runs once per worker thread,
    // and each handler gets a clone of the same Arc.
    let book = Arc::new(Mutex::new(Book::default()));
    common::serve(
        "auction",
        "listening on http://",
        &args,
        config,
        move || Auction {
            book: book.clone(),
            close_after,
        },
    )
}
