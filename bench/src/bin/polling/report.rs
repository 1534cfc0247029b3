//! What the bench prints and writes: the table of medians, each transport
//! against WebSocket push, memory per idle member, the JSON and the chart.

use serde_json::Value;
use wsloop_bench::svg;

use crate::idle::Idle;
use crate::{Figures, Opts, Transport};

/// The medians: one row per client count and transport.
pub type Table = Vec<(usize, Transport, Figures)>;

/// Memory per idle member: one row per transport, its middle run.
pub type IdleTable = Vec<(Transport, Idle)>;

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

/// The chat's memory per idle member, then each transport against
/// WebSocket; nothing if it was not measured.
pub fn print_idle(idle: &IdleTable) {
    let Some((_, ws)) = idle.iter().find(|r| r.0 == Transport::WebSocket) else {
        return;
    };
    println!();
    println!("| idle members | transport | chat RSS before | after | RSS per idle member |");
    println!("|---|---|---|---|---|");
    for (t, i) in idle {
        println!(
            "| {} | {} | {} KiB | {} KiB | {:.0} B |",
            i.members,
            t.name(),
            i.before_kib,
            i.after_kib,
            i.bytes_per_member()
        );
    }
    for (t, i) in idle.iter().filter(|r| r.0 != Transport::WebSocket) {
        println!(
            "{} against WebSocket, idle: {:.1}x the memory per member",
            t.name(),
            i.bytes_per_member() / ws.bytes_per_member()
        );
    }
}

/// The medians and the idle memory as JSON: `{"load": [...], "idle": [...]}`.
pub fn write_json(path: &str, table: &Table, idle: &IdleTable) {
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
    let idle: Vec<Value> = idle
        .iter()
        .map(|(t, i)| {
            serde_json::json!({
                "members": i.members, "transport": t.name(),
                "rss_before_kib": i.before_kib, "rss_after_kib": i.after_kib,
                "rss_bytes_per_member": i.bytes_per_member(),
            })
        })
        .collect();
    let all = serde_json::json!({ "load": rows, "idle": idle });
    std::fs::write(path, serde_json::to_string_pretty(&all).unwrap() + "\n").expect("write JSON");
}

/// The chart: a panel per figure, a group per client count, a bar per
/// transport; the last panel, memory per idle member, has one group.
pub fn write_svg(path: &str, table: &Table, idle: &IdleTable, opts: &Opts) {
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
    let idle_panel = svg::Panel {
        title: "chat RSS per idle member, bytes".into(),
        groups: idle
            .first()
            .map(|(_, i)| svg::Group {
                label: format!("{} idle members", i.members),
                values: Transport::ALL
                    .iter()
                    .map(|&t| {
                        idle.iter()
                            .find(|r| r.0 == t)
                            .map(|r| r.1.bytes_per_member())
                    })
                    .collect(),
            })
            .into_iter()
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
            idle_panel,
        ],
    };
    std::fs::write(path, svg::render(&chart)).expect("write SVG");
}
