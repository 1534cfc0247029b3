//! Summaries, tables and charts.

use std::path::Path;

use serde_json::{json, Value};
use wsloop_bench::svg::{self, Chart, Group, Panel};

use crate::{Server, LOADGEN_THREADS, SERVER_THREADS};

/// Medians per server and the ratio of each to wsloop (the first server).
pub fn summarize(mut head: Value, servers: &[Server], runs: Vec<Vec<Value>>) -> Value {
    let keys = [
        "per_s",
        "p99_us",
        "server_cpu",
        "loadgen_cpu",
        "server_us_per_op",
        "server_user_us_per_op",
        "server_sys_us_per_op",
    ];
    let medians: Vec<[f64; 7]> = runs
        .iter()
        .map(|r| keys.map(|key| median(r, key)))
        .collect();
    let (base, base_us) = (medians[0][0], medians[0][4]);
    let results: Vec<Value> = servers
        .iter()
        .zip(runs)
        .zip(&medians)
        .map(|((server, runs), m)| {
            let [per_s, p99, cpu, loadgen_cpu, us_per_op, user_us, sys_us] = *m;
            json!({
                "server": server.name,
                "median_per_s": per_s,
                "median_p99_us": p99,
                "median_server_cpu": cpu,
                "median_loadgen_cpu": loadgen_cpu,
                "median_server_us_per_op": us_per_op,
                "median_server_user_us_per_op": user_us,
                "median_server_sys_us_per_op": sys_us,
                "wsloop_ratio": if per_s > 0.0 { base / per_s } else { 0.0 },
                // Above 1: this server spends more CPU per operation than wsloop.
                "cpu_ratio": if base_us > 0.0 { us_per_op / base_us } else { 0.0 },
                "runs": runs,
            })
        })
        .collect();
    head["results"] = json!(results);
    head
}

pub fn median(runs: &[Value], key: &str) -> f64 {
    wsloop_bench::median(runs.iter().map(|r| num(r, key)))
}

pub fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(0.0)
}

pub fn bytes(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

pub fn print_tables(bench: &Value, scaling: &Value) {
    println!(
        "\nEcho throughput, medians ({} server thread, {} load generator thread):",
        SERVER_THREADS, LOADGEN_THREADS
    );
    println!(
        "  {:<26} {:<24} {:>10} {:>11} {:>9} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "scenario",
        "server",
        "per s",
        "wsloop/this",
        "p99 us",
        "srv cpu",
        "lg cpu",
        "user us",
        "sys us",
        "cpu/wsloop",
        "syscalls"
    );
    for scenario in bench["scenarios"].as_array().into_iter().flatten() {
        for r in scenario["results"].as_array().into_iter().flatten() {
            println!(
                "  {:<26} {:<24} {:>10.0} {:>10.2}x {:>9.0} {:>6.0}% {:>7.0}% {:>8.1} {:>8.1} {:>8.2}x {:>9}",
                scenario["name"].as_str().unwrap_or(""),
                r["server"].as_str().unwrap_or(""),
                num(r, "median_per_s"),
                num(r, "wsloop_ratio"),
                num(r, "median_p99_us"),
                num(r, "median_server_cpu") * 100.0,
                num(r, "median_loadgen_cpu") * 100.0,
                num(r, "median_server_user_us_per_op"),
                num(r, "median_server_sys_us_per_op"),
                num(r, "cpu_ratio"),
                r["syscalls_per_op"]
                    .as_f64()
                    .map_or("-".to_owned(), |v| format!("{v:.2}"))
            );
        }
    }
    println!(
        "  (user us, sys us: server CPU per message; cpu/wsloop above 1: more CPU than wsloop;\n   syscalls: per message, strace -c in one extra run)"
    );
    println!("\nFan-out over sockets, one publisher, every connection subscribed, medians:");
    println!(
        "  {:<38} {:<24} {:>13} {:>11} {:>9} {:>10} {:>7} {:>8} {:>10}",
        "scenario",
        "server",
        "deliveries/s",
        "wsloop/this",
        "cpu us",
        "cpu/wsloop",
        "srv cpu",
        "lg cpu",
        "user/sys us"
    );
    for scenario in bench["fanout"].as_array().into_iter().flatten() {
        for r in scenario["results"].as_array().into_iter().flatten() {
            println!(
                "  {:<38} {:<24} {:>13.0} {:>10.2}x {:>9.3} {:>9.2}x {:>6.0}% {:>7.0}% {:>5.3}/{:.3}",
                scenario["name"].as_str().unwrap_or(""),
                r["server"].as_str().unwrap_or(""),
                num(r, "median_per_s"),
                num(r, "wsloop_ratio"),
                num(r, "median_server_us_per_op"),
                num(r, "cpu_ratio"),
                num(r, "median_server_cpu") * 100.0,
                num(r, "median_loadgen_cpu") * 100.0,
                num(r, "median_server_user_us_per_op"),
                num(r, "median_server_sys_us_per_op"),
            );
        }
    }
    println!("  (cpu us: server CPU per delivery, user + system; cpu/wsloop above 1: more CPU than wsloop)");
    // The load generator is at its core's limit while it connects and
    // closes, so handshakes/s is its figure; the server's CPU per
    // handshake is the server's.
    println!("\nHandshakes (connect, upgrade, close), medians; the headline is server CPU per handshake:");
    println!(
        "  {:<24} {:>10} {:>10} {:>8} {:>8} {:>13} {:>11} {:>7} {:>8} {:>9}",
        "server",
        "cpu us",
        "cpu/wsloop",
        "user us",
        "sys us",
        "handshakes/s",
        "wsloop/this",
        "srv cpu",
        "lg cpu",
        "syscalls"
    );
    for r in bench["handshakes"]["results"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "  {:<24} {:>10.1} {:>9.2}x {:>8.1} {:>8.1} {:>13.0} {:>10.2}x {:>6.0}% {:>7.0}% {:>9}",
            r["server"].as_str().unwrap_or(""),
            num(r, "median_server_us_per_op"),
            num(r, "cpu_ratio"),
            num(r, "median_server_user_us_per_op"),
            num(r, "median_server_sys_us_per_op"),
            num(r, "median_per_s"),
            num(r, "wsloop_ratio"),
            num(r, "median_server_cpu") * 100.0,
            num(r, "median_loadgen_cpu") * 100.0,
            r["syscalls_per_op"]
                .as_f64()
                .map_or("-".to_owned(), |v| format!("{v:.2}"))
        );
    }
    println!("\nIdle connections ({}):", bench["idle"]["connections"]);
    println!(
        "  {:<24} {:>12} {:>12} {:>10}",
        "server", "RSS before", "RSS after", "B/conn"
    );
    for r in bench["idle"]["servers"].as_array().into_iter().flatten() {
        println!(
            "  {:<24} {:>9.0} KiB {:>9.0} KiB {:>10.0}",
            r["server"].as_str().unwrap_or(""),
            num(r, "rss_before_kib"),
            num(r, "rss_after_kib"),
            num(r, "bytes_per_connection")
        );
    }
    println!("\nScaling, mostly idle connections at 1 msg/s each:");
    println!(
        "  {:>7} {:<24} {:>10} {:>8} {:>14} {:>10}",
        "conns", "server", "RSS MiB", "threads", "ctx switch/s", "p99 us"
    );
    for p in scaling["points"].as_array().into_iter().flatten() {
        println!(
            "  {:>7} {:<24} {:>10.1} {:>8} {:>14.0} {:>10.0}",
            num(p, "connections"),
            p["server"].as_str().unwrap_or(""),
            num(p, "rss_kib") / 1024.0,
            num(p, "threads"),
            num(p, "ctx_switches_per_s"),
            num(p, "p99_us")
        );
    }
}

pub fn write_outputs(out: &Path, bench: &Value, scaling: &Value) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write("bench.json", pretty(bench))?;
    write("scaling.json", pretty(scaling))?;
    write("bench.svg", svg::render(&bench_chart(bench)))?;
    write("scaling.svg", svg::render(&scaling_chart(scaling)))?;
    Ok(())
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

pub fn subtitle(v: &Value, extra: &str) -> String {
    let m = &v["machine"];
    format!(
        "{}, {} cores, Linux {}; {extra}",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
    )
}

pub fn bench_chart(bench: &Value) -> Chart {
    let series: Vec<String> = bench["handshakes"]["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["server"].as_str().unwrap_or("").to_owned())
        .collect();
    let bars = |results: &Value, key: &str| Group {
        label: String::new(),
        values: results
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| Some(num(r, key)))
            .collect(),
    };
    // Fan-out runs a subset of the servers: each bar finds its own.
    let bars_by_name = |results: &Value, key: &str| Group {
        label: String::new(),
        values: series
            .iter()
            .map(|name| {
                results
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["server"].as_str() == Some(name))
                    .map(|r| num(r, key))
            })
            .collect(),
    };
    let mut panels: Vec<Panel> = bench["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Panel {
            title: format!("echo {}: messages/s", s["name"].as_str().unwrap_or("")),
            groups: vec![bars(&s["results"], "median_per_s")],
        })
        .collect();
    for s in bench["fanout"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("");
        panels.push(Panel {
            title: format!("fan-out {name}: deliveries/s"),
            groups: vec![bars_by_name(&s["results"], "median_per_s")],
        });
        panels.push(Panel {
            title: format!("fan-out {name}: server CPU per delivery, us (lower is better)"),
            groups: vec![bars_by_name(&s["results"], "median_server_us_per_op")],
        });
    }
    panels.push(Panel {
        title: "server CPU per handshake, us (connect, upgrade, close; lower is better)".into(),
        groups: vec![bars(
            &bench["handshakes"]["results"],
            "median_server_us_per_op",
        )],
    });
    panels.push(Panel {
        title: format!(
            "bytes per idle connection at {} (lower is better)",
            bench["idle"]["connections"]
        ),
        groups: vec![bars(&bench["idle"]["servers"], "bytes_per_connection")],
    });
    let s = &bench["settings"];
    Chart {
        title: "wsloop against its peers (medians; higher is better unless noted)".into(),
        subtitle: subtitle(
            bench,
            &format!(
                "{} server thread, {} loadgen thread, {} repeats x {} s",
                s["server_threads"], s["loadgen_threads"], s["repeats"], s["duration_s"]
            ),
        ),
        series,
        columns: 2,
        panels,
    }
}

pub fn scaling_chart(scaling: &Value) -> Chart {
    let points: Vec<&Value> = scaling["points"].as_array().into_iter().flatten().collect();
    let mut servers: Vec<String> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    for p in &points {
        let name = p["server"].as_str().unwrap_or("").to_owned();
        if !servers.contains(&name) {
            servers.push(name);
        }
        let count = p["connections"].as_u64().unwrap_or(0);
        if !counts.contains(&count) {
            counts.push(count);
        }
    }
    let panel = |title: &str, value: &dyn Fn(&Value) -> f64| Panel {
        title: title.to_owned(),
        groups: counts
            .iter()
            .map(|&c| Group {
                label: format!("{c} conns"),
                values: servers
                    .iter()
                    .map(|s| {
                        points
                            .iter()
                            .find(|p| {
                                p["connections"].as_u64() == Some(c)
                                    && p["server"].as_str() == Some(s)
                            })
                            .map(|p| value(p))
                    })
                    .collect(),
            })
            .collect(),
    };
    Chart {
        title: "Event loop vs thread per connection, mostly idle connections".into(),
        subtitle: subtitle(
            scaling,
            &format!(
                "1 message/s per connection, {} s each, wsloop with {} worker",
                scaling["settings"]["duration_s"], scaling["settings"]["wsloop_workers"]
            ),
        ),
        series: servers.clone(),
        columns: 2,
        panels: vec![
            panel("server RSS, MiB (lower is better)", &|p| {
                num(p, "rss_kib") / 1024.0
            }),
            panel("server threads", &|p| num(p, "threads")),
            panel("context switches per second", &|p| {
                num(p, "ctx_switches_per_s")
            }),
            panel("echo latency p99, ms", &|p| num(p, "p99_us") / 1000.0),
        ],
    }
}

pub fn scenario_name(connections: usize, size: usize, in_flight: usize) -> String {
    if in_flight > 1 {
        format!("{connections} x {}, {in_flight} in flight", bytes(size))
    } else {
        format!("{connections} x {}", bytes(size))
    }
}
