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
use crate::monitor::activity::Activity;
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
    /// What the agent's screen shows it doing.
    Activity {
        agent: String,
        activity: Activity,
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
    pub activity: Activity,
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
            } => {
                if let Some(i) = self.index(&agent) {
                    self.started(i, pane, pid, adopted, now, &mut fx);
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
            Msg::Activity { agent, activity } => {
                if let Some(a) = self.agents.iter_mut().find(|a| a.name() == agent) {
                    a.activity = activity;
                    if activity == Activity::Waiting && a.state == ProcState::Stalled {
                        // Silence while waiting for a human is not a stall.
                        a.state = ProcState::Running;
                        fx.push(Effect::Emit(Event::new(
                            EventKind::AgentRecovered,
                            Some(&agent),
                        )));
                    }
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
            Msg::Tick => self.check_stalls(now, &mut fx),
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

    fn respawn(&mut self, i: usize, _now: Instant, fx: &mut Vec<Effect>) {
        let a = &mut self.agents[i];
        a.state = ProcState::Starting;
        a.generation += 1;
        fx.push(Effect::Respawn {
            agent: a.name().to_owned(),
        });
    }

    fn started(
        &mut self,
        i: usize,
        pane: String,
        pid: u32,
        adopted: bool,
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
        a.started_at = Some(now);
        a.last_output = Some(now);
        a.exit_status = None;
        // A new process: its memory history and screen start over.
        a.leak.reset();
        a.leak_reported = false;
        a.over_limit = false;
        a.lines = LineAssembler::new();
        a.activity = Activity::Unknown;
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
        fx.push(Effect::Arm {
            timer: Timer::Stable {
                agent: name,
                generation: a.generation,
            },
            after: a.spec.restart.min_uptime.0,
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

    fn check_stalls(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        for a in &mut self.agents {
            if a.state != ProcState::Running || a.activity == Activity::Waiting {
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
        let name = a.name().to_owned();
        if a.state == ProcState::Stalled {
            a.state = ProcState::Running;
            fx.push(Effect::Emit(Event::new(
                EventKind::AgentRecovered,
                Some(&name),
            )));
        }
        let lines = a.lines.push(bytes);
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
