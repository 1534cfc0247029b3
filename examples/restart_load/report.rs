//! The checks, (a) to (d) as `main.rs` states them, and the table.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::record::{Log, Phase, Shared};
use crate::Opts;

/// Prints the table and what failed; returns the failed checks, each
/// named.
pub fn report(opts: &Opts, shared: &Shared, logs: &[Log]) -> Vec<String> {
    let mut failed = Vec::new();
    let sockets = logs.iter().filter(|l| l.websocket).count();
    println!(
        "\nrestart_load: {} members ({} WebSocket, {} long polling), a line each every {} s, drain window {} s{}",
        logs.len(),
        sockets,
        logs.len() - sockets,
        opts.every.as_secs_f64(),
        opts.window.as_secs_f64(),
        if opts.kill { ", a node killed" } else { "" }
    );
    traffic_table(shared, logs);
    restarts_table(opts, shared, logs, &mut failed);
    check_streams(shared, logs, &mut failed);
    check_requests(opts, logs, &mut failed);
    check_back(opts, logs, &mut failed);
    failed
}

/// Lines a second and their latency, before the first restart and from
/// it on.
fn traffic_table(shared: &Shared, logs: &[Log]) {
    // Before: from all in to the first restart (or the stop); during:
    // from the first restart to the stop.
    let at = |p| shared.phase_began(p);
    let spans = [
        (at(Phase::Before), at(Phase::During).or(at(Phase::Ending))),
        (at(Phase::During), at(Phase::Ending)),
    ];
    let secs: Vec<Option<f64>> = spans
        .iter()
        .map(|span| match *span {
            (Some(from), Some(to)) if to > from => Some((to - from).as_secs_f64()),
            _ => None,
        })
        .collect();
    let lines = shared.lines();
    // Latency by transport: a poller's includes the gap between its polls.
    let mut latency = [
        [new_histogram(), new_histogram()],
        [new_histogram(), new_histogram()],
    ];
    let mut delivered = [0u64; 2];
    for log in logs {
        let t = usize::from(!log.websocket);
        for p in 0..2 {
            delivered[p] += log.delivered[p];
            latency[t][p].add(&log.latency[p]).expect("same bounds");
        }
    }
    let cell = |p: usize, value: f64| match secs[p] {
        Some(_) => format!("{value:>10.1}"),
        None => format!("{:>10}", "-"),
    };
    let per_sec = |p: usize, n: u64| cell(p, n as f64 / secs[p].unwrap_or(1.0));
    println!("                                   before    during");
    println!(
        "  seconds                       {}{}",
        cell(0, secs[0].unwrap_or(0.0)),
        cell(1, secs[1].unwrap_or(0.0))
    );
    println!(
        "  lines said in the room /s     {}{}",
        per_sec(0, lines[0]),
        per_sec(1, lines[1])
    );
    println!(
        "  lines delivered /s            {}{}",
        per_sec(0, delivered[0]),
        per_sec(1, delivered[1])
    );
    for (t, transport) in ["WebSocket", "polling"].iter().enumerate() {
        for (label, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            let ms = |p: usize| {
                let h: &Histogram<u64> = &latency[t][p];
                cell(
                    p,
                    if h.is_empty() {
                        0.0
                    } else {
                        h.value_at_quantile(q) as f64
                    },
                )
            };
            println!("  latency {transport:<9} {label} (ms)  {}{}", ms(0), ms(1));
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000, 2).expect("the bounds are valid")
}

/// Per restart: the WebSockets closed, how, their reconnect times and the
/// peak reconnect rate; check (d) unless a node was killed.
fn restarts_table(opts: &Opts, shared: &Shared, logs: &[Log], failed: &mut Vec<String>) {
    let restarts = shared.restarts();
    if restarts.is_empty() {
        println!("  no restart");
        return;
    }
    let window = opts.window.as_secs_f64();
    println!(
        "  restart  old gone  closed  how             reconnect p50    p99    max   peak/s  even/s"
    );
    let mut all = Vec::new();
    for (k, restart) in restarts.iter().enumerate() {
        let until = restarts.get(k + 1).map(|r| r.begun);
        let mut how: BTreeMap<&str, usize> = BTreeMap::new();
        let mut times = Vec::new();
        let mut starts = Vec::new();
        for outage in logs
            .iter()
            .filter(|l| l.websocket)
            .flat_map(|l| &l.outages)
            .filter(|o| o.lost >= restart.begun && until.is_none_or(|u| o.lost < u))
        {
            *how.entry(outage.why.as_str()).or_default() += 1;
            if let (Some(tried), Some(back)) = (outage.tried, outage.back) {
                times.push(back - outage.lost);
                starts.push(tried);
            }
        }
        let closed: usize = how.values().sum();
        all.extend(times.iter().copied());
        times.sort();
        // Reconnects per second, by the second each was begun (the load
        // on the servers), in one-second bins from the restart on.
        let mut bins: BTreeMap<u64, usize> = BTreeMap::new();
        for start in &starts {
            *bins
                .entry(start.saturating_sub(restart.begun).as_secs())
                .or_default() += 1;
        }
        let peak = bins.values().copied().max().unwrap_or(0);
        let even = closed as f64 / window;
        let how: Vec<String> = how.iter().map(|(why, n)| format!("{why} x{n}")).collect();
        println!(
            "  {:<7}  {:>8}  {closed:<6}  {:<15} {:>7}  {:>6} {:>6}   {peak:>6}  {:>6}",
            k + 1,
            secs(restart.gone.map(|g| g.saturating_sub(restart.begun))),
            truncate(&how.join(", "), 15),
            secs(percentile(&times, 0.5)),
            secs(percentile(&times, 0.99)),
            secs(times.last().copied()),
            // A killed node's members all come back at once: no even rate.
            if opts.kill {
                "-".to_owned()
            } else {
                format!("{even:.1}")
            },
        );
        if !opts.kill && peak as f64 > 2.0 * even {
            failed.push(format!(
                "(d) spread reconnects: restart {}: peak {peak} reconnects/s, over twice the even {even:.1}/s ({closed} closed over {window} s)",
                k + 1
            ));
        }
    }
    all.sort();
    println!(
        "  all restarts: {} reconnects, time p50 {}, p99 {}, max {}",
        all.len(),
        secs(percentile(&all, 0.5)).trim(),
        secs(percentile(&all, 0.99)).trim(),
        secs(all.last().copied()).trim()
    );
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((at, _)) => format!("{}~", &s[..at.saturating_sub(1)]),
        None => s.to_owned(),
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((last as f64) * q).round() as usize])
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// (a): every member's ids run on one by one, every id is one message for
/// all, and every line a poller was told was taken was heard.
fn check_streams(shared: &Shared, logs: &[Log], failed: &mut Vec<String>) {
    let faulty: Vec<&Log> = logs.iter().filter(|l| l.fault_count > 0).collect();
    let received: u64 = logs.iter().map(|l| l.received).sum();
    println!(
        "  messages received: {received}, by {} members; with a gap, repeat or reset: {}",
        logs.len(),
        faulty.len()
    );
    if let Some(first) = faulty.first() {
        let total: u64 = faulty.iter().map(|l| l.fault_count).sum();
        failed.push(format!(
            "(a) nothing lost or twice: {} members, {total} faults; {}: {}",
            faulty.len(),
            first.name,
            first.faults.join("; ")
        ));
    }
    let (conflicts, examples) = shared.conflicts();
    if conflicts > 0 {
        failed.push(format!(
            "(a) one order: {conflicts} ids were different messages for different members: {}",
            examples.join("; ")
        ));
    }
    // Lines said, and whether their sender heard them back.
    let mut said = [0u64; 2];
    let mut unheard = [0u64; 2];
    let mut example = None;
    for log in logs {
        let t = usize::from(!log.websocket);
        for (seq, _) in log.said.iter().enumerate().filter(|(_, s)| **s) {
            said[t] += 1;
            if !log.heard_own.get(seq).copied().unwrap_or(false) {
                unheard[t] += 1;
                example.get_or_insert(format!("{} line {seq}", log.name));
            }
        }
    }
    let unsent: u64 = logs.iter().map(|l| l.unsent).sum();
    println!(
        "  lines said: {} on WebSockets ({} not heard back), {} taken by POST /send ({} not heard back, {unsent} refused)",
        said[0], unheard[0], said[1], unheard[1]
    );
    if unheard[1] > 0 {
        failed.push(format!(
            "(a) nothing lost: {} lines taken with 204 were never heard, e.g. {}",
            unheard[1],
            example.unwrap_or_default()
        ));
    }
}

/// (b): connects and requests that failed, by what and how.
fn check_requests(opts: &Opts, logs: &[Log], failed: &mut Vec<String>) {
    let ok: u64 = logs.iter().map(|l| l.ok).sum();
    let mut by: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for f in logs.iter().flat_map(|l| &l.failures) {
        *by.entry((f.what, f.outcome.to_string())).or_default() += 1;
    }
    let list: Vec<String> = by
        .iter()
        .map(|((what, how), n)| format!("{what} {how} x{n}"))
        .collect();
    println!(
        "  connects and requests: {ok} ok, failed: {}",
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        }
    );
    if !list.is_empty() && !opts.kill {
        let first = logs
            .iter()
            .flat_map(|l| l.failures.iter().map(move |f| (l, f)))
            .min_by_key(|(_, f)| f.at)
            .map(|(l, f)| {
                format!(
                    "first: {} {} {} at {:.1} s",
                    l.name,
                    f.what,
                    f.outcome,
                    f.at.as_secs_f64()
                )
            })
            .unwrap_or_default();
        failed.push(format!(
            "(b) nothing refused or reset: {}; {first}",
            list.join(", ")
        ));
    }
}

/// (c): every member back and resumed, within the window and the slack.
fn check_back(opts: &Opts, logs: &[Log], failed: &mut Vec<String>) {
    let limit = opts.window + opts.slack;
    let not_back: Vec<&str> = logs
        .iter()
        .filter(|l| l.outages.iter().any(|o| o.back.is_none()))
        .map(|l| l.name.as_str())
        .collect();
    if !not_back.is_empty() {
        failed.push(format!(
            "(c) every member back: {} never came back: {}",
            not_back.len(),
            not_back
                .iter()
                .take(10)
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    let unended: Vec<String> = logs
        .iter()
        .filter(|l| !l.all_ended())
        .map(|l| format!("{} ({} of {})", l.name, l.ends_heard, logs.len()))
        .collect();
    if !unended.is_empty() {
        failed.push(format!(
            "(c) every member resumed: {} did not hear every member's last line: {}",
            unended.len(),
            unended
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    let longest = logs
        .iter()
        .flat_map(|l| l.outages.iter().map(move |o| (l, o)))
        .filter_map(|(l, o)| Some((o.back? - o.lost, l, o)))
        .max_by_key(|(d, ..)| *d);
    let pollers_out = logs
        .iter()
        .filter(|l| !l.websocket)
        .map(|l| l.outages.len())
        .sum::<usize>();
    println!(
        "  outages: {} WebSocket, {pollers_out} polling; longest {}",
        logs.iter()
            .filter(|l| l.websocket)
            .map(|l| l.outages.len())
            .sum::<usize>(),
        longest.map_or("-".into(), |(d, l, o)| format!(
            "{:.2} s ({}, {} at {:.1} s)",
            d.as_secs_f64(),
            l.name,
            o.why,
            o.lost.as_secs_f64()
        ))
    );
    if let Some((d, l, o)) = longest.filter(|(d, ..)| *d > limit) {
        failed.push(format!(
            "(c) back within the window plus {} s: {} was away {:.2} s from {:.1} s ({})",
            opts.slack.as_secs_f64(),
            l.name,
            d.as_secs_f64(),
            o.lost.as_secs_f64(),
            o.why
        ));
    }
}

/// Every outage and failure, one a line, in time order.
pub fn write_events(path: &str, logs: &[Log]) -> std::io::Result<()> {
    let mut lines = Vec::new();
    for log in logs {
        for o in &log.outages {
            let back = o
                .back
                .map_or("never".to_owned(), |b| format!("{:.3}", b.as_secs_f64()));
            lines.push((
                o.lost,
                format!(
                    "{:.3} lost {} {} back {back}",
                    o.lost.as_secs_f64(),
                    log.name,
                    o.why
                ),
            ));
        }
        for f in &log.failures {
            lines.push((
                f.at,
                format!(
                    "{:.3} failed {} {} {}",
                    f.at.as_secs_f64(),
                    log.name,
                    f.what,
                    f.outcome
                ),
            ));
        }
    }
    lines.sort_by_key(|(at, _)| *at);
    let text: String = lines.into_iter().map(|(_, line)| line + "\n").collect();
    std::fs::write(path, text)
}
