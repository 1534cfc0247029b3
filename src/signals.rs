//! Stopping on signals, with the `signals` feature: SIGTERM and SIGINT
//! (Ctrl-C on Windows) turned into a [`ShutdownHandle`] call, so that an
//! application need not write this part itself.
//!
//! ```no_run
//! # #[cfg(feature = "signals")]
//! # fn main() -> std::io::Result<()> {
//! # struct Echo;
//! # impl wsloop::Handler for Echo {
//! #     type Data = ();
//! #     fn on_message(&mut self, _: &mut wsloop::Conn<'_>, _: wsloop::Message<'_>) {}
//! # }
//! use std::time::Duration;
//! let server = wsloop::Server::bind("127.0.0.1:9001", wsloop::Config::default(), || Echo)?;
//! // SIGTERM drains over 10 s; Ctrl-C, or a second signal, stops at once.
//! wsloop::signals::stop_on_signals(server.shutdown_handle(), Duration::from_secs(10), |line| {
//!     println!("echo: {line}")
//! })?;
//! server.join()?;
//! # Ok(()) }
//! # #[cfg(not(feature = "signals"))]
//! # fn main() {}
//! ```

use std::io;
use std::time::Duration;

use super::ShutdownHandle;

/// Starts a thread that waits for signals. The first SIGTERM
/// [drains](ShutdownHandle::drain) over `drain` (or, for a zero window,
/// [shuts down](ShutdownHandle::shutdown)); SIGINT, or any signal after
/// the first, shuts down at once. `report` is told what happens, a line
/// at a time, and once a second how many connections a drain has left.
#[cfg(unix)]
pub fn stop_on_signals(
    handle: ShutdownHandle,
    drain: Duration,
    report: impl Fn(&str) + Send + Sync + 'static,
) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("wsloop-signals".into())
        .spawn(move || {
            let mut signals = signals.forever();
            match signals.next() {
                Some(SIGTERM) if !drain.is_zero() => {
                    let open = handle.open_connections();
                    report(&format!("draining {open} connections over {drain:?}"));
                    handle.drain(drain);
                }
                Some(_) => {
                    report("shutting down");
                    return handle.shutdown();
                }
                None => return,
            }
            let report = std::sync::Arc::new(report);
            let (progress, left) = (handle.clone(), report.clone());
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_secs(1));
                let open = progress.open_connections();
                left(&format!("draining, {open} connections left"));
            });
            if signals.next().is_some() {
                report("shutting down now");
                handle.shutdown();
            }
        })?;
    Ok(())
}

/// Starts a thread that turns Ctrl-C into a shutdown. Windows has no
/// SIGTERM: the C runtime raises SIGINT on Ctrl-C, which sets a flag, and
/// the thread looks at it ten times a second. `drain` is not used.
#[cfg(windows)]
pub fn stop_on_signals(
    handle: ShutdownHandle,
    drain: Duration,
    report: impl Fn(&str) + Send + Sync + 'static,
) -> io::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let _ = drain;
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())?;
    std::thread::Builder::new()
        .name("wsloop-signals".into())
        .spawn(move || {
            while !interrupted.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            report("shutting down");
            handle.shutdown();
        })?;
    Ok(())
}
