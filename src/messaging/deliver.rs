//! Confirmed delivery of one message into a pane: paste (never typed, never
//! interpreted), see it on the screen, only then press Enter.
//!
//! 1. The text is sanitized ([`paste_safe`]: no ESC, no control characters but `\n`, `\t`)
//!    and pasted through a uniquely named tmux buffer loaded from stdin, with bracketed
//!    paste ([`Tmux::paste`]).
//! 2. The screen is captured until a distinctive tail of the text shows up on it
//!    ([`tail_marker`]: its last non-blank line, trimmed, at most [`MARKER_CHARS`]
//!    characters, compared with all whitespace removed because TUIs re-wrap and indent).
//! 3. Only then is Enter pressed, as its own key. Ctrl-C is never sent.
//!
//! A dead pane or one in copy mode is not an error: [`DeliverError::NotReady`] tells the
//! caller to keep the message queued. tmux failures are retried with backoff.

use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::tmux::{Tmux, TmuxError, paste_safe};

/// Characters of the last line used to recognise the paste on the screen.
pub const MARKER_CHARS: usize = 40;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Press Enter after the paste is confirmed (`--no-enter` clears it).
    pub enter: bool,
    /// How long the text may take to appear (more is allowed for long texts).
    pub confirm_within: Duration,
    /// Tries for each tmux step before giving up.
    pub attempts: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            enter: true,
            confirm_within: Duration::from_secs(2),
            attempts: 3,
        }
    }
}

/// A message that reached the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// From the first paste to Enter (or to the confirmation, without Enter).
    pub took: Duration,
    /// tmux steps that had to be retried.
    pub retries: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The pane cannot take input now (dead, in copy mode); the message should wait.
    #[error("the pane is {0}")]
    NotReady(&'static str),
    /// Delivery was tried and failed; `pasted` tells whether the text may be in the input.
    #[error("{reason}")]
    Failed { reason: String, pasted: bool },
}

/// The whitespace-free tail by which the pasted `text` is recognised on a screen; `None`
/// for a text with no visible character.
pub fn tail_marker(text: &str) -> Option<String> {
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let chars: Vec<char> = line.chars().filter(|c| !c.is_whitespace()).collect();
    let start = chars.len().saturating_sub(MARKER_CHARS);
    Some(chars[start..].iter().collect())
}

/// `screen` without whitespace, for matching a [`tail_marker`] across re-wrapped lines.
pub fn collapse(screen: &str) -> String {
    screen.chars().filter(|c| !c.is_whitespace()).collect()
}

/// How many times the marker shows on a (collapsed) screen.
pub fn occurrences(collapsed_screen: &str, marker: &str) -> usize {
    collapsed_screen.matches(marker).count()
}

/// Whether the paste shows: one more occurrence than before it, or — when the screen had
/// it already and a redraw hid the old one — the screen ending with it (the input line).
pub fn confirmed(before: usize, collapsed_screen: &str, marker: &str) -> bool {
    let now = occurrences(collapsed_screen, marker);
    now > before || (before > 0 && collapsed_screen.ends_with(marker))
}

/// Delivers `text` into `pane`: paste, confirm, Enter.
pub fn deliver(
    tmux: &Tmux,
    pane: &str,
    text: &str,
    opts: Options,
) -> Result<Delivered, DeliverError> {
    let safe = paste_safe(text);
    let marker = tail_marker(&safe).ok_or_else(|| DeliverError::Failed {
        reason: "the message has no visible text".into(),
        pasted: false,
    })?;
    let before = tmux
        .capture_screen(pane)
        .map(|s| occurrences(&collapse(&s), &marker))
        .map_err(|e| not_ready_or(e, false))?;
    let start = Instant::now();
    let mut retries = 0;
    retry(opts.attempts, &mut retries, false, || {
        tmux.paste(pane, &safe)
    })?;
    let window = opts.confirm_within + Duration::from_millis((safe.len() / 10_000) as u64 * 100);
    let deadline = Instant::now() + window;
    let mut pause = Duration::from_millis(10);
    loop {
        match tmux.capture_screen(pane) {
            Ok(screen) if confirmed(before, &collapse(&screen), &marker) => break,
            Ok(_) => {}
            Err(e @ (TmuxError::NoServer(_) | TmuxError::NotInstalled)) => {
                return Err(DeliverError::Failed {
                    reason: e.to_string(),
                    pasted: true,
                });
            }
            Err(_) => {} // a transient capture failure: look again
        }
        if Instant::now() >= deadline {
            return Err(DeliverError::Failed {
                reason: format!(
                    "the text did not appear on pane {pane} within {}; Enter was not sent",
                    humantime::format_duration(round_ms(window))
                ),
                pasted: true,
            });
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    if opts.enter {
        // Copy mode entered since the paste: wait for it to end, Enter would act on it.
        retry(opts.attempts + 5, &mut retries, true, || {
            tmux.press_enter(pane)
        })
        .map_err(|e| match e {
            DeliverError::NotReady(why) => DeliverError::Failed {
                reason: format!(
                    "the text was pasted but pane {pane} stayed {why}; Enter was not sent"
                ),
                pasted: true,
            },
            other => other,
        })?;
    }
    Ok(Delivered {
        took: start.elapsed(),
        retries,
    })
}

/// Runs a tmux step up to `attempts` times with backoff (100 ms, 200 ms, 400 ms, ...).
/// `NotReady` ends at once unless `wait_not_ready`.
fn retry(
    attempts: u32,
    retries: &mut u32,
    wait_not_ready: bool,
    mut step: impl FnMut() -> Result<(), TmuxError>,
) -> Result<(), DeliverError> {
    let mut pause = Duration::from_millis(100);
    let mut tried = 0;
    loop {
        tried += 1;
        let err = match step() {
            Ok(()) => return Ok(()),
            Err(TmuxError::NotReady { why, .. }) if !wait_not_ready => {
                return Err(DeliverError::NotReady(why));
            }
            Err(e) => e,
        };
        if tried >= attempts.max(1) {
            return Err(match err {
                TmuxError::NotReady { why, .. } => DeliverError::NotReady(why),
                e => DeliverError::Failed {
                    reason: format!("{e} (after {tried} tries)"),
                    pasted: wait_not_ready,
                },
            });
        }
        *retries += 1;
        sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

fn not_ready_or(e: TmuxError, pasted: bool) -> DeliverError {
    match e {
        TmuxError::NotReady { why, .. } => DeliverError::NotReady(why),
        e => DeliverError::Failed {
            reason: e.to_string(),
            pasted,
        },
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_is_the_last_visible_line_without_whitespace() {
        assert_eq!(
            tail_marker("a\nhello  world \n\n  \n").as_deref(),
            Some("helloworld")
        );
        assert_eq!(tail_marker(" \n\t\n"), None);
        let long = format!("{}END", "x".repeat(100));
        let m = tail_marker(&long).expect("marker");
        assert_eq!(m.chars().count(), MARKER_CHARS);
        assert!(m.ends_with("END"));
        assert_eq!(tail_marker("終わり 🎉").as_deref(), Some("終わり🎉"));
    }

    #[test]
    fn confirmation_survives_re_wrapping_and_needs_a_new_occurrence() {
        let marker = tail_marker("please review the branch orch/worker1 now").expect("m");
        let plain = "> please review the branch orch/wo\n  rker1 now\n";
        assert!(confirmed(0, &collapse(plain), &marker));
        assert!(!confirmed(0, &collapse("> please review"), &marker));
        let twice = format!("{plain}{plain}");
        assert!(confirmed(1, &collapse(&twice), &marker));
        // Seen before and not new, not on the input line: not confirmed.
        assert!(!confirmed(1, &collapse(&format!("{plain}$ ")), &marker));
        // Seen before, a redraw scrolled the old one away, the new one ends the screen.
        assert!(confirmed(1, &collapse(plain), &marker));
    }
}
