//! The layout file as written: every key of SPEC §3, all optional where the file may omit
//! them. Unknown keys are errors (`deny_unknown_fields`), and values that can be judged on
//! their own (names, durations, enums) are judged while parsing, so serde_yaml reports them
//! with their line and column.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::units::{Duration, Percent, Period, Size};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLayout {
    pub session: TmuxName,
    pub root: Option<String>,
    pub window: Option<TmuxName>,
    pub arrange: Option<Arrange>,
    #[serde(default)]
    pub defaults: RawDefaults,
    pub agents: Vec<RawAgent>,
    #[serde(default)]
    pub monitor: RawMonitor,
    #[serde(default)]
    pub snapshot: RawSnapshot,
    pub quality: Option<RawQuality>,
    #[serde(default)]
    pub rollback: RawRollback,
    #[serde(default)]
    pub messaging: RawMessaging,
}

/// Settings applied to every agent unless the agent sets them itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub command: Option<String>,
    pub profile: Option<Profile>,
    pub cwd: Option<String>,
    pub env: Option<EnvMap>,
    pub worktree: Option<RawWorktree>,
    #[serde(default)]
    pub restart: RawRestart,
    pub stall_after: Option<Period>,
    pub on_stall: Option<OnStall>,
    pub on_limit: Option<OnLimit>,
    #[serde(default)]
    pub activity: RawActivity,
    #[serde(default)]
    pub paste: RawPaste,
    #[serde(default)]
    pub limits: RawLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub name: AgentName,
    pub role: Role,
    pub command: Option<String>,
    pub profile: Option<Profile>,
    pub cwd: Option<String>,
    pub env: Option<EnvMap>,
    pub worktree: Option<RawWorktree>,
    pub instructions: Option<String>,
    #[serde(default)]
    pub restart: RawRestart,
    pub stall_after: Option<Period>,
    pub on_stall: Option<OnStall>,
    pub on_limit: Option<OnLimit>,
    #[serde(default)]
    pub activity: RawActivity,
    #[serde(default)]
    pub paste: RawPaste,
    #[serde(default)]
    pub limits: RawLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRestart {
    pub policy: Option<RestartPolicy>,
    pub max_restarts: Option<u32>,
    pub window: Option<Duration>,
    pub min_uptime: Option<Duration>,
    #[serde(default)]
    pub backoff: RawBackoff,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackoff {
    pub initial: Option<Duration>,
    pub max: Option<Duration>,
}

/// Screen patterns (regular expressions) that replace a profile's built-in ones.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawActivity {
    pub working: Option<Vec<String>>,
    pub waiting: Option<Vec<String>>,
    pub idle: Option<Vec<String>>,
}

/// How a paste shows on the agent's CLI and when Enter may follow it; replaces the
/// profile's where given.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPaste {
    pub placeholders: Option<Vec<String>>,
    pub settle: Option<Duration>,
}

/// What to do when an agent has been silent for `stall_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnStall {
    Alert,
    Restart,
}

/// What to do when an agent's memory exceeds `limits.memory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnLimit {
    Alert,
    Restart,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub memory: Option<Size>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMonitor {
    pub tick: Option<Period>,
    pub resources: Option<Period>,
    pub maintenance: Option<Period>,
    pub error_patterns: Option<Vec<String>>,
    pub error_storm: Option<RawErrorStorm>,
    pub leak: Option<RawLeak>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawErrorStorm {
    pub count: u32,
    pub window: Period,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLeak {
    pub window: Period,
    pub min_growth: Percent,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSnapshot {
    pub interval: Option<Period>,
    pub keep: Option<u32>,
    pub scrollback_lines: Option<u32>,
    pub redact: Option<Vec<String>>,
    pub on_server_death: Option<OnServerDeath>,
}

/// What the supervisor does when the session's tmux server dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnServerDeath {
    /// Rebuild the session from the newest good snapshot, then keep supervising it.
    Restore,
    /// Report it; a human runs `orch restore`.
    Alert,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQuality {
    pub repo: Option<String>,
    pub check: String,
    pub timeout: Option<Period>,
    pub branches: Option<Vec<String>>,
    pub retries: Option<u32>,
    pub identity: Option<Identity>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollback {
    pub auto_max_risk: Option<Risk>,
    pub max_consecutive: Option<u32>,
    pub max_auto_per_day: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMessaging {
    pub acl: Option<Acl>,
}

/// `worktree: true`, `worktree: false` or `worktree: { copy: [".env"] }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RawWorktree {
    Off,
    On { copy: Vec<String> },
}

impl<'de> Deserialize<'de> for RawWorktree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawWorktree;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or a mapping such as { copy: [\".env\"] }")
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<RawWorktree, E> {
                Ok(if on {
                    RawWorktree::On { copy: Vec::new() }
                } else {
                    RawWorktree::Off
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawWorktree, A::Error> {
                let mut copy = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "copy" if copy.is_none() => copy = Some(map.next_value::<Vec<String>>()?),
                        "copy" => return Err(de::Error::duplicate_field("copy")),
                        other => return Err(de::Error::unknown_field(other, &["copy"])),
                    }
                }
                Ok(RawWorktree::On {
                    copy: copy.unwrap_or_default(),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// How tmux arranges the agent panes (`select-layout` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arrange {
    Tiled,
    EvenHorizontal,
    EvenVertical,
    MainHorizontal,
    MainVertical,
}

impl Arrange {
    /// The name tmux's `select-layout` takes.
    pub fn tmux_name(self) -> &'static str {
        match self {
            Arrange::Tiled => "tiled",
            Arrange::EvenHorizontal => "even-horizontal",
            Arrange::EvenVertical => "even-vertical",
            Arrange::MainHorizontal => "main-horizontal",
            Arrange::MainVertical => "main-vertical",
        }
    }
}

/// The agent CLI a pane runs; decides its default command and how orch reads its screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    Claude,
    Codex,
    Aider,
    Gemini,
    Shell,
}

impl Profile {
    /// The profile a layout names `name` (`claude`, `codex`, …).
    pub fn from_name(name: &str) -> Option<Profile> {
        Some(match name {
            "claude" => Profile::Claude,
            "codex" => Profile::Codex,
            "aider" => Profile::Aider,
            "gemini" => Profile::Gemini,
            "shell" => Profile::Shell,
            _ => return None,
        })
    }

    /// The command used when the layout gives none; `None` means the user's shell.
    pub fn default_command(self) -> Option<&'static str> {
        crate::profile::get(self).program.as_deref()
    }

    /// The signal that asks this kind of program to finish (the profile's data says which).
    pub fn stop_signal(self) -> StopSignal {
        crate::profile::get(self).stop_signal()
    }
}

/// The polite first signal of a graceful stop (the hard one is always SIGKILL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    Terminate,
    Hangup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    OnFailure,
    Always,
    Never,
}

/// The most dangerous rollback orch may run without asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    None,
    Low,
    Medium,
    High,
}

/// Which author identity the agents' panes commit with (`quality.identity`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Identity {
    /// The user's own git identity: commits cannot be told apart by author.
    #[default]
    User,
    /// Each pane commits as its agent (`GIT_AUTHOR_NAME`/`GIT_COMMITTER_NAME` set to the
    /// agent's name), so the gate can attribute a commit to the agent that made it.
    PerAgent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acl {
    Hierarchy,
    Open,
}

/// Declares a string newtype whose value is checked while parsing.
macro_rules! checked_name {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, String> {
                let value = value.into();
                $check(&value)?;
                Ok(Self(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize_checked(d, $check).map(Self)
            }
        }
    };
}

/// Reads a string and checks it inside the visitor, where serde_yaml still knows the
/// scalar's position (a check after deserializing would be blamed on the parent mapping).
fn deserialize_checked<'de, D: Deserializer<'de>>(
    d: D,
    check: fn(&str) -> Result<(), String>,
) -> Result<String, D::Error> {
    struct V(fn(&str) -> Result<(), String>);
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            (self.0)(v).map_err(E::custom)?;
            Ok(v.to_owned())
        }
    }
    d.deserialize_str(V(check))
}

checked_name!(
    /// An agent's name: `[a-z0-9_-]+`, unique in the layout.
    AgentName,
    check_agent_name
);
checked_name!(
    /// PRESIDENT, BOSS, WORKER, or a custom upper-case role.
    Role,
    check_role
);
checked_name!(
    /// A tmux session or window name orch can target without quoting games.
    TmuxName,
    check_tmux_name
);

/// The longest agent, session or window name: it becomes file names (`<agent>.log`,
/// `<agent>.scrollback`, the session's folder), paths under the state dir and tmux
/// targets, all of which have limits (255 bytes a name, 107 a socket path).
pub const MAX_NAME_LEN: usize = 64;

/// Agent names that mean something else where agents are named: `orch send all`, the
/// sender `user` (a person outside the panes) and `orch` (orch's own messages).
pub const RESERVED_AGENT_NAMES: [&str; 3] = ["all", "user", "orch"];

fn check_agent_name(v: &str) -> Result<(), String> {
    if v.is_empty()
        || !v
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "invalid agent name {:?}: use lower-case letters, digits, '_' and '-' (e.g. worker1)",
            shorten(v)
        ));
    }
    if v.len() > MAX_NAME_LEN {
        return Err(format!(
            "agent name {:?} is {} characters long; use at most {MAX_NAME_LEN}",
            shorten(v),
            v.len()
        ));
    }
    if RESERVED_AGENT_NAMES.contains(&v) {
        return Err(format!(
            "agent name {v:?} is reserved (`all`, `user` and `orch` name something else in `orch send`); choose another name"
        ));
    }
    Ok(())
}

/// A name as quoted in an error: whole if short, else its start.
fn shorten(v: &str) -> String {
    match v.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &v[..i]),
        None => v.to_owned(),
    }
}

fn check_role(v: &str) -> Result<(), String> {
    let mut bytes = v.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_uppercase());
    if !first_ok || !bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
        return Err(format!(
            "invalid role {:?}: use PRESIDENT, BOSS, WORKER or another upper-case word (A-Z, 0-9, _)",
            shorten(v)
        ));
    }
    if v.len() > MAX_NAME_LEN {
        return Err(format!(
            "role {:?} is {} characters long; use at most {MAX_NAME_LEN}",
            shorten(v),
            v.len()
        ));
    }
    Ok(())
}

fn check_tmux_name(v: &str) -> Result<(), String> {
    // tmux reads ':' and '.' as target separators and a leading digit-only name as an index.
    let charset = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if v.is_empty() || !charset || v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid name {:?}: use letters, digits, '_' and '-', not digits only (e.g. org9)",
            shorten(v)
        ));
    }
    if v.len() > MAX_NAME_LEN {
        return Err(format!(
            "name {:?} is {} characters long; use at most {MAX_NAME_LEN}",
            shorten(v),
            v.len()
        ));
    }
    Ok(())
}

/// Environment variables for an agent; names are checked, and ORCH_* are reserved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct EnvMap(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for EnvMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<EnvKey, EnvValue>::deserialize(d)?;
        Ok(EnvMap(map.into_iter().map(|(k, v)| (k.0, v.0)).collect()))
    }
}

/// An environment variable name; ORCH_* are reserved for orch.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct EnvKey(String);

impl<'de> Deserialize<'de> for EnvKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_checked(d, check_env_name).map(EnvKey)
    }
}

fn check_env_name(key: &str) -> Result<(), String> {
    let mut bytes = key.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "invalid environment variable name {key:?}: use letters, digits and '_', not starting with a digit"
        ));
    }
    if key.starts_with("ORCH_") {
        return Err(format!("{key} is set by orch itself; choose another name"));
    }
    Ok(())
}

/// An environment value: YAML strings, numbers and booleans are all fine (`DEBUG: 1`).
struct EnvValue(String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EnvValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
