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
//! Where the built-in markers come from (checked against each CLI's source or against
//! screens quoted in issue trackers; CLIs reword their UI, hence the per-layout overrides):
//! - Claude Code: the spinner line `✻ Pondering… (12s · esc to interrupt)` (kbwo/ccmanager
//!   PR #239; omnara-ai/omnara PR #170; gavraz/recon PR #7 lists the spinner glyphs
//!   `·✢✳✶✻✽`; herdrdev/herdr PR #3953 notes "esc to interrupt" is hidden with a custom
//!   status line, hence the glyph-plus-ellipsis pattern). Approvals: "Do you want to
//!   proceed?" / "Do you want to make this edit to …?" with `❯ 1. Yes` and "No, and tell
//!   Claude what to do differently" (anthropics/claude-code #10732, #47201; judell/bram #197
//!   catalogues the headlines). Idle: the input box, `> ` inside `│ … │` or alone between
//!   rules, and the `? for shortcuts` hint.
//! - Codex CLI: `Working (12s • esc to interrupt)`, earlier "press Esc twice to interrupt"
//!   (openai/codex codex-rs/tui/src/status_indicator_widget.rs). Approvals: "Would you like
//!   to run the following command?" / "… make the following edits?" / "… grant these
//!   permissions?", `› 1. Yes, proceed (y)`, "Press enter to confirm or esc to cancel"
//!   (screens quoted by AgentWorkforce/relay and muxcode tests). Idle: the composer footer
//!   `⏎ send` and `NN% context left`.
//! - Aider: the `Waiting for <model>` spinner on the last line (aider/waiting.py, started
//!   in aider/coders/base_coder.py). Approvals: `io.confirm_ask`, e.g. "Create new file?
//!   (Y)es/(N)o [Yes]:" and "Run shell command? (Y)es/(N)o/(D)on't ask again [Yes]:" — only
//!   while on the last line. Idle: the input prompt `> `, or `diff> `, `architect> `,
//!   `ask> `, `multi> ` by mode, on the last line.
//! - Gemini CLI: the loading indicator `⠋ Thinking... (esc to cancel, 12s)`
//!   (packages/cli/src/ui/components/LoadingIndicator.tsx). Approvals: "Allow execution of:
//!   …?" with "Yes, allow once" / "Yes, allow always" and "Waiting for user confirmation".
//!   Idle: the placeholder "Type your message or @path/to/file" (InputPrompt).
//! - Plain shell: a prompt (`$`, `#`, `%`, `>`, `❯`) ending the last line means idle; a
//!   `[y/N]`, `(yes/no)` or `Password:` question on the last line means waiting. A running
//!   command draws nothing recognisable, so it is `Unknown`; output recency tells the rest.

use regex::{RegexSet, RegexSetBuilder};

use crate::layout::Profile;

/// How many non-empty lines from the bottom of the screen are looked at: enough for a
/// Claude Code approval dialog with its options, few enough that old scrollback does not
/// count.
pub const TAIL_LINES: usize = 15;

/// What an agent is doing, as its screen shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
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

/// The screen markers of one agent CLI.
#[derive(Clone, Debug)]
pub struct ActivityProfile {
    working: RegexSet,
    waiting: RegexSet,
    idle: RegexSet,
}

// Claude Code's spinner glyphs; the ellipsis after the verb is what tells a live spinner
// (`✻ Pondering…`) from the completion line (`✻ Worked for 1m 52s`).
const CLAUDE_WORKING: &[&str] = &[r"(?i)esc to interrupt", r"^\s*[·✢✳✶✻✽*]\s+\S[^\n]*…"];
const CLAUDE_WAITING: &[&str] = &[
    r"Do you want to (proceed|make this edit|create|overwrite|allow)",
    r"^\s*❯\s*1\.\s+Yes",
    r"No, and tell Claude what to do differently",
];
const CLAUDE_IDLE: &[&str] = &[r"^\s*│?\s*>\s*│?$", r"^\s*❯\s*$", r"\? for shortcuts"];

const CODEX_WORKING: &[&str] = &[r"(?i)esc (twice )?to interrupt", r"Working \(\d+"];
const CODEX_WAITING: &[&str] = &[
    r"Would you like to (run the following command|make the following edits|grant these permissions)\?",
    r"Yes, proceed \(y\)",
    r"Press enter to confirm or esc to cancel",
];
const CODEX_IDLE: &[&str] = &[r"⏎ send", r"\d+% context left"];

// The spinner is redrawn in place and erased when the reply starts, so it counts only on
// the bottom line.
const AIDER_WORKING: &[&str] = &[r"Waiting for \S+\z"];
const AIDER_WAITING: &[&str] = &[r"\(Y\)es/\(N\)o[^\n]*\z"];
const AIDER_IDLE: &[&str] = &[r"(?m)^[a-z-]*>\z"];

const GEMINI_WORKING: &[&str] = &[r"esc to cancel, \d+"];
const GEMINI_WAITING: &[&str] = &[
    r"Allow execution",
    r"Yes, allow (once|always)",
    r"Waiting for user confirmation",
];
const GEMINI_IDLE: &[&str] = &[r"Type your message or @path/to/file"];

const SHELL_WORKING: &[&str] = &[];
const SHELL_WAITING: &[&str] =
    &[r"(?i)((\[y/n\]|\(y/n\)|\(yes/no[^)\n]*\)\??):?|password[^\n]*:)\z"];
const SHELL_IDLE: &[&str] = &[r"[$#%>❯]\z"];

impl ActivityProfile {
    /// The built-in markers of a CLI profile.
    pub fn for_profile(profile: Profile) -> ActivityProfile {
        let (working, waiting, idle) = match profile {
            Profile::Claude => (CLAUDE_WORKING, CLAUDE_WAITING, CLAUDE_IDLE),
            Profile::Codex => (CODEX_WORKING, CODEX_WAITING, CODEX_IDLE),
            Profile::Aider => (AIDER_WORKING, AIDER_WAITING, AIDER_IDLE),
            Profile::Gemini => (GEMINI_WORKING, GEMINI_WAITING, GEMINI_IDLE),
            Profile::Shell => (SHELL_WORKING, SHELL_WAITING, SHELL_IDLE),
        };
        ActivityProfile {
            working: builtin(working),
            waiting: builtin(waiting),
            idle: builtin(idle),
        }
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
fn screen_tail(screen: &str) -> String {
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

fn builtin(patterns: &[&str]) -> RegexSet {
    // The built-in patterns are constants covered by the tests below; should one ever fail
    // to compile, matching nothing (Unknown) is the safe reading of a screen.
    compile(patterns).unwrap_or_else(|_| RegexSet::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(p: Profile, screen: &str) -> Activity {
        ActivityProfile::for_profile(p).classify(screen)
    }

    #[test]
    fn builtin_patterns_compile() {
        for set in [
            CLAUDE_WORKING,
            CLAUDE_WAITING,
            CLAUDE_IDLE,
            CODEX_WORKING,
            CODEX_WAITING,
            CODEX_IDLE,
            AIDER_WORKING,
            AIDER_WAITING,
            AIDER_IDLE,
            GEMINI_WORKING,
            GEMINI_WAITING,
            GEMINI_IDLE,
            SHELL_WORKING,
            SHELL_WAITING,
            SHELL_IDLE,
        ] {
            compile(set).expect("built-in pattern compiles");
        }
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
        assert_eq!(p.classify(CLAUDE_SPINNER_ONLY), Activity::Idle);
        assert_eq!(p.classify(CLAUDE_APPROVAL), Activity::Waiting);
        assert!(
            ActivityProfile::for_profile(Profile::Shell)
                .with_overrides(None, Some(vec!["(".to_owned()]), None)
                .is_err()
        );
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
