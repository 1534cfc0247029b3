//! The record layer of one connection: [`ServerTls`], rustls's unbuffered
//! server connection between the socket's bytes and the session, and the
//! per-thread buffers it reads and seals in.

use std::cell::Cell;
use std::fmt;

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
};

/// The most plaintext sealed for one send: four full records.
pub const SEAL_BATCH: usize = 4 * 16 * 1024;

/// Why a connection's TLS ended it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The peer broke TLS, or the handshake failed; rustls's reason. An
    /// alert for it, where TLS has one, is queued in the output.
    Protocol(rustls::Error),
    /// The peer sent more of an unfinished record or handshake message than
    /// [`TlsConfig::max_pending_input`](super::TlsConfig::max_pending_input).
    TooMuchPending,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::Protocol(e) => write!(f, "TLS failed: {e}"),
            TlsFailure::TooMuchPending => {
                f.write_str("the peer sent more of an unfinished TLS message than the limit")
            }
        }
    }
}

impl std::error::Error for TlsFailure {}

/// What a read of records brought, besides the plaintext handed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    /// More may come.
    Open,
    /// The peer sent close_notify: it sends nothing more.
    PeerClosed,
}

/// The server side of one connection's TLS, sans IO: record bytes in,
/// plaintext out to a callback; plaintext in, record bytes out.
pub struct ServerTls {
    conn: UnbufferedServerConnection,
    /// The end of the input not yet taken: part of a record, or a
    /// handshake message over several records. No allocation when empty.
    pending: Vec<u8>,
    /// Records to send before any other: the handshake's, an alert, or
    /// what the socket refused. No allocation when empty.
    out: Vec<u8>,
    /// Bytes of the session's plaintext sealed into `out` and not yet
    /// reported written: reported once `out` is on the wire.
    owed: usize,
    /// TLS failed: nothing more is read or sealed.
    failed: bool,
    /// Our close_notify is sealed.
    notified: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("pending", &self.pending.len())
            .field("out", &self.out.len())
            .field("owed", &self.owed)
            .field("failed", &self.failed)
            .finish()
    }
}

thread_local! {
    /// Each worker's buffer for one decrypted record on its way to the
    /// session, which unmasks in place.
    static PLAIN: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// Each worker's buffers for sealing: the plaintext gathered from the
    /// session, and the records made of it.
    static SEAL: Cell<(Vec<u8>, Vec<u8>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

impl ServerTls {
    /// A layer over a fresh rustls connection, before its first byte.
    pub(super) fn new(conn: UnbufferedServerConnection) -> Self {
        ServerTls {
            conn,
            pending: Vec::new(),
            out: Vec::new(),
            owed: 0,
            failed: false,
            notified: false,
        }
    }

    /// Takes record bytes as read from the socket. Each record's plaintext
    /// goes to `plain`, in order; handshake records and alerts to send are
    /// queued (see [`ServerTls::queued`]). Bytes of a record not yet
    /// complete are kept for the next call, up to `max_pending`.
    pub fn read_records(
        &mut self,
        input: &mut [u8],
        max_pending: usize,
        mut plain: impl FnMut(&mut [u8]),
    ) -> Result<Records, TlsFailure> {
        if self.failed {
            return Ok(Records::Open);
        }
        let mut scratch = PLAIN.take();
        // The usual read holds whole records and is taken where it lies;
        // only one that follows a partial record is copied after it.
        // Either way, what rustls did not discard is kept in `pending`: it
        // may have read into it already (a handshake message spread over
        // records), and must be shown the same bytes again.
        let result = if self.pending.is_empty() {
            let (taken, result) = self.take_records(input, &mut scratch, &mut plain);
            self.pending.extend_from_slice(&input[taken..]);
            result
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(input);
            let (taken, result) = self.take_records(&mut pending, &mut scratch, &mut plain);
            pending.drain(..taken);
            self.pending = pending;
            result
        };
        PLAIN.set(scratch);
        match result {
            Ok(_) if self.pending.len() > max_pending => {
                self.fail();
                Err(TlsFailure::TooMuchPending)
            }
            Ok(records) => {
                if self.pending.is_empty() {
                    self.pending = Vec::new();
                }
                Ok(records)
            }
            Err(e) => {
                self.fail();
                Err(TlsFailure::Protocol(e))
            }
        }
    }

    /// Runs rustls over `input` until it needs more: how many bytes it
    /// took, and what it came to.
    fn take_records(
        &mut self,
        input: &mut [u8],
        scratch: &mut Vec<u8>,
        plain: &mut impl FnMut(&mut [u8]),
    ) -> (usize, Result<Records, rustls::Error>) {
        let mut taken = 0;
        loop {
            let status = self.conn.process_tls_records(&mut input[taken..]);
            let discard = status.discard;
            let records = match status.state {
                Err(e) => Some(Err(e)),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut failed = None;
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => {
                                scratch.clear();
                                scratch.extend_from_slice(record.payload);
                                plain(scratch);
                            }
                            Err(e) => {
                                failed = Some(Err(e));
                                break;
                            }
                        }
                    }
                    failed
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode_handshake(&mut self.out, &mut data);
                    None
                }
                // Queued: the caller writes `out` before anything else.
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    None
                }
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    Some(Ok(Records::PeerClosed))
                }
                Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => {
                    Some(Ok(Records::Open))
                }
                // Early data is not accepted (rustls's default), so none
                // comes; were it to, or a state new to this code, the
                // connection ends rather than guess.
                Ok(_) => Some(Err(rustls::Error::General("unexpected TLS state".into()))),
            };
            taken += discard;
            if let Some(records) = records {
                return (taken, records);
            }
        }
    }

    /// After an error: queue the alert rustls has for it, if any, and
    /// take nothing more.
    fn fail(&mut self) {
        self.failed = true;
        // rustls hands out a queued alert before it looks at input again;
        // one turn takes it. A second would read on past the error.
        let status = self.conn.process_tls_records(&mut self.pending);
        if let Ok(ConnectionState::EncodeTlsData(mut data)) = status.state {
            encode_handshake(&mut self.out, &mut data);
        }
        self.pending = Vec::new();
    }

    /// Records queued to be sent before anything else.
    pub fn queued(&self) -> &[u8] {
        &self.out
    }

    /// Marks `n` bytes of [`ServerTls::queued`] as sent. Returns the bytes
    /// of the session's plaintext now on the wire, once all are.
    pub fn sent(&mut self, n: usize) -> usize {
        self.out.drain(..n.min(self.out.len()));
        if self.out.is_empty() {
            self.out = Vec::new();
            std::mem::take(&mut self.owed)
        } else {
            0
        }
    }

    /// Seals plaintext into records, appended to `records`. None if it
    /// cannot be sealed: the handshake is not done, or TLS failed.
    pub fn seal(&mut self, plaintext: &[u8], records: &mut Vec<u8>) -> Option<()> {
        self.write_traffic(records, plaintext.len(), |traffic, out| {
            traffic.encrypt(plaintext, out)
        })
    }

    /// Seals a close_notify alert, appended to `records`, once: None
    /// the second time, as before the handshake is done.
    pub fn seal_close_notify(&mut self, records: &mut Vec<u8>) -> Option<()> {
        if std::mem::replace(&mut self.notified, true) {
            return None;
        }
        self.write_traffic(records, 0, |traffic, out| traffic.queue_close_notify(out))
    }

    fn write_traffic(
        &mut self,
        records: &mut Vec<u8>,
        hint: usize,
        mut f: impl FnMut(
            &mut rustls::unbuffered::WriteTraffic<'_, ServerConnectionData>,
            &mut [u8],
        ) -> Result<usize, EncryptError>,
    ) -> Option<()> {
        if self.failed {
            return None;
        }
        // Handshake records rustls still has queued (a reply to a key
        // update) go out first. rustls is shown the input it kept, which
        // holds no whole record: nothing is read here.
        for _ in 0..8 {
            let status = self.conn.process_tls_records(&mut self.pending);
            let discard = status.discard;
            let done = match status.state.ok()? {
                ConnectionState::WriteTraffic(mut traffic) => {
                    let mut exhausted = false;
                    // A record's header and tag: 22 bytes in TLS 1.3, 29 in 1.2.
                    let guess = hint + hint.div_ceil(16 * 1024).max(1) * 32;
                    encode(records, guess, |out| match f(&mut traffic, out) {
                        Ok(n) => Ok(n),
                        Err(EncryptError::InsufficientSize(e)) => Err(e),
                        Err(_) => {
                            exhausted = true;
                            Ok(0)
                        }
                    });
                    Some((!exhausted).then_some(()))
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    encode_handshake(records, &mut data);
                    None
                }
                ConnectionState::TransmitTlsData(data) => {
                    data.done();
                    None
                }
                ConnectionState::PeerClosed => None,
                _ => Some(None),
            };
            self.pending.drain(..discard.min(self.pending.len()));
            if let Some(done) = done {
                return done;
            }
        }
        None
    }

    /// Keeps records the socket refused (the unsent end of a send), which
    /// carry `plaintext` bytes of the session's output.
    pub fn keep_unsent(&mut self, records: &[u8], plaintext: usize) {
        self.out.extend_from_slice(records);
        self.owed += plaintext;
    }

    /// Whether TLS failed on this connection.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Bytes this connection holds of its own, beyond rustls's state.
    pub fn buffered(&self) -> usize {
        self.pending.capacity() + self.out.capacity()
    }

    /// Runs `f` with this thread's sealing buffers: plaintext to gather,
    /// records to fill. Both are cleared first and kept for the next call.
    pub fn with_seal_buffers<R>(f: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> R) -> R {
        let (mut plain, mut records) = SEAL.take();
        plain.clear();
        records.clear();
        let r = f(&mut plain, &mut records);
        // A burst of a large message leaves big buffers; keep them only
        // up to what one send seals.
        if plain.capacity() > 2 * SEAL_BATCH {
            plain = Vec::new();
        }
        if records.capacity() > 2 * SEAL_BATCH {
            records = Vec::new();
        }
        SEAL.set((plain, records));
        r
    }
}

/// Appends the handshake record (or alert) rustls asks to be encoded to
/// `out`.
fn encode_handshake(out: &mut Vec<u8>, data: &mut EncodeTlsData<'_, ServerConnectionData>) {
    encode(out, 512, |out| match data.encode(out) {
        Ok(n) => Ok(n),
        Err(EncodeError::InsufficientSize(e)) => Err(e),
        Err(EncodeError::AlreadyEncoded) => Ok(0),
    });
}

/// Appends what `f` writes to `out`, growing it as `f` asks.
fn encode(
    out: &mut Vec<u8>,
    guess: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, InsufficientSizeError>,
) {
    let start = out.len();
    let mut room = guess;
    loop {
        out.resize(start + room, 0);
        match f(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return;
            }
            Err(InsufficientSizeError { required_size }) if required_size > room => {
                room = required_size;
            }
            Err(_) => {
                out.truncate(start);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    use rustls::pki_types::ServerName;
    use rustls::ClientConnection;

    use super::*;
    use crate::tls::{client_config, TlsConfig, TlsError};

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls")
    }

    fn server() -> TlsConfig {
        TlsConfig::from_pem_files(dir().join("server.pem"), dir().join("server.key")).unwrap()
    }

    fn client() -> ClientConnection {
        let name = ServerName::try_from("localhost").unwrap();
        ClientConnection::new(client_config(dir().join("ca.pem")).unwrap(), name).unwrap()
    }

    /// Moves the client's records to the server `step` bytes at a time,
    /// and the server's back, until neither has more; returns the
    /// plaintext the server read.
    fn exchange(client: &mut ClientConnection, server: &mut ServerTls, step: usize) -> Vec<u8> {
        let mut got = Vec::new();
        for _ in 0..1_000 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            let queued = server.queued().to_vec();
            let sent = server.sent(queued.len());
            assert_eq!(sent, 0, "no session plaintext was owed");
            if wire.is_empty() && queued.is_empty() {
                return got;
            }
            for chunk in wire.chunks_mut(step) {
                let records = server
                    .read_records(chunk, 80 * 1024, |p| got.extend_from_slice(p))
                    .unwrap();
                assert_eq!(records, Records::Open);
            }
            let mut from_server = &queued[..];
            while !from_server.is_empty() {
                client.read_tls(&mut from_server).unwrap();
            }
            client.process_new_packets().unwrap();
        }
        panic!("the exchange did not settle");
    }

    #[test]
    fn a_handshake_split_at_every_byte_completes_and_carries_data() {
        let config = server();
        for step in [1, 2, 3, 7, 100, 1 << 20] {
            let mut server = config.accept().unwrap();
            let mut client = client();
            client
                .writer()
                .write_all(b"GET / HTTP/1.1\r\n\r\n")
                .unwrap();
            let got = exchange(&mut client, &mut server, step);
            assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n", "step {step}");
            assert_eq!(client.alpn_protocol(), Some(&b"http/1.1"[..]));
            assert!(!client.is_handshaking());

            let mut records = Vec::new();
            server
                .seal(b"HTTP/1.1 200 OK\r\n\r\n", &mut records)
                .unwrap();
            client.read_tls(&mut &records[..]).unwrap();
            client.process_new_packets().unwrap();
            let mut answer = [0; 19];
            client.reader().read_exact(&mut answer).unwrap();
            assert_eq!(&answer, b"HTTP/1.1 200 OK\r\n\r\n");
            assert_eq!(server.buffered(), 0, "an idle connection holds no buffer");
        }
    }

    #[test]
    fn a_large_message_is_sealed_into_several_records() {
        let mut server = server().accept().unwrap();
        let mut client = client();
        exchange(&mut client, &mut server, 1 << 20);
        let message: Vec<u8> = (0..SEAL_BATCH).map(|i| (i % 251) as u8).collect();
        let mut records = Vec::new();
        server.seal(&message, &mut records).unwrap();
        assert!(records.len() > message.len() + 3 * 22, "four records");
        let mut wire = &records[..];
        let mut got = Vec::new();
        while !wire.is_empty() {
            client.read_tls(&mut wire).unwrap();
            client.process_new_packets().unwrap();
            let mut piece = [0; 4096];
            while let Ok(n @ 1..) = client.reader().read(&mut piece) {
                got.extend_from_slice(&piece[..n]);
            }
        }
        assert_eq!(got, message);
    }

    #[test]
    fn plain_http_to_a_tls_port_fails_with_an_alert() {
        let mut server = server().accept().unwrap();
        let mut request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let err = server
            .read_records(&mut request, 80 * 1024, |_| panic!("no plaintext"))
            .unwrap_err();
        assert!(matches!(err, TlsFailure::Protocol(_)), "{err}");
        assert!(server.is_failed());
        // An alert record: content type 21.
        assert_eq!(server.queued().first(), Some(&21), "{:?}", server.queued());
        let mut more = b"more".to_vec();
        assert_eq!(
            server.read_records(&mut more, 1, |_| panic!()),
            Ok(Records::Open)
        );
        assert!(server.seal(b"x", &mut Vec::new()).is_none());
    }

    #[test]
    fn a_handshake_message_rustls_refuses_mid_read_fails_without_a_panic() {
        // A ClientHello header claiming 65 KiB, then one claiming 32 bytes
        // of nonsense: rustls has read into both when it refuses them, and
        // must be shown the bytes it kept to hand out its alert.
        let mut too_long = vec![22, 3, 1, 0, 4, 1, 1, 0, 0];
        let mut junk = vec![22, 3, 1, 0, 32];
        junk.extend([0xee; 32]);
        for input in [&mut too_long, &mut junk] {
            let mut server = server().accept().unwrap();
            let err = server
                .read_records(input, 80 * 1024, |_| panic!())
                .unwrap_err();
            assert!(matches!(err, TlsFailure::Protocol(_)), "{err}");
            assert!(server.is_failed());
        }
    }

    #[test]
    fn an_unfinished_record_past_the_limit_fails() {
        let mut server = server().accept().unwrap();
        // A handshake record header announcing 16 KiB, then part of it.
        let mut head = vec![22, 3, 1, 0x40, 0x00];
        head.extend(std::iter::repeat_n(1, 1000));
        let err = server.read_records(&mut head, 500, |_| {}).unwrap_err();
        assert_eq!(err, TlsFailure::TooMuchPending);
    }

    #[test]
    fn the_peer_s_close_notify_is_reported() {
        let mut server = server().accept().unwrap();
        let mut client = client();
        exchange(&mut client, &mut server, 1 << 20);
        client.send_close_notify();
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        let records = server.read_records(&mut wire, 1024, |_| {}).unwrap();
        assert_eq!(records, Records::PeerClosed);
    }

    #[test]
    fn a_reload_changes_the_certificate_for_new_handshakes() {
        let tmp = std::env::temp_dir().join(format!("wsloop-tls-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let (cert, key) = (tmp.join("cert.pem"), tmp.join("key.pem"));
        std::fs::copy(dir().join("server.pem"), &cert).unwrap();
        std::fs::copy(dir().join("server.key"), &key).unwrap();
        let config = TlsConfig::from_pem_files(&cert, &key).unwrap();
        let leaf = |name: &str| {
            let pem = std::fs::read(dir().join(name)).unwrap();
            CertificateDer::pem_slice_iter(&pem)
                .next()
                .unwrap()
                .unwrap()
        };
        let seen = |config: &TlsConfig| {
            let mut client = client();
            exchange(&mut client, &mut config.accept().unwrap(), 1 << 20);
            client.peer_certificates().unwrap()[0].clone()
        };
        assert_eq!(seen(&config), leaf("server.pem"));

        // A half-written key: the reload fails, naming the file, and the
        // old certificate stays.
        std::fs::copy(dir().join("renewed.pem"), &cert).unwrap();
        std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
        let err = config.reload_handle().reload().unwrap_err();
        assert!(err.to_string().contains("key.pem"), "{err}");
        assert!(
            err.to_string().contains("-----END PRIVATE KEY-----"),
            "{err}"
        );
        assert_eq!(seen(&config), leaf("server.pem"));

        std::fs::copy(dir().join("renewed.key"), &key).unwrap();
        config.reload_handle().reload().unwrap();
        assert_eq!(seen(&config), leaf("renewed.pem"));
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn setup_errors_name_the_file() {
        let missing = dir().join("missing.pem");
        let err = TlsConfig::from_pem_files(&missing, dir().join("server.key")).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }));
        assert!(err.to_string().contains("missing.pem"), "{err}");

        // The key for the certificate in the other file.
        let err = TlsConfig::from_pem_files(dir().join("server.pem"), dir().join("renewed.key"))
            .unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err}");
        assert!(err.to_string().contains("renewed.key"), "{err}");

        // A key where the certificate should be.
        let err = TlsConfig::from_pem_files(dir().join("server.key"), dir().join("server.key"))
            .unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        let err = TlsConfig::from_pem_files(dir().join("server.pem"), dir().join("server.pem"))
            .unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    }
}
