//! Signals to agent processes and whether they still live.

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
