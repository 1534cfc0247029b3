//! Fan-out over real sockets: one topic, `bench/src/bin/fanout_client.rs`
//! as subscribers and publisher, and the server's CPU per delivery.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};
use wsloop_bench::Running;

use crate::procfs::{clock_ticks, cpu_ticks};
use crate::report::num;
use crate::Server;

/// Subscribers on the topic, the publisher among them, and the messages
/// it keeps in flight.
pub const SUBSCRIBERS: usize = 1_000;
pub const IN_FLIGHT: usize = 8;

/// Payload sizes: a chat line and a larger update.
pub const SIZES: [usize; 2] = [20, 1_024];

/// The fan-out load generator.
pub struct FanoutClient {
    pub program: PathBuf,
}

/// One run against a fresh server: deliveries per second, as the client
/// counted them, and the server's CPU from the moment every subscriber is
/// connected to the moment the last one has the last message.
pub fn measure(
    server: &Server,
    client: &FanoutClient,
    size: usize,
    duration: f64,
) -> Result<Value, String> {
    let running = Running::start(&server.program, &server.args, server.name)?;
    let mut child = Command::new(&client.program)
        .arg("--url")
        .arg(format!("ws://{}{}", running.addr, server.path))
        .args(["--subscribers", &SUBSCRIBERS.to_string()])
        .args(["--size", &size.to_string()])
        .args(["--in-flight", &IN_FLIGHT.to_string()])
        .args(["--duration", &duration.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the fan-out client: {e}"))?;
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let pid = running.pid();
    let mut window = None;
    let mut result = None;
    let mut line = String::new();
    while stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line.starts_with("fanout: connected") {
            window = Some((cpu_ticks(pid), Instant::now()));
        } else if line.starts_with('{') {
            // The window ends here, before the client closes its sockets.
            let end = (cpu_ticks(pid), Instant::now());
            result = serde_json::from_str::<Value>(&line)
                .ok()
                .zip(window.map(|w| (w, end)));
        }
        line.clear();
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!(
            "fan-out against {} at {size} B failed:\n{stderr}",
            server.name
        ));
    }
    let (mut result, ((cpu0, t0), (cpu1, t1))) = result.ok_or(format!(
        "the fan-out client printed no result against {}",
        server.name
    ))?;
    let secs = (t1 - t0).as_secs_f64();
    let user = (cpu1.0 - cpu0.0) as f64 / clock_ticks();
    let sys = (cpu1.1 - cpu0.1) as f64 / clock_ticks();
    let deliveries = num(&result, "count");
    let per_delivery = |cpu: f64| {
        if deliveries > 0.0 {
            cpu * 1e6 / deliveries
        } else {
            0.0
        }
    };
    result["server_cpu"] = json!((user + sys) / secs);
    result["server_us_per_op"] = json!(per_delivery(user + sys));
    result["server_user_us_per_op"] = json!(per_delivery(user));
    result["server_sys_us_per_op"] = json!(per_delivery(sys));
    Ok(result)
}
