//! `--out DIR`: everything measured as DIR/cluster.json, and the figures
//! as DIR/cluster.svg, a bar chart drawn by bench/src/svg.rs.

/// The bench crate's charts, compiled here from the same file: an example
/// cannot depend on that crate.
#[path = "../../bench/src/svg.rs"]
#[allow(dead_code)]
mod svg;

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
        let panels = panels
            .into_iter()
            .map(|(title, groups)| svg::Panel {
                title,
                groups: groups
                    .into_iter()
                    .map(|(label, values)| svg::Group {
                        label: label.into(),
                        values: values.map(Some).to_vec(),
                    })
                    .collect(),
            })
            .collect();
        svg::render(&svg::Chart {
            title: "Local-first against Redis-ordered delivery".into(),
            subtitle,
            series: vec!["local-first".into(), "ordered".into()],
            columns: 2,
            panels,
        })
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
