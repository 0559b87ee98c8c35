//! Logs go to `<state-dir>/<session>/orch.<date>.log`, never to the terminal, which
//! belongs to the user (and later to the dashboard). A new file each day (UTC); the last
//! [`KEEP_DAYS`] are kept, older ones are deleted. Level from `ORCH_LOG`, then `RUST_LOG`,
//! else `info`.
//!
//! The files are opened by [`crate::state::open_append`] like every other file orch
//! writes (0600 whatever the umask, never through a symlink), which is why the daily file
//! is ours rather than `tracing_appender::rolling`'s; `tracing_appender::non_blocking`
//! still does the writing off the caller's thread.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Days of logs kept.
pub const KEEP_DAYS: usize = 7;

/// Starts logging into `dir`. Keep the guard alive until exit: dropping it flushes.
pub fn init(dir: &Path) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_env("ORCH_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let daily = DailyFile::open(dir).ok()?;
    let (writer, guard) = tracing_appender::non_blocking(daily);
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .try_init()
        .is_ok();
    installed.then_some(guard)
}

/// `orch.<YYYY-MM-DD>.log` in a folder, switching to the next day's file as the date
/// changes. A failed write (a full disk) is returned to the non-blocking writer, which
/// drops it: logging never stops orch.
pub struct DailyFile {
    dir: PathBuf,
    date: String,
    file: File,
}

impl DailyFile {
    pub fn open(dir: &Path) -> anyhow::Result<DailyFile> {
        let date = today();
        let file = crate::state::open_append(&dir.join(file_name(&date)))?;
        prune(dir, KEEP_DAYS);
        Ok(DailyFile {
            dir: dir.to_owned(),
            date,
            file,
        })
    }

    fn roll(&mut self) {
        let date = today();
        if date == self.date {
            return;
        }
        if let Ok(file) = crate::state::open_append(&self.dir.join(file_name(&date))) {
            self.file = file;
            self.date = date;
            prune(&self.dir, KEEP_DAYS);
        }
    }
}

impl Write for DailyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.roll();
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn today() -> String {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    stamp.get(..10).unwrap_or("unknown").to_owned()
}

fn file_name(date: &str) -> String {
    format!("orch.{date}.log")
}

/// Deletes all but the newest `keep` daily logs in `dir` (the dates sort as text).
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_daily_log(n))
        .collect();
    logs.sort();
    let excess = logs.len().saturating_sub(keep);
    for name in &logs[..excess] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// `orch.YYYY-MM-DD.log`.
fn is_daily_log(name: &str) -> bool {
    name.strip_prefix("orch.")
        .and_then(|n| n.strip_suffix(".log"))
        .is_some_and(|d| {
            d.len() == 10
                && d.bytes().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_days_and_nothing_else_is_touched() {
        let d = tempfile::tempdir().expect("tmp");
        for day in 1..=9 {
            std::fs::write(d.path().join(format!("orch.2026-01-0{day}.log")), "x").expect("w");
        }
        std::fs::write(d.path().join("orch.notes.log"), "mine").expect("w");
        prune(d.path(), 7);
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), 8);
        assert_eq!(left[0], "orch.2026-01-03.log");
        assert!(left.contains(&"orch.notes.log".to_owned()));
    }

    #[test]
    fn the_daily_file_is_private_whatever_the_umask_says() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tmp");
        let mut f = DailyFile::open(d.path()).expect("open");
        f.write_all(b"line\n").expect("write");
        let path = d.path().join(file_name(&today()));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
