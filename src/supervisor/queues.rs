//! Delivering queued messages to agents that run again, off the supervisor's event loop.
//!
//! A delivery waits for the pasted text to show on the screen; hundreds of them (role
//! instructions after a restart of every agent, `orch send all` while the agents were
//! down) take seconds, during which deaths must still be noticed at once. So a round of
//! deliveries runs on a blocking thread, agents in parallel, and its outcome comes back
//! to the loop as a message. A queue another deliverer holds (`orch send` delivering
//! right now) is skipped, never waited for: it is being delivered.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::messaging::deliver::{InputStyle, Options};
use crate::messaging::drain::{Recorder, Target, in_parallel, pane_of, try_drain_agent};
use crate::messaging::queue::Queue;
use crate::monitor::activity::{Activity, ActivityProfile};
use crate::tmux::{Pane, Tmux};

/// What the loop hands to a round: which agents have messages waiting, what each is
/// doing, and the panes of the last listing.
pub struct Round {
    pub tmux: Tmux,
    pub dir: PathBuf,
    pub session: String,
    pub panes: Vec<Pane>,
    pub agents: Vec<Waiting>,
}

/// An agent with messages waiting, as the loop knows it.
pub struct Waiting {
    pub agent: String,
    /// How its CLI takes a paste, and how its screen is read.
    pub style: InputStyle,
    pub profile: Arc<ActivityProfile>,
    /// Its resolved activity, and for how long it has been unknown.
    pub activity: Activity,
    pub unknown_for: Duration,
}

/// What a round did, for the loop to print and report.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Journal lines written (the supervisor's stdout shows them too).
    pub echoed: Vec<String>,
    /// `Some(Err)`: the audit log could not be written, so nothing was delivered;
    /// `Some(Ok)`: a delivery wrote its audit lines; `None`: nothing was tried.
    pub audit: Option<Result<(), String>>,
    pub delivered: usize,
}

/// Agents of `queue` with files waiting (messages, or files that are not messages).
pub fn waiting(queue: &Queue) -> Vec<String> {
    queue
        .agents()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| {
            queue
                .scan(a)
                .is_ok_and(|(msgs, bad)| !msgs.is_empty() || !bad.is_empty())
        })
        .collect()
}

/// Runs one round of deliveries (blocking; call it off the event loop).
pub fn deliver(round: Round) -> Outcome {
    let queue = Queue::new(&round.dir);
    let results = in_parallel(&round.agents, |w| {
        let agent = w.agent.as_str();
        let mut rec = match Recorder::open_echoing(&round.dir) {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Some(Err(format!("{e:#}"))), 0),
        };
        let target = Target {
            agent,
            pane: pane_of(&round.panes, &round.session, agent),
            style: &w.style,
            profile: &w.profile,
            activity: w.activity,
            unknown_for: w.unknown_for,
        };
        let drained = try_drain_agent(&round.tmux, &queue, &mut rec, &target, Options::default());
        let (audit, delivered) = match drained {
            Ok(Some(d)) => {
                let audit = match d.audit_failed {
                    Some(why) => Some(Err(format!(
                        "{why}; messages stay queued until the audit log can be written"
                    ))),
                    None => (!d.delivered.is_empty()).then_some(Ok(())),
                };
                if !d.delivered.is_empty() {
                    tracing::info!(
                        agent,
                        delivered = d.delivered.len(),
                        "queued messages delivered"
                    );
                }
                (audit, d.delivered.len())
            }
            Ok(None) => (None, 0), // someone else is delivering to it right now
            Err(e) => {
                tracing::warn!(agent, "delivering queued messages: {e:#}");
                (None, 0)
            }
        };
        (rec.take_echoed(), audit, delivered)
    });
    let mut out = Outcome::default();
    for (echoed, audit, delivered) in results {
        out.echoed.extend(echoed);
        out.delivered += delivered;
        out.audit = match (out.audit.take(), audit) {
            (Some(Err(e)), _) | (_, Some(Err(e))) => Some(Err(e)),
            (a, b) => a.or(b),
        };
    }
    out
}
