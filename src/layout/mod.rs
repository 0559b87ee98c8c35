//! Layouts: the YAML file that describes a session (SPEC §3), its validation, and the
//! built-in layouts embedded in the binary.
//!
//! `load` turns a file into a [`Layout`] in which every default is resolved: each agent
//! carries its own complete settings, paths are absolute, and nothing downstream needs to
//! know which values came from `defaults:` or from orch's built-in defaults. Every error
//! names the file, the line and the column, and what was expected.

mod builtin;
mod limits;
mod locate;
mod schema;
mod units;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use builtin::{BUILTIN, BuiltinLayout};
pub use limits::{MAX_LAYOUT_BYTES, MAX_NESTING, read_layout_file};
pub use schema::{
    Acl, AgentName, Arrange, Identity, OnLimit, OnServerDeath, OnStall, Profile, RestartPolicy,
    Risk, Role, StopSignal, TmuxName,
};
pub use units::{Duration, MAX_DURATION, Percent, Period, Size};

use locate::{Seg, locate};
use schema::{RawAgent, RawLayout, RawWorktree};

/// A layout with every default applied and every path made absolute.
#[derive(Clone, Debug, Serialize)]
pub struct Layout {
    pub session: TmuxName,
    pub root: PathBuf,
    pub window: TmuxName,
    pub arrange: Arrange,
    pub agents: Vec<Agent>,
    pub monitor: Monitor,
    pub snapshot: SnapshotPolicy,
    pub quality: Option<Quality>,
    pub rollback: RollbackPolicy,
    pub messaging: Messaging,
}

/// One agent: one pane.
#[derive(Clone, Debug, Serialize)]
pub struct Agent {
    pub name: AgentName,
    pub role: Role,
    /// The shell command the pane runs; `None` runs the user's shell.
    pub command: Option<String>,
    pub profile: Profile,
    /// Where the pane starts. For a worktree agent this is decided by `layout up`, which
    /// places the worktree under the state dir, so it is `None` here.
    pub cwd: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub worktree: Option<WorktreeSpec>,
    pub instructions: Option<PathBuf>,
    pub restart: Restart,
    pub stall_after: Duration,
    pub on_stall: OnStall,
    pub limits: Limits,
    pub on_limit: OnLimit,
    pub activity: ActivityOverrides,
    pub paste: PasteOverrides,
}

/// Paste placeholders (matched with all whitespace removed) and settle time that replace
/// the profile's, for a CLI version whose input differs from the built-in profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PasteOverrides {
    pub placeholders: Option<Vec<String>>,
    pub settle: Option<Duration>,
}

/// Screen patterns that replace the profile's built-in ones, per kind of activity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ActivityOverrides {
    pub working: Option<Vec<String>>,
    pub waiting: Option<Vec<String>>,
    pub idle: Option<Vec<String>>,
}

/// The agent works in its own git worktree on branch `orch/<agent>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorktreeSpec {
    /// Untracked files (relative to the repository) copied into the worktree, e.g. `.env`.
    pub copy: Vec<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Restart {
    pub policy: RestartPolicy,
    pub max_restarts: u32,
    pub window: Duration,
    pub min_uptime: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Limits {
    pub memory: Option<Size>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Monitor {
    pub tick: Duration,
    pub resources: Duration,
    /// How often old journal lines and logs are rotated away.
    pub maintenance: Duration,
    pub error_patterns: Vec<String>,
    pub error_storm_count: u32,
    pub error_storm_window: Duration,
    pub leak_window: Duration,
    pub leak_min_growth: Percent,
}

#[derive(Clone, Debug, Serialize)]
pub struct SnapshotPolicy {
    pub interval: Duration,
    pub keep: u32,
    pub scrollback_lines: u32,
    pub redact: Vec<String>,
    pub on_server_death: OnServerDeath,
}

#[derive(Clone, Debug, Serialize)]
pub struct Quality {
    pub repo: PathBuf,
    pub check: String,
    pub timeout: Duration,
    pub branches: Vec<String>,
    /// How many times a red result is run again before anything is blamed.
    pub retries: u32,
    pub identity: Identity,
}

#[derive(Clone, Debug, Serialize)]
pub struct RollbackPolicy {
    pub auto_max_risk: Risk,
    pub max_consecutive: u32,
    /// Automatic rollbacks allowed in any 24 hours.
    pub max_auto_per_day: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Messaging {
    pub acl: Acl,
}

/// Where a layout comes from.
#[derive(Clone, Debug)]
pub enum LayoutSource {
    File(PathBuf),
    Builtin(&'static BuiltinLayout),
}

impl fmt::Display for LayoutSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutSource::File(path) => write!(f, "{}", path.display()),
            LayoutSource::Builtin(b) => write!(f, "{} (built-in)", b.name),
        }
    }
}

/// One problem in a layout, positioned in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutError {
    pub file: String,
    /// 1-based line and column; absent when the file could not be read at all.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem found in a layout, in file order. Displayed one per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LayoutErrors(pub Vec<LayoutError>);

impl fmt::Display for LayoutErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Picks the layout the user means. `arg` is `--layout`/`ORCH_LAYOUT`: a file path, the
/// name of a built-in layout, or the name of `./layouts/NAME.yaml`. Without it,
/// `./orch.yaml` if present, else the built-in `org9`.
pub fn resolve_source(arg: Option<&str>, cwd: &Path) -> Result<LayoutSource, LayoutErrors> {
    let Some(arg) = arg else {
        let local = cwd.join("orch.yaml");
        if local.is_file() {
            return Ok(LayoutSource::File(local));
        }
        return Ok(LayoutSource::Builtin(builtin::find("org9").ok_or_else(
            || {
                unreadable(
                    "org9",
                    "the built-in layout is missing from this build".into(),
                )
            },
        )?));
    };
    let as_path = cwd.join(arg);
    if as_path.is_file() {
        return Ok(LayoutSource::File(as_path));
    }
    let looks_like_path = arg.contains('/') || arg.ends_with(".yaml") || arg.ends_with(".yml");
    if !looks_like_path {
        if let Some(b) = builtin::find(arg) {
            return Ok(LayoutSource::Builtin(b));
        }
        let local = cwd.join("layouts").join(format!("{arg}.yaml"));
        if local.is_file() {
            return Ok(LayoutSource::File(local));
        }
    }
    // A folder or a FIFO is not "no such file": `load` says what it is.
    if as_path.exists() {
        return Ok(LayoutSource::File(as_path));
    }
    if !looks_like_path {
        return Err(unreadable(
            arg,
            "no such layout: not a file, a built-in layout, or ./layouts/<name>.yaml; \
             `orch layout list` shows the layouts available"
                .into(),
        ));
    }
    Err(unreadable(
        arg,
        "no such file; check the path given to --layout".into(),
    ))
}

/// The largest `snapshot.scrollback_lines`: tmux's `history-limit` is an int.
pub const MAX_SCROLLBACK_LINES: u32 = i32::MAX as u32;

/// Reads and validates a layout.
pub fn load(source: &LayoutSource) -> Result<Layout, LayoutErrors> {
    match source {
        LayoutSource::File(path) => {
            let display = path.display().to_string();
            let text = limits::read_layout_file(path)?;
            let base = path.parent().unwrap_or(Path::new("."));
            let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
            parse(&text, &display, &base)
        }
        LayoutSource::Builtin(b) => {
            // Built-in layouts are relative to where the user runs orch.
            let cwd = std::env::current_dir().map_err(|e| {
                unreadable(b.name, format!("cannot read the current directory: {e}"))
            })?;
            parse(b.text, b.name, &cwd)
        }
    }
}

fn unreadable(file: &str, message: String) -> LayoutErrors {
    LayoutErrors(vec![LayoutError {
        file: file.to_owned(),
        position: None,
        message,
    }])
}

/// Parses and validates layout text. `file` names it in errors; relative paths in it are
/// relative to `base_dir`.
pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Layout, LayoutErrors> {
    let text = limits::without_bom(text);
    limits::check(text, file)?;
    let raw: RawLayout = serde_yaml::from_str(text).map_err(|e| {
        LayoutErrors(vec![LayoutError {
            file: file.to_owned(),
            position: Some(e.location().map_or((1, 1), |l| (l.line(), l.column()))),
            message: yaml_message(&e),
        }])
    })?;
    Resolver {
        text,
        file,
        errors: Vec::new(),
    }
    .resolve(raw, base_dir)
}

/// serde_yaml's message without its trailing " at line L column C", which we print in
/// front instead.
fn yaml_message(e: &serde_yaml::Error) -> String {
    let full = e.to_string();
    let Some(loc) = e.location() else { return full };
    for suffix in [
        format!(" at line {} column {}", loc.line(), loc.column()),
        format!(" at line {}, column {}", loc.line(), loc.column()),
    ] {
        if let Some(idx) = full.find(&suffix) {
            let mut msg = full[..idx].to_string();
            msg.push_str(&full[idx + suffix.len()..]);
            return msg;
        }
    }
    full
}

/// Built-in defaults, modelled on the SPEC §3 example (itself after pm2 and systemd: a few
/// quick retries, then a growing wait, never a restart storm).
mod default {
    use super::{Duration, Percent};
    pub const WINDOW: &str = "agents";
    pub const MAX_RESTARTS: u32 = 5;
    pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
    pub const MIN_UPTIME: Duration = Duration::from_secs(5);
    pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
    pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
    pub const STALL_AFTER: Duration = Duration::from_secs(300);
    pub const TICK: Duration = Duration::from_secs(1);
    pub const RESOURCES: Duration = Duration::from_secs(5);
    pub const MAINTENANCE: Duration = Duration::from_secs(30 * 60);
    pub const STORM_COUNT: u32 = 10;
    pub const STORM_WINDOW: Duration = Duration::from_secs(300);
    pub const LEAK_WINDOW: Duration = Duration::from_secs(600);
    pub const LEAK_MIN_GROWTH: Percent = Percent(0.2);
    pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);
    pub const SNAPSHOT_KEEP: u32 = 50;
    pub const SCROLLBACK_LINES: u32 = 10_000;
    pub const CHECK_TIMEOUT: Duration = Duration::from_secs(600);
    pub const MAX_CONSECUTIVE: u32 = 3;
    pub const CHECK_RETRIES: u32 = 1;
    pub const MAX_CHECK_RETRIES: u32 = 10;
    pub const MAX_AUTO_PER_DAY: u32 = 10;
}

struct Resolver<'a> {
    text: &'a str,
    file: &'a str,
    errors: Vec<LayoutError>,
}

impl Resolver<'_> {
    fn error(&mut self, path: &[Seg<'_>], message: impl Into<String>) {
        self.errors.push(LayoutError {
            file: self.file.to_owned(),
            position: Some(locate(self.text, path)),
            message: message.into(),
        });
    }

    fn resolve(mut self, raw: RawLayout, base_dir: &Path) -> Result<Layout, LayoutErrors> {
        use Seg::{Index, Key};

        let root = base_dir.join(raw.root.as_deref().unwrap_or("."));
        let root = normalize(&root);
        if !root.is_dir() {
            self.error(
                &[Key("root")],
                format!("root {} is not a directory", root.display()),
            );
        }

        if raw.agents.is_empty() {
            self.error(&[Key("agents")], "agents: at least one agent is required");
        }
        let mut first_seen: HashMap<&str, usize> = HashMap::new();
        for (i, a) in raw.agents.iter().enumerate() {
            if let Some(&first) = first_seen.get(a.name.as_str()) {
                let (line, _) = locate(self.text, &[Key("agents"), Index(first), Key("name")]);
                self.error(
                    &[Key("agents"), Index(i), Key("name")],
                    format!(
                        "agents[{i}].name: duplicate agent name {:?} (first used on line {line})",
                        a.name.as_str()
                    ),
                );
            } else {
                first_seen.insert(a.name.as_str(), i);
            }
        }

        let repo_ok = git2::Repository::discover(&root).is_ok();
        let d = &raw.defaults;
        let mut agents = Vec::with_capacity(raw.agents.len());
        for (i, a) in raw.agents.iter().enumerate() {
            agents.push(self.resolve_agent(i, a, d, &root, base_dir, repo_ok));
        }

        let m = &raw.monitor;
        let error_patterns = m.error_patterns.clone().unwrap_or_default();
        for (i, p) in error_patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(p) {
                self.error(
                    &[Key("monitor"), Key("error_patterns"), Index(i)],
                    format!(
                        "monitor.error_patterns[{i}]: invalid regular expression: {}",
                        one_line(&e.to_string())
                    ),
                );
            }
        }
        let redact = raw.snapshot.redact.clone().unwrap_or_default();
        for (i, p) in redact.iter().enumerate() {
            if let Err(e) = regex::Regex::new(p) {
                self.error(
                    &[Key("snapshot"), Key("redact"), Index(i)],
                    format!(
                        "snapshot.redact[{i}]: invalid regular expression: {}",
                        one_line(&e.to_string())
                    ),
                );
            }
        }
        if raw
            .snapshot
            .scrollback_lines
            .is_some_and(|n| n > MAX_SCROLLBACK_LINES)
        {
            self.error(
                &[Key("snapshot"), Key("scrollback_lines")],
                format!("snapshot.scrollback_lines: at most {MAX_SCROLLBACK_LINES} (tmux's history-limit)"),
            );
        }
        let keep = raw.snapshot.keep.unwrap_or(default::SNAPSHOT_KEEP);
        if keep == 0 {
            self.error(
                &[Key("snapshot"), Key("keep")],
                "snapshot.keep: must be at least 1",
            );
        }
        if let Some(storm) = &m.error_storm
            && storm.count == 0
        {
            self.error(
                &[Key("monitor"), Key("error_storm"), Key("count")],
                "monitor.error_storm.count: must be at least 1",
            );
        }

        let quality = raw.quality.as_ref().map(|q| {
            let repo = normalize(&base_dir.join(q.repo.as_deref().unwrap_or(".")));
            Quality {
                repo,
                check: q.check.clone(),
                timeout: q.timeout.map_or(default::CHECK_TIMEOUT, |p| p.0),
                branches: q
                    .branches
                    .clone()
                    .unwrap_or_else(|| vec!["main".to_owned()]),
                retries: q.retries.unwrap_or(default::CHECK_RETRIES),
                identity: q.identity.unwrap_or_default(),
            }
        });
        if let Some(q) = &quality
            && q.check.trim().is_empty()
        {
            self.error(
                &[Key("quality"), Key("check")],
                "quality.check: must be a command, e.g. \"cargo test\"",
            );
        }
        if let Some(q) = &quality {
            self.check_quality(q);
        }

        if !self.errors.is_empty() {
            self.errors.sort_by_key(|e| e.position);
            return Err(LayoutErrors(self.errors));
        }
        Ok(Layout {
            session: raw.session,
            root,
            window: raw.window.unwrap_or_else(|| {
                TmuxName::new(default::WINDOW).unwrap_or_else(|_| unreachable!("valid constant"))
            }),
            arrange: raw.arrange.unwrap_or(Arrange::Tiled),
            agents,
            monitor: Monitor {
                tick: m.tick.map_or(default::TICK, |p| p.0),
                resources: m.resources.map_or(default::RESOURCES, |p| p.0),
                maintenance: m.maintenance.map_or(default::MAINTENANCE, |p| p.0),
                error_patterns,
                error_storm_count: m
                    .error_storm
                    .as_ref()
                    .map_or(default::STORM_COUNT, |s| s.count),
                error_storm_window: m
                    .error_storm
                    .as_ref()
                    .map_or(default::STORM_WINDOW, |s| s.window.0),
                leak_window: m.leak.as_ref().map_or(default::LEAK_WINDOW, |l| l.window.0),
                leak_min_growth: m
                    .leak
                    .as_ref()
                    .map_or(default::LEAK_MIN_GROWTH, |l| l.min_growth),
            },
            snapshot: SnapshotPolicy {
                interval: raw
                    .snapshot
                    .interval
                    .map_or(default::SNAPSHOT_INTERVAL, |p| p.0),
                keep,
                scrollback_lines: raw
                    .snapshot
                    .scrollback_lines
                    .unwrap_or(default::SCROLLBACK_LINES),
                redact,
                on_server_death: raw
                    .snapshot
                    .on_server_death
                    .unwrap_or(OnServerDeath::Restore),
            },
            quality,
            rollback: RollbackPolicy {
                auto_max_risk: raw.rollback.auto_max_risk.unwrap_or(Risk::Medium),
                max_consecutive: raw
                    .rollback
                    .max_consecutive
                    .unwrap_or(default::MAX_CONSECUTIVE),
                max_auto_per_day: raw
                    .rollback
                    .max_auto_per_day
                    .unwrap_or(default::MAX_AUTO_PER_DAY),
            },
            messaging: Messaging {
                acl: raw.messaging.acl.unwrap_or(Acl::Hierarchy),
            },
        })
    }

    /// The `quality:` values serde cannot check: branch names git accepts, a sane number
    /// of retries, a timeout that is not zero.
    fn check_quality(&mut self, q: &Quality) {
        use Seg::{Index, Key};
        if q.branches.is_empty() {
            self.error(
                &[Key("quality"), Key("branches")],
                "quality.branches: name at least one branch to watch, e.g. [main]",
            );
        }
        for (i, b) in q.branches.iter().enumerate() {
            if !crate::git::valid_branch_name(b) {
                self.error(
                    &[Key("quality"), Key("branches"), Index(i)],
                    format!(
                        "quality.branches[{i}]: {b:?} is not a valid git branch name (give the short name, e.g. main)"
                    ),
                );
            }
        }
        if q.retries > default::MAX_CHECK_RETRIES {
            self.error(
                &[Key("quality"), Key("retries")],
                format!(
                    "quality.retries: at most {} (a red result is run this many times more before anything is blamed)",
                    default::MAX_CHECK_RETRIES
                ),
            );
        }
        if q.timeout.0.is_zero() {
            self.error(
                &[Key("quality"), Key("timeout")],
                "quality.timeout: must be longer than zero, e.g. 10m",
            );
        }
    }

    fn resolve_agent(
        &mut self,
        i: usize,
        a: &RawAgent,
        d: &schema::RawDefaults,
        root: &Path,
        base_dir: &Path,
        repo_ok: bool,
    ) -> Agent {
        use Seg::{Index, Key};
        let name = a.name.as_str();

        // Where a merged value came from, so its error points at the line that set it.
        let from_agent =
            |key: &'static str| -> Vec<Seg<'static>> { vec![Key("agents"), Index(i), Key(key)] };
        let from_defaults =
            |key: &'static str| -> Vec<Seg<'static>> { vec![Key("defaults"), Key(key)] };

        let worktree = match (&a.worktree, &d.worktree) {
            (Some(w), _) => Some((w, from_agent("worktree"))),
            (None, Some(w)) => Some((w, from_defaults("worktree"))),
            (None, None) => None,
        };
        let worktree = match worktree {
            Some((RawWorktree::On { copy }, at)) => {
                if !repo_ok {
                    self.error(&at, format!(
                        "agents[{i}] ({name}): worktree needs root {} to be inside a git repository; run `git init` there or remove worktree",
                        root.display()
                    ));
                }
                Some(WorktreeSpec {
                    copy: copy.iter().map(PathBuf::from).collect(),
                })
            }
            Some((RawWorktree::Off, _)) | None => None,
        };

        let cwd = match (&a.cwd, &d.cwd) {
            (Some(c), _) => Some((c, from_agent("cwd"))),
            (None, Some(c)) => Some((c, from_defaults("cwd"))),
            (None, None) => None,
        };
        let cwd = match (cwd, &worktree) {
            (Some((_, at)), Some(_)) => {
                self.error(&at, format!("agents[{i}] ({name}): cwd cannot be combined with worktree, whose agent works at the top of its own worktree"));
                None
            }
            (_, Some(_)) => None,
            (Some((c, at)), None) => {
                let dir = normalize(&root.join(c));
                if !dir.is_dir() {
                    self.error(
                        &at,
                        format!(
                            "agents[{i}] ({name}): cwd {} is not a directory",
                            dir.display()
                        ),
                    );
                }
                Some(dir)
            }
            (None, None) => Some(root.to_path_buf()),
        };

        let instructions = a.instructions.as_ref().map(|p| {
            let path = normalize(&base_dir.join(p));
            if !path.is_file() {
                self.error(
                    &from_agent("instructions"),
                    format!(
                        "agents[{i}] ({name}): instructions file {} does not exist",
                        path.display()
                    ),
                );
            }
            path
        });

        let profile = a.profile.or(d.profile).unwrap_or(Profile::Shell);
        let command = a
            .command
            .clone()
            .or_else(|| d.command.clone())
            .or_else(|| profile.default_command().map(str::to_owned));
        if let Some(c) = &command
            && c.trim().is_empty()
        {
            let at = if a.command.is_some() {
                from_agent("command")
            } else {
                from_defaults("command")
            };
            self.error(
                &at,
                format!(
                    "agents[{i}] ({name}): command is empty; remove it to run the user's shell"
                ),
            );
        }

        let activity = ActivityOverrides {
            working: a
                .activity
                .working
                .clone()
                .or_else(|| d.activity.working.clone()),
            waiting: a
                .activity
                .waiting
                .clone()
                .or_else(|| d.activity.waiting.clone()),
            idle: a.activity.idle.clone().or_else(|| d.activity.idle.clone()),
        };
        for (kind, patterns) in [
            ("working", &activity.working),
            ("waiting", &activity.waiting),
            ("idle", &activity.idle),
        ] {
            for (k, p) in patterns.iter().flatten().enumerate() {
                if let Err(e) = regex::Regex::new(p) {
                    let from = if a.activity.working.is_some()
                        || a.activity.waiting.is_some()
                        || a.activity.idle.is_some()
                    {
                        vec![
                            Key("agents"),
                            Index(i),
                            Key("activity"),
                            Key(kind),
                            Index(k),
                        ]
                    } else {
                        vec![Key("defaults"), Key("activity"), Key(kind), Index(k)]
                    };
                    self.error(&from, format!("agents[{i}] ({name}): activity.{kind}[{k}]: invalid regular expression: {}", one_line(&e.to_string())));
                }
            }
        }

        let paste = PasteOverrides {
            placeholders: a
                .paste
                .placeholders
                .clone()
                .or_else(|| d.paste.placeholders.clone()),
            settle: a.paste.settle.or(d.paste.settle),
        };
        for (k, p) in paste.placeholders.iter().flatten().enumerate() {
            if let Err(e) = regex::Regex::new(p) {
                let from = if a.paste.placeholders.is_some() {
                    vec![
                        Key("agents"),
                        Index(i),
                        Key("paste"),
                        Key("placeholders"),
                        Index(k),
                    ]
                } else {
                    vec![Key("defaults"), Key("paste"), Key("placeholders"), Index(k)]
                };
                self.error(&from, format!("agents[{i}] ({name}): paste.placeholders[{k}]: invalid regular expression: {}", one_line(&e.to_string())));
            }
        }

        let mut env = d.env.clone().unwrap_or_default().0;
        env.extend(a.env.clone().unwrap_or_default().0);
        // A NUL byte cannot pass through tmux's arguments or the environment.
        let nul_in = |v: Option<&String>| v.is_some_and(|v| v.contains('\0'));
        for (key, value, at) in [
            ("command", command.as_ref(), a.command.is_some()),
            ("cwd", a.cwd.as_ref().or(d.cwd.as_ref()), a.cwd.is_some()),
        ] {
            if nul_in(value) {
                let path = if at {
                    from_agent(key)
                } else {
                    from_defaults(key)
                };
                self.error(
                    &path,
                    format!("agents[{i}] ({name}): {key} contains a NUL byte"),
                );
            }
        }
        for (k, v) in &env {
            if v.contains('\0') {
                let path = if a.env.as_ref().is_some_and(|e| e.0.contains_key(k)) {
                    from_agent("env")
                } else {
                    from_defaults("env")
                };
                self.error(
                    &path,
                    format!("agents[{i}] ({name}): env {k} contains a NUL byte"),
                );
            }
        }

        let (ar, dr) = (&a.restart, &d.restart);
        let restart = Restart {
            policy: ar.policy.or(dr.policy).unwrap_or(RestartPolicy::OnFailure),
            max_restarts: ar
                .max_restarts
                .or(dr.max_restarts)
                .unwrap_or(default::MAX_RESTARTS),
            window: ar.window.or(dr.window).unwrap_or(default::RESTART_WINDOW),
            min_uptime: ar
                .min_uptime
                .or(dr.min_uptime)
                .unwrap_or(default::MIN_UPTIME),
            backoff_initial: ar
                .backoff
                .initial
                .or(dr.backoff.initial)
                .unwrap_or(default::BACKOFF_INITIAL),
            backoff_max: ar
                .backoff
                .max
                .or(dr.backoff.max)
                .unwrap_or(default::BACKOFF_MAX),
        };
        if restart.backoff_initial > restart.backoff_max {
            let at = if ar.backoff.initial.is_some() {
                vec![Key("agents"), Index(i), Key("restart"), Key("backoff")]
            } else {
                vec![Key("defaults"), Key("restart"), Key("backoff")]
            };
            self.error(&at, format!(
                "agents[{i}] ({name}): restart.backoff.initial ({}) is larger than restart.backoff.max ({})",
                restart.backoff_initial, restart.backoff_max
            ));
        }

        Agent {
            name: a.name.clone(),
            role: a.role.clone(),
            command,
            profile,
            cwd,
            env,
            worktree,
            instructions,
            restart,
            stall_after: a
                .stall_after
                .or(d.stall_after)
                .map_or(default::STALL_AFTER, |p| p.0),
            on_stall: a.on_stall.or(d.on_stall).unwrap_or(OnStall::Alert),
            limits: Limits {
                memory: a.limits.memory.or(d.limits.memory),
            },
            // SPEC §5.2: a memory limit means "alert, then restart".
            on_limit: a.on_limit.or(d.on_limit).unwrap_or(OnLimit::Restart),
            activity,
            paste,
        }
    }
}

/// Removes `.` and `..` components without touching the file system (the path may not
/// exist yet, and symlinks are the user's business).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
