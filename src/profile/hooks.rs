//! Installs a CLI's own activity signals for one pane, without touching the user's
//! settings: each mechanism adds arguments to the agent's command or an environment
//! variable naming a file in the session's state dir. Every signal runs
//! `orch hook activity --profile P …`, which reads the agent's identity from the pane's
//! `ORCH_*` variables (the CLI passes its environment on to its hooks) and tells the
//! supervisor over the control socket.
//!
//! - Claude Code: `--settings <session-dir>/hooks/claude-settings.json`, whose `hooks`
//!   run the command for each event the profile maps; Claude merges it with the user's
//!   own settings.
//! - Codex: `-c notify=[…]` (a turn completed); its hooks would need a trust decision
//!   saved in the user's config.
//! - Gemini CLI: `GEMINI_CLI_SYSTEM_DEFAULTS_PATH` naming orch's settings file, the
//!   lowest settings layer (a system-defaults file of the user's own is replaced; the hook
//!   lists of the user's settings are concatenated with orch's).
//! - Aider: `--notifications --notifications-command …` (it waits for input).
//!
//! Commands that do not run the profile's own program (a wrapper script) get nothing.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;

use super::shell_word;
use super::{CliProfile, HookMechanism};
use crate::layout::Profile;
use crate::tmux::shell_quote;

/// Folder in `<state-dir>/<session>/` holding the hook settings files.
pub const HOOKS_DIR: &str = "hooks";

/// What a pane runs once the hooks are in: its command, and variables to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hooked {
    pub command: String,
    pub env: Vec<(String, String)>,
}

/// Adds the profile's activity signals to `command`. `exe` is the orch binary the hooks
/// run; files go to `<session_dir>/hooks/`.
pub fn install(profile: Profile, command: &str, exe: &Path, session_dir: &Path) -> Result<Hooked> {
    let p = super::get(profile);
    let plain = Hooked {
        command: command.to_owned(),
        env: Vec::new(),
    };
    let Some(hooks) = &p.hooks else {
        return Ok(plain);
    };
    if !p.runs_program(command) {
        return Ok(plain);
    }
    let name = profile_name(profile);
    let run = |extra: &str| {
        format!(
            "{} hook activity --profile {name}{extra}",
            shell_quote(&exe.to_string_lossy())
        )
    };
    Ok(match hooks.via {
        HookMechanism::ClaudeSettings => {
            let file = write_settings(
                session_dir,
                "claude-settings.json",
                claude(p, &run(" --stdin")),
            )?;
            Hooked {
                command: with_args(
                    command,
                    &["--settings".into(), file.to_string_lossy().into()],
                ),
                env: Vec::new(),
            }
        }
        HookMechanism::CodexNotify => {
            let argv = [
                exe.to_string_lossy().as_ref(),
                "hook",
                "activity",
                "--profile",
                name,
            ]
            .map(toml_string)
            .join(",");
            Hooked {
                command: with_args(command, &["-c".into(), format!("notify=[{argv}]")]),
                env: Vec::new(),
            }
        }
        HookMechanism::GeminiSystemDefaults => {
            let file = write_settings(
                session_dir,
                "gemini-settings.json",
                gemini(p, &run(" --stdin")),
            )?;
            Hooked {
                command: command.to_owned(),
                env: vec![(
                    "GEMINI_CLI_SYSTEM_DEFAULTS_PATH".into(),
                    file.to_string_lossy().into_owned(),
                )],
            }
        }
        HookMechanism::AiderNotifications => Hooked {
            command: with_args(
                command,
                &[
                    "--notifications".into(),
                    "--notifications-command".into(),
                    run(" --event input"),
                ],
            ),
            env: Vec::new(),
        },
    })
}

/// What one of the CLI's signals means: the event (`Stop`, `Notification/idle_prompt`)
/// and the activity the profile maps it to. `json` is what the CLI passed: the hook input
/// on stdin (Claude Code, Gemini CLI: `hook_event_name`, `notification_type`) or the
/// payload argument (Codex's notify: `type`); `event` an event named on the command line
/// (Aider). Pure. `None` for an event the profile does not map.
pub fn reading(
    profile: Profile,
    event: Option<&str>,
    json: Option<&serde_json::Value>,
) -> Option<(String, crate::monitor::activity::Activity)> {
    let hooks = super::get(profile).hooks.as_ref()?;
    let field = |k: &str| json.and_then(|j| j.get(k)).and_then(|v| v.as_str());
    let name = event
        .or_else(|| field("hook_event_name"))
        .or_else(|| field("type"))?;
    let subtype = field("notification_type");
    let activity = hooks.activity(name, subtype)?;
    let label = match subtype {
        Some(s) if hooks.events.contains_key(&format!("{name}/{s}")) => format!("{name}/{s}"),
        _ => name.to_owned(),
    };
    Some((label, activity))
}

/// Tells the session's supervisor what one of its agent's CLI signals means. The agent
/// is the caller's `ORCH_AGENT`; nothing is waited for (the CLI waits for its hook).
/// Returns whether a supervisor was told.
pub fn report(
    session_dir: &Path,
    agent: &str,
    profile: Profile,
    event: Option<&str>,
    json: Option<&serde_json::Value>,
) -> Result<bool> {
    let Some((event, activity)) = reading(profile, event, json) else {
        return Ok(false);
    };
    let req = crate::supervisor::control::Request::Activity {
        agent: agent.to_owned(),
        activity,
        event,
    };
    crate::supervisor::control::notify(session_dir, &req)
}

/// The profile's name as the layout spells it.
pub fn profile_name(profile: Profile) -> &'static str {
    match profile {
        Profile::Claude => "claude",
        Profile::Codex => "codex",
        Profile::Gemini => "gemini",
        Profile::Aider => "aider",
        Profile::Shell => "shell",
    }
}

/// `command` with `args` (shell-quoted) right after its program, so they come before a
/// subcommand such as Codex's `resume`.
fn with_args(command: &str, args: &[String]) -> String {
    let trimmed = command.trim_start();
    let (program, rest) = trimmed
        .split_once(char::is_whitespace)
        .unwrap_or((trimmed, ""));
    let quoted: Vec<String> = args.iter().map(|a| shell_word(a)).collect();
    let mut out = format!("{program} {}", quoted.join(" "));
    if !rest.trim().is_empty() {
        out.push(' ');
        out.push_str(rest.trim_start());
    }
    out
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Claude Code's settings: one command hook per event (the event and its subtype come on
/// the hook's stdin).
fn claude(p: &CliProfile, command: &str) -> serde_json::Value {
    let mut hooks = serde_json::Map::new();
    for event in events(p) {
        hooks.insert(
            event,
            json!([{ "hooks": [{ "type": "command", "command": command, "timeout": 10 }] }]),
        );
    }
    json!({ "hooks": hooks })
}

/// Gemini CLI's settings: the same shape as Claude's (timeouts in milliseconds).
fn gemini(p: &CliProfile, command: &str) -> serde_json::Value {
    let mut hooks = serde_json::Map::new();
    for event in events(p) {
        hooks.insert(
            event,
            json!([{ "hooks": [{ "type": "command", "command": command, "timeout": 10000 }] }]),
        );
    }
    json!({ "hooks": hooks })
}

/// The CLI event names the profile maps (`Notification/idle_prompt` is `Notification`).
fn events(p: &CliProfile) -> Vec<String> {
    let mut names: Vec<String> = p
        .hooks
        .iter()
        .flat_map(|h| h.events.keys())
        .map(|k| k.split('/').next().unwrap_or(k).to_owned())
        .collect();
    names.dedup();
    names
}

/// Writes a settings file unless it already holds exactly this (panes start often; the
/// file is shared by every agent of the session).
fn write_settings(session_dir: &Path, name: &str, value: serde_json::Value) -> Result<PathBuf> {
    let dir = session_dir.join(HOOKS_DIR);
    crate::state::create_private_dir(&dir)?;
    let file = dir.join(name);
    let bytes = serde_json::to_vec_pretty(&value)?;
    if std::fs::read(&file).ok().as_deref() != Some(bytes.as_slice()) {
        crate::state::atomic_write(&file, &bytes)?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_go_right_after_the_program() {
        assert_eq!(
            with_args("claude", &["--settings".into(), "/a b".into()]),
            "claude --settings '/a b'"
        );
        assert_eq!(
            with_args(
                "codex --model o3 resume --last",
                &["-c".into(), "x=1".into()]
            ),
            "codex -c x=1 --model o3 resume --last"
        );
        assert_eq!(toml_string("/a\"b\\c"), r#""/a\"b\\c""#);
    }

    #[test]
    fn signals_read_as_their_profile_says() {
        use crate::monitor::activity::Activity;
        let v = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("json");
        let claude =
            v(r#"{"hook_event_name":"Notification","notification_type":"permission_prompt"}"#);
        assert_eq!(
            reading(Profile::Claude, None, Some(&claude)),
            Some(("Notification/permission_prompt".into(), Activity::Waiting))
        );
        let submit = v(r#"{"hook_event_name":"UserPromptSubmit","prompt":"hi"}"#);
        assert_eq!(
            reading(Profile::Claude, None, Some(&submit)),
            Some(("UserPromptSubmit".into(), Activity::Working))
        );
        let done = v(r#"{"type":"agent-turn-complete","last-assistant-message":"ok"}"#);
        assert_eq!(
            reading(Profile::Codex, None, Some(&done)),
            Some(("agent-turn-complete".into(), Activity::Idle))
        );
        assert_eq!(
            reading(Profile::Aider, Some("input"), None),
            Some(("input".into(), Activity::Idle))
        );
        let gemini = v(r#"{"hook_event_name":"BeforeAgent"}"#);
        assert_eq!(
            reading(Profile::Gemini, None, Some(&gemini)).map(|r| r.1),
            Some(Activity::Working)
        );
        // Unmapped events and profiles without signals say nothing.
        assert_eq!(reading(Profile::Claude, Some("SessionEnd"), None), None);
        assert_eq!(reading(Profile::Shell, Some("input"), None), None);
        assert_eq!(reading(Profile::Claude, None, None), None);
    }

    #[test]
    fn each_mechanism_reaches_orch_hook_activity() {
        let d = tempfile::tempdir().expect("tmp");
        let exe = Path::new("/opt/orch bin/orch");
        let c = install(Profile::Claude, "claude --model opus", exe, d.path()).expect("claude");
        assert!(
            c.command.starts_with("claude --settings /"),
            "{}",
            c.command
        );
        assert!(c.command.ends_with(" --model opus"), "{}", c.command);
        let settings: serde_json::Value = serde_json::from_slice(
            &std::fs::read(d.path().join("hooks/claude-settings.json")).expect("file"),
        )
        .expect("json");
        let cmd = settings["hooks"]["UserPromptSubmit"][0]["hooks"][0]["command"]
            .as_str()
            .expect("command");
        assert_eq!(
            cmd,
            "'/opt/orch bin/orch' hook activity --profile claude --stdin"
        );
        assert!(settings["hooks"]["Notification"].is_array());
        assert!(settings["hooks"].get("Notification/idle_prompt").is_none());

        let x = install(Profile::Codex, "codex", exe, d.path()).expect("codex");
        assert_eq!(
            x.command,
            r#"codex -c 'notify=["/opt/orch bin/orch","hook","activity","--profile","codex"]'"#
        );
        let g = install(Profile::Gemini, "gemini", exe, d.path()).expect("gemini");
        assert_eq!(g.command, "gemini");
        assert_eq!(g.env[0].0, "GEMINI_CLI_SYSTEM_DEFAULTS_PATH");
        let a = install(Profile::Aider, "aider --model gpt-4o", exe, d.path()).expect("aider");
        assert!(
            a.command.contains(" --notifications-command '"),
            "{}",
            a.command
        );
        // Not the CLI itself, or a profile without signals: unchanged.
        let w = install(Profile::Claude, "./wrap.sh", exe, d.path()).expect("wrapper");
        assert_eq!(w.command, "./wrap.sh");
        let s = install(Profile::Shell, "bash", exe, d.path()).expect("shell");
        assert_eq!(s.command, "bash");
        assert!(s.env.is_empty());
    }
}
