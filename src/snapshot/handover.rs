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
//! agent's prompt; the handover carries a [`ReplayGuard`] so that screen does not count
//! as the new agent being ready.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;

use crate::messaging::deliver::{InputStyle, Options};
use crate::messaging::drain::{Recorder, Target, drain_agent, pane_of};
use crate::messaging::queue::{Message, Queue};
pub use crate::messaging::replay::ReplayGuard;
use crate::monitor::activity::{Activity, ActivityProfile};
use crate::tmux::Tmux;

/// How often the panes are looked at while agents start.
const POLL: Duration = Duration::from_millis(50);

/// One queued handover and how to tell when its agent is ready for it.
#[derive(Clone, Debug)]
pub struct Handover {
    pub agent: String,
    pub pane: String,
    pub message: Message,
    /// The agent's screen markers (its profile with the layout's overrides).
    pub profile: ActivityProfile,
    /// How its CLI takes a paste.
    pub style: InputStyle,
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

/// Whether a restored agent's screen shows it ready for its handover: past its replay
/// (`replay_over`), showing something the replay did not end with, and idle or waiting for
/// input by its profile's markers. Pure.
fn ready(profile: &ActivityProfile, screen: &str, replay: Option<(bool, &ReplayGuard)>) -> bool {
    if let Some((replay_over, guard)) = replay
        && (!replay_over || guard.still_shown(screen))
    {
        return false;
    }
    matches!(profile.classify(screen), Activity::Idle | Activity::Waiting)
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
        let now = SystemTime::now();
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
                let guard = h.message.after_replay.as_ref();
                ready(&h.profile, screen, guard.map(|g| (g.is_over(now), g)))
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
                let target = Target {
                    agent: &h.agent,
                    pane,
                    style: &h.style,
                    activity: Activity::Idle, // its screen just looked ready
                    unknown_for: Duration::ZERO,
                };
                let d = match drain_agent(tmux, &queue, &mut rec, &target, Options::default()) {
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

    #[test]
    fn a_replayed_prompt_is_not_a_ready_agent() {
        let shell = ActivityProfile::for_profile(Profile::Shell);
        let guard = ReplayGuard {
            done: "/nonexistent".into(),
            tail: vec!["line one".into(), "old prompt $".into()],
        };
        let replayed = "line one\nold prompt $\n\n\n";
        // The old prompt, during or after the replay: not ready.
        assert!(!ready(&shell, replayed, Some((false, &guard))));
        assert!(!ready(&shell, replayed, Some((true, &guard))));
        // A new prompt below it: ready, but only once the replay is over.
        let new = "line one\nold prompt $\nnew $\n";
        assert!(!ready(&shell, new, Some((false, &guard))));
        assert!(ready(&shell, new, Some((true, &guard))));
        // Something that is not a prompt: not ready.
        assert!(!ready(
            &shell,
            "old prompt $\nloading...\n",
            Some((true, &guard))
        ));
        // No replay: the profile alone decides.
        assert!(ready(&shell, "$\n", None));
    }
}
