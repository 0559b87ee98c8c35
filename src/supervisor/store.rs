//! What the supervisor keeps in `<state-dir>/<session>/`: the lock that makes it the only
//! one, the event journal, and the restart counters a new supervisor takes over.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};

use super::core::{Core, ProcState};
use super::event::Event;

pub const LOCK_FILE: &str = "supervisor.lock";
pub const JOURNAL_FILE: &str = "events.jsonl";
pub const COUNTERS_FILE: &str = "supervisor.json";
pub const CONTROL_SOCKET: &str = "control.sock";

/// Held while this process supervises the session; released when dropped or killed.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "another supervisor (pid {pid}) is already supervising session {session}; stop it first, or use it"
)]
pub struct LockHeld {
    pub pid: u32,
    pub session: String,
}

impl Lock {
    /// Takes the session's supervisor lock (an flock, so a killed supervisor never leaves
    /// a stale lock behind) and writes our pid into it.
    ///
    /// The lock goes when its holder's last descriptor closes, which for a process killed
    /// with SIGKILL is a moment after `kill` returned (the kernel tears down its memory
    /// first): a holder that is gone, or on its way out, is waited for, up to
    /// [`LOCK_WAIT`], before the lock counts as held.
    pub fn acquire(dir: &Path, session: &str) -> Result<Lock> {
        let path = dir.join(LOCK_FILE);
        let mut file = crate::state::open_lock_file(&path)?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            if flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
                break;
            }
            let pid = read_pid(&mut file).unwrap_or(0);
            let dying = pid == 0 || !crate::process::alive(pid) || exiting(pid);
            if !dying || std::time::Instant::now() >= deadline {
                return Err(LockHeld {
                    pid,
                    session: session.to_owned(),
                }
                .into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(Lock { _file: file })
    }
}

/// How long [`Lock::acquire`] waits for a holder that is dead or dying to let go.
pub const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Whether `pid` has a fatal signal pending (SIGKILL sent, teardown under way): its
/// shared pending signals (`ShdPnd` in /proc) include SIGKILL.
fn exiting(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    status
        .lines()
        .filter(|l| l.starts_with("ShdPnd:") || l.starts_with("SigPnd:"))
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .any(|mask| mask & (1 << (9 - 1)) != 0)
}

/// The pid of the running supervisor of the session in `dir`, if there is one.
pub fn supervisor_pid(dir: &Path) -> Option<u32> {
    let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
    if flock(&file, FlockOperation::NonBlockingLockShared).is_ok() {
        return None; // nobody holds it
    }
    read_pid(&mut file)
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// The append-only event journal.
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    pub fn open(dir: &Path) -> Result<Journal> {
        let path = dir.join(JOURNAL_FILE);
        let file = crate::state::open_append(&path)?;
        Ok(Journal { path, file })
    }

    /// Appends the event as one line (one write, so lines never interleave) and returns it.
    pub fn append(&mut self, event: &Event, at: SystemTime) -> Result<String> {
        let line = event.to_line(at);
        self.append_line(&line)?;
        Ok(line)
    }

    /// Appends one JSON line; a torn last line (a crash or a full disk mid-write) is
    /// closed off first, so this one is whole whatever came before.
    pub fn append_line(&mut self, line: &str) -> Result<()> {
        crate::state::append_record(&mut self.file, line.as_bytes())
            .with_context(|| format!("appending to {}", self.path.display()))
    }

    /// The newest `n` records (at most the journal's last 256 KiB is read), oldest first.
    pub fn recent(&self, n: usize) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        const TAIL: u64 = 256 * 1024;
        let Ok(mut file) = File::open(&self.path) else {
            return Vec::new();
        };
        let len = file.metadata().map_or(0, |m| m.len());
        let from = len.saturating_sub(TAIL);
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut bytes).is_err() {
            return Vec::new();
        }
        if from > 0 {
            // Starts mid-line: that line is not whole.
            let cut = bytes
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| i + 1);
            bytes.drain(..cut);
        }
        let (records, _) = journal_records(&bytes);
        let skip = records.len().saturating_sub(n);
        records[skip..].iter().map(|r| (*r).to_owned()).collect()
    }

    /// Moves a journal larger than `max_bytes` to `events.jsonl.1` (replacing an older one)
    /// and starts a new one.
    pub fn rotate_if_larger(&mut self, max_bytes: u64) -> Result<bool> {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if len <= max_bytes {
            return Ok(false);
        }
        let old = self.path.with_extension("jsonl.1");
        std::fs::rename(&self.path, &old)
            .with_context(|| format!("rotating {}", self.path.display()))?;
        self.file = crate::state::open_append(&self.path)?;
        Ok(true)
    }
}

/// The records of a JSON-lines journal: each whole line that is UTF-8 JSON, and how many
/// were skipped because they are not (torn by a crash or a full disk, or garbage). An
/// unterminated last line counts only if it is not JSON either. Pure.
pub fn journal_records(bytes: &[u8]) -> (Vec<&str>, usize) {
    let mut good = Vec::new();
    let mut skipped = 0;
    for line in bytes.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match std::str::from_utf8(line) {
            Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
                good.push(text);
            }
            _ => skipped += 1,
        }
    }
    (good, skipped)
}

/// Restart counters and decisions that must outlive the supervisor process.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    pub agents: BTreeMap<String, AgentCounters>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AgentCounters {
    pub restarts: u32,
    pub consecutive: u32,
    /// Ages of the restarts still inside the crash-loop window, in seconds, when saved.
    pub recent_secs_ago: Vec<f64>,
    /// The agent is fatal or was stopped by a human: a new supervisor must not restart it.
    pub state: Option<ProcState>,
}

impl Counters {
    pub fn load(dir: &Path) -> Counters {
        std::fs::read(dir.join(COUNTERS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn capture(core: &Core, now: Instant) -> Counters {
        let agents = core
            .agents
            .iter()
            .map(|a| {
                let held =
                    matches!(a.state, ProcState::Fatal | ProcState::Stopped).then_some(a.state);
                let recent = a
                    .recent
                    .iter()
                    .map(|&t| now.saturating_duration_since(t).as_secs_f64())
                    .collect();
                (
                    a.name().to_owned(),
                    AgentCounters {
                        restarts: a.restarts,
                        consecutive: a.consecutive,
                        recent_secs_ago: recent,
                        state: held,
                    },
                )
            })
            .collect();
        Counters { agents }
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::state::atomic_write(&dir.join(COUNTERS_FILE), &serde_json::to_vec_pretty(self)?)
    }

    /// Puts saved counters back into a fresh core.
    pub fn restore(&self, core: &mut Core, now: Instant) {
        for a in &mut core.agents {
            let Some(c) = self.agents.get(a.name()) else {
                continue;
            };
            a.restarts = c.restarts;
            a.consecutive = c.consecutive;
            a.recent = c
                .recent_secs_ago
                .iter()
                .filter_map(|&s| now.checked_sub(Duration::from_secs_f64(s.max(0.0))))
                .collect();
            if let Some(state) = c.state {
                a.state = state;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes in the journal: the whole lines that are JSON come out, the rest is
        /// counted, and appending after them gives a line that comes out whole.
        #[test]
        fn journals_of_any_bytes_give_their_good_lines_and_heal_on_append(
            junk in proptest::collection::vec(any::<u8>(), 0..400)
        ) {
            let (good, skipped) = journal_records(&junk);
            let lines = junk.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
            prop_assert_eq!(good.len() + skipped, lines);
            let d = tempfile::tempdir().expect("tmp");
            std::fs::write(d.path().join(JOURNAL_FILE), &junk).expect("write");
            let mut j = Journal::open(d.path()).expect("open");
            let ev = Event::new(super::super::event::EventKind::SessionUp, None);
            let line = j.append(&ev, SystemTime::UNIX_EPOCH).expect("append");
            let bytes = std::fs::read(d.path().join(JOURNAL_FILE)).expect("read");
            let (good, _) = journal_records(&bytes);
            prop_assert_eq!(good.last().copied(), Some(line.as_str()));
        }
    }
}
