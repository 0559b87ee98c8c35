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

/// A process whose environment says it belongs to an orch session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marked {
    pub pid: u32,
    /// Its `ORCH_AGENT`.
    pub agent: Option<String>,
    /// Its command line, arguments joined by spaces.
    pub command: String,
}

/// The processes whose environment holds every `(key, value)` of `marks` (the `ORCH_*`
/// variables orch gives each pane, which every process started from the pane inherits,
/// daemons that left the pane's process tree included). orch's own processes (the same
/// binary as the caller) and the caller's ancestors are not listed. Processes of other
/// users cannot be read and are not listed.
pub fn marked(marks: &[(&str, &str)]) -> Vec<Marked> {
    let me = std::process::id();
    let ancestors = ancestors(me);
    let own_exe = std::env::current_exe().ok();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || ancestors.contains(&pid) || !alive(pid) {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let value = |key: &str| {
            vars.iter().find_map(|v| {
                v.strip_prefix(key.as_bytes())
                    .and_then(|r| r.strip_prefix(b"="))
            })
        };
        if !marks
            .iter()
            .all(|(k, want)| value(k) == Some(want.as_bytes()))
        {
            continue;
        }
        if own_exe.is_some() && std::fs::read_link(format!("/proc/{pid}/exe")).ok() == own_exe {
            continue;
        }
        let command = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .split('\0')
                    .filter(|a| !a.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        out.push(Marked {
            pid,
            agent: value("ORCH_AGENT").map(|a| String::from_utf8_lossy(a).into_owned()),
            command,
        });
    }
    out
}

/// `pid`'s parent, its parent, … up to init.
fn ancestors(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cur = pid;
    while let Some(parent) = parent_of(cur).filter(|p| *p > 1 && !out.contains(p)) {
        out.push(parent);
        cur = parent;
    }
    out
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Asks `pids` to stop (SIGTERM), waits up to `grace` for them to go, and SIGKILLs the
/// rest. Returns once none is alive, or after the SIGKILL.
pub fn stop_all(pids: &[u32], grace: std::time::Duration) {
    for &p in pids {
        signal(p, Sig::Stop(StopSignal::Terminate));
    }
    let deadline = std::time::Instant::now() + grace;
    while pids.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for &p in pids.iter().filter(|p| alive(**p)) {
        signal(p, Sig::Kill);
    }
}

/// How long ago `pid` started, from its start time in /proc (clock ticks since boot)
/// and the time since boot. `None` if it is gone.
pub fn age(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the command name, which is in parentheses and may hold any
    // character.
    let started: u64 = stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let age = uptime - started as f64 / ticks;
    (age >= 0.0).then(|| std::time::Duration::from_secs_f64(age))
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
    fn processes_are_found_by_their_orch_environment_and_stopped() {
        let mark = format!(
            "test-{}-{:?}",
            std::process::id(),
            std::time::Instant::now()
        );
        // A process that ignores SIGTERM, as some CLIs' children ignore the hangup.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30"])
            .env("ORCH_SESSION", &mark)
            .env("ORCH_AGENT", "w1")
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let found = poll_for(|| {
            let found = marked(&[("ORCH_SESSION", &mark)]);
            found.iter().any(|m| m.pid == pid).then_some(found)
        });
        let m = found.iter().find(|m| m.pid == pid).expect("found");
        assert_eq!(m.agent.as_deref(), Some("w1"));
        assert!(m.command.contains("trap"), "{m:?}");
        assert!(
            marked(&[("ORCH_SESSION", "another")])
                .iter()
                .all(|m| m.pid != pid)
        );
        let started = std::time::Instant::now();
        let pids: Vec<u32> = found.iter().map(|m| m.pid).collect();
        stop_all(&pids, std::time::Duration::from_millis(300));
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(250),
            "waited the grace"
        );
        let _ = child.wait();
        assert!(!alive(pid));
    }

    fn poll_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
        for _ in 0..250 {
            if let Some(v) = f() {
                return v;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("timed out")
    }

    #[test]
    fn a_process_age_counts_from_its_start() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let age = age(child.id()).expect("age");
        // Clock ticks are 10 ms apart.
        assert!(
            age >= std::time::Duration::from_millis(250) && age < std::time::Duration::from_secs(5),
            "{age:?}"
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(super::age(child.id()), None);
    }

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
