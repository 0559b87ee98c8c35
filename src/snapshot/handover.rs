//! Delivering the handover messages of a restore once each agent is ready for them.
//!
//! `orch restore` queues each agent's handover (high priority, `when_ready`, from `orch`)
//! like any other message. When no supervisor runs, restore delivers them itself: it
//! polls the restored panes (one tmux call a round, whatever the number of agents) until
//! each agent's screen looks ready, then drains that agent's queue. It never waits longer
//! than its timeout ([`crate::messaging::queue::READY_TIMEOUT`] for `orch restore`); what
//! is left stays queued for `orch supervise` or the next `orch send`.
//!
//! A restored pane first replays its saved history, which usually ends with the OLD
//! agent's prompt: read as is, the screen looks ready while the new agent CLI is still
//! starting. So a pane only counts once its replay is over (the pane's script creates a
//! marker file after `cat`) and its screen shows something the replay did not end with
//! ([`ReplayGuard`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::messaging::deliver::Options;
use crate::messaging::drain::{Recorder, drain_agent, pane_of};
use crate::messaging::queue::{Message, Queue};
use crate::monitor::activity::{Activity, ActivityProfile};
use crate::tmux::Tmux;

/// How often the panes are looked at while agents start.
const POLL: Duration = Duration::from_millis(50);

/// How many of the last non-empty lines tell a replayed screen from a new one.
const COMPARED_LINES: usize = 3;

/// One queued handover and how to tell when its agent is ready for it.
#[derive(Clone, Debug)]
pub struct Handover {
    pub agent: String,
    pub pane: String,
    pub message: Message,
    /// The agent's screen markers (its profile with the layout's overrides).
    pub profile: ActivityProfile,
    /// `None` when the pane replays no history.
    pub replay: Option<ReplayGuard>,
}

/// What a pane's history replay ends with, and the file that says it is over.
#[derive(Clone, Debug)]
pub struct ReplayGuard {
    /// Created by the pane's script once `cat` has written the whole replay.
    pub done: PathBuf,
    /// The replay's last non-empty lines as the screen shows them (see [`screen_lines`]).
    pub tail: Vec<String>,
}

impl ReplayGuard {
    /// The guard for a pane replaying `replay` (the file it `cat`s). Reads only the end
    /// of the file: a few lines are compared, and a replay can be megabytes.
    pub fn new(replay: &Path, done: PathBuf) -> ReplayGuard {
        let bytes = read_end(replay, TAIL_BYTES).unwrap_or_default();
        let mut tail = screen_lines(&String::from_utf8_lossy(&bytes));
        tail.drain(..tail.len().saturating_sub(COMPARED_LINES));
        ReplayGuard { done, tail }
    }
}

/// How much of the end of a replay file is read for its last lines.
const TAIL_BYTES: u64 = 64 * 1024;

/// The last `n` bytes of a file (all of a shorter one).
fn read_end(path: &Path, n: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(n)))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// What became of one agent's handover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Pasted and confirmed on the agent's screen, this long after the restore began.
    Delivered { after: Duration },
    /// Still in the agent's queue, and why.
    Queued(String),
    /// The paste was not confirmed (see the audit log for where the text was kept).
    Failed(String),
}

/// Where a pane is on its way to ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replay {
    /// Still replaying, or its marker was first seen this round (tmux may not have read
    /// the last of the replay from the terminal yet).
    Running,
    Over,
}

/// Whether a restored agent's screen shows it ready for its handover: past its replay,
/// showing something the replay did not end with, and idle or waiting for input by its
/// profile's markers. Pure.
fn ready(profile: &ActivityProfile, screen: &str, replay: Option<(Replay, &[String])>) -> bool {
    if let Some((state, tail)) = replay
        && (state == Replay::Running || shows_only_replay(screen, tail))
    {
        return false;
    }
    matches!(profile.classify(screen), Activity::Idle | Activity::Waiting)
}

/// Whether the bottom of `screen` is still the end of the replay: its last non-empty
/// lines are the replay's (the top one may be cut where a wrapped line leaves the
/// screen).
fn shows_only_replay(screen: &str, tail: &[String]) -> bool {
    let lines = screen_lines(screen);
    let n = lines.len().min(tail.len());
    if n == 0 {
        return lines.is_empty() && tail.is_empty();
    }
    let (shown, replayed) = (&lines[lines.len() - n..], &tail[tail.len() - n..]);
    shown
        .iter()
        .zip(replayed)
        .enumerate()
        .all(|(i, (s, r))| s == r || (i == 0 && r.ends_with(s.as_str())))
}

/// The non-empty lines of terminal text, without escape sequences or control characters
/// and with every run of blanks made one space, so a replay file and the screen it
/// produced compare equal (tabs become spaces on screen, trailing blanks vary).
fn screen_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut clean = String::with_capacity(line.len());
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                skip_escape(&mut chars);
            } else if c.is_whitespace() {
                clean.push(' ');
            } else if !c.is_control() {
                clean.push(c);
            }
        }
        let words: Vec<&str> = clean.split(' ').filter(|w| !w.is_empty()).collect();
        if !words.is_empty() {
            out.push(words.join(" "));
        }
    }
    out
}

/// Skips the rest of an escape sequence (CSI, OSC, or a two-character one).
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('[') => {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
        Some(']') => {
            while let Some(c) = chars.next() {
                if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                    break;
                }
            }
        }
        _ => {}
    }
}

/// Delivers each handover once its agent looks ready, all agents at once, for at most
/// `timeout`. Returns one outcome per handover, in order; delivery times count from
/// `since` (the start of the restore).
pub fn deliver(
    tmux: &Tmux,
    session_dir: &Path,
    session: &str,
    handovers: &[Handover],
    timeout: Duration,
    since: Instant,
) -> Result<Vec<Outcome>> {
    let started = Instant::now();
    let queue = Queue::new(session_dir);
    let mut rec = Recorder::open(session_dir)?;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; handovers.len()];
    let mut replay: Vec<Replay> = vec![Replay::Running; handovers.len()];
    loop {
        for (h, outcome) in handovers.iter().zip(&mut outcomes) {
            // Delivered by someone else meanwhile (a supervisor started, `orch send`).
            if outcome.is_none() && !queue.contains(&h.message) {
                *outcome = Some(Outcome::Delivered {
                    after: since.elapsed(),
                });
            }
        }
        let open: Vec<usize> = (0..handovers.len())
            .filter(|&i| outcomes[i].is_none())
            .collect();
        if open.is_empty() {
            break;
        }
        if started.elapsed() >= timeout {
            for i in open {
                outcomes[i] = Some(Outcome::Queued(format!(
                    "its screen did not look ready within {}",
                    humantime::format_duration(timeout)
                )));
            }
            break;
        }
        // Replays over since the last round count from this round on.
        let over_before: Vec<bool> = replay.iter().map(|r| *r == Replay::Over).collect();
        for &i in &open {
            if handovers[i].replay.as_ref().is_none_or(|g| g.done.exists()) {
                replay[i] = Replay::Over;
            }
        }
        let panes: Vec<&str> = open.iter().map(|&i| handovers[i].pane.as_str()).collect();
        // One tmux call for every screen; it fails when a pane is gone, and then the
        // drain below says why for each agent.
        let screens = tmux.capture_screens(&panes).ok();
        let ready_now: Vec<usize> = open
            .iter()
            .enumerate()
            .filter(|(k, i)| {
                let h = &handovers[**i];
                let Some(screen) = screens.as_ref().and_then(|s| s.get(*k)) else {
                    return true;
                };
                let state = if over_before[**i] {
                    Replay::Over
                } else {
                    Replay::Running
                };
                ready(
                    &h.profile,
                    screen,
                    h.replay.as_ref().map(|g| (state, g.tail.as_slice())),
                )
            })
            .map(|(_, i)| *i)
            .collect();
        // Not listed this round (tmux busy or failing): the next round looks again.
        let listed = if ready_now.is_empty() {
            None
        } else {
            tmux.list_panes().ok()
        };
        if let Some(listed) = listed {
            for i in ready_now {
                let h = &handovers[i];
                let pane = pane_of(&listed, session, &h.agent);
                // A new agent that exited is not going to be ready: its handover waits
                // for the next start.
                if !pane.is_some_and(|p| !p.dead && p.id == h.pane) {
                    outcomes[i] = Some(Outcome::Queued(
                        "its pane is gone or its agent exited".to_owned(),
                    ));
                    continue;
                }
                if screens.is_none() {
                    continue; // alive, but its screen was not read this round
                }
                let d = match drain_agent(
                    tmux,
                    &queue,
                    &mut rec,
                    pane,
                    &h.agent,
                    true,
                    Options::default(),
                ) {
                    Ok(d) => d,
                    Err(e) => {
                        outcomes[i] = Some(Outcome::Queued(format!("{e:#}")));
                        continue;
                    }
                };
                if let Some((m, reason)) = &d.failed
                    && m.id == h.message.id
                {
                    outcomes[i] = Some(Outcome::Failed(reason.clone()));
                } else if !queue.contains(&h.message) {
                    outcomes[i] = Some(Outcome::Delivered {
                        after: since.elapsed(),
                    });
                }
            }
        }
        if outcomes.iter().any(Option::is_none) {
            std::thread::sleep(POLL);
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Queued("not looked at".to_owned())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Profile;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn screen_lines_drop_escapes_controls_and_blank_runs() {
        let text = "\x1b[31mred\x1b[0m  text\t here   \n\n\x1b]2;title\x07$ \r\n";
        assert_eq!(screen_lines(text), ["red text here", "$"]);
    }

    #[test]
    fn a_replayed_prompt_is_not_a_ready_agent() {
        let shell = ActivityProfile::for_profile(Profile::Shell);
        let tail = lines(&["line one", "old prompt $"]);
        let replayed = "line one\nold prompt $\n\n\n";
        // The old prompt, during or after the replay: not ready.
        assert!(!ready(&shell, replayed, Some((Replay::Running, &tail))));
        assert!(!ready(&shell, replayed, Some((Replay::Over, &tail))));
        // A new prompt below it: ready, but only once the replay is over.
        let new = "line one\nold prompt $\nnew $\n";
        assert!(!ready(&shell, new, Some((Replay::Running, &tail))));
        assert!(ready(&shell, new, Some((Replay::Over, &tail))));
        // Something that is not a prompt: not ready.
        assert!(!ready(
            &shell,
            "old prompt $\nloading...\n",
            Some((Replay::Over, &tail))
        ));
        // No replay: the profile alone decides.
        assert!(ready(&shell, "$\n", None));
    }

    #[test]
    fn the_top_line_may_be_cut_by_the_screen_edge() {
        let tail = lines(&["a long line that wrapped", "next", "$"]);
        assert!(shows_only_replay("that wrapped\nnext\n$\n", &tail));
        assert!(shows_only_replay("next\n$\n", &tail));
        assert!(!shows_only_replay("next\n$\n$\n", &tail));
        assert!(!shows_only_replay("", &tail));
        assert!(shows_only_replay("", &[]));
    }
}
