//! Confirmed delivery of one message into a pane: paste (never typed, never
//! interpreted), see it land, only then press Enter, and see it submitted.
//!
//! 1. The text is sanitized ([`paste_safe`]: no ESC, no control characters but `\n`, `\t`)
//!    and pasted through a uniquely named tmux buffer loaded from stdin, with bracketed
//!    paste ([`Tmux::paste`]).
//! 2. It has landed when the screen shows one more occurrence of a distinctive tail of the
//!    text ([`tail_marker`]: its last non-blank line, at most [`MARKER_CHARS`] characters,
//!    compared with all whitespace removed because TUIs re-wrap and indent) — or of one of
//!    the CLI's paste placeholders (`[Pasted text #1 +30 lines]`), which CLIs show instead
//!    of a long paste. A program whose terminal reads whole lines without echo (`stty
//!    -echo`) shows nothing at all: its text is taken as landed.
//! 3. Enter is pressed as its own key, no sooner than the profile's settle time after the
//!    paste (an Enter inside a CLI's paste window becomes a newline in its input).
//! 4. It is submitted when the cursor's line no longer holds the text and, for a CLI that
//!    draws one, the screen shows a turn starting or an empty input. If the input still
//!    holds it, Enter is pressed once more — never more, and never Ctrl-C, which would
//!    throw away what the agent was typing.
//!
//! A dead pane or one in copy mode is not an error: [`DeliverError::NotReady`] tells the
//! caller to keep the message queued. tmux failures are retried with backoff.

use std::thread::sleep;
use std::time::{Duration, Instant};

use regex::{Regex, RegexSet};

use crate::layout::Profile;
use crate::tmux::{PaneInput, Tmux, TmuxError, paste_safe};

/// Characters of the last line used to recognise the paste on the screen.
pub const MARKER_CHARS: usize = 40;

/// The longest pause between two looks at one pane: each look is a tmux process of a few
/// milliseconds, and a coarser step would add up to itself to every delivery (a CLI's
/// redraw after Enter takes 100-300 ms).
const MAX_POLL: Duration = Duration::from_millis(40);

/// How long after the screen last changed a submitted message may take to leave the input
/// before Enter is pressed again.
pub(super) const SUBMIT_WITHIN: Duration = Duration::from_millis(1500);

/// How long a screen may stay as it was when Enter was pressed before the Enter is taken
/// as lost: a CLI starved of CPU draws nothing for seconds, and pressing again while it
/// has not read the first would submit twice.
pub(super) const UNCHANGED_PATIENCE: Duration = Duration::from_secs(8);

/// How long one Enter is watched at most: a redraw just before [`UNCHANGED_PATIENCE`]
/// runs out may be followed by another patience of stillness (see [`EnterWatch`]).
pub(super) const ENTER_WATCHED_FOR: Duration =
    Duration::from_secs(2 * UNCHANGED_PATIENCE.as_secs());

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

/// How one agent CLI takes a paste: its profile's `paste:` data, compiled.
#[derive(Clone, Debug)]
pub struct InputStyle {
    placeholders: Vec<Regex>,
    pub(super) settle: Duration,
    /// What the screen shows once a message is submitted; empty: nothing particular.
    submitted: RegexSet,
}

impl InputStyle {
    /// The style of an agent running `command` under `profile`. What the screen shows
    /// after a submission is only known of the CLI itself: a wrapper script or another
    /// program gets the profile's placeholders and settle time, not its screens.
    pub fn for_agent(profile: Profile, command: Option<&str>) -> InputStyle {
        let mut style = InputStyle::for_profile(profile);
        if !command.is_some_and(|c| crate::profile::get(profile).runs_program(c)) {
            style.submitted = RegexSet::empty();
        }
        style
    }

    /// The built-in style of a profile.
    pub fn for_profile(profile: Profile) -> InputStyle {
        let p = &crate::profile::get(profile).paste;
        InputStyle {
            // The profile tests compile every built-in pattern; one that did not would
            // only cost its recognition.
            placeholders: p
                .placeholders
                .iter()
                .filter_map(|re| Regex::new(re).ok())
                .collect(),
            settle: p.settle.0,
            submitted: multi_line_set(&p.submitted),
        }
    }

    /// The layout's own placeholders and settle time in place of the profile's, where it
    /// gives them (validated with the layout; one that does not compile is left out).
    pub fn with_overrides(mut self, o: &crate::layout::PasteOverrides) -> InputStyle {
        if let Some(p) = &o.placeholders {
            self.placeholders = p.iter().filter_map(|re| Regex::new(re).ok()).collect();
        }
        if let Some(settle) = o.settle {
            self.settle = settle.0;
        }
        self
    }

    /// A program orch knows nothing about: the text itself, no settle, no screen to see.
    pub fn plain() -> InputStyle {
        InputStyle {
            placeholders: Vec::new(),
            settle: Duration::ZERO,
            submitted: RegexSet::empty(),
        }
    }
}

/// Multi-line matching (`^`/`$` at line ends), as the activity patterns use it.
fn multi_line_set(patterns: &[String]) -> RegexSet {
    regex::RegexSetBuilder::new(patterns)
        .multi_line(true)
        .build()
        .unwrap_or_else(|_| RegexSet::empty())
}

/// How a delivery knew the text had landed, for the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confirmation {
    /// The text itself showed on the screen.
    Screen,
    /// The CLI's placeholder for a long paste showed.
    Placeholder,
    /// The terminal does not echo: nothing could show, Enter went without a look.
    NoEcho,
}

impl Confirmation {
    pub fn as_str(self) -> &'static str {
        match self {
            Confirmation::Screen => "screen",
            Confirmation::Placeholder => "placeholder",
            Confirmation::NoEcho => "no_echo",
        }
    }
}

/// A message that reached the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// From the first paste to the submission (or to the confirmation, without Enter).
    pub took: Duration,
    /// tmux steps that had to be retried, and Enter pressed a second time.
    pub retries: u32,
    pub confirmation: Confirmation,
    /// Enter was pressed and the text left the input (false with `--no-enter`).
    pub submitted: bool,
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

/// What of a paste a screen can show: its tail, and the CLI's placeholders.
pub(super) struct Signs<'a> {
    pub(super) marker: String,
    pub(super) style: &'a InputStyle,
}

impl Signs<'_> {
    /// Occurrences of the marker and of each placeholder on a screen.
    pub(super) fn count(&self, screen: &str) -> (usize, usize) {
        let collapsed = collapse(screen);
        let placeholders = self
            .style
            .placeholders
            .iter()
            .map(|re| re.find_iter(&collapsed).count())
            .sum();
        (occurrences(&collapsed, &self.marker), placeholders)
    }

    /// How the paste shows on `screen` compared with the screen before it, if it does.
    pub(super) fn landed(&self, before: (usize, usize), screen: &str) -> Option<Confirmation> {
        let collapsed = collapse(screen);
        if confirmed(before.0, &collapsed, &self.marker) {
            return Some(Confirmation::Screen);
        }
        (self.count(screen).1 > before.1).then_some(Confirmation::Placeholder)
    }

    /// Whether the cursor's line shows the text or its placeholder. Pure.
    fn held(&self, input: &PaneInput) -> bool {
        let line = collapse(input.cursor_line());
        line.contains(&self.marker) || self.style.placeholders.iter().any(|re| re.is_match(&line))
    }

    /// Whether the screen shows the text or its placeholder anywhere. A screen that shows
    /// neither it nor a turn is one the CLI is still drawing (it cleared it to redraw, or
    /// it is starting again), and says nothing about the Enter yet. Pure.
    pub(super) fn shown(&self, screen: &str) -> bool {
        let (marker, placeholders) = self.count(screen);
        marker + placeholders > 0
    }

    /// The failure after a second Enter left `screen` still not showing a submission.
    pub(super) fn not_submitted(&self, pane: &str, screen: &str) -> DeliverError {
        let what = if self.shown(screen) {
            "its input still holds it"
        } else {
            "its screen shows neither the text nor a turn starting"
        };
        DeliverError::Failed {
            reason: format!(
                "the text was pasted into pane {pane} and Enter pressed twice, but {what}"
            ),
            pasted: true,
        }
    }

    /// Whether the input no longer holds the text: it left the cursor's line and, for a
    /// CLI that draws one, the screen shows a turn starting or an empty input. Pure.
    pub(super) fn submitted(&self, input: &PaneInput) -> bool {
        if self.held(input) {
            return false;
        }
        self.style.submitted.is_empty()
            || self
                .style
                .submitted
                .is_match(&crate::monitor::activity::screen_tail(&input.screen))
    }
}

/// What became of one press of Enter, so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EnterOutcome {
    /// The input no longer holds the text.
    Submitted,
    /// Too early to say.
    Pending,
    /// The CLI took the Enter as something else (a newline), or never took it.
    NotTaken,
}

/// Judges an Enter from the screens seen after it. The CLI reacts to an Enter by
/// redrawing; only once it has redrawn, and then kept still for [`SUBMIT_WITHIN`] with
/// the text still on the screen, did it take the Enter as something other than a
/// submission. A screen that never changes, or one that shows neither the text nor a
/// turn (cleared for a redraw the CLI has not finished), is given [`UNCHANGED_PATIENCE`].
/// Pure: the caller brings the clock.
pub(super) struct EnterWatch {
    pressed: Instant,
    screen: String,
    changed: Option<Instant>,
}

impl EnterWatch {
    /// Enter pressed at `now` on a pane last seen showing `screen`.
    pub(super) fn new(screen: &str, now: Instant) -> EnterWatch {
        EnterWatch {
            pressed: now,
            screen: screen.to_owned(),
            changed: None,
        }
    }

    pub(super) fn observe(
        &mut self,
        signs: &Signs<'_>,
        input: &PaneInput,
        now: Instant,
    ) -> EnterOutcome {
        if signs.submitted(input) {
            return EnterOutcome::Submitted;
        }
        if input.screen != self.screen {
            self.screen.clone_from(&input.screen);
            self.changed = Some(now);
        }
        let still_for = if signs.shown(&input.screen) {
            SUBMIT_WITHIN
        } else {
            UNCHANGED_PATIENCE
        };
        let given_up = match self.changed {
            Some(at) => now.duration_since(at) >= still_for,
            None => now.duration_since(self.pressed) >= UNCHANGED_PATIENCE,
        };
        if given_up {
            EnterOutcome::NotTaken
        } else {
            EnterOutcome::Pending
        }
    }
}

/// When Enter may be pressed: no sooner than the CLI's settle time after the paste was
/// sent, and half of it after the paste was seen. A CLI's paste window opens when it reads
/// the paste, which under load can be long after tmux sent it but is never after its
/// screen showed it; unloaded, the text shows within milliseconds and the first bound is
/// the one that counts.
pub(super) fn enter_at(sent: Instant, seen: Instant, settle: Duration) -> Instant {
    (sent + settle).max(seen + settle / 2)
}

/// Delivers `text` into `pane`: paste, confirm, Enter, confirm the submission.
pub fn deliver(
    tmux: &Tmux,
    pane: &str,
    text: &str,
    opts: Options,
    style: &InputStyle,
) -> Result<Delivered, DeliverError> {
    let safe = paste_safe(text);
    let safe = safe.as_str();
    let marker = tail_marker(safe).ok_or_else(|| DeliverError::Failed {
        reason: "the message has no visible text".into(),
        pasted: false,
    })?;
    let signs = Signs { marker, style };
    let first = look(tmux, pane, false)?;
    let hidden = crate::process::tty_mode(&first.tty).is_some_and(|m| m.hides_input());
    if hidden && looks_like_a_secret_prompt(&first.screen) {
        // Its terminal hides what it reads because it asks for a secret: a message is no
        // answer to that.
        return Err(DeliverError::NotReady("at a password prompt"));
    }
    let before = signs.count(&first.screen);
    let start = Instant::now();
    let mut retries = 0;
    retry(opts.attempts, &mut retries, false, || {
        tmux.paste(pane, safe)
    })?;

    let mut last_screen = first.screen;
    let confirmation = if hidden {
        Confirmation::NoEcho
    } else {
        let window =
            opts.confirm_within + Duration::from_millis((safe.len() / 10_000) as u64 * 100);
        wait_until(window, || {
            let input = look(tmux, pane, true)?;
            let landed = signs.landed(before, &input.screen);
            last_screen = input.screen;
            Ok(landed)
        })?
        .ok_or_else(|| DeliverError::Failed {
            reason: format!(
                "the text did not appear on pane {pane} within {}; Enter was not sent",
                humantime::format_duration(round_ms(window))
            ),
            pasted: true,
        })?
    };
    if !opts.enter {
        return Ok(Delivered {
            took: start.elapsed(),
            retries,
            confirmation,
            submitted: false,
        });
    }
    // An Enter inside the CLI's paste window would be a newline in its input.
    let seen = Instant::now();
    sleep(enter_at(start, seen, style.settle).saturating_duration_since(seen));
    for press in 0..2 {
        press_enter(tmux, pane, opts, &mut retries)?;
        if confirmation == Confirmation::NoEcho {
            break; // nothing on the screen can say more
        }
        let mut watch = EnterWatch::new(&last_screen, Instant::now());
        let outcome = wait_until(ENTER_WATCHED_FOR, || {
            let input = look(tmux, pane, true)?;
            let outcome = watch.observe(&signs, &input, Instant::now());
            last_screen = input.screen;
            Ok((outcome != EnterOutcome::Pending).then_some(outcome))
        })?;
        if outcome == Some(EnterOutcome::Submitted) {
            break;
        }
        if press == 1 {
            return Err(signs.not_submitted(pane, &last_screen));
        }
        retries += 1;
    }
    Ok(Delivered {
        took: start.elapsed(),
        retries,
        confirmation,
        submitted: true,
    })
}

/// The pane's screen and cursor. After the paste (`pasted`), a pane that went away is a
/// failure with the text possibly in it; before, it is a reason to wait.
fn look(tmux: &Tmux, pane: &str, pasted: bool) -> Result<PaneInput, DeliverError> {
    match tmux.pane_input(pane) {
        Ok(input) if input.dead && !pasted => Err(DeliverError::NotReady("dead")),
        Ok(input) if input.in_mode && !pasted => Err(DeliverError::NotReady("in copy mode")),
        Ok(input) => Ok(input),
        Err(e @ (TmuxError::NoServer(_) | TmuxError::NotInstalled)) => Err(DeliverError::Failed {
            reason: e.to_string(),
            pasted,
        }),
        Err(e) => Err(not_ready_or(e, pasted)),
    }
}

/// Polls `step` (10 ms, doubling to [`MAX_POLL`]) until it returns something or `window`
/// has passed. A transient tmux failure is looked at again.
fn wait_until<T>(
    window: Duration,
    mut step: impl FnMut() -> Result<Option<T>, DeliverError>,
) -> Result<Option<T>, DeliverError> {
    let deadline = Instant::now() + window;
    let mut pause = Duration::from_millis(10);
    loop {
        match step() {
            Ok(Some(v)) => return Ok(Some(v)),
            Ok(None) => {}
            Err(e @ DeliverError::Failed { .. }) => return Err(e),
            Err(DeliverError::NotReady(_)) => {}
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        sleep(pause);
        pause = (pause * 2).min(MAX_POLL);
    }
}

fn press_enter(
    tmux: &Tmux,
    pane: &str,
    opts: Options,
    retries: &mut u32,
) -> Result<(), DeliverError> {
    // Copy mode entered since the paste: wait for it to end, Enter would act on it.
    retry(opts.attempts + 5, retries, true, || tmux.press_enter(pane)).map_err(|e| match e {
        DeliverError::NotReady(why) => DeliverError::Failed {
            reason: format!("the text was pasted but pane {pane} stayed {why}; Enter was not sent"),
            pasted: true,
        },
        other => other,
    })
}

/// Whether the bottom line asks for a password or passphrase.
pub(super) fn looks_like_a_secret_prompt(screen: &str) -> bool {
    static SECRET: std::sync::LazyLock<Option<Regex>> = std::sync::LazyLock::new(|| {
        Regex::new(r"(?i)(password|passphrase|passcode|pin|token|secret)[^\n]*[:?]\s*\z").ok()
    });
    let last = screen.trim_end_matches(['\n', ' ']);
    let last = last.rsplit('\n').next().unwrap_or(last);
    SECRET.as_ref().is_some_and(|re| re.is_match(last))
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

    fn input(screen: &str, cursor_y: usize) -> PaneInput {
        PaneInput {
            dead: false,
            in_mode: false,
            cursor_y,
            history_size: 0,
            tty: "/dev/null".into(),
            screen: screen.into(),
        }
    }

    #[test]
    fn a_long_paste_is_recognised_by_its_placeholder() {
        let style = InputStyle::for_profile(Profile::Claude);
        let text: String = (1..=30).map(|i| format!("line number {i}\n")).collect();
        let signs = Signs {
            marker: tail_marker(&text).expect("m"),
            style: &style,
        };
        let before = signs.count("❯ \n");
        // The placeholder shows, the last line does not.
        let after = "❯ hello[Pasted text #1 +30 lines]\n  paste again to expand\n";
        assert_eq!(signs.landed(before, after), Some(Confirmation::Placeholder));
        // An old placeholder still on screen is not this paste.
        let old = signs.count(after);
        assert_eq!(signs.landed(old, after), None);
        // Codex's and Gemini's.
        let codex = InputStyle::for_profile(Profile::Codex);
        let s = Signs {
            marker: "zzz".into(),
            style: &codex,
        };
        assert_eq!(
            s.landed((0, 0), "› [Pasted Content 2070 chars]"),
            Some(Confirmation::Placeholder)
        );
        let gemini = InputStyle::for_profile(Profile::Gemini);
        let s = Signs {
            marker: "zzz".into(),
            style: &gemini,
        };
        assert_eq!(
            s.landed((0, 0), " > [Pasted Text: 31 lines]"),
            Some(Confirmation::Placeholder)
        );
    }

    #[test]
    fn submitted_means_the_input_no_longer_holds_the_text() {
        let gemini = InputStyle::for_profile(Profile::Gemini);
        let signs = Signs {
            marker: tail_marker("hello gemini").expect("m"),
            style: &gemini,
        };
        // Gemini 0.61 took an Enter that came too early as a newline: the text stays in
        // the input, the cursor below it.
        let swallowed =
            " Shift+Tab to accept edits\n > hello gemini\n   \n workspace (/directory)\n";
        assert!(!signs.submitted(&input(swallowed, 2)));
        let pending = " > hello gemini\n workspace (/directory)\n";
        assert!(!signs.submitted(&input(pending, 0)));
        let sent = " > hello gemini\n ⠼ Thinking... (esc to cancel, 1s)\n >   Type your message or @path/to/file\n";
        assert!(signs.submitted(&input(sent, 2)));
        // A shell has no screen to look for: the text leaving the cursor's line will do.
        let plain = InputStyle::plain();
        let signs = Signs {
            marker: tail_marker("echo hi").expect("m"),
            style: &plain,
        };
        assert!(!signs.submitted(&input("$ echo hi", 0)));
        assert!(signs.submitted(&input("$ echo hi\nhi\n$ ", 2)));
    }

    #[test]
    fn an_enter_is_judged_once_the_cli_redrew() {
        let gemini = InputStyle::for_profile(Profile::Gemini);
        let signs = Signs {
            marker: tail_marker("hello gemini").expect("m"),
            style: &gemini,
        };
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let pasted = " > hello gemini\n workspace (/directory)\n";
        let newline = " > hello gemini\n   \n workspace (/directory)\n";
        let sent = " > hello gemini\n ⠼ Thinking... (esc to cancel, 1s)\n >   Type your message or @path/to/file\n";

        // A starved CLI that has not redrawn yet: wait, however long SUBMIT_WITHIN is.
        let mut w = EnterWatch::new(pasted, t0);
        assert_eq!(
            w.observe(&signs, &input(pasted, 0), ms(3_000)),
            EnterOutcome::Pending
        );
        assert_eq!(
            w.observe(&signs, &input(sent, 2), ms(6_000)),
            EnterOutcome::Submitted
        );

        // It redrew the Enter as a newline: pressed again once it kept still.
        let mut w = EnterWatch::new(pasted, t0);
        assert_eq!(
            w.observe(&signs, &input(newline, 1), ms(100)),
            EnterOutcome::Pending
        );
        assert_eq!(
            w.observe(&signs, &input(newline, 1), ms(1_500)),
            EnterOutcome::Pending
        );
        assert_eq!(
            w.observe(&signs, &input(newline, 1), ms(1_600)),
            EnterOutcome::NotTaken
        );

        // Every redraw restarts the wait; a screen that never changes is given up on.
        let mut w = EnterWatch::new(pasted, t0);
        assert_eq!(
            w.observe(&signs, &input(newline, 1), ms(1_000)),
            EnterOutcome::Pending
        );
        assert_eq!(
            w.observe(&signs, &input(pasted, 0), ms(2_000)),
            EnterOutcome::Pending
        );
        assert_eq!(
            w.observe(&signs, &input(pasted, 0), ms(3_600)),
            EnterOutcome::NotTaken
        );
        let mut w = EnterWatch::new(pasted, t0);
        let patience = UNCHANGED_PATIENCE.as_millis() as u64;
        assert_eq!(
            w.observe(&signs, &input(pasted, 0), ms(patience - 1)),
            EnterOutcome::Pending
        );
        assert_eq!(
            w.observe(&signs, &input(pasted, 0), ms(patience)),
            EnterOutcome::NotTaken
        );

        // Cleared to redraw (or starting again), then starved: a blank screen that stands
        // still is no sign the Enter was refused; it gets the patience, not SUBMIT_WITHIN.
        let blank = "\n\n\n";
        let mut w = EnterWatch::new(pasted, t0);
        assert_eq!(
            w.observe(&signs, &input(blank, 0), ms(100)),
            EnterOutcome::Pending
        );
        assert_eq!(
            w.observe(&signs, &input(blank, 0), ms(100 + patience - 1)),
            EnterOutcome::Pending
        );
        assert_eq!(
            w.observe(&signs, &input(sent, 2), ms(100 + patience)),
            EnterOutcome::Submitted
        );
        let mut w = EnterWatch::new(pasted, t0);
        w.observe(&signs, &input(blank, 0), ms(100));
        assert_eq!(
            w.observe(&signs, &input(blank, 0), ms(100 + patience)),
            EnterOutcome::NotTaken
        );
        assert!(patience + 100 < ENTER_WATCHED_FOR.as_millis() as u64);
    }

    #[test]
    fn a_failed_enter_says_what_the_screen_shows() {
        let gemini = InputStyle::for_profile(Profile::Gemini);
        let signs = Signs {
            marker: tail_marker("hello gemini").expect("m"),
            style: &gemini,
        };
        let reason = |screen| match signs.not_submitted("%1", screen) {
            DeliverError::Failed { reason, pasted } => {
                assert!(pasted);
                reason
            }
            other => panic!("{other:?}"),
        };
        assert!(reason(" > hello gemini\n").ends_with("its input still holds it"));
        assert!(reason("\n\n").ends_with("its screen shows neither the text nor a turn starting"));
    }

    #[test]
    fn enter_waits_the_settle_after_the_paste_was_sent_and_half_after_it_showed() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let settle = Duration::from_millis(100);
        // Unloaded: the text shows at once, the settle from sending counts.
        assert_eq!(enter_at(t0, ms(15), settle), ms(100));
        // Starved: the CLI read the paste late, its window is timed from then.
        assert_eq!(enter_at(t0, ms(400), settle), ms(450));
        assert_eq!(enter_at(t0, ms(400), Duration::ZERO), ms(400));
    }

    #[test]
    fn secret_prompts_are_recognised() {
        assert!(looks_like_a_secret_prompt("[sudo] password for me: "));
        assert!(looks_like_a_secret_prompt(
            "out\nEnter passphrase for key '/k':\n\n"
        ));
        assert!(!looks_like_a_secret_prompt("reading input\n"));
        assert!(!looks_like_a_secret_prompt("the password was rotated\n$ "));
    }
}
