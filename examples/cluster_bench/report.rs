//! `--out DIR`: everything measured as DIR/cluster.json, and the figures
//! as DIR/cluster.svg, a bar chart in the style of bench/src/svg.rs.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};
use wsloop_redis::BridgeCounters;

use crate::clients::{Anomalies, SIZE};
use crate::{Mode, Pair, Run, DEPTH};

/// Everything measured, for `--out`.
pub struct Report<'a> {
    pub version: &'a str,
    pub cores: usize,
    /// Subscribers, messages, runs, rounds.
    pub settings: [usize; 4],
    pub lat: &'a [[[f64; 2]; 2]],
    pub ping: [f64; 2],
    /// Redis's µs per PUBLISH and per EVALSHA.
    pub per_call: [f64; 2],
    pub all: &'a [Run],
    pub medians: &'a [[(f64, f64); 2]; 2],
    pub pairs: &'a [Pair; 2],
    pub seen: &'a [Anomalies; 2],
}

impl Report<'_> {
    pub fn json(&self) -> Value {
        let [subscribers, messages, runs, rounds] = self.settings;
        let latency: serde_json::Map<String, Value> = Mode::ALL
            .iter()
            .zip(self.lat)
            .map(|(mode, [same, across])| {
                let us = |[p50, p99]: [f64; 2]| json!({ "p50_us": p50, "p99_us": p99 });
                (
                    mode.name().into(),
                    json!({ "same_node": us(*same), "across_nodes": us(*across) }),
                )
            })
            .collect();
        let runs_json: Vec<Value> = self
            .all
            .iter()
            .map(|r| {
                json!({
                    "run": r.run,
                    "mode": r.mode.name(),
                    "nodes": r.nodes,
                    "msgs_per_s": r.msgs_per_s,
                    "redis_cpu": r.redis_cpu,
                })
            })
            .collect();
        let mut medians = Vec::new();
        for (m, mode) in Mode::ALL.iter().enumerate() {
            for (n, (msgs_per_s, redis_cpu)) in self.medians[m].iter().enumerate() {
                medians.push(json!({
                    "mode": mode.name(),
                    "nodes": n + 1,
                    "msgs_per_s": msgs_per_s,
                    "redis_cpu": redis_cpu,
                }));
            }
        }
        let ratio = |n: usize| self.medians[1][n].0 / self.medians[0][n].0;
        let checks: serde_json::Map<String, Value> = self
            .pairs
            .iter()
            .zip(self.seen)
            .map(|(pair, seen)| {
                let mut v = anomalies_json(seen);
                v["publishes_refused"] = pair.refused.load(Ordering::Relaxed).into();
                v["bridges"] = pair.counters().map(counters_json).to_vec().into();
                (pair.mode.name().into(), v)
            })
            .collect();
        json!({
            "bench": "cluster_bench",
            "redis_version": self.version,
            "machine": { "cores": self.cores },
            "settings": {
                "nodes_per_mode": 2,
                "workers_per_node": 1,
                "history_depth": DEPTH,
                "subscribers": subscribers,
                "messages": messages,
                "message_bytes": SIZE,
                "runs": runs,
                "latency_rounds": rounds,
            },
            "latency": latency,
            "redis_ping": { "p50_us": self.ping[0], "p99_us": self.ping[1] },
            "redis_usec_per_call": { "publish": self.per_call[0], "evalsha": self.per_call[1] },
            "fanout": {
                "runs": runs_json,
                "medians": medians,
                "ordered_over_local_first": { "one_node": ratio(0), "two_nodes": ratio(1) },
            },
            "checks": checks,
        })
    }

    pub fn svg(&self) -> String {
        let [subscribers, messages, runs, rounds] = self.settings;
        let by_mode = |f: &dyn Fn(usize) -> f64| [f(0), f(1)];
        let panels = [
            (
                format!("latency p50, µs ({rounds} messages)"),
                [
                    ("same node", by_mode(&|m| self.lat[m][0][0])),
                    ("across nodes", by_mode(&|m| self.lat[m][1][0])),
                ],
            ),
            (
                "latency p99, µs".into(),
                [
                    ("same node", by_mode(&|m| self.lat[m][0][1])),
                    ("across nodes", by_mode(&|m| self.lat[m][1][1])),
                ],
            ),
            (
                format!("fan-out, delivered msgs/s (median of {runs})"),
                [
                    ("all on one node", by_mode(&|m| self.medians[m][0].0)),
                    ("half on each node", by_mode(&|m| self.medians[m][1].0)),
                ],
            ),
            (
                "Redis CPU during fan-out, % of a core".into(),
                [
                    (
                        "all on one node",
                        by_mode(&|m| self.medians[m][0].1 * 100.0),
                    ),
                    (
                        "half on each node",
                        by_mode(&|m| self.medians[m][1].1 * 100.0),
                    ),
                ],
            ),
        ];
        let subtitle = format!(
            "2 nodes of 1 worker per mode, redis-server {}, {} cores; fan-out: 1 publisher → {subscribers} subscribers, {messages} x {SIZE} B",
            self.version, self.cores
        );
        chart(
            "Local-first against Redis-ordered delivery",
            &subtitle,
            &panels,
        )
    }
}

fn anomalies_json(seen: &Anomalies) -> Value {
    json!({
        "malformed": seen.malformed,
        "lost": seen.lost,
        "out_of_order": seen.out_of_order,
        "id_gaps": seen.id_gaps,
        "id_mismatch": seen.id_mismatch,
    })
}

fn counters_json(c: BridgeCounters) -> Value {
    json!({
        "published": c.published,
        "received": c.received,
        "dropped": c.dropped,
        "reconnects": c.reconnects,
        "malformed": c.malformed,
        "refused": c.refused,
        "loads": c.loads,
        "gaps": c.gaps,
    })
}

/// A panel of the chart: its title, and two groups of bars, each a label
/// and one value per mode.
type Panel<'a> = (String, [(&'a str, [f64; 2]); 2]);

/// A 2 x 2 grid of panels as hand-written SVG, in the style of
/// bench/src/svg.rs.
fn chart(title: &str, subtitle: &str, panels: &[Panel<'_>; 4]) -> String {
    const COLORS: [&str; 2] = ["#1f77b4", "#ff7f0e"];
    const W: f64 = 440.0;
    const H: f64 = 250.0;
    const HEAD: f64 = 78.0;
    const MARGIN: f64 = 16.0;
    let (width, height) = (MARGIN * 2.0 + W * 2.0, HEAD + H * 2.0 + MARGIN);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{MARGIN}" y="26" font-size="18" font-weight="bold">{title}</text>"#
    );
    let _ = writeln!(
        s,
        r##"<text x="{MARGIN}" y="46" font-size="11" fill="#555">{subtitle}</text>"##
    );
    let mut x = MARGIN;
    for (mode, color) in Mode::ALL.iter().zip(COLORS) {
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="58" width="12" height="12" fill="{color}"/><text x="{}" y="69" font-size="12">{}</text>"#,
            x + 16.0,
            mode.name()
        );
        x += 24.0 + 7.0 * mode.name().len() as f64;
    }
    for (i, (title, groups)) in panels.iter().enumerate() {
        let (px, py) = (MARGIN + W * (i % 2) as f64, HEAD + H * (i / 2) as f64);
        let (left, top, right, bottom) = (px + 48.0, py + 28.0, px + W - 14.0, py + H - 36.0);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="13" font-weight="bold">{title}</text>"#,
            px + 8.0,
            py + 16.0
        );
        let max = groups.iter().flat_map(|g| g.1).fold(0.0, f64::max);
        let top_value = nice_ceiling(max * 1.12);
        let y_of = |v: f64| bottom - (bottom - top) * (v / top_value);
        for tick in 0..=4 {
            let v = top_value * f64::from(tick) / 4.0;
            let y = y_of(v);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{}</text>"##,
                left - 4.0,
                y + 3.0,
                si(v)
            );
        }
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>"##
        );
        let slot = (right - left) / 2.0;
        let bar = (slot * 0.4).min(60.0);
        for (g, (label, values)) in groups.iter().enumerate() {
            let center = left + slot * (g as f64 + 0.5);
            for (k, (v, color)) in values.iter().zip(COLORS).enumerate() {
                let (x, y) = (center - bar + bar * k as f64, y_of(*v));
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}</title></rect><text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                    bar - 2.0,
                    bottom - y,
                    si(*v),
                    x + bar / 2.0 - 1.0,
                    y - 3.0,
                    si(*v)
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{center:.1}" y="{}" font-size="11" text-anchor="middle">{label}</text>"#,
                bottom + 16.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The value with an SI suffix and three significant digits: 1.23M, 45.6k.
fn si(v: f64) -> String {
    let (v, suffix) = match v {
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    match v {
        v if v == v.trunc() && suffix.is_empty() => format!("{v:.0}"),
        v if v >= 100.0 => format!("{v:.0}{suffix}"),
        v if v >= 10.0 => format!("{v:.1}{suffix}"),
        v => format!("{v:.2}{suffix}"),
    }
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}
