//! Signals to agent processes, whether they still live, and how their terminal reads
//! input.

use crate::layout::StopSignal;

/// Which signal to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    Stop(StopSignal),
    Kill,
}

/// Sends `sig` to `pid`. A process that is already gone is not an error.
pub fn signal(pid: u32, sig: Sig) {
    use rustix::process::{Pid, Signal, kill_process};
    let sig = match sig {
        Sig::Stop(StopSignal::Terminate) => Signal::TERM,
        Sig::Stop(StopSignal::Hangup) => Signal::HUP,
        Sig::Kill => Signal::KILL,
    };
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, sig);
    }
}

/// Whether `pid` is a live process. A zombie has finished: it only waits for its parent
/// to collect its exit status, so it counts as gone.
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain any
    // character, so look after the last ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x"))
}

/// How a terminal takes input, from its termios flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtyMode {
    /// Line by line (ICANON): the program reads whole lines the terminal edits.
    pub canonical: bool,
    /// The terminal shows what is typed (ECHO).
    pub echo: bool,
}

impl TtyMode {
    /// A program reading whole lines that are not shown: what it is given never appears
    /// on the screen (`stty -echo`, a password prompt). A full-screen program also turns
    /// ECHO off, but it reads keys one by one and draws them itself.
    pub fn hides_input(self) -> bool {
        self.canonical && !self.echo
    }
}

/// The input mode of the terminal at `path` (a pane's `#{pane_tty}`), opened without
/// becoming its controlling terminal. `None` if it cannot be read.
pub fn tty_mode(path: &std::path::Path) -> Option<TtyMode> {
    use rustix::fs::{Mode, OFlags, open};
    use rustix::termios::{LocalModes, tcgetattr};
    let fd = open(
        path,
        OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let t = tcgetattr(&fd).ok()?;
    Some(TtyMode {
        canonical: t.local_modes.contains(LocalModes::ICANON),
        echo: t.local_modes.contains(LocalModes::ECHO),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_child_is_not_alive_even_before_it_is_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        let pid = child.id();
        assert!(alive(pid));
        signal(pid, Sig::Kill);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(pid), "a zombie counts as gone");
        let _ = child.wait();
        assert!(!alive(pid));
    }
}
