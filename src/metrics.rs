//! Counters in the Prometheus text exposition format, version 0.0.4: what
//! a `/metrics` endpoint answers, with [`CONTENT_TYPE`].
//!
//! [`Counters::write_prometheus`] writes a server's counters;
//! [`Exposition`] writes anyone's in the same format, as `wsloop-redis`
//! does for its bridge. Each metric family is a `# HELP` line, a `# TYPE`
//! line and its samples, one per line:
//!
//! ```text
//! # HELP wsloop_connections_open Connections open now: WebSockets, ...
//! # TYPE wsloop_connections_open gauge
//! wsloop_connections_open 3
//! # HELP wsloop_closes_total WebSocket connections ended, by close code ...
//! # TYPE wsloop_closes_total counter
//! wsloop_closes_total{code="1000"} 12
//! ```
//!
//! The format is specified at
//! <https://prometheus.io/docs/instrumenting/exposition_formats/>.
//! Writing is pure: it appends to a `String`, and serving it is the
//! application's (the chat example's `GET /metrics`).

use std::fmt::{self, Write};

use crate::stats::{Counters, CODES, HANDSHAKE_REASONS, REFUSED_STATUSES};

/// The `Content-Type` of what this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Appends metric families to a string in the text format.
///
/// Names are the program's constants, so a name that the format does not
/// allow is a bug, not an input: the methods panic on one, and the first
/// test that writes the family finds it.
#[derive(Debug)]
pub struct Exposition<'a> {
    out: &'a mut String,
}

impl<'a> Exposition<'a> {
    /// Appends to `out`.
    pub fn new(out: &'a mut String) -> Self {
        Exposition { out }
    }

    /// A counter: a count that only grows, reset only by a restart.
    ///
    /// # Panics
    /// If `name` is not a metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) ending
    /// in `_total`, as counters' names do.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, Kind::Counter);
        self.sample(name, None::<(&str, &str)>, value);
    }

    /// A gauge: a value now, which goes up and down.
    ///
    /// # Panics
    /// If `name` is not a metric name, or ends in `_total`, which marks
    /// counters.
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, Kind::Gauge);
        self.sample(name, None::<(&str, &str)>, value);
    }

    /// A counter split by one label: a sample for each `(label value,
    /// count)`, zeros included, so that every series exists from the
    /// first scrape. Label values are escaped as the format requires.
    ///
    /// # Panics
    /// As [`Exposition::counter`], and if `label` is not a label name
    /// (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`, which is
    /// reserved).
    pub fn counter_by<V: fmt::Display>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (V, u64)>,
    ) {
        assert!(is_label_name(label), "not a label name: {label:?}");
        self.family(name, help, Kind::Counter);
        for (value, count) in samples {
            self.sample(name, Some((label, value)), count);
        }
    }

    /// The `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, help: &str, kind: Kind) {
        assert!(is_metric_name(name), "not a metric name: {name:?}");
        assert_eq!(
            name.ends_with("_total"),
            kind == Kind::Counter,
            "counters', and only counters', names end in _total: {name:?}"
        );
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        // In HELP text only backslash and line feed are escaped.
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push_str(match kind {
            Kind::Counter => " counter\n",
            Kind::Gauge => " gauge\n",
        });
    }

    /// One sample line: `name{label="value"} count`.
    fn sample(&mut self, name: &str, label: Option<(&str, impl fmt::Display)>, count: u64) {
        self.out.push_str(name);
        if let Some((label, value)) = label {
            self.out.push('{');
            self.out.push_str(label);
            self.out.push_str("=\"");
            // Writing to a String cannot fail.
            let _ = write!(LabelValue(self.out), "{value}");
            self.out.push_str("\"}");
        }
        let _ = writeln!(self.out, " {count}");
    }
}

/// The metric types this module writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// Writes a label value escaped: backslash, double quote and line feed.
struct LabelValue<'a>(&'a mut String);

impl Write for LabelValue<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '\\' => self.0.push_str("\\\\"),
                '"' => self.0.push_str("\\\""),
                '\n' => self.0.push_str("\\n"),
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, without the reserved `__` prefix.
fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with("__")
}

impl Counters {
    /// Appends these counters in the Prometheus text format (see
    /// [`metrics`](crate::metrics)):
    ///
    /// | metric | type | what |
    /// |---|---|---|
    /// | `wsloop_connections_open` | gauge | [`open`](Counters::open) |
    /// | `wsloop_connections_accepted_total` | counter | [`accepted`](Counters::accepted) |
    /// | `wsloop_connections_refused_total` | counter | [`refused`](Counters::refused) |
    /// | `wsloop_upgrades_total` | counter | [`upgraded`](Counters::upgraded) |
    /// | `wsloop_handshake_failures_total{reason}` | counter | [`handshake_failed`](Counters::handshake_failed), `reason` from [`HANDSHAKE_REASONS`] |
    /// | `wsloop_http_requests_total` | counter | [`http_requests`](Counters::http_requests) |
    /// | `wsloop_held_requests` | gauge | [`held`](Counters::held) |
    /// | `wsloop_event_streams` | gauge | [`streams`](Counters::streams) |
    /// | `wsloop_messages_in_total` | counter | [`messages_in`](Counters::messages_in) |
    /// | `wsloop_messages_out_total` | counter | [`messages_out`](Counters::messages_out) |
    /// | `wsloop_bytes_in_total` | counter | [`bytes_in`](Counters::bytes_in) |
    /// | `wsloop_bytes_out_total` | counter | [`bytes_out`](Counters::bytes_out) |
    /// | `wsloop_sends_dropped_total` | counter | [`dropped`](Counters::dropped) |
    /// | `wsloop_closes_total{code}` | counter | [`closes`](Counters::closes): `code` is the close code, or `other` |
    /// | `wsloop_publishes_refused_total` | counter | [`publishes_refused`](Counters::publishes_refused) |
    /// | `wsloop_tls_failures_total` | counter | [`tls_failed`](Counters::tls_failed) |
    ///
    /// Labelled families have a sample for every label value, zeros
    /// included.
    pub fn write_prometheus(&self, out: &mut String) {
        let mut m = Exposition::new(out);
        m.gauge(
            "wsloop_connections_open",
            "Connections open now: WebSockets, plain HTTP (a scraper's own \
             included), held requests and handshakes.",
            self.open,
        );
        m.counter(
            "wsloop_connections_accepted_total",
            "Connections accepted.",
            self.accepted,
        );
        m.counter(
            "wsloop_connections_refused_total",
            "Connections closed at accept because the worker was full.",
            self.refused,
        );
        m.counter(
            "wsloop_upgrades_total",
            "WebSocket handshakes completed.",
            self.upgraded,
        );
        let refused = REFUSED_STATUSES
            .iter()
            .map(u16::to_string)
            .chain(["other".into()]);
        m.counter_by(
            "wsloop_upgrades_refused_total",
            "WebSocket upgrades the handler refused, by the status it answered.",
            "status",
            refused.zip(self.upgrades_refused),
        );
        m.counter_by(
            "wsloop_handshake_failures_total",
            "Requests refused for breaking HTTP or the WebSocket handshake, by reason.",
            "reason",
            HANDSHAKE_REASONS.iter().zip(self.handshake_failed),
        );
        m.counter(
            "wsloop_http_requests_total",
            "Plain HTTP requests handed to the handler.",
            self.http_requests,
        );
        m.gauge(
            "wsloop_held_requests",
            "Requests held now (long polls).",
            self.held,
        );
        m.gauge(
            "wsloop_event_streams",
            "Event streams open now (Server-Sent Events).",
            self.streams,
        );
        m.counter(
            "wsloop_messages_in_total",
            "Data messages received.",
            self.messages_in,
        );
        m.counter(
            "wsloop_messages_out_total",
            "Data messages queued to be sent.",
            self.messages_out,
        );
        m.counter(
            "wsloop_bytes_in_total",
            "Bytes read from sockets.",
            self.bytes_in,
        );
        m.counter(
            "wsloop_bytes_out_total",
            "Bytes of messages queued to be sent: payloads, and whole frames for broadcasts.",
            self.bytes_out,
        );
        m.counter(
            "wsloop_sends_dropped_total",
            "Messages dropped by the Drop backpressure policy.",
            self.dropped,
        );
        let codes = CODES.iter().map(u16::to_string).chain(["other".into()]);
        m.counter_by(
            "wsloop_closes_total",
            "WebSocket connections ended, by close code; codes not counted one by one are \"other\".",
            "code",
            codes.zip(self.closes),
        );
        m.counter(
            "wsloop_publishes_refused_total",
            "Publishes refused because a worker's inbox was full.",
            self.publishes_refused,
        );
        m.counter(
            "wsloop_tls_failures_total",
            "Connections ended because TLS failed: a bad or refused handshake, or a bad record.",
            self.tls_failed,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    /// One sample line, its label values unescaped.
    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    /// Reads the text format as Prometheus would, strictly: every line a
    /// comment or `name{labels} value`, names valid, each family's HELP
    /// and TYPE once and before its samples, a family's samples together,
    /// no series twice, and every line ended by a line feed.
    fn parse(text: &str) -> Result<Vec<Sample>, String> {
        let body = text
            .strip_suffix('\n')
            .ok_or("the last line has no line feed")?;
        let mut help = HashSet::new();
        let mut types = HashMap::new();
        let mut finished = HashSet::new();
        let mut current: Option<String> = None;
        let mut sampled = HashSet::new();
        let mut series = HashSet::new();
        let mut samples = Vec::new();
        for line in body.split('\n') {
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                let (keyword, name) = (words.next(), words.next());
                let (Some(keyword @ ("HELP" | "TYPE")), Some(name)) = (keyword, name) else {
                    continue; // another comment
                };
                if !is_metric_name(name) {
                    return Err(format!("bad name in {line:?}"));
                }
                if finished.contains(name) || sampled.contains(name) {
                    return Err(format!("{name} declared after its samples: {line:?}"));
                }
                let rest = words.next().unwrap_or("");
                let fresh = match keyword {
                    "HELP" => help.insert(name.to_owned()),
                    _ => {
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest)
                        {
                            return Err(format!("bad type in {line:?}"));
                        }
                        types.insert(name.to_owned(), rest.to_owned()).is_none()
                    }
                };
                if !fresh {
                    return Err(format!("{keyword} twice for {name}"));
                }
                if current.as_deref() != Some(name) {
                    if let Some(done) = current.replace(name.to_owned()) {
                        finished.insert(done);
                    }
                }
                continue;
            }
            let sample = parse_sample(line)?;
            if finished.contains(&sample.name) {
                return Err(format!("family {} is not together", sample.name));
            }
            if current.as_deref() != Some(&sample.name) {
                return Err(format!("{line:?} is outside its family's group"));
            }
            if !(help.contains(&sample.name) && types.contains_key(&sample.name)) {
                return Err(format!("{} has no HELP or no TYPE", sample.name));
            }
            if !series.insert((sample.name.clone(), format!("{:?}", sample.labels))) {
                return Err(format!("series twice: {line:?}"));
            }
            sampled.insert(sample.name.clone());
            samples.push(sample);
        }
        Ok(samples)
    }

    /// `name{label="value",...} value`
    fn parse_sample(line: &str) -> Result<Sample, String> {
        let bad = || format!("not a sample: {line:?}");
        let name_end = line.find(['{', ' ']).ok_or_else(bad)?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(bad());
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(mut inner) = rest.strip_prefix('{') {
            while !inner.starts_with('}') {
                let (label, after) = inner.split_once("=\"").ok_or_else(bad)?;
                if !is_label_name(label) {
                    return Err(bad());
                }
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().ok_or_else(bad)? {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next().ok_or_else(bad)?.1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            _ => return Err(bad()),
                        },
                        (_, '\n') => return Err(bad()),
                        (_, c) => value.push(c),
                    }
                };
                labels.push((label.to_owned(), value));
                inner = &after[end + 1..];
                inner = inner.strip_prefix(',').unwrap_or(inner);
            }
            rest = &inner[1..];
        }
        let value = rest.strip_prefix(' ').ok_or_else(bad)?;
        let value = value.parse::<f64>().map_err(|_| bad())?;
        Ok(Sample {
            name: name.to_owned(),
            labels,
            value,
        })
    }

    /// Counters with a different value in every field.
    fn counters() -> Counters {
        let mut c = Counters {
            open: 3,
            accepted: 10,
            refused: 1,
            upgraded: 7,
            messages_in: 41,
            messages_out: 42,
            bytes_in: 4_096,
            bytes_out: 2_048,
            dropped: 5,
            http_requests: 6,
            held: 2,
            streams: 8,
            publishes_refused: 4,
            tls_failed: 9,
            ..Counters::default()
        };
        for (i, n) in c.handshake_failed.iter_mut().enumerate() {
            *n = 100 + i as u64;
        }
        for (i, n) in c.closes.iter_mut().enumerate() {
            *n = 200 + i as u64;
        }
        c.closes[3] = 0; // a zero is written too
        for (i, n) in c.upgrades_refused.iter_mut().enumerate() {
            *n = 300 + i as u64;
        }
        c
    }

    fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
        let labels: Vec<_> = label
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        samples
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
            .value
    }

    #[test]
    fn a_server_s_counters_parse_with_every_value_in_place() {
        let c = counters();
        let mut out = String::new();
        c.write_prometheus(&mut out);
        let samples = parse(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        let plain = [
            ("wsloop_connections_open", c.open),
            ("wsloop_connections_accepted_total", c.accepted),
            ("wsloop_connections_refused_total", c.refused),
            ("wsloop_upgrades_total", c.upgraded),
            ("wsloop_http_requests_total", c.http_requests),
            ("wsloop_held_requests", c.held),
            ("wsloop_event_streams", c.streams),
            ("wsloop_messages_in_total", c.messages_in),
            ("wsloop_messages_out_total", c.messages_out),
            ("wsloop_bytes_in_total", c.bytes_in),
            ("wsloop_bytes_out_total", c.bytes_out),
            ("wsloop_sends_dropped_total", c.dropped),
            ("wsloop_publishes_refused_total", c.publishes_refused),
            ("wsloop_tls_failures_total", c.tls_failed),
        ];
        for (name, n) in plain {
            assert_eq!(value(&samples, name, None), n as f64, "{name}");
        }
        for (reason, n) in HANDSHAKE_REASONS.iter().zip(c.handshake_failed) {
            let label = Some(("reason", *reason));
            let got = value(&samples, "wsloop_handshake_failures_total", label);
            assert_eq!(got, n as f64, "{reason}");
        }
        for code in CODES {
            let label = code.to_string();
            let got = value(&samples, "wsloop_closes_total", Some(("code", &label)));
            assert_eq!(got, c.closes_by_code(code) as f64, "{code}");
        }
        let other = value(&samples, "wsloop_closes_total", Some(("code", "other")));
        assert_eq!(other, c.closes_other() as f64);
        let statuses = REFUSED_STATUSES.iter().map(u16::to_string);
        for (status, n) in statuses.chain(["other".into()]).zip(c.upgrades_refused) {
            let label = Some(("status", status.as_str()));
            let got = value(&samples, "wsloop_upgrades_refused_total", label);
            assert_eq!(got, n as f64, "{status}");
        }
        let count =
            plain.len() + HANDSHAKE_REASONS.len() + CODES.len() + 1 + REFUSED_STATUSES.len() + 1;
        assert_eq!(samples.len(), count, "no sample but these");
        // Gauges are the values that go down; everything else counts.
        for line in out.lines().filter(|l| l.starts_with("# TYPE ")) {
            let gauge = line.ends_with(" gauge");
            let named = [
                "wsloop_connections_open",
                "wsloop_held_requests",
                "wsloop_event_streams",
            ]
            .iter()
            .any(|n| line == format!("# TYPE {n} gauge"));
            assert_eq!(gauge, named, "{line}");
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = String::new();
        let mut m = Exposition::new(&mut out);
        let values = [
            "plain",
            "a \"quoted\" word",
            "back\\slash",
            "two\nlines",
            "",
        ];
        m.counter_by(
            "odd_total",
            "Help with \\ and a\nline feed.",
            "v",
            values.map(|v| (v, 1)),
        );
        m.gauge("after", "Still readable \"here\".", 7);
        let samples = parse(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        let read: Vec<&str> = samples[..values.len()]
            .iter()
            .map(|s| s.labels[0].1.as_str())
            .collect();
        assert_eq!(read, values);
        assert_eq!(
            out.lines().count(),
            2 + values.len() + 3,
            "no raw line feed"
        );
        assert!(out.starts_with("# HELP odd_total Help with \\\\ and a\\nline feed.\n"));
        assert!(out.contains("\"two\\nlines\""), "{out}");
        assert!(
            out.ends_with("# HELP after Still readable \"here\".\n# TYPE after gauge\nafter 7\n")
        );
    }

    #[test]
    fn the_checker_refuses_what_prometheus_would() {
        let bad = [
            "x_total 1",                                                          // no line feed
            "x_total 1\n",                                                        // no HELP, TYPE
            "# HELP x h\nx 1\n",                                                  // no TYPE
            "# HELP x h\n# TYPE x gauge\n# HELP x h\nx 1\n",                      // HELP twice
            "# HELP x h\n# TYPE x gauge\nx{a=\"1} 1\n",                           // open quote
            "# HELP x h\n# TYPE x gauge\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n",           // series twice
            "# HELP 1x h\n# TYPE 1x gauge\n1x 1\n",                               // bad name
            "# HELP x h\n# TYPE x gauge\nx{__a=\"1\"} 1\n",                       // reserved label
            "# HELP x h\n# TYPE x gauge\n# HELP y h\n# TYPE y gauge\ny 1\nx 1\n", // apart
            "# HELP x h\n# TYPE x gauge\nx one\n",                                // not a number
        ];
        for text in bad {
            assert!(parse(text).is_err(), "accepted {text:?}");
        }
        let good = "# HELP x h\n# TYPE x gauge\nx{a=\"1\",b=\"\\\"\"} 1\n# other\n";
        assert_eq!(parse(good).unwrap()[0].labels[1].1, "\"");
    }

    #[test]
    #[should_panic(expected = "not a metric name")]
    fn a_name_outside_the_format_panics() {
        Exposition::new(&mut String::new()).counter("wsloop-open_total", "", 1);
    }

    #[test]
    #[should_panic(expected = "end in _total")]
    fn a_counter_without_total_panics() {
        Exposition::new(&mut String::new()).counter("wsloop_open", "", 1);
    }

    #[test]
    #[should_panic(expected = "not a label name")]
    fn a_reserved_label_name_panics() {
        Exposition::new(&mut String::new()).counter_by("x_total", "", "__name", [("a", 1)]);
    }
}
