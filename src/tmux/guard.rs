//! The control client must die with the supervisor that started it.
//!
//! On tmux 3.3a a control client's stdin and stdout are handed to the server, which
//! reads and writes them itself. When the supervisor dies its ends of those pipes close,
//! and the server marks the client for exit, but it frees a control client only once all
//! output queued for it was written: with panes printing, output is always queued, the
//! pipe can no longer take it, and the client stays forever (measured: 19 of 20 kill -9s
//! of a supervisor while agents printed left one). The server then never exits on
//! `kill-server` either. What the server does drop at once is a client whose *process*
//! goes away (its socket to the server closes).
//!
//! So the supervisor does not run `tmux -C` itself but `orch control-guard SUPERVISOR_PID
//! -- <tmux args>` in a process group of its own: the guard runs tmux with the pipes
//! handed straight through (no copying), watches the supervisor's pidfd, and kills tmux
//! the moment the supervisor is gone, then exits. A supervisor that stops normally kills
//! the whole group. And a supervisor starting up removes control clients of its session
//! that an earlier one left behind ([`kill_orphaned_clients`]), in case a guard was
//! killed too.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open};

use super::{Tmux, TmuxError};

/// The hidden subcommand that runs the guard.
pub const GUARD_COMMAND: &str = "control-guard";

/// How long tmux gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(300);

/// Runs the guard: tmux with `args` (stdio inherited), until tmux exits (its exit code
/// is returned) or the process `parent` dies (tmux is killed; 1 is returned).
pub fn run_guard(parent: u32, args: &[OsString]) -> std::io::Result<i32> {
    let Some(parent_pid) = i32::try_from(parent).ok().and_then(Pid::from_raw) else {
        return Ok(2);
    };
    let parent_fd = match pidfd_open(parent_pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(1),
        Err(e) => return Err(e.into()),
    };
    // Opened after the parent could have died and its pid been reused: the parent we
    // watch must still be ours.
    if rustix::process::getppid().map(Pid::as_raw_nonzero) != Some(parent_pid.as_raw_nonzero()) {
        return Ok(1);
    }
    let mut child = Command::new("tmux")
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()?;
    let child_pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    let child_fd = child_pid.and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok());
    let Some(child_fd) = child_fd else {
        return Ok(child.wait()?.code().unwrap_or(1));
    };
    loop {
        let mut fds = [
            PollFd::new(&parent_fd, PollFlags::IN),
            PollFd::new(&child_fd, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let parent_gone = !fds[0].revents().is_empty();
        let child_gone = !fds[1].revents().is_empty();
        if child_gone {
            return Ok(child.wait()?.code().unwrap_or(1));
        }
        if parent_gone {
            stop(child_pid, &child_fd);
            let _ = child.wait();
            return Ok(1);
        }
    }
}

/// SIGTERM, then SIGKILL if the process has not exited within [`TERM_GRACE`].
fn stop(pid: Option<Pid>, pidfd: &OwnedFd) {
    let Some(pid) = pid else { return };
    let _ = rustix::process::kill_process(pid, Signal::TERM);
    if !exits_within(pidfd, TERM_GRACE) {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
    }
}

fn exits_within(pidfd: &OwnedFd, within: Duration) -> bool {
    let timeout = rustix::event::Timespec {
        tv_sec: within.as_secs() as i64,
        tv_nsec: i64::from(within.subsec_nanos()),
    };
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}

/// Kills the control clients of `session` that no live supervisor owns: clients running
/// exactly orch's control-mode command line for this socket and session (see
/// [`super::control::command_args`]) whose parent is not a guard of a live process.
/// Returns their pids. Called by a supervisor that holds the session lock, before it
/// attaches its own client.
pub fn kill_orphaned_clients(tmux: &Tmux, session: &str) -> Result<Vec<u32>, TmuxError> {
    let signature = super::control::command_args(tmux.socket(), session);
    let mut killed = Vec::new();
    for pid in tmux.control_client_pids(session)? {
        let Some(args) = cmdline(pid) else { continue };
        if args.len() < signature.len() + 1 || args[args.len() - signature.len()..] != signature[..]
        {
            continue; // not orch's client (another program's control client)
        }
        if parent(pid).is_some_and(owned_by_live_guard) {
            continue;
        }
        if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process(p, Signal::KILL);
            killed.push(pid);
        }
    }
    Ok(killed)
}

/// Whether `pid` is a guard (`… control-guard SUPERVISOR -- …`) whose supervisor lives.
fn owned_by_live_guard(pid: u32) -> bool {
    let Some(args) = cmdline(pid) else {
        return false;
    };
    let Some(i) = args.iter().position(|a| a == GUARD_COMMAND) else {
        return false;
    };
    args.get(i + 1)
        .and_then(|s| s.parse::<u32>().ok())
        .is_some_and(|sup| sup != std::process::id() && crate::process::alive(sup))
        && crate::process::alive(pid)
}

fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_runs_its_command_and_returns_its_exit_code() {
        // Our own pid is the guard's parent only in a child; here, a parent that is not
        // ours makes the guard refuse to start anything.
        let not_parent = std::process::id();
        assert_eq!(run_guard(not_parent, &["-V".into()]).expect("guard"), 1);
    }

    #[test]
    fn parent_and_cmdline_of_ourselves() {
        let me = std::process::id();
        assert!(cmdline(me).is_some_and(|a| !a.is_empty()));
        assert_eq!(
            parent(me),
            rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32)
        );
        assert!(!owned_by_live_guard(me));
    }
}
