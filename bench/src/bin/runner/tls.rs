//! The TLS comparison, `runner --tls`: wsloop serving wss:// itself
//! (rustls, ring, unbuffered, TLS as a layer of the session) against
//! tokio-rustls in front of the tokio-tungstenite and fastwebsockets echo
//! peers, nginx (OpenSSL) terminating TLS in front of a plain wsloop, and
//! uWebSockets on OpenSSL when built (`--uws DIR`, bench/uws/build-tls.sh).
//! wsloop without TLS runs too, as the measure of what TLS costs.
//!
//! Every server has one thread (nginx one worker process), every one
//! presents the ECDSA P-256 certificate of tests/tls/, and the load
//! generator makes a full handshake for every connection (no resumption,
//! and the servers send no session tickets). Three measurements, the
//! servers taking turns as in the plain run:
//!
//! - echo, 100 connections x 20 B, 1 and 16 messages in flight: messages/s
//!   and the server's CPU per message;
//! - handshakes: TCP connect, TLS handshake, WebSocket upgrade, close, in
//!   a loop: the server's CPU per handshake;
//! - idle connections: the server's RSS after opening them, less before.
//!
//! For nginx + wsloop, CPU and memory are those of nginx's master and
//! worker and of wsloop together.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::measure::{idle_memory, measure, Loadgen};
use crate::nginx::Front;
use crate::procfs::machine;
use crate::report::{median, num, pretty, scenario_name, summarize};
use crate::{
    bin_dir, echo_args, handshake_args, rounds, tokio_peers, Plan, Server, LOADGEN_THREADS,
    SERVER_THREADS,
};

/// Echo scenarios: connections, payload bytes, messages in flight.
const SCENARIOS: [(usize, usize, usize); 2] = [(100, 20, 1), (100, 20, 16)];

/// The certificate, key and CA, relative to the repository's root.
const CERT: &str = "tests/tls/server.pem";
const KEY: &str = "tests/tls/server.key";
const CA: &str = "tests/tls/ca.pem";

pub fn run(
    quick: bool,
    repeats: Option<usize>,
    out: &Path,
    uws: Option<&Path>,
) -> Result<(), String> {
    let started = Instant::now();
    let mut plan = Plan::new(quick);
    plan.repeats = repeats.unwrap_or(if quick { 1 } else { 3 });
    if quick {
        plan.idle_connections = 1_000;
    }
    let file = |name: &str| {
        std::fs::canonicalize(name)
            .map_err(|e| format!("{name}: {e} (run from the repository's root)"))
    };
    let (cert, key, ca) = (file(CERT)?, file(KEY)?, file(CA)?);
    let bins = bin_dir()?;
    let examples = bins.join("examples");
    let threads = SERVER_THREADS.to_string();
    let cert_args = [
        "--tls-cert".to_owned(),
        cert.display().to_string(),
        "--tls-key".to_owned(),
        key.display().to_string(),
    ];
    let server = |name, program: PathBuf, args: &[&str], tls: bool| Server {
        name,
        program,
        args: args
            .iter()
            .map(|s| s.to_string())
            .chain(cert_args.iter().filter(|_| tls).cloned())
            .collect(),
        raw: false,
        path: "/",
        tls_ca: tls.then(|| ca.clone()),
        front: None,
    };
    let echo = examples.join("echo");
    let wsloop_args = ["--addr", "127.0.0.1:0", "--workers", &threads];
    let mut servers = vec![server("wsloop", echo.clone(), &wsloop_args, true)];
    servers.extend(tokio_peers(&bins, &threads, |name, program, args| {
        server(name, program, args, true)
    }));
    // uWebSockets when it was built (`--uws`), right after wsloop, as in
    // the plain run.
    if let Some(dir) = uws {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        servers.insert(
            1,
            Server {
                tls_ca: Some(ca.clone()),
                ..server(
                    "uWebSockets",
                    dir.join("uws_tls_echo"),
                    &["0", &cert, &key],
                    false,
                )
            },
        );
    }
    match find_nginx() {
        Some(program) => servers.push(Server {
            tls_ca: Some(ca.clone()),
            front: Some(Front {
                program,
                cert: cert.clone(),
                key: key.clone(),
            }),
            ..server("nginx + wsloop", echo.clone(), &wsloop_args, false)
        }),
        None => eprintln!("runner: without nginx (not found): apt-get install nginx to add it"),
    }
    servers.push(server("wsloop, no TLS", echo.clone(), &wsloop_args, false));
    let loadgen = examples.join("loadgen");
    for program in servers.iter().map(|s| &s.program).chain([&loadgen]) {
        if !program.exists() {
            return Err(format!(
                "{} is missing: run bash bench/run.sh --tls",
                program.display()
            ));
        }
    }
    let lg = Loadgen { program: loadgen };
    let machine = machine();
    eprintln!(
        "runner: TLS; {}; servers {SERVER_THREADS} thread, loadgen {LOADGEN_THREADS} thread, {} repeats x {} s{}",
        machine["cpu"].as_str().unwrap_or("?"),
        plan.repeats,
        plan.duration,
        if quick { " (quick)" } else { "" }
    );

    // 1. Echo over TLS.
    let mut scenarios = Vec::new();
    for &(connections, size, in_flight) in &SCENARIOS {
        let args = echo_args(&plan, connections, size, in_flight);
        let runs = rounds(
            &servers,
            &plan,
            |s| measure(s, &lg, &args),
            |server, rep, r| {
                let what = format!("{connections} x {size} B x {in_flight}");
                progress(&what, "msg/s", server, rep, r)
            },
        )?;
        scenarios.push(summarize(
            json!({"name": scenario_name(connections, size, in_flight), "connections": connections, "size": size, "in_flight": in_flight}),
            &servers,
            runs,
        ));
    }

    // 2. Full handshakes: connect, TLS, upgrade, close.
    let args = handshake_args(&plan);
    let runs = rounds(
        &servers,
        &plan,
        |s| measure(s, &lg, &args),
        |server, rep, r| progress("handshakes", "/s", server, rep, r),
    )?;
    let agreed = runs
        .first()
        .and_then(|r| r.first())
        .map_or(Value::Null, |r| r["tls"].clone());
    let handshakes = summarize(
        json!({"name": "handshakes", "slots": plan.handshake_slots}),
        &servers,
        runs,
    );

    // 3. Idle connections, taking turns too. nginx holds two descriptors
    // per connection, and may have too few for all of them: then it gets
    // as many as it can hold, and its row says so.
    let idle_count = |s: &Server| match s.front {
        Some(_) => plan.idle_connections.min(crate::nginx::max_connections()),
        None => plan.idle_connections,
    };
    let runs = rounds(
        &servers,
        &plan,
        |s| idle_memory(s, &lg, idle_count(s)),
        |server, rep, r| {
            format!(
                "runner: tls idle {} conns  {:<24} #{}  {:>7.0} B per connection",
                r["connections"],
                server.name,
                rep + 1,
                num(r, "bytes_per_connection")
            )
        },
    )?;
    let idle = summarize_idle(&servers, runs);

    let wall = started.elapsed().as_secs_f64();
    let bench = json!({
        "machine": machine,
        "settings": {
            "quick": quick,
            "server_threads": SERVER_THREADS,
            "loadgen_threads": LOADGEN_THREADS,
            "repeats": plan.repeats,
            "duration_s": plan.duration,
            "handshake_duration_s": plan.handshake_duration,
            "certificate": "ECDSA P-256 (tests/tls/server.pem)",
            "agreed": agreed,
            "resumption": false,
            "wall_s": wall,
        },
        "scenarios": scenarios,
        "handshakes": handshakes,
        "idle": {"connections": plan.idle_connections, "servers": idle},
    });
    print_tables(&bench);
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let path = out.join("bench-tls.json");
    std::fs::write(&path, pretty(&bench))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("\nwall time {wall:.0} s; wrote {}", path.display());
    Ok(())
}

/// One measurement's progress line: its rate and the server's CPU per
/// operation.
fn progress(what: &str, unit: &str, server: &Server, rep: usize, r: &Value) -> String {
    format!(
        "runner: tls {what}  {:<24} #{}  {:>9.0} {unit}  {:>7.2} us cpu each  cpu: server {:>3.0}%, loadgen {:>3.0}%",
        server.name,
        rep + 1,
        num(r, "per_s"),
        num(r, "server_us_per_op"),
        num(r, "server_cpu") * 100.0,
        num(r, "loadgen_cpu") * 100.0
    )
}

/// nginx on the PATH, or where Debian puts it (/usr/sbin is not on every
/// user's PATH).
fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

/// Medians of the idle runs, and each server's bytes per connection over
/// wsloop's.
fn summarize_idle(servers: &[Server], runs: Vec<Vec<Value>>) -> Vec<Value> {
    let base = median(&runs[0], "bytes_per_connection");
    servers
        .iter()
        .zip(runs)
        .map(|(server, runs)| {
            let per_conn = median(&runs, "bytes_per_connection");
            json!({
                "server": server.name,
                "connections": runs.first().map_or(Value::Null, |r| r["connections"].clone()),
                "median_bytes_per_connection": per_conn,
                "median_rss_before_kib": median(&runs, "rss_before_kib"),
                "median_rss_after_kib": median(&runs, "rss_after_kib"),
                "ratio_to_wsloop": if base > 0.0 { per_conn / base } else { 0.0 },
                "runs": runs,
            })
        })
        .collect()
}

fn print_tables(bench: &Value) {
    let s = &bench["settings"];
    println!(
        "\nTLS ({}), full handshakes; {} server thread, {} load generator thread; medians of {}",
        s["agreed"].as_str().unwrap_or("?"),
        SERVER_THREADS,
        LOADGEN_THREADS,
        s["repeats"]
    );
    println!("\nEcho over TLS (cpu us: server CPU per message, user + system):");
    println!(
        "  {:<22} {:<24} {:>9} {:>11} {:>9} {:>8} {:>10} {:>7} {:>7}",
        "scenario",
        "server",
        "msgs/s",
        "wsloop/this",
        "p99 us",
        "cpu us",
        "cpu/wsloop",
        "srv cpu",
        "lg cpu"
    );
    for scenario in bench["scenarios"].as_array().into_iter().flatten() {
        for r in scenario["results"].as_array().into_iter().flatten() {
            println!(
                "  {:<22} {:<24} {:>9.0} {:>10.2}x {:>9.0} {:>8.2} {:>9.2}x {:>6.0}% {:>6.0}%",
                scenario["name"].as_str().unwrap_or(""),
                r["server"].as_str().unwrap_or(""),
                num(r, "median_per_s"),
                num(r, "wsloop_ratio"),
                num(r, "median_p99_us"),
                num(r, "median_server_us_per_op"),
                num(r, "cpu_ratio"),
                num(r, "median_server_cpu") * 100.0,
                num(r, "median_loadgen_cpu") * 100.0,
            );
        }
    }
    println!("\nFull handshakes (connect, TLS, upgrade, close); the headline is server CPU per handshake:");
    println!(
        "  {:<24} {:>8} {:>10} {:>8} {:>8} {:>13} {:>11} {:>7} {:>7}",
        "server",
        "cpu us",
        "cpu/wsloop",
        "user us",
        "sys us",
        "handshakes/s",
        "wsloop/this",
        "srv cpu",
        "lg cpu"
    );
    for r in bench["handshakes"]["results"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "  {:<24} {:>8.1} {:>9.2}x {:>8.1} {:>8.1} {:>13.0} {:>10.2}x {:>6.0}% {:>6.0}%",
            r["server"].as_str().unwrap_or(""),
            num(r, "median_server_us_per_op"),
            num(r, "cpu_ratio"),
            num(r, "median_server_user_us_per_op"),
            num(r, "median_server_sys_us_per_op"),
            num(r, "median_per_s"),
            num(r, "wsloop_ratio"),
            num(r, "median_server_cpu") * 100.0,
            num(r, "median_loadgen_cpu") * 100.0,
        );
    }
    println!(
        "\nIdle wss:// connections ({}), server RSS after the handshakes less before:",
        bench["idle"]["connections"]
    );
    println!(
        "  {:<24} {:>7} {:>12} {:>12} {:>10} {:>12}",
        "server", "conns", "RSS before", "RSS after", "B/conn", "this/wsloop"
    );
    for r in bench["idle"]["servers"].as_array().into_iter().flatten() {
        println!(
            "  {:<24} {:>7} {:>8.0} KiB {:>8.0} KiB {:>10.0} {:>11.2}x",
            r["server"].as_str().unwrap_or(""),
            r["connections"],
            num(r, "median_rss_before_kib"),
            num(r, "median_rss_after_kib"),
            num(r, "median_bytes_per_connection"),
            num(r, "ratio_to_wsloop"),
        );
    }
    println!("  (nginx + wsloop: nginx's master and worker plus wsloop, all counted)");
}
