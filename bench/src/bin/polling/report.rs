//! What the bench prints and writes: the table of medians, each transport
//! against WebSocket push, the JSON and the chart.

use serde_json::Value;
use wsloop_bench::svg;

use crate::{Figures, Opts, Transport};

/// The medians: one row per client count and transport.
pub type Table = Vec<(usize, Transport, Figures)>;

fn find(table: &Table, clients: usize, transport: Transport) -> Option<Figures> {
    table
        .iter()
        .find(|r| r.0 == clients && r.1 == transport)
        .map(|r| r.2)
}

/// The markdown table, then each transport against WebSocket.
pub fn print_table(table: &Table) {
    println!();
    println!("| clients | transport | deliveries/s | wire bytes/msg | server CPU µs/msg | latency p50 | p99 | HTTP requests/s |");
    println!("|---|---|---|---|---|---|---|---|");
    for (clients, t, f) in table {
        println!(
            "| {clients} | {} | {:.0} | {:.0} | {:.1} | {:.2} ms | {:.2} ms | {:.0} |",
            t.name(),
            f.deliveries_per_sec,
            f.bytes_per_msg,
            f.cpu_us_per_msg,
            f.p50_ms,
            f.p99_ms,
            f.requests_per_sec
        );
    }
    for (clients, t, f) in table {
        if *t == Transport::WebSocket {
            continue;
        }
        if let Some(ws) = find(table, *clients, Transport::WebSocket) {
            println!(
                "{} against WebSocket at {clients} clients: {:.1}x the bytes, {:.1}x the server CPU per message",
                t.name(),
                f.bytes_per_msg / ws.bytes_per_msg,
                f.cpu_us_per_msg / ws.cpu_us_per_msg
            );
        }
    }
}

/// The medians as JSON rows.
pub fn write_json(path: &str, table: &Table) {
    let rows: Vec<Value> = table
        .iter()
        .map(|(clients, t, f)| {
            serde_json::json!({
                "clients": clients, "transport": t.name(),
                "deliveries_per_sec": f.deliveries_per_sec, "bytes_per_msg": f.bytes_per_msg,
                "cpu_us_per_msg": f.cpu_us_per_msg, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms,
                "requests_per_sec": f.requests_per_sec,
            })
        })
        .collect();
    std::fs::write(path, serde_json::to_string_pretty(&rows).unwrap() + "\n").expect("write JSON");
}

/// The chart: a panel per figure, a group per client count, a bar per
/// transport.
pub fn write_svg(path: &str, table: &Table, opts: &Opts) {
    let panel = |title: &str, f: fn(&Figures) -> f64| svg::Panel {
        title: title.into(),
        groups: opts
            .clients
            .iter()
            .map(|&c| svg::Group {
                label: format!("{c} clients"),
                values: Transport::ALL
                    .iter()
                    .map(|&t| find(table, c, t).map(|figures| f(&figures)))
                    .collect(),
            })
            .collect(),
    };
    let chart = svg::Chart {
        title: "WebSocket push, Server-Sent Events and long polling: same chat, same load".into(),
        subtitle: format!(
            "rooms of {}, a line per member every {} ms; 2 workers, 2 cores shared with the load; medians of {}",
            opts.room_size,
            opts.every.as_millis(),
            opts.runs
        ),
        series: Transport::ALL.iter().map(|t| t.name().to_owned()).collect(),
        columns: 3,
        panels: vec![
            panel("wire bytes per delivered message", |f| f.bytes_per_msg),
            panel("server CPU µs per delivered message", |f| f.cpu_us_per_msg),
            panel("HTTP requests parsed per second", |f| f.requests_per_sec),
            panel("delivery latency p50, ms", |f| f.p50_ms),
            panel("delivery latency p99, ms", |f| f.p99_ms),
        ],
    };
    std::fs::write(path, svg::render(&chart)).expect("write SVG");
}
