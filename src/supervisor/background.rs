//! The supervisor in the background: what `orch` (the dashboard) and `orch layout up`
//! start when a session has none, so supervision outlives the command, the dashboard
//! and the terminal that started it.
//!
//! It is the same `orch supervise`, run as a child with `--background`: it leaves the
//! terminal's session (`setsid`, so closing the terminal sends it no SIGHUP), its
//! events go only to the journal, and its stderr goes to `supervisor.err` in the
//! session's folder, which is where an early failure is read back from.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::control::{Request, request};
use super::store::supervisor_pid;

/// Where a background supervisor's stderr goes.
pub const ERR_FILE: &str = "supervisor.err";

/// How long a new supervisor gets to answer on its control socket.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// How to start a session's supervisor: the orch binary and the global options that
/// name the session (socket, state, layout, session name).
#[derive(Clone, Debug)]
pub struct Spawn {
    pub exe: PathBuf,
    pub socket: Option<String>,
    pub state_dir: PathBuf,
    /// A layout file (absolute) or a built-in layout's name.
    pub layout: std::ffi::OsString,
    pub session: Option<String>,
}

/// Whether the supervisor already ran or was started now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    Running(u32),
    Now(u32),
}

impl Spawn {
    /// Makes sure the session in `dir` has a supervisor that answers on its control
    /// socket, starting one in the background when none runs.
    pub fn ensure(&self, dir: &Path) -> Result<Started> {
        if let Some(pid) = supervisor_pid(dir) {
            return Ok(Started::Running(pid));
        }
        let err_path = dir.join(ERR_FILE);
        let err = crate::state::write_private(&err_path, b"")?;
        let mut cmd = Command::new(&self.exe);
        if let Some(socket) = &self.socket {
            cmd.arg("--socket").arg(socket);
        }
        cmd.arg("--state-dir").arg(&self.state_dir);
        cmd.arg("--layout").arg(&self.layout);
        if let Some(session) = &self.session {
            cmd.arg("--session").arg(session);
        }
        cmd.args(["supervise", "--background"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting `{} supervise`", self.exe.display()))?;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // Another supervisor may have won the race; that one is as good.
                if let Some(pid) = supervisor_pid(dir) {
                    return Ok(Started::Running(pid));
                }
                let said = std::fs::read_to_string(&err_path).unwrap_or_default();
                let said = said.trim();
                bail!(
                    "the supervisor exited at once ({status}){}",
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(": {said}")
                    }
                );
            }
            if supervisor_pid(dir).is_some()
                && let Ok(Some(_)) = request(dir, &Request::Status)
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the supervisor (pid {}) did not answer within {} s; see {} and the log in {}",
                    child.id(),
                    READY_WITHIN.as_secs(),
                    err_path.display(),
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = child.id();
        // Reap it if it ends while this process still runs (it outlives us otherwise).
        std::thread::spawn(move || child.wait());
        Ok(Started::Now(pid))
    }
}

/// The first thing a background supervisor does: leave the terminal's session, so a
/// closing terminal (SIGHUP to its session) does not end supervision.
pub fn detach() {
    // Fails only for a process group leader, which a freshly spawned child is not.
    let _ = rustix::process::setsid();
}
