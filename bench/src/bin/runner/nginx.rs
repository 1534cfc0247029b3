//! nginx terminating TLS in front of a plain server: the OpenSSL peer of
//! the TLS benchmark. One worker process (the servers get one thread each),
//! full handshakes only, and the server's CPU and memory counted together
//! with nginx's master and worker.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to put nginx in front of a server.
#[derive(Debug, Clone)]
pub struct Front {
    pub program: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// nginx, running; stopped with its workers when dropped.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    pub addr: SocketAddr,
}

impl Front {
    /// Starts nginx on a free port, proxying to `backend` (`HOST:PORT`),
    /// and waits until it accepts connections.
    pub fn start(&self, backend: &str) -> Result<Nginx, String> {
        let addr = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "wsloop-bench-nginx-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(&dir, addr, backend, &self.cert, &self.key))
            .map_err(|e| format!("{}: {e}", conf.display()))?;
        let child = Command::new(&self.program)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so that the master and its worker go
            // together whatever happens to the runner's handle.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        let mut nginx = Nginx { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = nginx.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("nginx exited ({status}): {err}"));
            }
            if Instant::now() > deadline {
                return Err("nginx did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }
}

impl Nginx {
    /// The master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let mut pids = vec![master];
        pids.extend(children(master));
        pids
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The whole group: the master would leave its worker running if it
        // were killed alone.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The most connections nginx can proxy with the descriptors it inherits:
/// two each (the client's and the upstream's), less a few for itself. It
/// cannot raise its own limit without CAP_SYS_RESOURCE, which a container
/// may not give it.
pub fn max_connections() -> usize {
    // "Max open files            20000                20000                files"
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        })
        .unwrap_or(1024);
    soft.saturating_sub(100) / 2
}

/// A port free now on 127.0.0.1 (nginx needs one in its configuration).
fn free_port() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // The parent is the second field after the command name.
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// The configuration: TLS 1.3 and 1.2 with X25519 first, no session
/// tickets and no session cache (every handshake a full one, as for the
/// rustls servers), and the WebSocket upgrade passed on.
fn config(dir: &Path, addr: SocketAddr, backend: &str, cert: &Path, key: &Path) -> String {
    let dir = dir.display();
    format!(
        "worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 30000;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream backend {{
        server {backend};
    }}
    server {{
        listen {addr} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ecdh_curve X25519:prime256v1;
        ssl_session_cache off;
        ssl_session_tickets off;
        ssl_conf_command NumTickets 0;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection upgrade;
            proxy_set_header Host $http_host;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}
}}
",
        cert = cert.display(),
        key = key.display(),
    )
}
