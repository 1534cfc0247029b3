//! `GET /metrics`: wsloop's counters, and the Redis bridge's with
//! `--redis`, in the Prometheus text format, for a scraper on loopback or
//! at an address given with `--metrics-allow`. Anyone else gets 404, as
//! for a path that does not exist: the counters say how busy the server
//! is and how its clients fail, which is the operator's business.
//!
//! Who asks is `peer` as wsloop hands it over: the socket's address, or,
//! from a `--trusted-proxy`, the client address the proxy forwards. So a
//! request through the proxy is judged by its client, not by the proxy
//! (which is often on loopback): an outside client gets 404 through nginx
//! as it would directly, and a scraper allowed here may read through the
//! proxy too. That holds only while the proxy names the client in every
//! request, as docs/nginx.conf does with `X-Forwarded-For`; a request
//! from a trusted proxy that names no client is judged by the proxy's own
//! address. Scrape each chat node directly, not through a proxy that
//! spreads requests over several: each node counts its own connections.

use std::net::{IpAddr, SocketAddr};

use wsloop::{metrics, Publisher, Response};

use crate::Chat;

impl Chat {
    /// Whether `peer` may read the metrics: loopback, or allowed by flag.
    pub fn reads_metrics(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        ip.is_loopback() || self.settings.metrics_allow.contains(&ip)
    }

    /// The counters now: every worker's summed, then the bridge's.
    pub fn metrics(&self, topics: &Publisher<'_>) -> Response {
        let mut body = String::new();
        topics.counters().write_prometheus(&mut body);
        if let Some(bridge) = self.bridge.get() {
            bridge.counters().write_prometheus(&mut body);
        }
        Response::ok(metrics::CONTENT_TYPE, body).with_header("Cache-Control", "no-store")
    }
}

/// An address for `--metrics-allow`, as `reads_metrics` compares it: an
/// IPv4 address mapped into IPv6 (`::ffff:10.0.0.1`) is the IPv4 one.
pub fn allowed(ip: &str) -> Option<IpAddr> {
    ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}
