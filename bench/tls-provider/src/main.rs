//! What one full TLS 1.3 handshake costs a rustls server with the ring
//! provider and with the aws-lc-rs provider: an ECDSA P-256 certificate
//! (wsloop's test one), X25519, no resumption and no session tickets, as
//! wsloop's tls feature serves. Client and server talk in memory, with no
//! sockets, and only the server's calls are timed.
//!
//! ```text
//! cd bench/tls-provider && cargo run --release -- [--handshakes N] [--rounds R]
//! ```
//!
//! Each round runs N handshakes with each provider, the order alternating
//! between rounds so that a slow moment on a shared machine does not
//! always fall on the same one; the medians over the rounds are printed,
//! with the median of the per-round ratios to the first provider. Built with one provider alone
//! (`--no-default-features --features ring`), it measures that one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, Connection, NamedGroup, RootCertStore, ServerConfig,
    ServerConnection,
};

const CERT: &[u8] = include_bytes!("../../../tests/tls/server.pem");
const KEY: &[u8] = include_bytes!("../../../tests/tls/server.key");
const CA: &[u8] = include_bytes!("../../../tests/tls/ca.pem");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut count, mut rounds) = (2_000usize, 5usize);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.parse::<usize>().ok());
        match (flag.as_str(), value) {
            ("--handshakes", Some(n)) if n > 0 => count = n,
            ("--rounds", Some(n)) if n > 0 => rounds = n,
            _ => {
                eprintln!("usage: tls-provider [--handshakes N] [--rounds R]");
                std::process::exit(2);
            }
        }
    }
    let sides = providers()
        .into_iter()
        .map(|(name, provider)| Side::new(name, provider))
        .collect::<Result<Vec<_>, _>>()?;
    if sides.is_empty() {
        return Err("built with no provider: enable ring or aws-lc-rs".into());
    }
    for side in &sides {
        // One handshake first: what it agreed on, and a warm cache.
        let (_, _, agreed) = handshake(side)?;
        println!("{:<10} {agreed}", side.name);
    }
    // Per side, the server's and the client's microseconds per handshake
    // in each round.
    let mut server_us = vec![Vec::new(); sides.len()];
    let mut client_us = vec![Vec::new(); sides.len()];
    for round in 0..rounds {
        for k in 0..sides.len() {
            let i = (k + round) % sides.len();
            let (mut server, mut client) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..count {
                let (s, c, _) = handshake(&sides[i])?;
                server += s;
                client += c;
            }
            let per = |d: Duration| d.as_secs_f64() * 1e6 / count as f64;
            server_us[i].push(per(server));
            client_us[i].push(per(client));
            eprintln!(
                "round {}  {:<10} server {:>7.1} us  client {:>7.1} us per handshake",
                round + 1,
                sides[i].name,
                per(server),
                per(client)
            );
        }
    }
    println!(
        "\nFull TLS 1.3 handshakes in memory (ECDSA P-256, X25519), medians of {rounds} rounds x {count}:"
    );
    println!(
        "  {:<10} {:>14} {:>14} {:>14}",
        "provider", "server us/hs", "vs first", "client us/hs"
    );
    for (i, side) in sides.iter().enumerate() {
        // The ratio within each round, then its median: the two ran
        // side by side, so a slow round slows both.
        let ratios: Vec<f64> = server_us[i]
            .iter()
            .zip(&server_us[0])
            .map(|(s, first)| s / first)
            .collect();
        println!(
            "  {:<10} {:>14.1} {:>13.2}x {:>14.1}",
            side.name,
            median(&server_us[i]),
            median(&ratios),
            median(&client_us[i])
        );
    }
    Ok(())
}

/// The providers this build has, each limited to X25519 (aws-lc-rs would
/// otherwise offer the X25519MLKEM768 hybrid first, a different and larger
/// key exchange).
fn providers() -> Vec<(&'static str, CryptoProvider)> {
    let mut all = Vec::new();
    #[cfg(feature = "ring")]
    all.push(("ring", rustls::crypto::ring::default_provider()));
    #[cfg(feature = "aws-lc-rs")]
    all.push(("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider()));
    for (_, provider) in &mut all {
        provider
            .kx_groups
            .retain(|g| g.name() == NamedGroup::X25519);
    }
    all
}

/// A provider's server and client settings.
struct Side {
    name: &'static str,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Side {
    fn new(name: &'static str, provider: CryptoProvider) -> Result<Side, rustls::Error> {
        let provider = Arc::new(provider);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(CERT)
            .collect::<Result<_, _>>()
            .expect("tests/tls/server.pem is a PEM certificate chain");
        let key = PrivateKeyDer::from_pem_slice(KEY).expect("tests/tls/server.key is a PEM key");
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // As wsloop: no tickets, so each handshake is all it costs.
        server.send_tls13_tickets = 0;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(CA) {
            roots.add(ca.expect("tests/tls/ca.pem is a PEM certificate"))?;
        }
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.resumption = Resumption::disabled();
        Ok(Side {
            name,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// One full handshake; the time spent in the server's calls and in the
/// client's, and what they agreed on.
fn handshake(side: &Side) -> Result<(Duration, Duration, String), rustls::Error> {
    let name = ServerName::try_from("localhost").expect("a valid name");
    let mut client_time = Duration::ZERO;
    let t = Instant::now();
    let mut client: Connection = ClientConnection::new(side.client.clone(), name)?.into();
    client_time += t.elapsed();
    let t = Instant::now();
    let mut server: Connection = ServerConnection::new(side.server.clone())?.into();
    let mut server_time = t.elapsed();
    let mut wire = Vec::with_capacity(8 * 1024);
    while client.is_handshaking() || server.is_handshaking() {
        let before = wire.len();
        let (write, read) = pass(&mut client, &mut server, &mut wire)?;
        client_time += write;
        server_time += read;
        let (write, read) = pass(&mut server, &mut client, &mut wire)?;
        server_time += write;
        client_time += read;
        if wire.len() == before {
            return Err(rustls::Error::General("the handshake stalled".into()));
        }
    }
    let known = |v: Option<String>| v.unwrap_or_else(|| "?".to_owned());
    let agreed = format!(
        "{} {} {}",
        known(server.protocol_version().map(|v| format!("{v:?}"))),
        known(
            server
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
        ),
        known(
            server
                .negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name()))
        ),
    );
    Ok((server_time, client_time, agreed))
}

/// Moves what `from` has to send into `to`: the time `from` spent writing
/// its records, and the time `to` spent reading and handling them. `wire`
/// only grows, so that a stalled handshake shows.
fn pass(
    from: &mut Connection,
    to: &mut Connection,
    wire: &mut Vec<u8>,
) -> Result<(Duration, Duration), rustls::Error> {
    let start = wire.len();
    let t = Instant::now();
    while from.wants_write() {
        from.write_tls(wire).expect("writing to a Vec cannot fail");
    }
    let writing = t.elapsed();
    let t = Instant::now();
    let mut records = &wire[start..];
    while !records.is_empty() {
        to.read_tls(&mut records)
            .expect("reading from a slice cannot fail");
        to.process_new_packets()?;
    }
    Ok((writing, t.elapsed()))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
