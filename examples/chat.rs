//! A chat server: rooms across all worker threads, and a browser page.
//!
//! ```text
//! cargo run --release --example chat
//! ```
//! then open <http://127.0.0.1:8080/>. Flags: `--addr HOST:PORT`,
//! `--workers N`, `--ping-interval SECS`, `--idle-timeout SECS`,
//! `--any-origin` (skip the Origin check), `--trusted-proxy IP` (believe
//! its X-Forwarded-For / X-Real-IP; repeatable), `--redis
//! redis://HOST:PORT/` (rooms span every chat process started with the same
//! URL; see the README's "Scaling out"). Built with
//! `--features deflate`, `--deflate` compresses for every browser, which
//! offers permessage-deflate by itself:
//! `cargo run --release --features deflate --example chat -- --deflate`.
//!
//! How it works: every room is a topic. A connection subscribes to its
//! room when it opens, and each message it sends is published to the room,
//! encoded once and written to every member on every worker.

use std::net::SocketAddr;
use std::process::ExitCode;

use wsloop::{CloseCode, Config, Conn, Handler, Limits, Message, Request, Response, Upgrade};
use wsloop_redis::{BridgeConfig, RedisBridge};

mod common;

/// The page, embedded in the binary.
const PAGE: &str = include_str!("chat.html");
/// Longest room name, in characters.
const MAX_ROOM: usize = 32;
/// Longest nickname, in characters.
const MAX_NAME: usize = 24;
/// Longest chat line, in bytes; longer messages close the connection (1009).
const MAX_LINE: usize = 2000;

/// Who a connection is: decided once, at the upgrade, and handed back by
/// wsloop in every callback as the connection's data.
#[derive(Debug, Default)]
struct Member {
    room: String,
    name: String,
}

/// One per worker. It keeps no table of connections: each one carries its
/// own `Member`.
struct Chat {
    check_origin: bool,
}

impl Handler for Chat {
    type Data = Member;

    fn on_http(&mut self, req: &Request<'_>, _peer: SocketAddr) -> Response {
        match (req.method, req.path_only()) {
            // HEAD gets the same headers without the body; wsloop drops it.
            ("GET" | "HEAD", "/") => Response::ok("text/html; charset=utf-8", PAGE),
            (_, "/") => Response::status(405).with_header("Allow", "GET, HEAD"),
            _ => Response::status(404),
        }
    }

    fn on_upgrade(&mut self, req: &Request<'_>, peer: SocketAddr) -> Upgrade<Member> {
        if req.path_only() != "/ws" {
            return Upgrade::reject(Response::status(404));
        }
        // Browsers always send Origin: refuse pages from other sites, so
        // that they cannot chat in a visitor's name.
        if self.check_origin && !same_origin(req) {
            return Upgrade::reject(Response::status(403));
        }
        match member_of(req.path) {
            Some(member) => {
                println!("chat: {} joined {} from {peer}", member.name, member.room);
                Upgrade::accept(member)
            }
            None => Upgrade::reject(Response::status(400)),
        }
    }

    fn on_open(&mut self, conn: &mut Conn<'_, Member>) {
        let room = conn.data().room.clone();
        let notice = format!("* {} joined", conn.data().name);
        conn.subscribe(&room);
        conn.publish(&room, Message::Text(&notice));
    }

    fn on_message(&mut self, conn: &mut Conn<'_, Member>, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            return conn.close(CloseCode::UNSUPPORTED_DATA, "text only");
        };
        let Member { room, name } = conn.data();
        let (room, line) = (room.clone(), format!("{name}: {}", text.trim_end()));
        conn.publish(&room, Message::Text(&line));
    }

    fn on_close(&mut self, conn: &mut Conn<'_, Member>, _code: CloseCode, _reason: &str) {
        let Member { room, name } = conn.data();
        let (room, notice) = (room.clone(), format!("* {name} left"));
        conn.publish(&room, Message::Text(&notice));
    }
}

/// Room and name from `/ws?room=R&name=N`, decoded and checked.
fn member_of(path: &str) -> Option<Member> {
    let query = path.split_once('?')?.1;
    let mut room = None;
    let mut name = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=')?;
        match key {
            "room" => room = Some(percent_decode(value)?),
            "name" => name = Some(percent_decode(value)?),
            _ => {}
        }
    }
    let valid = |s: &String, max: usize| {
        let n = s.chars().count();
        n > 0 && n <= max && !s.chars().any(char::is_control)
    };
    let (room, name) = (room?, name?);
    (valid(&room, MAX_ROOM) && valid(&name, MAX_NAME)).then_some(Member { room, name })
}

/// Decodes `%XX` escapes (and `+` as space); `None` if it is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// Whether Origin names the same host as Host. No Origin (not a browser)
/// passes.
fn same_origin(req: &Request<'_>) -> bool {
    let Some(origin) = req.origin() else {
        return true;
    };
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    req.host()
        .is_some_and(|host| host.eq_ignore_ascii_case(origin_host))
}

fn main() -> ExitCode {
    let args = match common::Args::parse("127.0.0.1:8080") {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg} --any-origin --trusted-proxy IP");
            return ExitCode::from(2);
        }
    };
    let mut config = args.config(
        Config::default().limits(
            Limits::default()
                .max_message_size(MAX_LINE)
                .max_frame_size(MAX_LINE),
        ),
    );
    let mut check_origin = true;
    let mut redis = None;
    for (flag, value) in &args.extra {
        match (flag.as_str(), value) {
            ("--any-origin", None) => check_origin = false,
            ("--redis", Some(url)) => redis = Some(url.clone()),
            ("--trusted-proxy", Some(ip)) => match ip.parse() {
                Ok(ip) => config.trusted_proxies.push(ip),
                Err(_) => {
                    eprintln!("chat: --trusted-proxy needs an IP address, not {ip:?}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("chat: unknown flag {flag}");
                return ExitCode::from(2);
            }
        }
    }
    let factory = move || Chat { check_origin };
    common::serve_with(
        "chat",
        "open http://",
        &args.addr,
        config,
        factory,
        |server| {
            // Rooms span every chat process started with the same Redis URL.
            let Some(url) = redis else {
                return Ok(Bridged(None));
            };
            let bridge = RedisBridge::start(server, &url, BridgeConfig::default())
                .map_err(|e| format!("--redis {url}: {e}"))?;
            Ok(Bridged(Some(bridge)))
        },
    )
}

/// The Redis bridge, if any, whose counters are printed at exit.
struct Bridged(Option<RedisBridge>);

impl std::fmt::Display for Bridged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(bridge) => write!(f, "chat: {}", bridge.counters()),
            None => Ok(()),
        }
    }
}
