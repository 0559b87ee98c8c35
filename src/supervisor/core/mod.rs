//! The supervisor's decisions, as a pure function: `Core::step(msg, now) -> effects`.
//!
//! No tmux, no clock, no files in here. The shell (`run.rs`) turns what it observes into
//! [`Msg`]s, passes the time in, and carries out the [`Effect`]s; timers are effects too.
//! That makes every policy testable with a fake clock.
//!
//! Restart policy, modelled on pm2's exponential backoff and systemd's start limit: the
//! first restart after a stable run is immediate; each further restart without reaching
//! `min_uptime` waits `initial × 2^(n-1)`, capped at `max`; `min_uptime` of stable running
//! resets the sequence; more than `max_restarts` restarts within `window` is a crash loop:
//! the agent turns `fatal`, orch escalates, and nothing restarts it until a human does.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::layout::{Agent, Monitor, OnLimit, OnStall, RestartPolicy};
use crate::monitor::activity::{self, Activity, Source};
use crate::monitor::output::{ErrorStormDetector, LineAssembler};
use crate::monitor::trend::LeakDetector;

use super::event::{Event, EventKind};

/// Process state of a supervised agent (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcState {
    Starting,
    Running,
    Stalled,
    Exited,
    Backoff,
    Fatal,
    Stopped,
}

impl ProcState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcState::Starting => "starting",
            ProcState::Running => "running",
            ProcState::Stalled => "stalled",
            ProcState::Exited => "exited",
            ProcState::Backoff => "backoff",
            ProcState::Fatal => "fatal",
            ProcState::Stopped => "stopped",
        }
    }

    fn is_live(self) -> bool {
        matches!(
            self,
            ProcState::Starting | ProcState::Running | ProcState::Stalled
        )
    }
}

/// What a human asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Restart(String),
    Stop(String),
    Start(String),
}

/// Timers the core asks the shell to arm. A timer carries the generation of the run it
/// belongs to, so one that fires after the agent restarted again is ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Backoff is over: start the agent again.
    Restart { agent: String, generation: u64 },
    /// The agent has run `min_uptime`: its restart sequence starts over.
    Stable { agent: String, generation: u64 },
    /// The polite stop signal had its grace period: kill what is left.
    Grace { agent: String, generation: u64 },
    /// A screen that turned idle after work has stayed so for [`IDLE_SETTLE`]: read it
    /// again.
    Settled { agent: String, generation: u64 },
}

/// How long a stopping agent gets between the polite signal and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub enum Msg {
    /// The agent's process ended. Several paths report the same death (pidfd, the
    /// pane-died hook, reconciliation); `pid` lets the core count it once.
    Exited {
        agent: String,
        pid: Option<u32>,
        status: Option<i32>,
        signal: Option<i32>,
        screen: Option<String>,
    },
    /// The agent runs (after a respawn, or found running when the supervisor started).
    Started {
        agent: String,
        pane: String,
        pid: u32,
        adopted: bool,
        /// How long ago the process started, for one found running: its uptime (and the
        /// time to `min_uptime`) counts from then, not from when it was found.
        age: Option<Duration>,
    },
    /// The agent's pane is gone altogether.
    PaneMissing {
        agent: String,
    },
    /// The agent printed something.
    Output {
        agent: String,
        bytes: Vec<u8>,
    },
    /// What the agent is doing, as its screen or one of its CLI's hooks shows it.
    Activity {
        agent: String,
        activity: Activity,
        source: Source,
        /// For a screen reading: the last lines it was read from (kept for the report of
        /// a screen no pattern recognises).
        tail: Option<String>,
    },
    /// A sample of the agent's process tree (the resources tier).
    Resources {
        agent: String,
        rss_bytes: u64,
        cpu_percent: f64,
    },
    Timer(Timer),
    /// The layout file changed and its new version is valid.
    Reload {
        agents: Vec<Agent>,
        monitor: Monitor,
    },
    /// The reconciliation tier ticked: time to look for stalls.
    Tick,
    /// The tmux server is gone, and every agent with it. Nothing is respawned into a new
    /// server (that would be a new, empty session); the session is restored instead.
    ServerGone,
    /// A tmux server holds the session again (restored by the supervisor or a human).
    ServerBack,
    Command(Command),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Emit(Event),
    /// Start the agent's command again in its pane (or a new pane if it has none).
    Respawn {
        agent: String,
    },
    /// Ask the agent's processes to stop (`kill: false`: the profile's polite signal).
    Signal {
        agent: String,
        kill: bool,
    },
    Arm {
        timer: Timer,
        after: Duration,
    },
    /// Restart counters changed: write them to disk, so a new supervisor keeps them.
    Persist,
    /// Write a snapshot of the session now (ordered before any respawn it must precede).
    Snapshot {
        reason: &'static str,
    },
}

/// What the core remembers of one agent.
#[derive(Clone, Debug)]
pub struct Supervised {
    pub spec: Agent,
    pub state: ProcState,
    pub pane: Option<String>,
    pub pid: Option<u32>,
    pub started_at: Option<Instant>,
    pub last_output: Option<Instant>,
    /// What the agent is doing: its screen and hook readings resolved
    /// ([`activity::resolve`]).
    pub activity: Activity,
    /// Since when `activity` has had its value.
    pub activity_since: Option<Instant>,
    /// The latest screen reading, and since when it has read so.
    pub screen: Activity,
    screen_since: Option<Instant>,
    /// The last lines of the latest screen reading that matched nothing, or the question
    /// of one that shows the agent waiting.
    pub screen_tail: Option<String>,
    /// The latest hook report of this run, and when it came.
    hook: Option<(Activity, Instant)>,
    /// When the screen last matched one of the profile's patterns (this run).
    recognised_at: Option<Instant>,
    /// The last line the agent printed (escapes removed), and how many output chunks it
    /// printed so far: what a dashboard shows, and when to read its screen again.
    pub last_line: Option<String>,
    pub output_seq: u64,
    unrecognised_reported: bool,
    pub rss_bytes: Option<u64>,
    pub cpu_percent: Option<f64>,
    pub exit_status: Option<i32>,
    /// Restarts since the supervisor first saw the agent (survives supervisor restarts).
    pub restarts: u32,
    /// When recent restarts happened, for the crash-loop window.
    pub recent: VecDeque<Instant>,
    /// Restarts since the agent last ran `min_uptime`; drives the backoff.
    pub consecutive: u32,
    generation: u64,
    intent: Intent,
    lines: LineAssembler,
    storms: Option<ErrorStormDetector>,
    leak: LeakDetector,
    /// A leak or a limit is reported once per run.
    leak_reported: bool,
    over_limit: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    None,
    Stop,
    Restart,
}

impl Supervised {
    pub fn new(spec: Agent, monitor: &Monitor) -> Self {
        Self {
            spec,
            state: ProcState::Starting,
            pane: None,
            pid: None,
            started_at: None,
            last_output: None,
            activity: Activity::Unknown,
            activity_since: None,
            screen: Activity::Unknown,
            screen_since: None,
            screen_tail: None,
            hook: None,
            recognised_at: None,
            unrecognised_reported: false,
            last_line: None,
            output_seq: 0,
            rss_bytes: None,
            cpu_percent: None,
            exit_status: None,
            restarts: 0,
            recent: VecDeque::new(),
            consecutive: 0,
            generation: 0,
            intent: Intent::None,
            lines: LineAssembler::new(),
            // The layout validated the patterns; an empty list watches for nothing.
            storms: ErrorStormDetector::from_monitor(monitor)
                .ok()
                .filter(|_| !monitor.error_patterns.is_empty()),
            leak: LeakDetector::from_monitor(monitor),
            leak_reported: false,
            over_limit: false,
        }
    }

    pub fn name(&self) -> &str {
        self.spec.name.as_str()
    }

    /// The wait before the next restart.
    fn next_delay(&self) -> Duration {
        let r = &self.spec.restart;
        if self.consecutive == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(self.consecutive - 1).unwrap_or(u32::MAX);
        r.backoff_initial
            .0
            .saturating_mul(factor)
            .min(r.backoff_max.0)
    }
}

/// The supervisor's whole state.
#[derive(Clone, Debug)]
pub struct Core {
    pub agents: Vec<Supervised>,
    monitor: Monitor,
    /// Between [`Msg::ServerGone`] and [`Msg::ServerBack`]: no agent is started.
    pub server_down: bool,
}

impl Core {
    pub fn new(agents: Vec<Agent>, monitor: &Monitor) -> Self {
        let agents = agents
            .into_iter()
            .map(|a| Supervised::new(a, monitor))
            .collect();
        Self {
            agents,
            monitor: monitor.clone(),
            server_down: false,
        }
    }

    pub fn agent(&self, name: &str) -> Option<&Supervised> {
        self.agents.iter().find(|a| a.name() == name)
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.agents.iter().position(|a| a.name() == name)
    }

    pub fn step(&mut self, msg: Msg, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        match msg {
            Msg::Exited {
                agent,
                pid,
                status,
                signal,
                screen,
            } => {
                if let Some(i) = self.index(&agent) {
                    self.exited(i, pid, status, signal, screen, now, &mut fx);
                }
            }
            Msg::Started {
                agent,
                pane,
                pid,
                adopted,
                age,
            } => {
                if let Some(i) = self.index(&agent) {
                    let since = age.and_then(|a| now.checked_sub(a)).unwrap_or(now);
                    self.started(i, pane, pid, adopted, since, now, &mut fx);
                }
            }
            Msg::PaneMissing { agent } => {
                if let Some(i) = self.index(&agent) {
                    let a = &mut self.agents[i];
                    a.pane = None;
                    if a.state.is_live() {
                        // Someone closed the pane: an exit we could not see the status of.
                        let pid = a.pid;
                        self.exited(i, pid, None, None, None, now, &mut fx);
                    }
                }
            }
            Msg::Output { agent, bytes } => {
                if let Some(i) = self.index(&agent) {
                    self.output(i, &bytes, now, &mut fx);
                }
            }
            Msg::Activity {
                agent,
                activity,
                source,
                tail,
            } => {
                if let Some(i) = self.index(&agent) {
                    self.activity(i, activity, source, tail, now, &mut fx);
                }
            }
            Msg::Resources {
                agent,
                rss_bytes,
                cpu_percent,
            } => {
                if let Some(i) = self.index(&agent) {
                    self.resources(i, rss_bytes, cpu_percent, now, &mut fx);
                }
            }
            Msg::Timer(Timer::Restart { agent, generation }) => {
                if let Some(i) = self.index(&agent) {
                    let a = &self.agents[i];
                    if a.generation == generation && a.state == ProcState::Backoff {
                        self.respawn(i, now, &mut fx);
                    }
                }
            }
            Msg::Timer(Timer::Stable { agent, generation }) => {
                if let Some(a) = self.agents.iter_mut().find(|a| a.name() == agent)
                    && a.generation == generation
                    && a.state.is_live()
                    && a.consecutive != 0
                {
                    a.consecutive = 0;
                    fx.push(Effect::Persist);
                }
            }
            Msg::Timer(Timer::Grace { agent, generation }) => {
                if let Some(a) = self.agents.iter().find(|a| a.name() == agent)
                    && a.generation == generation
                    && a.state.is_live()
                    && a.intent != Intent::None
                {
                    fx.push(Effect::Signal { agent, kill: true });
                }
            }
            Msg::Timer(Timer::Settled { agent, generation }) => {
                if let Some(i) = self.index(&agent)
                    && self.agents[i].generation == generation
                {
                    let screen = self.agents[i].screen;
                    self.activity(i, screen, Source::Screen, None, now, &mut fx);
                }
            }
            Msg::Tick => self.check_stalls(now, &mut fx),
            Msg::ServerGone => self.server_gone(now, &mut fx),
            Msg::ServerBack => self.server_down = false,
            Msg::Reload { agents, monitor } => self.reload(agents, monitor, now, &mut fx),
            Msg::Command(c) => self.command(c, now, &mut fx),
        }
        fx
    }

    #[allow(clippy::too_many_arguments)]
    fn exited(
        &mut self,
        i: usize,
        pid: Option<u32>,
        status: Option<i32>,
        signal: Option<i32>,
        screen: Option<String>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let a = &mut self.agents[i];
        // Only the death of the process we know as running counts: a second report of a
        // death already handled (the agent is starting again, or has a new pid) is dropped.
        let current = match (pid, a.pid) {
            (Some(reported), Some(known)) => reported == known,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if !a.state.is_live() || !current {
            return;
        }
        let name = a.name().to_owned();
        a.exit_status = status.or(signal.map(|s| 128 + s));
        let pid = pid.or(a.pid);
        a.pid = None;
        a.rss_bytes = None;
        a.cpu_percent = None;
        let uptime = a.started_at.map(|t| now.saturating_duration_since(t));
        let mut ev = Event::new(EventKind::AgentExited, Some(&name))
            .with("pid", pid)
            .with("exit_status", a.exit_status)
            .with("signal", signal);
        if let Some(u) = uptime {
            ev = ev.with("uptime_secs", (u.as_secs_f64() * 1000.0).round() / 1000.0);
        }
        if let Some(s) = screen {
            ev = ev.with("last_screen", s);
        }
        fx.push(Effect::Emit(ev));
        // Every exit is snapshotted before anything restarts the pane (a respawn wipes
        // its screen).
        fx.push(Effect::Snapshot {
            reason: "agent_exited",
        });

        match a.intent {
            Intent::Stop => {
                a.intent = Intent::None;
                a.state = ProcState::Stopped;
                fx.push(Effect::Emit(Event::new(
                    EventKind::AgentStopped,
                    Some(&name),
                )));
                return;
            }
            Intent::Restart => {
                // A restart a human asked for is not a crash: no backoff, not counted.
                a.intent = Intent::None;
                self.respawn(i, now, fx);
                return;
            }
            Intent::None => {}
        }
        let failed = status != Some(0);
        let restart = match a.spec.restart.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        };
        if !restart {
            a.state = ProcState::Exited;
            return;
        }
        // A run shorter than min_uptime continues the crash sequence.
        if uptime.is_some_and(|u| u >= a.spec.restart.min_uptime.0) {
            a.consecutive = 0;
        }
        let window = a.spec.restart.window.0;
        while a
            .recent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > window)
        {
            a.recent.pop_front();
        }
        if a.recent.len() >= a.spec.restart.max_restarts as usize {
            a.state = ProcState::Fatal;
            let count = a.recent.len();
            fx.push(Effect::Emit(
                Event::new(EventKind::AgentFatal, Some(&name))
                    .with("restarts_in_window", count)
                    .with("window_secs", window.as_secs_f64()),
            ));
            fx.push(Effect::Emit(Event::new(EventKind::Escalated, Some(&name)).with(
                "reason",
                format!(
                    "{name} crashed {} times within {}; it stays down until `orch start {name}` or `orch restart {name}`",
                    count + 1,
                    a.spec.restart.window
                ),
            )));
            fx.push(Effect::Persist);
            return;
        }
        a.recent.push_back(now);
        a.restarts += 1;
        let delay = a.next_delay();
        a.consecutive += 1;
        fx.push(Effect::Persist);
        if delay.is_zero() {
            self.respawn(i, now, fx);
        } else {
            let a = &mut self.agents[i];
            a.state = ProcState::Backoff;
            fx.push(Effect::Emit(
                Event::new(EventKind::AgentBackoff, Some(&name))
                    .with("delay_ms", delay.as_millis() as u64),
            ));
            fx.push(Effect::Arm {
                timer: Timer::Restart {
                    agent: name,
                    generation: a.generation,
                },
                after: delay,
            });
        }
    }

    /// Every live agent died with the server: reported, not restarted, not counted as a
    /// crash, and not snapshotted (there is nothing left to capture, and an empty
    /// snapshot must not become the newest good one).
    fn server_gone(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.server_down {
            return;
        }
        self.server_down = true;
        let mut died = Vec::new();
        for a in &mut self.agents {
            a.generation += 1; // cancels pending restarts and grace timers
            a.intent = Intent::None;
            if !matches!(a.state, ProcState::Stopped | ProcState::Fatal) {
                let name = a.name().to_owned();
                let uptime = a.started_at.map(|t| now.saturating_duration_since(t));
                if a.state.is_live() {
                    let mut ev = Event::new(EventKind::AgentExited, Some(&name))
                        .with("pid", a.pid)
                        .with("exit_status", None::<i32>)
                        .with("reason", "the tmux server died");
                    if let Some(u) = uptime {
                        ev = ev.with("uptime_secs", (u.as_secs_f64() * 1000.0).round() / 1000.0);
                    }
                    fx.push(Effect::Emit(ev));
                    died.push(name);
                }
                a.state = ProcState::Exited;
            }
            a.pid = None;
            a.pane = None;
            a.started_at = None;
            a.rss_bytes = None;
            a.cpu_percent = None;
        }
        fx.push(Effect::Emit(
            Event::new(EventKind::ServerDied, None).with("agents", died),
        ));
    }

    fn respawn(&mut self, i: usize, _now: Instant, fx: &mut Vec<Effect>) {
        if self.server_down {
            return; // the restore brings it back
        }
        let a = &mut self.agents[i];
        a.state = ProcState::Starting;
        a.generation += 1;
        fx.push(Effect::Respawn {
            agent: a.name().to_owned(),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn started(
        &mut self,
        i: usize,
        pane: String,
        pid: u32,
        adopted: bool,
        since: Instant,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let a = &mut self.agents[i];
        if a.pid == Some(pid) && a.state.is_live() {
            return;
        }
        let restarted = !adopted && a.started_at.is_some();
        a.pane = Some(pane.clone());
        a.pid = Some(pid);
        a.state = ProcState::Running;
        a.started_at = Some(since);
        a.last_output = Some(now);
        a.exit_status = None;
        // A new process: its memory history and screen start over.
        a.leak.reset();
        a.leak_reported = false;
        a.over_limit = false;
        a.lines = LineAssembler::new();
        a.activity = Activity::Unknown;
        a.activity_since = Some(now);
        a.screen = Activity::Unknown;
        a.screen_since = Some(now);
        a.screen_tail = None;
        a.hook = None;
        a.recognised_at = None;
        a.unrecognised_reported = false;
        if adopted {
            a.generation += 1;
        }
        let name = a.name().to_owned();
        let kind = if restarted {
            EventKind::AgentRestarted
        } else {
            EventKind::AgentStarted
        };
        let mut ev = Event::new(kind, Some(&name))
            .with("pane", pane)
            .with("pid", pid);
        if restarted {
            ev = ev.with("restarts", a.restarts);
        }
        if adopted {
            ev = ev.with("adopted", true);
        }
        fx.push(Effect::Emit(ev));
        let ran = now.saturating_duration_since(since);
        fx.push(Effect::Arm {
            timer: Timer::Stable {
                agent: name,
                generation: a.generation,
            },
            after: a.spec.restart.min_uptime.0.saturating_sub(ran),
        });
    }

    /// Applies a new layout: new agents start, removed ones stop, changed policies take
    /// effect; agents whose settings did not change are not touched.
    fn reload(&mut self, agents: Vec<Agent>, monitor: Monitor, now: Instant, fx: &mut Vec<Effect>) {
        let same =
            |a: &Agent, b: &Agent| serde_json::to_value(a).ok() == serde_json::to_value(b).ok();
        let (mut added, mut removed, mut changed) = (Vec::new(), Vec::new(), Vec::new());
        // What a running pane cannot take on without starting again.
        let start_settings = |a: &Agent| {
            serde_json::to_value((&a.command, &a.cwd, &a.env, &a.worktree, a.profile)).ok()
        };
        let mut at_restart = Vec::new();
        self.monitor = monitor;
        for spec in &agents {
            match self.index(spec.name.as_str()) {
                Some(i) if same(&self.agents[i].spec, spec) => {}
                Some(i) => {
                    // Policies apply at once; a new command or cwd at the next start.
                    let old = &self.agents[i];
                    if start_settings(&old.spec) != start_settings(spec) && old.state.is_live() {
                        at_restart.push(spec.name.to_string());
                    }
                    self.agents[i].spec = spec.clone();
                    changed.push(spec.name.to_string());
                }
                None => {
                    self.agents
                        .push(Supervised::new(spec.clone(), &self.monitor));
                    added.push(spec.name.to_string());
                }
            }
        }
        for i in 0..self.agents.len() {
            let a = &mut self.agents[i];
            if agents.iter().any(|s| s.name == a.spec.name) {
                continue;
            }
            removed.push(a.name().to_owned());
            if a.state.is_live() {
                a.intent = Intent::Stop;
                fx.extend(polite_stop(a));
            } else if a.state != ProcState::Stopped {
                a.state = ProcState::Stopped;
                a.generation += 1; // cancels a pending restart
            }
        }
        let mut ev = Event::new(EventKind::ConfigReloaded, None)
            .with("added", added.clone())
            .with("removed", removed)
            .with("changed", changed);
        if !at_restart.is_empty() {
            // Restarting an agent to apply an edit would throw away its conversation: the
            // user decides when, and is told so.
            ev = ev.with(
                "note",
                format!(
                    "the new command, cwd, env, worktree or profile of {} applies at its next restart; the running process keeps the old one (`orch restart NAME` applies it now)",
                    at_restart.join(", ")
                ),
            );
            ev = ev.with("applies_at_restart", at_restart);
        }
        fx.push(Effect::Emit(ev));
        for name in added {
            if let Some(i) = self.index(&name) {
                self.respawn(i, now, fx);
            }
        }
    }

    /// A screen or hook reading: the resolved activity changes, is journaled, and ends a
    /// stall when the agent is found at its prompt or waiting for a human.
    fn activity(
        &mut self,
        i: usize,
        reading: Activity,
        source: Source,
        tail: Option<String>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let a = &mut self.agents[i];
        if !a.state.is_live() {
            return;
        }
        match &source {
            Source::Screen => {
                if reading != a.screen {
                    a.screen = reading;
                    a.screen_since = Some(now);
                }
                if reading != Activity::Unknown {
                    a.recognised_at = Some(now);
                }
                a.screen_tail = tail;
            }
            Source::Hook(_) => a.hook = Some((reading, now)),
        }
        // A busy TUI redraws through frames that show only its idle footer (Codex between
        // "Working" and "Reconnecting"): a screen that turns idle after work counts once
        // it has stayed idle a moment. A CLI's own signal counts at once.
        let resolved = activity::resolve(
            a.screen,
            a.screen_since,
            a.hook.map(|(h, at)| (h, Some(at))),
        );
        let from_screen = a.hook.is_none_or(|(h, _)| h != Activity::Idle);
        if let (Activity::Idle, Activity::Working, true, Some(since)) =
            (resolved, a.activity, from_screen, a.screen_since)
            && now.saturating_duration_since(since) < IDLE_SETTLE
        {
            fx.push(Effect::Arm {
                timer: Timer::Settled {
                    agent: a.name().to_owned(),
                    generation: a.generation,
                },
                after: IDLE_SETTLE - now.saturating_duration_since(since),
            });
            return;
        }
        if resolved == a.activity {
            return;
        }
        let name = a.name().to_owned();
        fx.push(Effect::Emit(
            Event::new(EventKind::ActivityChanged, Some(&name))
                .with("from", a.activity.as_str())
                .with("to", resolved.as_str())
                .with("source", source.label()),
        ));
        a.activity = resolved;
        a.activity_since = Some(now);
        if matches!(resolved, Activity::Waiting | Activity::Idle) && a.state == ProcState::Stalled {
            a.state = ProcState::Running;
            fx.push(Effect::Emit(Event::new(
                EventKind::AgentRecovered,
                Some(&name),
            )));
        }
    }

    fn check_stalls(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        for a in &mut self.agents {
            unrecognised(a, now, fx);
            // Silence at the prompt, or while a human is asked something, is no stall.
            if a.state != ProcState::Running
                || matches!(a.activity, Activity::Waiting | Activity::Idle)
            {
                continue;
            }
            let Some(last) = a.last_output else { continue };
            let silent = now.saturating_duration_since(last);
            if silent < a.spec.stall_after.0 {
                continue;
            }
            a.state = ProcState::Stalled;
            let restart = a.spec.on_stall == OnStall::Restart;
            fx.push(Effect::Emit(
                Event::new(EventKind::AgentStalled, Some(a.name()))
                    .with("silent_secs", silent.as_secs())
                    .with("action", if restart { "restart" } else { "alert" }),
            ));
            if restart && a.intent == Intent::None {
                a.intent = Intent::Restart;
                fx.extend(polite_stop(a));
            }
        }
    }

    fn output(&mut self, i: usize, bytes: &[u8], now: Instant, fx: &mut Vec<Effect>) {
        let a = &mut self.agents[i];
        a.last_output = Some(now);
        a.output_seq = a.output_seq.wrapping_add(1);
        let name = a.name().to_owned();
        if a.state == ProcState::Stalled {
            a.state = ProcState::Running;
            fx.push(Effect::Emit(Event::new(
                EventKind::AgentRecovered,
                Some(&name),
            )));
        }
        let lines = a.lines.push(bytes);
        if let Some(last) = lines.iter().rev().find(|l| !l.trim().is_empty()) {
            a.last_line = Some(last.trim_end().to_owned());
        }
        let Some(storms) = a.storms.as_mut() else {
            return;
        };
        for line in lines {
            if let Some(storm) = storms.observe(now, &line) {
                fx.push(Effect::Emit(
                    Event::new(EventKind::ErrorStorm, Some(&name))
                        .with("pattern", storm.pattern)
                        .with("count", storm.count)
                        .with(
                            "window_secs",
                            self.monitor.error_storm_window.0.as_secs_f64(),
                        )
                        .with("sample", storm.sample),
                ));
            }
        }
    }

    fn resources(&mut self, i: usize, rss: u64, cpu: f64, now: Instant, fx: &mut Vec<Effect>) {
        let a = &mut self.agents[i];
        if !a.state.is_live() {
            return;
        }
        a.rss_bytes = Some(rss);
        a.cpu_percent = Some(cpu);
        let name = a.name().to_owned();
        a.leak.observe(now, rss);
        if !a.leak_reported
            && let Some(s) = a.leak.suspicion()
        {
            a.leak_reported = true;
            // A suspicion, not a verdict: report it, kill nothing.
            fx.push(Effect::Emit(
                Event::new(EventKind::MemoryLeak, Some(&name))
                    .with("rss_bytes", rss)
                    .with("growth_percent", (s.growth * 1000.0).round() / 10.0)
                    .with("bytes_per_sec", s.slope_bytes_per_sec.round())
                    .with("r_squared", (s.r_squared * 1000.0).round() / 1000.0)
                    .with("samples", s.samples),
            ));
        }
        let Some(limit) = a.spec.limits.memory else {
            return;
        };
        if rss <= limit.0 {
            a.over_limit = false;
            return;
        }
        if a.over_limit {
            return;
        }
        a.over_limit = true;
        let restart = a.spec.on_limit == OnLimit::Restart;
        fx.push(Effect::Emit(
            Event::new(EventKind::LimitExceeded, Some(&name))
                .with("rss_bytes", rss)
                .with("limit_bytes", limit.0)
                .with("action", if restart { "restart" } else { "alert" }),
        ));
        if restart && a.intent == Intent::None {
            a.intent = Intent::Restart;
            fx.extend(polite_stop(a));
        }
    }

    fn command(&mut self, c: Command, now: Instant, fx: &mut Vec<Effect>) {
        let (name, what) = match &c {
            Command::Restart(n) => (n.clone(), 'r'),
            Command::Stop(n) => (n.clone(), 's'),
            Command::Start(n) => (n.clone(), 'g'),
        };
        let Some(i) = self.index(&name) else { return };
        let a = &mut self.agents[i];
        let grace = Effect::Arm {
            timer: Timer::Grace {
                agent: name.clone(),
                generation: a.generation,
            },
            after: STOP_GRACE,
        };
        match (what, a.state.is_live()) {
            ('s', true) => {
                a.intent = Intent::Stop;
                fx.push(Effect::Signal {
                    agent: name,
                    kill: false,
                });
                fx.push(grace);
            }
            ('s', false) => {
                a.state = ProcState::Stopped;
                a.generation += 1; // cancels a pending backoff restart
                fx.push(Effect::Emit(Event::new(
                    EventKind::AgentStopped,
                    Some(&name),
                )));
            }
            ('r', true) => {
                a.intent = Intent::Restart;
                fx.push(Effect::Signal {
                    agent: name,
                    kill: false,
                });
                fx.push(grace);
            }
            ('g', true) => {} // already running
            (_, false) => {
                // start, or restart of a stopped/exited/fatal agent: a human decided, so
                // the crash history is forgiven.
                a.recent.clear();
                a.consecutive = 0;
                fx.push(Effect::Persist);
                self.respawn(i, now, fx);
            }
            _ => {}
        }
    }
}

/// How long a screen that turned idle after work must stay idle to count.
pub const IDLE_SETTLE: Duration = Duration::from_millis(400);

/// How long a running agent's screen may match none of its profile's patterns before
/// that is reported: long enough for a CLI to start and for a screen of plain output to
/// scroll by, short enough to notice a CLI update on the first day.
pub const UNRECOGNISED_AFTER: Duration = Duration::from_secs(60);

/// Reports, once a run, an agent whose screen has matched nothing of its profile for
/// [`UNRECOGNISED_AFTER`] (its CLI changed its screens, or the layout's patterns are
/// wrong), unless its profile expects that (a shell).
fn unrecognised(a: &mut Supervised, now: Instant, fx: &mut Vec<Effect>) {
    if a.unrecognised_reported
        || !a.state.is_live()
        || a.screen != Activity::Unknown
        || !crate::profile::get(a.spec.profile)
            .activity
            .report_unrecognised
    {
        return;
    }
    let Some(since) = a.recognised_at.or(a.started_at) else {
        return;
    };
    let silent = now.saturating_duration_since(since);
    if silent < UNRECOGNISED_AFTER {
        return;
    }
    a.unrecognised_reported = true;
    let mut ev = Event::new(EventKind::ActivityUnrecognised, Some(a.name()))
        .with("profile", crate::profile::hooks::profile_name(a.spec.profile))
        .with("unrecognised_secs", silent.as_secs())
        .with(
            "reason",
            "the screen matches none of the profile's activity patterns; the CLI may have changed its screens: set `activity:` patterns in the layout",
        );
    if let Some(tail) = &a.screen_tail {
        ev = ev.with("screen_tail", tail.as_str());
    }
    fx.push(Effect::Emit(ev));
}

/// The polite stop signal, and the timer that escalates to SIGKILL after the grace.
fn polite_stop(a: &Supervised) -> [Effect; 2] {
    let agent = a.name().to_owned();
    [
        Effect::Signal {
            agent: agent.clone(),
            kill: false,
        },
        Effect::Arm {
            timer: Timer::Grace {
                agent,
                generation: a.generation,
            },
            after: STOP_GRACE,
        },
    ]
}

#[cfg(test)]
mod tests;
