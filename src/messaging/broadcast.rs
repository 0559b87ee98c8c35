//! One message to many agents at once (`orch send all`, `role:ROLE`): the confirmed
//! delivery of [`super::deliver`] — paste, see it land on the agent's own screen (its
//! text or its CLI's placeholder; no look for a terminal that hides its input), Enter no
//! sooner than the CLI's settle time, see it submitted and press Enter once more where
//! the input still holds it, never Ctrl-C — with each step done for every pane in one
//! tmux process ([`Tmux::paste_each`], [`Tmux::pane_inputs`], [`Tmux::press_enter_each`])
//! instead of several processes per agent. At 200 agents that is the difference between
//! seconds and a fraction of one: tmux processes, not tmux, were the cost.
//!
//! The tests for each step are [`super::deliver`]'s own ([`Signs`]); a pane whose step
//! fails here is reported with the same [`DeliverError`], so a caller handles both paths
//! alike.

use std::time::{Duration, Instant};

use super::deliver::{
    Confirmation, DeliverError, Delivered, ENTER_WATCHED_FOR, EnterOutcome, EnterWatch, InputStyle,
    Options, Signs, enter_at, looks_like_a_secret_prompt, tail_marker,
};
use crate::tmux::{PaneInput, Tmux, TmuxError, paste_safe};

/// Delivers `text` into every one of `panes` (live and not in copy mode when listed),
/// each read with its CLI's input style. One result per pane, in order.
pub fn deliver_many(
    tmux: &Tmux,
    panes: &[(&str, &InputStyle)],
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
    let signs: Vec<Signs<'_>> = panes
        .iter()
        .map(|(_, style)| Signs {
            marker: marker.clone(),
            style,
        })
        .collect();
    let mut results: Vec<Option<Result<Delivered, DeliverError>>> =
        std::iter::repeat_with(|| None).take(n).collect();
    let mut retries = vec![0u32; n];

    // Before the paste: what each screen shows, and whether its terminal hides input.
    let all: Vec<usize> = (0..n).collect();
    let mut before = vec![(0, 0); n];
    let mut hidden = vec![false; n];
    // The newest screen seen of each pane, against which an Enter's effect is judged.
    let mut screens = vec![String::new(); n];
    for (i, look) in looks(tmux, panes, &all) {
        match look {
            Ok(p) if p.dead => results[i] = Some(Err(DeliverError::NotReady("dead"))),
            Ok(p) if p.in_mode => results[i] = Some(Err(DeliverError::NotReady("in copy mode"))),
            Ok(p) => {
                hidden[i] = crate::process::tty_mode(&p.tty).is_some_and(|m| m.hides_input());
                if hidden[i] && looks_like_a_secret_prompt(&p.screen) {
                    results[i] = Some(Err(DeliverError::NotReady("at a password prompt")));
                }
                before[i] = signs[i].count(&p.screen);
                screens[i].clone_from(&p.screen);
            }
            Err(e) => results[i] = Some(Err(not_ready_or(e, false))),
        }
    }
    let start = Instant::now();
    let to_paste: Vec<usize> = (0..n).filter(|i| results[*i].is_none()).collect();
    let names: Vec<&str> = to_paste.iter().map(|&i| panes[i].0).collect();
    for (&i, r) in to_paste.iter().zip(tmux.paste_each(&names, &safe)) {
        if let Err(e) = r {
            results[i] = Some(Err(not_ready_or(e, false)));
        }
    }

    // Landed: every pasted pane's screen until the paste shows on it, all in each look.
    let mut confirmation = vec![Confirmation::Screen; n];
    let mut waiting = Vec::new();
    for i in (0..n).filter(|i| results[*i].is_none()) {
        if hidden[i] {
            confirmation[i] = Confirmation::NoEcho;
        } else {
            waiting.push(i);
        }
    }
    let window = opts.confirm_within + Duration::from_millis((safe.len() / 10_000) as u64 * 100);
    let mut enter_no_sooner = start;
    poll(tmux, panes, window, &mut waiting, |i, look| match look {
        Ok(p) => {
            screens[i].clone_from(&p.screen);
            let landed = signs[i].landed(before[i], &p.screen);
            if let Some(c) = landed {
                confirmation[i] = c;
                let at = enter_at(start, Instant::now(), panes[i].1.settle);
                enter_no_sooner = enter_no_sooner.max(at);
            }
            landed.is_some()
        }
        Err(_) => false,
    });
    for &i in &waiting {
        results[i] = Some(Err(DeliverError::Failed {
            reason: format!(
                "the text did not appear on pane {} within {}; Enter was not sent",
                panes[i].0,
                humantime::format_duration(Duration::from_millis(window.as_millis() as u64))
            ),
            pasted: true,
        }));
    }
    let landed: Vec<usize> = (0..n).filter(|i| results[*i].is_none()).collect();
    if !opts.enter || landed.is_empty() {
        let took = start.elapsed();
        return finish(results, took, &retries, &confirmation, false);
    }

    // Enter, no sooner than the slowest CLI's settle time (after the paste was sent and
    // after it was seen); then once more where the CLI redrew and its input still holds
    // the text, or never redrew at all.
    let settle = landed
        .iter()
        .map(|&i| panes[i].1.settle)
        .max()
        .unwrap_or_default();
    let enter_no_sooner = enter_no_sooner.max(start + settle);
    std::thread::sleep(enter_no_sooner.saturating_duration_since(Instant::now()));
    let mut pending: Vec<usize> = landed
        .iter()
        .copied()
        .filter(|&i| confirmation[i] != Confirmation::NoEcho)
        .collect();
    press_all(tmux, panes, &landed, opts, &mut results);
    for press in 0..2 {
        pending.retain(|i| results[*i].is_none());
        let now = Instant::now();
        let mut watches: Vec<Option<EnterWatch>> = (0..n)
            .map(|i| {
                pending
                    .contains(&i)
                    .then(|| EnterWatch::new(&screens[i], now))
            })
            .collect();
        let mut not_taken = Vec::new();
        poll(tmux, panes, ENTER_WATCHED_FOR, &mut pending, |i, look| {
            let (Ok(p), Some(watch)) = (look, watches[i].as_mut()) else {
                return false;
            };
            screens[i].clone_from(&p.screen);
            match watch.observe(&signs[i], p, Instant::now()) {
                EnterOutcome::Submitted => true,
                EnterOutcome::Pending => false,
                EnterOutcome::NotTaken => {
                    not_taken.push(i);
                    true
                }
            }
        });
        pending.append(&mut not_taken);
        pending.sort_unstable();
        if pending.is_empty() {
            break;
        }
        if press == 1 {
            for &i in &pending {
                results[i] = Some(Err(signs[i].not_submitted(panes[i].0, &screens[i])));
            }
            break;
        }
        for &i in &pending {
            retries[i] += 1;
        }
        press_all(tmux, panes, &pending, opts, &mut results);
    }
    let took = start.elapsed();
    finish(results, took, &retries, &confirmation, true)
}

/// The results, those still open delivered.
fn finish(
    results: Vec<Option<Result<Delivered, DeliverError>>>,
    took: Duration,
    retries: &[u32],
    confirmation: &[Confirmation],
    submitted: bool,
) -> Vec<Result<Delivered, DeliverError>> {
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or(Ok(Delivered {
                took,
                retries: retries[i],
                confirmation: confirmation[i],
                submitted,
            }))
        })
        .collect()
}

/// Looks at `which` panes in one tmux process (pane by pane if that fails: a pane that
/// vanished fails only itself).
fn looks(
    tmux: &Tmux,
    panes: &[(&str, &InputStyle)],
    which: &[usize],
) -> Vec<(usize, Result<PaneInput, TmuxError>)> {
    let names: Vec<&str> = which.iter().map(|&i| panes[i].0).collect();
    match tmux.pane_inputs(&names) {
        Ok(all) => which.iter().copied().zip(all.into_iter().map(Ok)).collect(),
        Err(_) => which
            .iter()
            .map(|&i| (i, tmux.pane_input(panes[i].0)))
            .collect(),
    }
}

/// Looks at the `open` panes, all in one tmux process a round (10 ms apart, doubling to
/// 100 ms), until `done` says each is done or `window` has passed; what is left in
/// `open` was never done.
fn poll(
    tmux: &Tmux,
    panes: &[(&str, &InputStyle)],
    window: Duration,
    open: &mut Vec<usize>,
    mut done: impl FnMut(usize, &Result<PaneInput, TmuxError>) -> bool,
) {
    let deadline = Instant::now() + window;
    let mut pause = Duration::from_millis(10);
    while !open.is_empty() {
        *open = looks(tmux, panes, open)
            .into_iter()
            .filter(|(i, look)| !done(*i, look))
            .map(|(i, _)| i)
            .collect();
        if open.is_empty() || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Enter in each of `which` panes, all in one tmux process; a pane that went into copy
/// mode since gets the careful one-pane path, which waits for it.
fn press_all(
    tmux: &Tmux,
    panes: &[(&str, &InputStyle)],
    which: &[usize],
    opts: Options,
    results: &mut [Option<Result<Delivered, DeliverError>>],
) {
    let listed = tmux.list_panes().unwrap_or_default();
    let free = |i: usize| {
        listed
            .iter()
            .find(|p| p.id == panes[i].0)
            .is_some_and(|p| !p.dead && !p.in_mode)
    };
    let (now, later): (Vec<usize>, Vec<usize>) = which.iter().partition(|&&i| free(i));
    let names: Vec<&str> = now.iter().map(|&i| panes[i].0).collect();
    let mut retry = later;
    for (&i, r) in now.iter().zip(tmux.press_enter_each(&names)) {
        if r.is_err() {
            retry.push(i);
        }
    }
    for i in retry {
        if let Err(e) = enter_when_free(tmux, panes[i].0, opts.attempts) {
            results[i] = Some(Err(e));
        }
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
