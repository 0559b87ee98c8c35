//! What an agent is doing, read from its screen: working, waiting for a human (an approval
//! or a question), idle at its prompt, or unknown.
//!
//! Each agent CLI draws different markers, so each [`Profile`] has its own patterns. The
//! patterns are matched against the *tail* of the visible pane text (`tmux capture-pane -p`):
//! the last [`TAIL_LINES`] non-empty lines, each trimmed at the end, joined by `\n`. `^` and
//! `$` match at line boundaries; `\z` matches only at the end of the last line, so a pattern
//! ending in `\z` counts only while the cursor sits on it (how a line-based CLI such as a
//! shell or Aider shows a prompt: once answered it scrolls up but stays on screen).
//!
//! Precedence: waiting beats working beats idle. A dialog drawn over a busy TUI means the
//! agent is blocked on a human; a spinner above an always-visible input box means it is
//! busy, not idle.
//!
//! The built-in markers are data: each profile's file in `src/profile/` (checked against
//! the CLI's own screens; CLIs reword their UI, hence also the per-layout overrides).

use regex::{RegexSet, RegexSetBuilder};

use crate::layout::Profile;

/// How many non-empty lines from the bottom of the screen are looked at: enough for a
/// Claude Code approval dialog with its options, few enough that old scrollback does not
/// count.
pub const TAIL_LINES: usize = 15;

/// Lines of a question shown for an agent waiting for a human.
pub const QUESTION_LINES: usize = 6;

/// What an agent is doing, as its screen shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// Busy: thinking, running a tool, streaming output.
    Working,
    /// Blocked on a human: an approval, a question, a password.
    Waiting,
    /// At its prompt with nothing to do.
    Idle,
    /// The screen matches none of the profile's markers.
    Unknown,
}

impl Activity {
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Working => "working",
            Activity::Waiting => "waiting",
            Activity::Idle => "idle",
            Activity::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a reading of an agent's activity came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The agent's screen, read with its profile's patterns.
    Screen,
    /// One of the CLI's own signals (a hook), by event name.
    Hook(String),
}

impl Source {
    /// `screen`, or `hook:<event>`, as events name it.
    pub fn label(&self) -> String {
        match self {
            Source::Screen => "screen".to_owned(),
            Source::Hook(event) => format!("hook:{event}"),
        }
    }
}

/// What the agent is doing, from its latest screen reading and its latest hook report.
///
/// A CLI's hooks say when a turn starts and ends, but not everything: Claude Code and
/// Codex send nothing when the user interrupts a turn, and a screen pattern cannot tell a
/// retrying turn whose footer shows another hint from an idle one. So:
/// - a dialog on the screen (`waiting`) is the truth whatever a hook said;
/// - otherwise the newer of the two wins, where a screen reading counts from when it
///   last changed (a screen that kept reading `idle` while a hook reported a new turn is
///   not newer than the hook);
/// - a screen that matches nothing (`unknown`) never overrides a hook.
pub fn resolve<T: PartialOrd>(
    screen: Activity,
    screen_since: T,
    hook: Option<(Activity, T)>,
) -> Activity {
    if screen == Activity::Waiting {
        return screen;
    }
    match hook {
        Some((h, at)) if screen == Activity::Unknown || at >= screen_since => h,
        _ => screen,
    }
}

/// The screen markers of one agent CLI.
#[derive(Clone, Debug)]
pub struct ActivityProfile {
    working: RegexSet,
    waiting: RegexSet,
    idle: RegexSet,
}

impl ActivityProfile {
    /// The built-in markers of a CLI profile.
    pub fn for_profile(profile: Profile) -> ActivityProfile {
        let p = &crate::profile::get(profile).activity;
        ActivityProfile {
            working: builtin(&p.working),
            waiting: builtin(&p.waiting),
            idle: builtin(&p.idle),
        }
    }

    /// The markers of a layout's agent: its profile's, with the layout's own patterns in
    /// their place where it gives some (validated with the layout; should they not
    /// compile, the profile's).
    pub fn for_agent(agent: &crate::layout::Agent) -> ActivityProfile {
        let o = &agent.activity;
        let base = ActivityProfile::for_profile(agent.profile);
        base.clone()
            .with_overrides(o.working.clone(), o.waiting.clone(), o.idle.clone())
            .unwrap_or(base)
    }

    /// Replaces the markers of each category given (a layout's own patterns, for a CLI
    /// version whose screens differ from the built-ins); `None` keeps the built-in ones.
    pub fn with_overrides(
        mut self,
        working: Option<Vec<String>>,
        waiting: Option<Vec<String>>,
        idle: Option<Vec<String>>,
    ) -> Result<Self, regex::Error> {
        if let Some(p) = working {
            self.working = compile(&p)?;
        }
        if let Some(p) = waiting {
            self.waiting = compile(&p)?;
        }
        if let Some(p) = idle {
            self.idle = compile(&p)?;
        }
        Ok(self)
    }

    /// The lines of a screen that ask a human something: from the first one a waiting
    /// pattern matches on its own, at most [`QUESTION_LINES`] (the last ones if no single
    /// line matches).
    pub fn question(&self, screen: &str) -> String {
        let tail = screen_tail(screen);
        let lines: Vec<&str> = tail.lines().collect();
        let from = lines
            .iter()
            .position(|l| self.waiting.is_match(l))
            .unwrap_or(lines.len().saturating_sub(3));
        let end = (from + QUESTION_LINES).min(lines.len());
        lines[from..end]
            .iter()
            .map(|l| l.trim_matches(|c: char| c.is_whitespace() || "│╭╮╰╯─".contains(c)))
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Reads the activity from the visible text of a pane.
    pub fn classify(&self, screen: &str) -> Activity {
        let tail = screen_tail(screen);
        if self.waiting.is_match(&tail) {
            Activity::Waiting
        } else if self.working.is_match(&tail) {
            Activity::Working
        } else if self.idle.is_match(&tail) {
            Activity::Idle
        } else {
            Activity::Unknown
        }
    }
}

/// The last [`TAIL_LINES`] non-empty lines, trimmed at the end, joined by `\n` with none
/// after the last, so `\z` means "end of the bottom line".
pub fn screen_tail(screen: &str) -> String {
    let lines: Vec<&str> = screen
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..].join("\n")
}

fn compile<S: AsRef<str>>(patterns: &[S]) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns).multi_line(true).build()
}

fn builtin(patterns: &[String]) -> RegexSet {
    // The built-in patterns are covered by the profile tests; should one ever fail to
    // compile, matching nothing (Unknown) is the safe reading of a screen.
    compile(patterns).unwrap_or_else(|_| RegexSet::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(p: Profile, screen: &str) -> Activity {
        ActivityProfile::for_profile(p).classify(screen)
    }

    const CLAUDE_BUSY: &str = "\
● I'll run the tests to see what fails.

● Bash(cargo test)
  ⎿  Running…

✶ Pondering… (12s · ↑ 1.2k tokens · esc to interrupt)

╭──────────────────────────────────────────────────────────────╮
│ >                                                            │
╰──────────────────────────────────────────────────────────────╯
  ? for shortcuts
";

    const CLAUDE_SPINNER_ONLY: &str = "\
● Reading src/lib.rs

✳ Simplifying… (3m 12s · ↓ 4.1k tokens)

────────────────────────────────────────────────────────────────
>
────────────────────────────────────────────────────────────────
";

    const CLAUDE_APPROVAL: &str = "\
● Bash(rm -rf target)

╭──────────────────────────────────────────────────────────────╮
│ Bash command                                                 │
│                                                              │
│   rm -rf target                                              │
│   Remove build artefacts                                     │
│                                                              │
│ Do you want to proceed?                                      │
│ ❯ 1. Yes                                                     │
│   2. Yes, and don't ask again for rm commands in /work       │
│   3. No, and tell Claude what to do differently (esc)        │
╰──────────────────────────────────────────────────────────────╯
";

    const CLAUDE_IDLE_SCREEN: &str = "\
● Done: all 42 tests pass.

✻ Worked for 1m 52s

╭──────────────────────────────────────────────────────────────╮
│ >                                                            │
╰──────────────────────────────────────────────────────────────╯
  ? for shortcuts


";

    #[test]
    fn claude_screens() {
        assert_eq!(classify(Profile::Claude, CLAUDE_BUSY), Activity::Working);
        assert_eq!(
            classify(Profile::Claude, CLAUDE_SPINNER_ONLY),
            Activity::Working
        );
        assert_eq!(
            classify(Profile::Claude, CLAUDE_APPROVAL),
            Activity::Waiting
        );
        assert_eq!(
            classify(Profile::Claude, CLAUDE_IDLE_SCREEN),
            Activity::Idle
        );
    }

    /// Claude Code 2.1.197 as it drew itself in a real pane (2026-12-01).
    #[test]
    fn claude_2_1_screens() {
        let idle = "\
 ▐▛███▜▌   Claude Code v2.1.197
▝▜█████▛▘  Opus 4.8 (1M context) · API Usage Billing
  ▘▘ ▝▝    /tmp/x/proj

────────────────────────────────────────────────────────────────────────────────
❯
────────────────────────────────────────────────────────────────────────────────
  ? for shortcuts · ← for agents                                 ● high · /effort
";
        let typed = "\
────────────────────────────────────────────────────────────────────────────────
❯ hello there, please list files
────────────────────────────────────────────────────────────────────────────────
                                                                 ● high · /effort
";
        let retrying = "\
❯ hello there, please list files

✻ Unable to connect to API (FailedToOpenSocket) · Retrying in 2s · attempt 3/10

────────────────────────────────────────────────────────────────────────────────
❯
────────────────────────────────────────────────────────────────────────────────
  esc to interrupt · ← for agents                                ● high · /effort
";
        let retrying_other_hint = "\
✻ Unable to connect to API (ConnectionRefused) · Retrying in 1s · attempt 2/10
  ⎿  Tip: Use /theme to change the color theme
────────────────────────────────────────────────────────────────────────────────
❯
────────────────────────────────────────────────────────────────────────────────
  paste again to expand                             Ctrl+Y to paste deleted text
";
        assert_eq!(classify(Profile::Claude, idle), Activity::Idle);
        // Text in the input is not an idle agent: the footer hint is gone.
        assert_eq!(classify(Profile::Claude, typed), Activity::Unknown);
        assert_eq!(classify(Profile::Claude, retrying), Activity::Working);
        assert_eq!(
            classify(Profile::Claude, retrying_other_hint),
            Activity::Working
        );
    }

    /// Codex 0.171.0 as it drew itself in a real pane (2026-12-01).
    #[test]
    fn codex_0_171_screens() {
        let idle = "\
  >_ OpenAI Codex (v0.171.0)
     /tmp/x/proj
› Ask Codex to do anything
  GPT-6.2-Sol default · /tmp/x/proj
  ← for agents · ? for shortcuts                              ⚠ 1 warning · f2 to view
";
        let working = "\
› hello codex list files
• Reconnecting... 2/5 (0s • esc to interrupt)
  └ Stream disconnected before completion: failed to lookup address information
› Ask Codex to do anything
  GPT-6.2-Sol default · /tmp/x/proj · hello codex list files
  ← for agents · ? for shortcuts                              ⚠ 1 warning · f2 to view
";
        let typed = "\
› [Pasted Content 2070 chars]
  GPT-6.2-Sol default · /tmp/x/proj · hello codex list files
                                                              ⚠ 2 warnings · f2 to view
";
        let starting = "\
     loading
› Ask Codex to do anything
  ? for shortcuts
";
        assert_eq!(classify(Profile::Codex, idle), Activity::Idle);
        assert_eq!(classify(Profile::Codex, working), Activity::Working);
        assert_eq!(classify(Profile::Codex, typed), Activity::Unknown);
        // Still starting: a prompt now would wait for it.
        assert_eq!(classify(Profile::Codex, starting), Activity::Unknown);
    }

    #[test]
    fn the_question_is_the_lines_that_ask() {
        let p = ActivityProfile::for_profile(Profile::Claude);
        let q = p.question(CLAUDE_APPROVAL);
        assert!(q.starts_with("Do you want to proceed?"), "{q}");
        assert!(
            q.contains("1. Yes") && q.contains("3. No, and tell Claude"),
            "{q}"
        );
        assert!(!q.contains('│'), "{q}");
    }

    #[test]
    fn claude_edit_approval_is_waiting() {
        let screen = "\
 Edit file src/lib.rs
 Do you want to make this edit to lib.rs?
 ❯ 1. Yes
   2. Yes, allow all edits during this session (shift+tab)
   3. No, and tell Claude what to do differently (esc)
";
        assert_eq!(classify(Profile::Claude, screen), Activity::Waiting);
    }

    #[test]
    fn only_the_tail_counts() {
        // An old approval scrolled far up is history, not a pending question.
        let mut screen = String::from(CLAUDE_APPROVAL);
        for i in 0..20 {
            screen.push_str(&format!("● step {i}\n"));
        }
        screen.push_str(CLAUDE_IDLE_SCREEN);
        assert_eq!(classify(Profile::Claude, &screen), Activity::Idle);
    }

    #[test]
    fn codex_screens() {
        let working = "\
› fix the failing test

• Ran cargo test
  └ test result: FAILED. 1 passed; 1 failed

• Working (14s • esc to interrupt)

›  Ask Codex to do anything
  100% context left
";
        let waiting = "\
• Running cargo publish --dry-run

  Would you like to run the following command?

  Reason: publishing needs network access

  $ cargo publish --dry-run

› 1. Yes, proceed (y)
  2. Yes, and don't ask again for commands that start with `cargo publish` (p)
  3. No, and tell Codex what to do differently (esc)

  Press enter to confirm or esc to cancel
";
        let idle = "\
• All tests pass now.

▌ Find and fix a bug in @filename

⏎ send   ⇧⏎ newline   ⌃T transcript   ⌃C quit
";
        let old_working = "\
Working [..]  waiting for logs…                 press Esc twice to interrupt
";
        assert_eq!(classify(Profile::Codex, working), Activity::Working);
        assert_eq!(classify(Profile::Codex, waiting), Activity::Waiting);
        assert_eq!(classify(Profile::Codex, idle), Activity::Idle);
        assert_eq!(classify(Profile::Codex, old_working), Activity::Working);
    }

    #[test]
    fn aider_screens() {
        let working = "\
Aider v0.86.1
Main model: anthropic/claude-sonnet-4 with diff edit format
Git repo: .git with 42 files
Repo-map: using 4096 tokens, auto refresh
> fix the failing test in tests/it.rs

░█        Waiting for anthropic/claude-sonnet-4
";
        let waiting = "\
tests/it.rs
Create new file? (Y)es/(N)o [Yes]:";
        let answered = "\
tests/it.rs
Create new file? (Y)es/(N)o [Yes]: y
Applied edit to tests/it.rs
Commit 93e32a1 test: cover the empty case
Tokens: 13k sent, 830 received. Cost: $0.04 message, $0.04 session.
────────────────────────────────────────────────────────────────
tests/it.rs
diff> ";
        assert_eq!(classify(Profile::Aider, working), Activity::Working);
        assert_eq!(classify(Profile::Aider, waiting), Activity::Waiting);
        // The answered question is still on screen but no longer on the cursor line.
        assert_eq!(classify(Profile::Aider, answered), Activity::Idle);
        assert_eq!(classify(Profile::Aider, "> "), Activity::Idle);
    }

    #[test]
    fn gemini_screens() {
        let working = "\
✦ I'll look at the failing test first.

⠏ Reading the test files (esc to cancel, 12s)

╭──────────────────────────────────────────────────────────────╮
│ >   Type your message or @path/to/file                       │
╰──────────────────────────────────────────────────────────────╯
~/work (main*)        no sandbox        gemini-2.5-pro (98% context left)
";
        let waiting = "\
╭──────────────────────────────────────────────────────────────╮
│ ?  Shell cargo test                                          │
│                                                              │
│ Allow execution of: 'cargo'?                                 │
│                                                              │
│ ● 1. Yes, allow once                                         │
│   2. Yes, allow always ...                                   │
│   3. No, suggest changes (esc)                               │
╰──────────────────────────────────────────────────────────────╯
⠏ Waiting for user confirmation...
";
        let idle = "\
✦ All tests pass.

╭──────────────────────────────────────────────────────────────╮
│ >   Type your message or @path/to/file                       │
╰──────────────────────────────────────────────────────────────╯
~/work (main*)        no sandbox        gemini-2.5-pro (97% context left)
";
        assert_eq!(classify(Profile::Gemini, working), Activity::Working);
        assert_eq!(classify(Profile::Gemini, waiting), Activity::Waiting);
        assert_eq!(classify(Profile::Gemini, idle), Activity::Idle);
    }

    #[test]
    fn shell_screens() {
        let idle =
            "user@host:~/work$ cargo build\n   Finished dev profile\nuser@host:~/work$ \n\n\n";
        let running = "user@host:~/work$ cargo build\n   Compiling orch v0.1.0\n";
        let asking = "user@host:~/work$ rm -i a\nrm: remove regular file 'a'? [y/N]";
        let ssh = "The authenticity of host 'x' can't be established.\nAre you sure you want to continue connecting (yes/no/[fingerprint])?";
        assert_eq!(classify(Profile::Shell, idle), Activity::Idle);
        assert_eq!(classify(Profile::Shell, "❯"), Activity::Idle);
        assert_eq!(classify(Profile::Shell, "root@box:/# "), Activity::Idle);
        assert_eq!(classify(Profile::Shell, running), Activity::Unknown);
        assert_eq!(classify(Profile::Shell, asking), Activity::Waiting);
        assert_eq!(classify(Profile::Shell, ssh), Activity::Waiting);
        assert_eq!(
            classify(Profile::Shell, "[sudo] password for me:"),
            Activity::Waiting
        );
    }

    #[test]
    fn nothing_recognisable_is_unknown() {
        let screen = "compiling...\nlinking...\n42 files processed\n";
        for p in [
            Profile::Claude,
            Profile::Codex,
            Profile::Aider,
            Profile::Gemini,
            Profile::Shell,
        ] {
            assert_eq!(classify(p, screen), Activity::Unknown, "{p:?}");
        }
        assert_eq!(classify(Profile::Claude, ""), Activity::Unknown);
    }

    #[test]
    fn overrides_replace_a_category() {
        let p = ActivityProfile::for_profile(Profile::Claude)
            .with_overrides(Some(vec![r"^BUSY$".to_owned()]), None, None)
            .expect("valid patterns");
        assert_eq!(p.classify("BUSY\n"), Activity::Working);
        // The built-in working markers are gone, the others stay.
        assert_eq!(p.classify(CLAUDE_BUSY), Activity::Idle);
        assert_eq!(p.classify(CLAUDE_APPROVAL), Activity::Waiting);
        assert!(
            ActivityProfile::for_profile(Profile::Shell)
                .with_overrides(None, Some(vec!["(".to_owned()]), None)
                .is_err()
        );
    }

    #[test]
    fn hooks_and_screens_agree_on_the_newest() {
        use Activity::{Idle, Unknown, Waiting, Working};
        // No hook (a shell): the screen.
        assert_eq!(resolve(Idle, 5, None), Idle);
        // A turn started (hook) while the screen still shows the old idle footer.
        assert_eq!(resolve(Idle, 5, Some((Working, 7))), Working);
        // The screen caught up, then the turn ended by the user's Esc: no hook for that.
        assert_eq!(resolve(Idle, 9, Some((Working, 7))), Idle);
        // A retrying turn whose footer hint matches nothing stays working.
        assert_eq!(resolve(Unknown, 9, Some((Working, 7))), Working);
        // A permission dialog on screen beats an older "working".
        assert_eq!(resolve(Waiting, 3, Some((Working, 7))), Waiting);
        assert_eq!(resolve(Working, 3, Some((Idle, 7))), Idle);
    }

    #[test]
    fn activity_names() {
        assert_eq!(Activity::Waiting.as_str(), "waiting");
        assert_eq!(
            serde_json::to_string(&Activity::Unknown).expect("json"),
            "\"unknown\""
        );
    }
}
