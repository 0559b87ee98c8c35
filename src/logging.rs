//! Logs go to `<state-dir>/<session>/orch.<date>.log`, never to the terminal, which
//! belongs to the user (and later to the dashboard). A new file each day; the last
//! [`KEEP_DAYS`] are kept, older ones are deleted. Level from `ORCH_LOG`, then `RUST_LOG`,
//! else `info`.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Days of logs kept.
pub const KEEP_DAYS: usize = 7;

/// Starts logging into `dir`. Keep the guard alive until exit: dropping it flushes.
pub fn init(dir: &Path) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_env("ORCH_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("orch")
        .filename_suffix("log")
        .max_log_files(KEEP_DAYS)
        .build(dir)
        .ok()?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .try_init()
        .is_ok();
    installed.then_some(guard)
}
