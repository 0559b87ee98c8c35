//! One message to many agents at once (`orch send all`, `role:ROLE`): the confirmed
//! delivery of [`super::deliver`] — paste, see the text on the agent's own screen, only
//! then press Enter, never Ctrl-C — with each step done for every pane in one tmux
//! process ([`Tmux::paste_each`], [`Tmux::capture_screens`], [`Tmux::press_enter_each`])
//! instead of six processes per agent. At 200 agents that is the difference between
//! seconds and a fraction of one: tmux processes, not tmux, were the cost.
//!
//! Confirmation uses the same marker and the same test as [`super::deliver`]
//! ([`tail_marker`], [`confirmed`]); a pane whose step fails here is reported with the
//! same [`DeliverError`], so a caller handles both paths alike.

use std::time::{Duration, Instant};

use super::deliver::{
    DeliverError, Delivered, Options, collapse, confirmed, occurrences, tail_marker,
};
use crate::tmux::{Tmux, TmuxError, paste_safe};

/// Delivers `text` into every one of `panes` (live and not in copy mode when listed),
/// each confirmed on its own screen before its Enter. One result per pane, in order.
pub fn deliver_many(
    tmux: &Tmux,
    panes: &[&str],
    text: &str,
    opts: Options,
) -> Vec<Result<Delivered, DeliverError>> {
    let n = panes.len();
    let safe = paste_safe(text);
    let Some(marker) = tail_marker(&safe) else {
        return (0..n)
            .map(|_| {
                Err(DeliverError::Failed {
                    reason: "the message has no visible text".into(),
                    pasted: false,
                })
            })
            .collect();
    };
    let mut results: Vec<Option<Result<Delivered, DeliverError>>> =
        std::iter::repeat_with(|| None).take(n).collect();

    // How often the marker shows before the paste, per pane.
    let before = screens(tmux, panes);
    let mut counts = vec![0; n];
    for (i, screen) in before.into_iter().enumerate() {
        match screen {
            Ok(s) => counts[i] = occurrences(&collapse(&s), &marker),
            Err(e) => results[i] = Some(Err(not_ready_or(e, false))),
        }
    }
    let start = Instant::now();
    let to_paste: Vec<usize> = (0..n).filter(|i| results[*i].is_none()).collect();
    let names: Vec<&str> = to_paste.iter().map(|&i| panes[i]).collect();
    for (&i, r) in to_paste.iter().zip(tmux.paste_each(&names, &safe)) {
        if let Err(e) = r {
            results[i] = Some(Err(not_ready_or(e, false)));
        }
    }

    // Every pasted pane's screen until the text shows on it, all panes in each look.
    let window = opts.confirm_within + Duration::from_millis((safe.len() / 10_000) as u64 * 100);
    let deadline = Instant::now() + window;
    let mut waiting: Vec<usize> = (0..n).filter(|i| results[*i].is_none()).collect();
    let mut seen: Vec<usize> = Vec::new();
    let mut pause = Duration::from_millis(10);
    while !waiting.is_empty() {
        let names: Vec<&str> = waiting.iter().map(|&i| panes[i]).collect();
        let looks = screens(tmux, &names);
        let mut still = Vec::new();
        for (&i, screen) in waiting.iter().zip(looks) {
            match screen {
                Ok(s) if confirmed(counts[i], &collapse(&s), &marker) => seen.push(i),
                Err(e @ (TmuxError::NoServer(_) | TmuxError::NotInstalled)) => {
                    results[i] = Some(Err(DeliverError::Failed {
                        reason: e.to_string(),
                        pasted: true,
                    }));
                }
                _ => still.push(i),
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for &i in &waiting {
                results[i] = Some(Err(DeliverError::Failed {
                    reason: format!(
                        "the text did not appear on pane {} within {}; Enter was not sent",
                        panes[i],
                        humantime::format_duration(
                            Duration::from_millis(window.as_millis() as u64)
                        )
                    ),
                    pasted: true,
                }));
            }
            break;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }

    if opts.enter && !seen.is_empty() {
        // Enter only where the pane still takes keys: one that went into copy mode since
        // gets the careful one-pane path, which waits for it.
        let listed = tmux.list_panes().unwrap_or_default();
        let free = |i: usize| {
            listed
                .iter()
                .find(|p| p.id == panes[i])
                .is_some_and(|p| !p.dead && !p.in_mode)
        };
        let (now, later): (Vec<usize>, Vec<usize>) = seen.iter().partition(|&&i| free(i));
        let names: Vec<&str> = now.iter().map(|&i| panes[i]).collect();
        let mut retry = later;
        for (&i, r) in now.iter().zip(tmux.press_enter_each(&names)) {
            if r.is_err() {
                retry.push(i);
            }
        }
        for i in retry {
            if let Err(e) = enter_when_free(tmux, panes[i], opts.attempts) {
                results[i] = Some(Err(e));
            }
        }
    }
    let took = start.elapsed();
    results
        .into_iter()
        .map(|r| r.unwrap_or(Ok(Delivered { took, retries: 0 })))
        .collect()
}

/// Every pane's screen in one tmux process; pane by pane if that fails (a pane that
/// vanished fails only itself).
fn screens(tmux: &Tmux, panes: &[&str]) -> Vec<Result<String, TmuxError>> {
    match tmux.capture_screens(panes) {
        Ok(all) => all.into_iter().map(Ok).collect(),
        Err(_) => panes.iter().map(|p| tmux.capture_screen(p)).collect(),
    }
}

/// Enter for one pane, waiting (with backoff) while it is in copy mode.
fn enter_when_free(tmux: &Tmux, pane: &str, attempts: u32) -> Result<(), DeliverError> {
    let mut wait = Duration::from_millis(100);
    let mut last = String::new();
    for _ in 0..attempts + 5 {
        match tmux.press_enter(pane) {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(1));
    }
    Err(DeliverError::Failed {
        reason: format!("the text was pasted but Enter could not be sent to pane {pane}: {last}"),
        pasted: true,
    })
}

fn not_ready_or(e: TmuxError, pasted: bool) -> DeliverError {
    match e {
        TmuxError::NotReady { why, .. } => DeliverError::NotReady(why),
        other => DeliverError::Failed {
            reason: other.to_string(),
            pasted,
        },
    }
}
