//! What orch knows about each agent CLI, kept as data: one YAML file per profile next to
//! this module (`claude.yaml`, `codex.yaml`, `gemini.yaml`, `aider.yaml`, `shell.yaml`),
//! embedded in the binary. CLIs reword their screens from one release to the next; when
//! one does, its file changes, not the code, and a layout can override the screen
//! patterns and the paste settings per agent.
//!
//! A profile says:
//! - which program it is and how to resume its last conversation (`resume`);
//! - how to read its screen (`activity`: working / waiting / idle patterns, see
//!   [`crate::monitor::activity`]);
//! - how a paste shows and when Enter may follow it (`paste`, used by
//!   [`crate::messaging::deliver`]);
//! - which of the CLI's own signals report its activity (`hooks`, installed per pane by
//!   [`hooks`]);
//! - whether a restored agent is told about the restore as input or only shown it
//!   (`handover`);
//! - which variables its pane needs to run the CLI interactively (`env`).
//!
//! The files are checked by the tests below; should one ever fail to parse, the profile
//! degrades to one that recognises nothing (activity `unknown`, plain delivery).

pub mod hooks;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::layout::{Duration, Profile, StopSignal};
use crate::monitor::activity::Activity;

/// One agent CLI, as its data file describes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliProfile {
    /// The program's name (`claude`); `None` for the user's shell.
    pub program: Option<String>,
    /// Arguments that resume the last conversation, appended to the agent's command.
    pub resume: Vec<String>,
    pub stop_signal: StopSignalName,
    pub activity: Patterns,
    pub paste: Paste,
    #[serde(default)]
    pub hooks: Option<Hooks>,
    /// How a restored agent hears of its handover.
    #[serde(default)]
    pub handover: HandoverStyle,
    /// The keys that answer the CLI's own approval prompt (tmux key names), for the
    /// dashboard's `Y`/`N`.
    #[serde(default)]
    pub approval: Option<ApprovalKeys>,
    /// Variables set in the pane before the agent's own `env` (which wins): what the CLI
    /// needs to run interactively there, whatever environment orch was started from.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Keys (as `tmux send-keys` names them) that answer an approval prompt.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalKeys {
    pub approve: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopSignalName {
    Term,
    Hup,
}

/// Regular expressions matched against the tail of the screen (see
/// [`crate::monitor::activity`] for how the tail is cut).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patterns {
    pub working: Vec<String>,
    pub waiting: Vec<String>,
    pub idle: Vec<String>,
    /// Report `activity_unrecognised` when nothing matches for a while (off for shells,
    /// where a running command matching nothing is normal).
    #[serde(default = "yes")]
    pub report_unrecognised: bool,
}

fn yes() -> bool {
    true
}

/// How a paste shows on the CLI's screen and when Enter may follow it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paste {
    /// What the CLI shows instead of a long paste. Matched against the screen with all
    /// whitespace removed (TUIs re-wrap text), so they are written without spaces.
    pub placeholders: Vec<String>,
    /// The least time between a paste and its Enter: longer than the window in which the
    /// CLI takes an Enter as part of the paste.
    pub settle: Duration,
    /// What the screen shows once a message is submitted (a turn starting, an empty
    /// input). Empty: the text leaving the cursor's line is enough.
    pub submitted: Vec<String>,
}

/// The CLI's own activity signals.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    pub via: HookMechanism,
    /// Event name (for an event with a subtype, `Event/subtype`) to the activity it
    /// means. Events not listed change nothing.
    pub events: BTreeMap<String, Activity>,
}

/// How the hooks reach `orch hook activity`; see [`hooks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookMechanism {
    /// A settings file passed with `--settings` (Claude Code).
    ClaudeSettings,
    /// The `notify` program, given with `-c notify=[…]` (Codex).
    CodexNotify,
    /// A system-defaults settings file (`GEMINI_CLI_SYSTEM_DEFAULTS_PATH`, Gemini CLI).
    GeminiSystemDefaults,
    /// `--notifications-command` (Aider).
    AiderNotifications,
}

/// How a restored agent hears of its handover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandoverStyle {
    /// As a message, once the agent looks ready (an agent CLI reads it as its next task).
    #[default]
    Message,
    /// Printed in the pane before the program starts: a shell would run it as commands.
    Show,
}

impl Hooks {
    /// The activity an event means: `Event/subtype` first, then `Event`.
    pub fn activity(&self, event: &str, subtype: Option<&str>) -> Option<Activity> {
        subtype
            .and_then(|s| self.events.get(&format!("{event}/{s}")))
            .or_else(|| self.events.get(event))
            .copied()
    }
}

fn parse(name: &str, text: &str) -> CliProfile {
    serde_yaml::from_str(text).unwrap_or_else(|e| {
        tracing::error!(profile = name, "the built-in profile does not parse: {e}");
        CliProfile {
            program: None,
            resume: Vec::new(),
            stop_signal: StopSignalName::Term,
            activity: Patterns::default(),
            paste: Paste {
                placeholders: Vec::new(),
                settle: Duration::from_millis(0),
                submitted: Vec::new(),
            },
            hooks: None,
            handover: HandoverStyle::Message,
            approval: None,
            env: BTreeMap::new(),
        }
    })
}

macro_rules! embedded {
    ($($name:ident => $file:literal),* $(,)?) => {
        $(static $name: LazyLock<CliProfile> =
            LazyLock::new(|| parse($file, include_str!($file)));)*
    };
}

embedded! {
    CLAUDE => "claude.yaml",
    CODEX => "codex.yaml",
    GEMINI => "gemini.yaml",
    AIDER => "aider.yaml",
    SHELL => "shell.yaml",
}

/// The built-in data of `profile`.
pub fn get(profile: Profile) -> &'static CliProfile {
    match profile {
        Profile::Claude => &CLAUDE,
        Profile::Codex => &CODEX,
        Profile::Gemini => &GEMINI,
        Profile::Aider => &AIDER,
        Profile::Shell => &SHELL,
    }
}

impl CliProfile {
    pub fn stop_signal(&self) -> StopSignal {
        match self.stop_signal {
            StopSignalName::Term => StopSignal::Terminate,
            StopSignalName::Hup => StopSignal::Hangup,
        }
    }

    /// Whether `command` runs this profile's own program (not a wrapper script or another
    /// tool), so that its arguments can be extended.
    pub fn runs_program(&self, command: &str) -> bool {
        let program = command
            .split_whitespace()
            .next()
            .map(|w| w.rsplit('/').next().unwrap_or(w));
        program.is_some() && program == self.program.as_deref()
    }

    /// The profile's `env`, as a pane's variables.
    pub fn pane_env(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.env.iter().map(|(k, v)| (k.clone(), v.clone()))
    }
}

/// The command that restarts `command` (this profile's agent) where it left off: Claude
/// Code `claude --continue`, Codex `codex resume --last`, Gemini `gemini --resume latest`,
/// Aider `aider --restore-chat-history`. Commands that do not run the profile's own
/// program are returned unchanged, as are profiles without a resume command.
pub fn resume_command(profile: Profile, command: &str) -> String {
    let p = get(profile);
    if p.resume.is_empty() || !p.runs_program(command) {
        return command.to_owned();
    }
    let args: Vec<String> = p.resume.iter().map(|a| shell_word(a)).collect();
    format!("{} {}", command.trim_end(), args.join(" "))
}

/// `word` as the shell reads it back: as is when it has nothing the shell would
/// interpret, else single-quoted.
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if plain {
        word.to_owned()
    } else {
        crate::tmux::shell_quote(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Profile; 5] = [
        Profile::Claude,
        Profile::Codex,
        Profile::Gemini,
        Profile::Aider,
        Profile::Shell,
    ];

    #[test]
    fn every_profile_file_parses_and_its_patterns_compile() {
        for (p, text) in [
            (Profile::Claude, include_str!("claude.yaml")),
            (Profile::Codex, include_str!("codex.yaml")),
            (Profile::Gemini, include_str!("gemini.yaml")),
            (Profile::Aider, include_str!("aider.yaml")),
            (Profile::Shell, include_str!("shell.yaml")),
        ] {
            let parsed: CliProfile =
                serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            let a = &parsed.activity;
            for re in a
                .working
                .iter()
                .chain(&a.waiting)
                .chain(&a.idle)
                .chain(&parsed.paste.placeholders)
                .chain(&parsed.paste.submitted)
            {
                regex::Regex::new(re).unwrap_or_else(|e| panic!("{p:?}: {re}: {e}"));
            }
        }
    }

    #[test]
    fn placeholders_match_what_the_clis_show() {
        let matches = |p: Profile, shown: &str| {
            let collapsed: String = shown.chars().filter(|c| !c.is_whitespace()).collect();
            get(p)
                .paste
                .placeholders
                .iter()
                .any(|re| regex::Regex::new(re).is_ok_and(|r| r.is_match(&collapsed)))
        };
        // As each CLI drew them (2026-12-01).
        assert!(matches(
            Profile::Claude,
            "❯ hello[Pasted text #1 +30 lines]"
        ));
        assert!(matches(Profile::Codex, "› [Pasted Content 2070 chars]"));
        assert!(matches(Profile::Gemini, " > [Pasted Text: 31 lines]"));
        // Wrapped in a narrow pane.
        assert!(matches(Profile::Claude, "[Pasted text #12\n  +30 lines]"));
        assert!(!matches(Profile::Claude, "[Pasted Content 2070 chars]"));
        assert!(!matches(Profile::Shell, "[Pasted text #1 +30 lines]"));
    }

    #[test]
    fn hook_events_map_to_activities() {
        let claude = get(Profile::Claude).hooks.as_ref().expect("claude hooks");
        assert_eq!(claude.via, HookMechanism::ClaudeSettings);
        assert_eq!(
            claude.activity("UserPromptSubmit", None),
            Some(Activity::Working)
        );
        assert_eq!(
            claude.activity("Notification", Some("permission_prompt")),
            Some(Activity::Waiting)
        );
        assert_eq!(
            claude.activity("Notification", Some("idle_prompt")),
            Some(Activity::Idle)
        );
        assert_eq!(claude.activity("Notification", Some("auth_success")), None);
        assert_eq!(claude.activity("StopFailure", None), Some(Activity::Idle));
        let codex = get(Profile::Codex).hooks.as_ref().expect("codex hooks");
        assert_eq!(
            codex.activity("agent-turn-complete", None),
            Some(Activity::Idle)
        );
        assert!(get(Profile::Shell).hooks.is_none());
        for p in ALL {
            if let Some(h) = &get(p).hooks {
                assert!(!h.events.is_empty(), "{p:?}");
            }
        }
    }

    #[test]
    fn resume_commands_continue_the_last_conversation() {
        assert_eq!(
            resume_command(Profile::Claude, "claude"),
            "claude --continue"
        );
        assert_eq!(
            resume_command(Profile::Claude, "/usr/bin/claude --model opus "),
            "/usr/bin/claude --model opus --continue"
        );
        assert_eq!(
            resume_command(Profile::Codex, "codex"),
            "codex resume --last"
        );
        assert_eq!(
            resume_command(Profile::Gemini, "gemini"),
            "gemini --resume latest"
        );
        assert_eq!(
            resume_command(Profile::Aider, "aider --model gpt-4o"),
            "aider --model gpt-4o --restore-chat-history"
        );
        // A wrapper is not the CLI: its arguments are its own business.
        assert_eq!(
            resume_command(Profile::Claude, "./wrap.sh claude"),
            "./wrap.sh claude"
        );
        assert_eq!(resume_command(Profile::Shell, "sleep 9"), "sleep 9");
    }

    #[test]
    fn approval_keys_are_tmux_key_names() {
        for p in ALL {
            let keys = get(p)
                .approval
                .as_ref()
                .expect("every profile answers a prompt");
            assert!(!keys.approve.is_empty() && !keys.deny.is_empty(), "{p:?}");
            for k in keys.approve.iter().chain(&keys.deny) {
                assert!(
                    k.len() == 1 || ["Enter", "Escape", "Tab"].contains(&k.as_str()),
                    "{p:?}: {k}"
                );
            }
        }
    }

    #[test]
    fn shells_are_shown_their_handover() {
        assert_eq!(get(Profile::Shell).handover, HandoverStyle::Show);
        assert_eq!(get(Profile::Claude).handover, HandoverStyle::Message);
        assert_eq!(get(Profile::Shell).stop_signal(), StopSignal::Hangup);
        assert_eq!(get(Profile::Codex).stop_signal(), StopSignal::Terminate);
    }

    #[test]
    fn only_gemini_has_its_ci_variables_cleared() {
        let vars: Vec<(String, String)> = get(Profile::Gemini).pane_env().collect();
        assert_eq!(
            vars,
            [("CI", ""), ("GITHUB_ACTIONS", "")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        for p in ALL.into_iter().filter(|p| *p != Profile::Gemini) {
            assert_eq!(get(p).pane_env().count(), 0, "{p:?}");
        }
    }
}
