//! The imperative shell around the supervisor core: observes tmux and the agents'
//! processes, turns what it sees into `Msg`s, and carries out the core's `Effect`s.
//!
//! Three paths notice a death, fastest first: a pidfd per agent process (readable ~0.25 ms
//! after the process dies), tmux's `pane-died` hook reaching the control socket through
//! `run-shell -b`, and a reconciliation of all panes with ONE `list-panes -a` per
//! `monitor.tick`. The core counts each death once, whichever path reports it first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot};

use super::control::{self, AgentReport, Reply, Request};
use super::core::{Command, Core, Effect, Msg, Timer};
use super::deaths::DeathWatch;
use super::event::{Event, EventKind};
use super::health::WriteHealth;
use super::store::{CONTROL_SOCKET, Counters, Journal, Lock};
use crate::layout::Layout;
use crate::monitor::activity::{Activity, ActivityProfile, Source};
use crate::monitor::resources::{ProcessTable, ResourceSampler};
use crate::process::{Sig, signal};
use crate::session;
use crate::state::StateDir;
use crate::tmux::control::{ControlClient, ControlEvent};
use crate::tmux::{Pane, Tmux};

const JOURNAL_MAX_BYTES: u64 = 16 << 20;

/// How often the agents that changed are sent to dashboards (while any subscribes).
const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// How many times (5 ms apart) a death is looked at in tmux before it counts as the
/// agent's own: a server that is going takes a few milliseconds to stop answering.
const DEATH_LOOKS: u32 = 40;

/// How long after the first sign of a change the layout file is read.
const RELOAD_SETTLE: Duration = Duration::from_millis(50);

/// Events of the journal a new subscriber gets first.
const HISTORY_SENT: usize = 200;

pub struct SuperviseOptions {
    /// The orch binary, which the tmux `pane-died` hook runs to reach the control socket.
    pub exe: PathBuf,
    /// The layout file, watched for changes (hot reload); `None` for a built-in layout.
    pub layout_file: Option<PathBuf>,
    /// `--session`, which also applies to a reloaded layout.
    pub session_override: Option<crate::layout::TmuxName>,
}

/// Runs the supervisor until SIGINT or SIGTERM, printing events as JSON lines to `out`.
/// Agents keep running when it stops.
pub fn supervise(
    layout: Layout,
    tmux: Tmux,
    state: StateDir,
    opts: SuperviseOptions,
    out: Box<dyn Write>,
) -> Result<()> {
    let session = layout.session.to_string();
    let dir = state.session_dir(&session)?;
    let lock = Lock::acquire(&dir, &session)?;
    super::fds::raise_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(async move {
        let (tx, rx) = mpsc::unbounded_channel();
        let journal = Journal::open(&dir)?;
        let core = Core::new(layout.agents.clone(), &layout.monitor);
        let gone = tx.clone();
        let deaths = DeathWatch::start(move |agent, pid| {
            let _ = gone.send(Input::Gone { agent, pid });
        })
        .context("starting the death watch")?;
        let mut shell = Shell {
            core,
            layout,
            tmux,
            state,
            dir,
            journal,
            out,
            timers: Vec::new(),
            tx,
            deaths,
            just_created: Vec::new(),
            control: None,
            dirty: HashSet::new(),
            activity: HashMap::new(),
            layout_file: opts.layout_file.clone(),
            session_override: opts.session_override.clone(),
            layout_hash: None,
            reload_at: None,
            sampler: ResourceSampler::new(),
            snapshot_refs: crate::snapshot::Reuse::default(),
            printed: HashSet::new(),
            reuse_ok: false,
            listing_failed: false,
            hook: String::new(),
            subscribers: Vec::new(),
            published: HashMap::new(),
            gate: None,
            gate_config: None,
            gate_stopping: false,
            health: WriteHealth::default(),
            fds: super::fds::FdReserve::new(),
            orch_exe: opts.exe.clone(),
            draining: false,
            last_panes: Vec::new(),
            rollbacks: 0,
            status_shown: None,
        };
        shell.run(rx, &opts).await
    });
    drop(lock);
    result
}

enum Input {
    /// A watched process ended (its pidfd became readable).
    Gone { agent: String, pid: u32 },
    /// What the control-mode client saw.
    Tmux(ControlEvent),
    /// Something happened to the layout file (or its folder).
    LayoutTouched,
    /// Look at tmux now rather than at the next tick.
    Reconcile,
    /// A round of deliveries of queued messages ended.
    Delivered(super::queues::Outcome),
    /// The layout file as read and parsed off the event loop after it was touched.
    LayoutLoaded {
        text: Option<String>,
        loaded: Box<Result<Layout, crate::layout::LayoutErrors>>,
    },
    Control {
        req: Request,
        reply: oneshot::Sender<Reply>,
    },
    /// What the quality gate asks of the loop.
    Gate(super::gate::FromGate),
    /// The gate of the layout before a reload has stopped: the new one can start.
    GateStopped,
    /// A dashboard subscribes: the state now, then every event and change (see
    /// [`control::Request::Subscribe`]).
    Subscribe {
        reply: oneshot::Sender<Reply>,
        lines: mpsc::UnboundedSender<String>,
    },
}

struct Shell {
    core: Core,
    layout: Layout,
    tmux: Tmux,
    state: StateDir,
    dir: PathBuf,
    journal: Journal,
    out: Box<dyn Write>,
    timers: Vec<(Instant, Timer)>,
    tx: mpsc::UnboundedSender<Input>,
    deaths: DeathWatch,
    just_created: Vec<String>,
    /// The control-mode client: per-pane output as it happens. `None` while it is down;
    /// the pidfd, hook and reconciliation paths do not need it.
    control: Option<ControlClient>,
    /// Agents whose screen may have changed since it was last classified.
    dirty: HashSet<String>,
    activity: HashMap<String, Arc<ActivityProfile>>,
    layout_file: Option<PathBuf>,
    session_override: Option<crate::layout::TmuxName>,
    /// The hash of the layout file's content last applied (or rejected), so touching the
    /// file without changing it does nothing.
    layout_hash: Option<String>,
    /// When the layout file is read after a change: a burst of writes (an editor's save)
    /// is read once, a moment after it began, without holding up the loop.
    reload_at: Option<Instant>,
    sampler: ResourceSampler,
    /// The last snapshot's pane contents, and the panes that printed since (or died, or
    /// restarted): the others are not captured again.
    snapshot_refs: crate::snapshot::Reuse,
    printed: HashSet<String>,
    /// False until a snapshot is taken with the control client attached throughout.
    reuse_ok: bool,
    /// The last pane listing failed (said once in the log until one succeeds again).
    listing_failed: bool,
    /// Where the `pane-died` hook sends its reports (set again on a restored server).
    hook: String,
    /// Dashboards: where each one's lines go.
    subscribers: Vec<mpsc::UnboundedSender<String>>,
    /// Each agent as subscribers last saw it.
    published: HashMap<String, control::AgentView>,
    /// The quality gate (`quality:`), on threads of its own.
    gate: Option<super::gate::GateSource>,
    /// The settings the gate was started with (`None`: the layout has no `quality:`).
    gate_config: Option<crate::gate::Config>,
    /// The gate is stopping so that one with a reloaded layout's settings can start.
    gate_stopping: bool,
    /// Pending rollback decisions, as last counted.
    rollbacks: usize,
    /// What the session's tmux status line was last set to.
    status_shown: Option<String>,
    /// Which kinds of writes fail now (a full disk): each is reported once, not per try.
    health: WriteHealth,
    /// Descriptors kept back so a restart works even when the process has none left.
    fds: super::fds::FdReserve,
    /// The orch binary, which runs the control client's guard.
    orch_exe: PathBuf,
    /// A round of deliveries runs (off the loop); the next starts once it ends.
    draining: bool,
    /// The panes of the session as the last reconciliation saw them.
    last_panes: Vec<Pane>,
}

impl Shell {
    async fn run(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Input>,
        opts: &SuperviseOptions,
    ) -> Result<()> {
        // Handlers first: a SIGTERM while starting up must stop us cleanly, not kill us.
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let session = self.layout.session.to_string();
        self.emit(
            Event::new(EventKind::SupervisorStarted, None)
                .with("pid", std::process::id())
                .with("session", session.as_str()),
        )?;

        let report = session::up(&self.layout, &self.tmux, &self.state)?;
        self.just_created = report.created.iter().map(|(a, _)| a.clone()).collect();
        if !report.created.is_empty() {
            let names: Vec<&str> = report.created.iter().map(|(a, _)| a.as_str()).collect();
            self.emit(Event::new(EventKind::SessionUp, None).with("created", names))?;
        }
        // Listen and hook in before adopting anything, so no death goes unreported; what
        // arrives meanwhile waits in the channel.
        let listener = control::bind(&self.dir.join(CONTROL_SOCKET))?;
        let (req_tx, mut req_rx) = mpsc::unbounded_channel();
        tokio::spawn(control::serve(listener, req_tx));
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(control::Incoming { req, reply, lines }) = req_rx.recv().await {
                let input = match lines {
                    Some(lines) => Input::Subscribe { reply, lines },
                    None => Input::Control { req, reply },
                };
                if tx.send(input).is_err() {
                    break;
                }
            }
        });
        self.hook = hook_command(&opts.exe, &self.tmux, self.state.root(), &session);
        self.set_hook();
        self.activity = activity_profiles(&self.layout);
        let _watcher = self.watch_layout();
        Counters::load(&self.dir).restore(&mut self.core, Instant::now());
        self.reconcile(true).await?;
        for agent in std::mem::take(&mut self.just_created) {
            self.queue_instructions(&agent);
        }
        // Read every screen once; after that, only screens that printed.
        self.dirty = self
            .core
            .agents
            .iter()
            .map(|a| a.name().to_owned())
            .collect();
        // A control client an earlier supervisor left (its guard killed with it) would
        // keep the server from exiting; we hold the lock, so it is nobody's.
        match crate::tmux::guard::kill_orphaned_clients(&self.tmux, &session) {
            Ok(killed) if !killed.is_empty() => {
                tracing::warn!(?killed, "killed control clients an earlier supervisor left");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("looking for orphaned control clients: {e}"),
        }
        self.connect_control().await;
        // A snapshot now, so that the next ones (at an agent's exit, before its restart
        // waits for it) read only what was printed since, not whole histories.
        self.snapshot("supervisor_started")?;
        self.start_gate();

        let mut tick = every(self.layout.monitor.tick.0, false);
        let mut snapshots = every(self.layout.snapshot.interval.0, true);
        let mut resources = every(self.layout.monitor.resources.0, false);
        let mut maintenance = every(self.layout.monitor.maintenance.0, false);
        let mut publish = every(PUBLISH_EVERY, true);

        loop {
            let next_timer = self.timers.iter().map(|(at, _)| *at).min();
            let timer_sleep = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let reload_at = self.reload_at;
            let reload_sleep = async {
                match reload_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = timer_sleep => {
                    let now = Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) = self.timers.drain(..).partition(|(at, _)| *at <= now);
                    self.timers = later;
                    for (_, timer) in due {
                        let r = self.feed(Msg::Timer(timer)).await;
                        self.survive("timer", r);
                    }
                }
                _ = tick.tick() => {
                    let r = self.reconcile(false).await;
                    self.survive("reconcile", r);
                    let r = self.classify_activity().await;
                    self.survive("activity", r);
                    let r = self.drain_queues();
                    self.survive("queue", r);
                    if self.control.is_none() && self.session_listed() {
                        self.connect_control().await;
                    }
                    self.show_attention();
                }
                _ = reload_sleep => {
                    self.reload_at = None;
                    self.reload_layout();
                }
                _ = resources.tick() => {
                    let r = self.sample_resources().await;
                    self.survive("resources", r);
                }
                _ = snapshots.tick() => {
                    let r = self.snapshot("interval");
                    self.survive("interval snapshot", r);
                }
                _ = publish.tick(), if !self.subscribers.is_empty() => self.publish(),
                _ = maintenance.tick() => match self.journal.rotate_if_larger(JOURNAL_MAX_BYTES) {
                    Ok(true) => tracing::info!("rotated the event journal"),
                    Ok(false) => {}
                    Err(e) => self.survive("rotation", Err(e)),
                },
                // Last, so a flood of pane output can never starve the tiers above.
                Some(input) = rx.recv() => {
                    let r = self.input(input).await;
                    self.survive("input", r);
                }
            }
        }

        // Stops the gate, and kills a check that is running.
        self.gate = None;
        let _ = self.tmux.unset_pane_died_hook(&session);
        // Nobody keeps the status text up to date any more: the user's own line comes back.
        let _ = self.tmux.hide_attention(&session);
        let _ = std::fs::remove_file(self.dir.join(CONTROL_SOCKET));
        self.persist(Instant::now());
        self.emit(
            Event::new(EventKind::SupervisorStopped, None).with("agents_left_running", true),
        )?;
        Ok(())
    }

    /// Once the supervisor runs, nothing that fails stops it (SPEC: it never exits
    /// because a write failed): the failure is logged, once per kind until that kind
    /// works again, and the loop goes on.
    fn survive(&mut self, what: &'static str, result: Result<()>) {
        let now = Instant::now();
        match result {
            Ok(()) => {
                if self.health.worked(what, now).is_some() {
                    tracing::info!(what, "works again");
                }
            }
            Err(e) => {
                if self.health.failed(what, &format!("{e:#}"), now).is_some() {
                    tracing::error!(what, "failed, supervision goes on: {e:#}");
                }
            }
        }
    }

    /// Saves the restart counters; a failed save is reported once, and the counters are
    /// saved again at the next change.
    fn persist(&mut self, now: Instant) {
        let saved = Counters::capture(&self.core, now).save(&self.dir);
        self.wrote("counters", saved);
    }

    /// Records whether a write of kind `what` worked, reporting the first failure and the
    /// recovery as events.
    fn wrote(&mut self, what: &'static str, result: Result<()>) {
        let now = Instant::now();
        let report = match &result {
            Ok(()) => self.health.worked(what, now),
            Err(e) => self.health.failed(what, &format!("{e:#}"), now),
        };
        if let Some(ev) = report {
            let _ = self.emit(ev);
        }
    }

    async fn input(&mut self, input: Input) -> Result<()> {
        match input {
            Input::Gone { agent, pid } => {
                // Every agent dies with its tmux server: that is no crash to restart.
                if self.core.server_down {
                    return Ok(());
                }
                // A dead pane's screen changes (tmux notes the death on it).
                if let Some(pane) = self.core.agent(&agent).and_then(|a| a.pane.clone()) {
                    self.printed.insert(pane);
                }
                let Some((status, signal, screen)) = self.death_details(&agent, pid).await else {
                    return self.server_died().await;
                };
                self.feed(Msg::Exited {
                    agent,
                    pid: Some(pid),
                    status,
                    signal,
                    screen,
                })
                .await
            }
            Input::Tmux(ControlEvent::Output { pane, bytes, .. }) => {
                tracing::trace!(%pane, bytes = bytes.len(), "pane output");
                self.pane_output(&pane, bytes).await
            }
            // Output dropped under load still proves the agent is alive.
            Input::Tmux(ControlEvent::OutputLost { pane, .. }) => {
                self.pane_output(&pane, Vec::new()).await
            }
            Input::Tmux(ControlEvent::Exit { reason }) => {
                tracing::warn!(?reason, "the tmux control client ended");
                self.control = None;
                self.reuse_ok = false;
                // If the server died, every agent died with it: find out now.
                self.reconcile(false).await
            }
            Input::Tmux(_) => Ok(()),
            Input::LayoutTouched => {
                self.reload_at
                    .get_or_insert_with(|| Instant::now() + RELOAD_SETTLE);
                Ok(())
            }
            Input::Reconcile => self.reconcile(false).await,
            Input::Control {
                req: Request::Gate { call },
                reply,
            } => {
                self.gate_request(call, reply);
                Ok(())
            }
            Input::Gate(g) => self.gate_input(g).await,
            Input::GateStopped => {
                self.gate_stopping = false;
                self.start_gate();
                Ok(())
            }
            Input::LayoutLoaded { text, loaded } => self.apply_layout(text, *loaded).await,
            Input::Delivered(outcome) => {
                self.draining = false;
                // Already in the journal; the supervisor's stdout and dashboards show
                // them too.
                for line in outcome.echoed {
                    let _ = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
                    self.broadcast(&line);
                }
                if let Some(audit) = outcome.audit {
                    self.wrote("audit", audit.map_err(|e| anyhow::anyhow!(e)));
                }
                Ok(())
            }
            Input::Control { req, reply } => {
                let answer = self.control(req).await;
                let _ = reply.send(answer);
                Ok(())
            }
            Input::Subscribe { reply, lines } => {
                let _ = reply.send(Reply {
                    ok: true,
                    ..Reply::default()
                });
                let state = control::Line::State {
                    session: self.layout.session.to_string(),
                    supervisor_pid: std::process::id(),
                    server_down: self.core.server_down,
                    agents: self.views(),
                };
                let history = control::Line::History {
                    events: (self.journal.recent(HISTORY_SENT).iter())
                        .filter_map(|l| serde_json::from_str(l).ok())
                        .collect(),
                };
                let sent = [state, history].iter().all(|line| {
                    serde_json::to_string(line).is_ok_and(|text| lines.send(text).is_ok())
                });
                if sent {
                    self.subscribers.push(lines);
                }
                Ok(())
            }
        }
    }

    /// Every agent as a dashboard shows it.
    fn views(&self) -> Vec<control::AgentView> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        self.core
            .agents
            .iter()
            .map(|a| view(a, now, wall))
            .collect()
    }

    /// One agent's new state, to every subscriber at once: a death, a restart or a
    /// fatal is shown without waiting for the next publishing period.
    fn publish_now(&mut self, agent: &str) {
        if self.subscribers.is_empty() {
            return;
        }
        let Some(a) = self.core.agents.iter().find(|a| a.name() == agent) else {
            return;
        };
        let v = view(a, Instant::now(), SystemTime::now());
        if self.published.get(agent) == Some(&v) {
            return;
        }
        if let Ok(text) = serde_json::to_string(&control::Line::Agent {
            agent: Box::new(v.clone()),
        }) {
            self.broadcast(&text);
        }
        self.published.insert(agent.to_owned(), v);
    }

    /// Sends the agents that changed since the last time to every subscriber, dropping
    /// those that left. Called on a short timer while anyone subscribes, so a pane that
    /// floods its output costs one line per agent per period, not one per chunk.
    fn publish(&mut self) {
        if self.subscribers.is_empty() {
            return;
        }
        let views = self.views();
        let mut lines = Vec::new();
        for v in views {
            if self.published.get(&v.name) != Some(&v) {
                if let Ok(text) = serde_json::to_string(&control::Line::Agent {
                    agent: Box::new(v.clone()),
                }) {
                    lines.push(text);
                }
                self.published.insert(v.name.clone(), v);
            }
        }
        for line in lines {
            self.broadcast(&line);
        }
    }

    /// Puts what needs the human into the session's tmux status line (`orch: 2 waiting ·
    /// 1 rollback`), so someone attached to an agent's pane sees it too; one tmux call
    /// when it changed, none otherwise.
    fn show_attention(&mut self) {
        // Counted when the gate's state is free; the next tick catches up otherwise.
        match &self.gate {
            Some(g) => {
                if let Some(n) = g.pending() {
                    self.rollbacks = n;
                }
            }
            None => self.rollbacks = 0,
        }
        let agents = self.core.agents.iter();
        let what = control::attention(
            agents.map(|a| (a.state.as_str(), a.activity.as_str())),
            self.rollbacks,
        );
        if self.status_shown.as_ref() == Some(&what) {
            return;
        }
        let text = if what.is_empty() {
            "orch: ok".to_owned()
        } else {
            format!("orch: {what}")
        };
        match self
            .tmux
            .show_attention(self.layout.session.as_str(), &text)
        {
            Ok(()) => self.status_shown = Some(what),
            // The server may be gone; the next tick tries again.
            Err(e) => tracing::debug!("setting the status line: {e}"),
        }
    }

    /// One line to every subscriber; one that left is forgotten.
    fn broadcast(&mut self, line: &str) {
        self.subscribers.retain(|s| s.send(line.to_owned()).is_ok());
    }

    async fn pane_output(&mut self, pane: &str, bytes: Vec<u8>) -> Result<()> {
        self.printed.insert(pane.to_owned());
        let agent = self
            .core
            .agents
            .iter()
            .find(|a| a.pane.as_deref() == Some(pane));
        let Some(agent) = agent.map(|a| a.name().to_owned()) else {
            return Ok(());
        };
        self.dirty.insert(agent.clone());
        self.feed(Msg::Output { agent, bytes }).await
    }

    async fn control(&mut self, req: Request) -> Reply {
        let command = match req {
            // Arrives as `Input::Subscribe`, with the channel its lines go to.
            Request::Subscribe => {
                return Reply {
                    ok: false,
                    error: Some("a subscription needs its own connection".into()),
                    ..Reply::default()
                };
            }
            Request::PaneDied { pane } => {
                tracing::debug!(%pane, "pane-died hook");
                return Reply::from(self.reconcile(false).await);
            }
            Request::Activity {
                agent,
                activity,
                event,
            } => {
                tracing::debug!(agent, ?activity, event, "activity hook");
                if self.core.agent(&agent).is_none() {
                    return Reply {
                        ok: false,
                        error: Some(format!("{agent} is not an agent of this session")),
                        ..Reply::default()
                    };
                }
                return Reply::from(
                    self.feed(Msg::Activity {
                        agent,
                        activity,
                        source: Source::Hook(event),
                        tail: None,
                    })
                    .await,
                );
            }
            Request::Status => {
                return Reply {
                    ok: true,
                    agents: self.report(),
                    ..Reply::default()
                };
            }
            Request::Gate { .. } => {
                return Reply::from(Err(anyhow::anyhow!("gate requests go to the gate")));
            }
            Request::Restart { agent } => Command::Restart(agent),
            Request::Stop { agent } => Command::Stop(agent),
            Request::Start { agent } => Command::Start(agent),
        };
        let name = match &command {
            Command::Restart(a) | Command::Stop(a) | Command::Start(a) => a.clone(),
        };
        if self.core.agent(&name).is_none() {
            return Reply {
                ok: false,
                error: Some(crate::session::agent::unknown_agent(&name, &self.layout)),
                ..Reply::default()
            };
        }
        Reply::from(self.feed(Msg::Command(command)).await)
    }

    fn report(&self) -> Vec<AgentReport> {
        let now = Instant::now();
        self.core
            .agents
            .iter()
            .map(|a| AgentReport {
                name: a.name().to_owned(),
                state: a.state.as_str().to_owned(),
                restarts: a.restarts,
                last_output_secs_ago: a
                    .last_output
                    .map(|t| now.saturating_duration_since(t).as_secs_f64()),
                activity: a.activity.as_str().to_owned(),
                exit_status: a.exit_status,
            })
            .collect()
    }

    /// Exit status, signal and last screen of a dead agent; `None` when it died with its
    /// tmux server. The status comes from the zombie's /proc entry if tmux has not reaped
    /// it yet, else from tmux, which learns it a moment after the pidfd fires (and, on
    /// tmux 3.3a, sometimes never). A dying server kills its panes before it stops
    /// answering, so a death counts as the agent's own only once tmux shows its pane dead,
    /// or its pane gone while the server (and, for a closed pane, its session) lives on.
    async fn death_details(
        &mut self,
        agent: &str,
        pid: u32,
    ) -> Option<(Option<i32>, Option<i32>, Option<String>)> {
        let mut from_proc = zombie_exit(pid);
        let pane_id = self.core.agent(agent).and_then(|a| a.pane.clone());
        let session = self.layout.session.to_string();
        let mut found: Option<Pane> = None;
        for look in 0..DEATH_LOOKS {
            match self.session_panes().await {
                Ok(None) => return None,
                Err(_) => found = None, // a server on its way out can fail a command
                Ok(Some(panes)) => {
                    let session_lives = panes.iter().any(|p| p.session == session);
                    found = panes.into_iter().find(|p| Some(&p.id) == pane_id.as_ref());
                    let settled = match &found {
                        // tmux 3.3a may never record the status: give it 40 ms.
                        Some(p) if p.dead => {
                            from_proc.is_some()
                                || p.dead_status.is_some()
                                || p.dead_signal.is_some()
                                || look >= 8
                        }
                        // It runs another process already (respawned meanwhile).
                        Some(p) => p.pid != Some(pid),
                        None => session_lives,
                    };
                    if settled {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if from_proc.is_none() {
            from_proc = found
                .as_ref()
                .filter(|p| p.dead)
                .map(|p| (p.dead_status, p.dead_signal));
        }
        let screen = pane_id
            .as_deref()
            .and_then(|p| self.tmux.capture_screen(p).ok())
            .map(|s| tidy_screen(&s));
        let (status, signal) = from_proc.unwrap_or((None, None));
        Some((status, signal, screen))
    }

    /// The panes of the session: asked through the control client (no tmux process,
    /// fields no pane can forge), else with one `list-panes -a`. A client that does not
    /// answer in time is dropped (it is started again on the next tick).
    ///
    /// `None` when no tmux server runs on the socket (which a listing of no panes cannot
    /// tell apart).
    async fn session_panes(&mut self) -> Result<Option<Vec<Pane>>, crate::tmux::TmuxError> {
        use crate::tmux::control::ControlError;
        if let Some(client) = self.control.as_mut() {
            match client.session_panes(self.layout.session.as_str()).await {
                Ok(panes) => return Ok(Some(panes)),
                Err(e @ (ControlError::NoReply(_) | ControlError::Io(_))) => {
                    tracing::warn!("the tmux control client is not answering ({e}); dropping it");
                    self.control = None;
                    self.reuse_ok = false;
                }
                Err(e) => tracing::debug!("listing panes through control mode: {e}"),
            }
        }
        self.tmux.panes_on_server()
    }

    /// Compares what tmux shows with what the core believes. `startup` adopts what runs.
    async fn reconcile(&mut self, startup: bool) -> Result<()> {
        let panes = match self.session_panes().await {
            Ok(None) if !startup => return self.server_died().await,
            Ok(panes) => {
                self.listing_failed = false;
                panes.unwrap_or_default()
            }
            // A tmux server on its way out can fail a command (no server at all lists no
            // panes): not a reason to stop supervising; the next tick looks again.
            Err(e) if !startup => {
                if !std::mem::replace(&mut self.listing_failed, true) {
                    tracing::warn!(error = %e, "listing panes failed; retrying every tick");
                }
                return Ok(());
            }
            Err(e) => return Err(anyhow::Error::from(e).context("listing panes")),
        };
        let session = self.layout.session.to_string();
        if self.core.server_down {
            if !panes.iter().any(|p| p.session == session) {
                return Ok(()); // a server, but not (yet) our session on it
            }
            tracing::info!("a tmux server holds the session again");
            self.set_hook();
            self.feed(Msg::ServerBack).await?;
        }
        self.repipe_transcripts(&panes);
        self.last_panes.clone_from(&panes);
        let names: Vec<String> = self
            .core
            .agents
            .iter()
            .map(|a| a.name().to_owned())
            .collect();
        for name in names {
            let pane = panes
                .iter()
                .find(|p| p.session == session && p.agent.as_deref() == Some(name.as_str()));
            let known_pid = self.core.agent(&name).and_then(|a| a.pid);
            match pane {
                None => self.feed(Msg::PaneMissing { agent: name }).await?,
                Some(p) if p.dead => {
                    self.printed.insert(p.id.clone());
                    if startup && let Some(pid) = p.pid {
                        // Found dead when the supervisor starts: its death is news to us.
                        self.feed(Msg::Started {
                            agent: name.clone(),
                            pane: p.id.clone(),
                            pid,
                            adopted: true,
                            age: None,
                        })
                        .await?;
                    }
                    let screen = self
                        .tmux
                        .capture_screen(&p.id)
                        .ok()
                        .map(|s| tidy_screen(&s));
                    let msg = Msg::Exited {
                        agent: name,
                        pid: p.pid,
                        status: p.dead_status,
                        signal: p.dead_signal,
                        screen,
                    };
                    self.feed(msg).await?;
                }
                Some(p) => {
                    if let Some(pid) = p.pid
                        && known_pid != Some(pid)
                    {
                        self.watch(&name, pid);
                        // A new process (a restore made its pane) may have printed before
                        // the control client saw it: read its screen at least once.
                        self.dirty.insert(name.clone());
                        // Panes this supervisor just made are started, not adopted.
                        let adopted = !self.just_created.contains(&name);
                        self.feed(Msg::Started {
                            agent: name,
                            pane: p.id.clone(),
                            pid,
                            adopted,
                            age: crate::process::age(pid),
                        })
                        .await?;
                    }
                }
            }
        }
        self.feed(Msg::Tick).await
    }

    /// The session's tmux server died with every agent in it. Per
    /// `snapshot.on_server_death`, the session is rebuilt from the newest good snapshot
    /// (`restore`, the default) or only reported (`alert`).
    async fn server_died(&mut self) -> Result<()> {
        if self.core.server_down {
            return Ok(());
        }
        tracing::warn!("the tmux server died");
        self.control = None;
        self.last_panes.clear();
        self.reuse_ok = false;
        // A restored session has none of orch's status line yet.
        self.status_shown = None;
        self.snapshot_refs = crate::snapshot::Reuse::default();
        self.timers.clear();
        self.feed(Msg::ServerGone).await?;
        match self.layout.snapshot.on_server_death {
            crate::layout::OnServerDeath::Restore => self.restore_session().await,
            crate::layout::OnServerDeath::Alert => {
                self.emit(Event::new(EventKind::Escalated, None).with(
                    "reason",
                    format!(
                        "the tmux server of session {} died; restore it with `orch restore`",
                        self.layout.session
                    ),
                ))
            }
        }
    }

    /// Rebuilds the session from its newest good snapshot, then supervises it again.
    async fn restore_session(&mut self) -> Result<()> {
        let session = self.layout.session.to_string();
        let req = crate::snapshot::restore::RestoreRequest {
            from_session: &session,
            which: crate::snapshot::restore::Which::Latest,
            as_session: None,
            handover: true,
            layout: Some(&self.layout),
        };
        match crate::snapshot::restore::restore(&self.tmux, &self.state, &req) {
            Ok(report) => {
                for note in &report.notes {
                    tracing::warn!(session, "{note}");
                }
                for event in report.events() {
                    self.emit(event)?;
                }
                // Its agents are taken on as the new server's panes at once (through
                // the loop: a reconciliation is what found the server dead).
                let _ = self.tx.send(Input::Reconcile);
                Ok(())
            }
            Err(e) => self.emit(
                Event::new(EventKind::Escalated, None).with(
                    "reason",
                    format!(
                        "the tmux server of session {session} died and the session could not be restored: {e:#}; restore it with `orch restore ID` or start it again with `orch layout up`"
                    ),
                ),
            ),
        }
    }

    fn set_hook(&self) {
        let session = self.layout.session.as_str();
        if let Err(e) = self.tmux.set_pane_died_hook(session, &self.hook) {
            tracing::warn!("could not set the pane-died hook: {e}");
        }
    }

    /// Pipes again the agent panes whose output stopped reaching their transcripts (the
    /// transcript writer died), in one tmux call; the next `orch transcript` starts a new
    /// writer. Only agents that have a transcript file: one that could not be made stays
    /// without.
    fn repipe_transcripts(&self, panes: &[Pane]) {
        let session = self.layout.session.as_str();
        let died = session::transcript::writer_died(&self.state, session);
        let files: Vec<(&str, PathBuf)> =
            session::transcript::panes_to_repipe(panes, session, died)
                .filter_map(|p| {
                    let agent = p.agent.as_deref()?;
                    let file = session::transcript::transcript_path(&self.state, session, agent);
                    file.exists().then_some((p.id.as_str(), file))
                })
                .collect();
        if files.is_empty() {
            return;
        }
        let pipes: Vec<(&str, &Path)> = files.iter().map(|(p, f)| (*p, f.as_path())).collect();
        let filter = session::transcript::filter_command(&self.layout.snapshot.redact);
        match self.tmux.pipe_transcripts(&pipes, filter.as_deref()) {
            Ok(()) => tracing::warn!(
                panes = pipes.len(),
                writer_died = died,
                "transcripts re-attached: their pipes had closed"
            ),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "could not re-attach transcripts"),
        }
    }

    /// Runs the core on `msg` and carries out its effects, and those of the messages the
    /// effects produce (a respawn reports the new process).
    async fn feed(&mut self, msg: Msg) -> Result<()> {
        let mut msgs = VecDeque::from([msg]);
        while let Some(msg) = msgs.pop_front() {
            let now = Instant::now();
            for effect in self.core.step(msg, now) {
                match effect {
                    Effect::Emit(ev) => self.emit(ev)?,
                    Effect::Arm { timer, after } => self.timers.push((deadline(now, after), timer)),
                    Effect::Persist => self.persist(now),
                    Effect::Snapshot { reason } => self.snapshot(reason)?,
                    Effect::Signal { agent, kill } => self.signal(&agent, kill)?,
                    Effect::Respawn { agent } => match self.respawn_even_without_fds(&agent) {
                        Ok((pane, pid)) => {
                            self.dirty.insert(agent.clone());
                            self.printed.insert(pane.clone());
                            self.queue_instructions(&agent);
                            msgs.push_back(Msg::Started {
                                agent,
                                pane,
                                pid,
                                adopted: false,
                                age: None,
                            });
                        }
                        Err(e) => self.emit(
                            Event::new(EventKind::Escalated, Some(&agent))
                                .with("reason", format!("could not restart {agent}: {e:#}")),
                        )?,
                    },
                }
            }
        }
        Ok(())
    }

    /// [`Shell::respawn`]; if the process has no descriptors left, once more with the
    /// reserve given back for it.
    fn respawn_even_without_fds(&mut self, agent: &str) -> Result<(String, u32)> {
        match self.respawn(agent) {
            Err(e) if super::fds::is_exhaustion(&e) => {
                tracing::warn!(
                    agent,
                    "no file descriptors left; restarting with the reserve"
                );
                self.fds.release();
                let retried = self.respawn(agent);
                self.fds.refill();
                retried
            }
            other => other,
        }
    }

    fn respawn(&mut self, agent: &str) -> Result<(String, u32)> {
        let spec = self
            .layout
            .agents
            .iter()
            .find(|a| a.name.as_str() == agent)
            .with_context(|| format!("agent {agent} is not in the layout"))?;
        let pane = self.core.agent(agent).and_then(|a| a.pane.clone());
        let (pane, pid) = match pane {
            Some(pane) => {
                let mut notes = Vec::new();
                let cwd = session::agent_cwd(&self.layout, spec, &self.state, &mut notes)?;
                let pane_spec =
                    session::pane_spec(&self.layout, spec, &cwd, &self.tmux, &self.state);
                let pid = self.tmux.respawn_pane(&pane, &pane_spec)?;
                (pane, pid)
            }
            None => {
                // Its pane is gone: `layout up` makes the missing panes — on a server that
                // still runs; a gone server's session is restored, not made anew.
                if self.tmux.panes_on_server()?.is_none() {
                    let _ = self.tx.send(Input::Reconcile);
                    anyhow::bail!("the tmux server is gone");
                }
                session::up(&self.layout, &self.tmux, &self.state)?;
                let panes = self.tmux.list_panes()?;
                let p = panes
                    .into_iter()
                    .find(|p| {
                        p.session == self.layout.session.as_str()
                            && p.agent.as_deref() == Some(agent)
                    })
                    .with_context(|| format!("layout up made no pane for {agent}"))?;
                let pid = p.pid.context("tmux reported no pid for the new pane")?;
                (p.id, pid)
            }
        };
        self.watch(agent, pid);
        Ok((pane, pid))
    }

    fn signal(&mut self, agent: &str, kill: bool) -> Result<()> {
        let Some(a) = self.core.agent(agent) else {
            return Ok(());
        };
        let Some(pid) = a.pid else { return Ok(()) };
        let sig = if kill {
            Sig::Kill
        } else {
            Sig::Stop(a.spec.profile.stop_signal())
        };
        let table = ProcessTable::read()?;
        for p in table.tree(pid) {
            signal(p, sig);
        }
        Ok(())
    }

    /// Watches `pid`: its death becomes an `Input::Gone` at once.
    fn watch(&self, agent: &str, pid: u32) {
        self.deaths.watch(agent, pid);
    }

    /// Watches the layout file for changes of its content ([`super::layout_watch`]).
    fn watch_layout(&mut self) -> Option<notify::RecommendedWatcher> {
        let file = self.layout_file.clone()?;
        self.layout_hash = crate::layout::read_layout_file(&file)
            .ok()
            .map(|t| crate::digest::sha256_hex(t.as_bytes()));
        let tx = self.tx.clone();
        super::layout_watch::watch(&file, move || {
            let _ = tx.send(Input::LayoutTouched);
        })
    }

    /// Hot reload, first half: reads and parses the touched layout file off the event
    /// loop (a hostile file must not delay noticing a death; `layout::load` refuses huge
    /// or deeply nested files before parsing anyway) and hands the result back as
    /// [`Input::LayoutLoaded`].
    fn reload_layout(&mut self) {
        let Some(file) = self.layout_file.clone() else {
            return;
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let read = tokio::task::spawn_blocking(move || {
                let text = crate::layout::read_layout_file(&file).ok();
                let loaded = crate::layout::load(&crate::layout::LayoutSource::File(file));
                (text, loaded)
            })
            .await;
            if let Ok((text, loaded)) = read {
                let _ = tx.send(Input::LayoutLoaded {
                    text,
                    loaded: Box::new(loaded),
                });
            }
        });
    }

    /// Hot reload, second half: a valid new layout is applied; an invalid one is rejected
    /// with its errors and the running one stays.
    async fn apply_layout(
        &mut self,
        text: Option<String>,
        loaded: Result<Layout, crate::layout::LayoutErrors>,
    ) -> Result<()> {
        let Some(text) = text else {
            return Ok(());
        };
        let hash = crate::digest::sha256_hex(text.as_bytes());
        if self.layout_hash.as_deref() == Some(hash.as_str()) {
            return Ok(());
        }
        self.layout_hash = Some(hash);
        let mut new = match loaded {
            Ok(l) => l,
            Err(errors) => {
                let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                return self.emit(
                    Event::new(EventKind::ConfigRejected, None)
                        .with("errors", lines)
                        .with(
                            "reason",
                            "the layout has errors; the running configuration stays",
                        ),
                );
            }
        };
        if let Some(name) = &self.session_override {
            new.session = name.clone();
        }
        if new.session != self.layout.session {
            return self.emit(Event::new(EventKind::ConfigRejected, None).with(
                "reason",
                format!(
                    "the session name changed to {}; run `orch layout down` and `orch layout up` to rename it",
                    new.session
                ),
            ));
        }
        let msg = Msg::Reload {
            agents: new.agents.clone(),
            monitor: new.monitor.clone(),
        };
        self.layout = new;
        self.activity = activity_profiles(&self.layout);
        self.regate();
        self.feed(msg).await
    }

    /// Starts the gate of the layout as it is now, if it has `quality:`.
    fn start_gate(&mut self) {
        self.gate_config = crate::gate::Config::from_layout(&self.layout, &self.dir).ok();
        let gate_tx = self.tx.clone();
        self.gate = self.gate_config.clone().and_then(|cfg| {
            super::gate::GateSource::start(cfg, move |m| {
                let _ = gate_tx.send(Input::Gate(m));
            })
        });
    }

    /// After a reload: a gate whose settings changed (its check, branches, limits, the
    /// agents it knows, `quality:` added or taken away) is stopped and started again.
    /// Stopping waits for a rollback that is moving a branch, so it happens off the loop,
    /// and the new gate starts only once the old one is gone (two would share the
    /// repository and the gate's state). Reloads meanwhile are taken by that start.
    fn regate(&mut self) {
        let wanted = crate::gate::Config::from_layout(&self.layout, &self.dir).ok();
        if self.gate_stopping || wanted == self.gate_config {
            return;
        }
        tracing::info!("the layout's quality gate settings changed: restarting the gate");
        match self.gate.take() {
            Some(old) => {
                self.gate_stopping = true;
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || {
                    drop(old);
                    let _ = tx.send(Input::GateStopped);
                });
            }
            None => self.start_gate(),
        }
    }

    /// Queues the agent's role instructions as its first message, delivered once it looks
    /// ready (SPEC §5.1: after every start, restarts included).
    fn queue_instructions(&mut self, agent: &str) {
        let Some(spec) = self.layout.agents.iter().find(|a| a.name.as_str() == agent) else {
            return;
        };
        if let Err(e) = crate::messaging::queue_instructions(&self.dir, spec) {
            tracing::warn!(agent, "queueing the role instructions: {e:#}");
        }
    }

    /// Delivers queued messages to agents that run again (after a restart, or out of
    /// copy mode): starts a round off the event loop (see [`super::queues`]) unless one
    /// is still running. Costs a directory read per queue per tick while none waits.
    fn drain_queues(&mut self) -> Result<()> {
        use crate::messaging::deliver::InputStyle;
        if self.draining {
            return Ok(());
        }
        let queue = crate::messaging::queue::Queue::new(&self.dir);
        let now = Instant::now();
        let agents: Vec<super::queues::Waiting> = super::queues::waiting(&queue)
            .into_iter()
            .filter_map(|a| {
                let s = self.core.agent(&a).filter(|s| s.pid.is_some())?;
                let profile = self.activity.get(&a)?.clone();
                let unknown_for = match (s.activity, s.activity_since) {
                    (Activity::Unknown, Some(since)) => now.saturating_duration_since(since),
                    _ => Duration::ZERO,
                };
                Some(super::queues::Waiting {
                    style: InputStyle::for_agent(s.spec.profile, s.spec.command.as_deref())
                        .with_overrides(&s.spec.paste),
                    profile,
                    activity: s.activity,
                    unknown_for,
                    agent: a,
                })
            })
            .collect();
        if agents.is_empty() {
            return Ok(());
        }
        let round = super::queues::Round {
            tmux: self.tmux.clone(),
            dir: self.dir.clone(),
            session: self.layout.session.to_string(),
            panes: self.last_panes.clone(),
            agents,
        };
        self.draining = true;
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = super::queues::deliver(round);
            let _ = tx.send(Input::Delivered(outcome));
        });
        Ok(())
    }

    /// Writes a snapshot and reports it; a failed snapshot is reported, not fatal.
    fn snapshot(&mut self, reason: &str) -> Result<()> {
        if self.core.server_down {
            return Ok(()); // nothing to capture; the newest good snapshot is what restores
        }
        match self.capture_snapshot(reason) {
            Ok(written) => {
                if let Some(back) = self.health.worked("snapshot", Instant::now()) {
                    self.emit(back)?;
                }
                self.emit(written.event(reason))
            }
            // Reported once while snapshots keep failing (a full disk), not at every try.
            Err(e) if self.health.is_failing("snapshot") => {
                let _ = self
                    .health
                    .failed("snapshot", &format!("{e:#}"), Instant::now());
                Ok(())
            }
            Err(e) => {
                let _ = self
                    .health
                    .failed("snapshot", &format!("{e:#}"), Instant::now());
                self.emit(
                    Event::new(EventKind::SnapshotFailed, None)
                        .with("reason", reason)
                        .with("error", format!("{e:#}"))
                        .with(
                            "note",
                            "reported once while snapshots keep failing; agents are still restarted",
                        ),
                )
            }
        }
    }

    /// Hands `orch check` / `orch rollback …` to the gate, which answers on its own
    /// thread.
    fn gate_request(&mut self, call: crate::gate::service::Call, reply: oneshot::Sender<Reply>) {
        match &self.gate {
            Some(g) => g.request(call, reply),
            None => {
                let why = match &self.layout.quality {
                    None => anyhow::Error::new(crate::gate::BadInput::NoQuality),
                    Some(_) if self.gate_stopping => anyhow::anyhow!(
                        "the quality gate is restarting with the reloaded layout; try again in a moment"
                    ),
                    Some(_) => {
                        anyhow::anyhow!("the quality gate did not start; `orch events` says why")
                    }
                };
                let _ = reply.send(super::gate::gate_reply(Err(why)));
            }
        }
    }

    /// Does what the gate asks: events, the pre-rollback snapshot, delivering a message
    /// now, restarting an agent.
    async fn gate_input(&mut self, g: super::gate::FromGate) -> Result<()> {
        use super::gate::FromGate;
        match g {
            FromGate::Event(e) => {
                self.emit(e)?;
                self.show_attention();
                Ok(())
            }
            FromGate::Snapshot(done) => {
                let written = self.snapshot_for_gate();
                let _ = done.send(written);
                Ok(())
            }
            FromGate::Deliver(done) => {
                if let Err(e) = self.drain_queues() {
                    tracing::warn!("delivering the gate's message: {e:#}");
                }
                let _ = done.send(());
                Ok(())
            }
            FromGate::Restart { agent, done } => {
                let r = if self.core.agent(&agent).is_some() {
                    self.feed(Msg::Command(Command::Restart(agent))).await
                } else {
                    Err(anyhow::anyhow!("{agent} is not an agent of this session"))
                };
                let _ = done.send(r.map_err(|e| format!("{e:#}")));
                Ok(())
            }
        }
    }

    /// Writes a snapshot, reading again only what printed since the last one: panes that
    /// printed nothing keep its contents. Without the control client nothing says which
    /// printed, so every pane is read again (of those whose history only grew, just the
    /// new rows).
    fn capture_snapshot(&mut self, reason: &str) -> Result<crate::snapshot::Written> {
        let reports = self.report();
        let mut reuse = self.snapshot_refs.clone();
        if self.control.is_some() && self.reuse_ok {
            reuse.unchanged = reuse
                .previous
                .keys()
                .filter(|pane| !self.printed.contains(*pane))
                .cloned()
                .collect();
        }
        let taken = crate::snapshot::take_reusing(
            &self.layout,
            &self.tmux,
            &self.state,
            reason,
            Some(&reports),
            self.layout_file.as_deref(),
            &reuse,
        )?;
        self.snapshot_refs = taken.refs;
        self.printed.clear();
        self.reuse_ok = self.control.is_some();
        Ok(taken.written)
    }

    /// The snapshot before a rollback (reason `rollback`): like [`Shell::snapshot`], but
    /// the gate learns whether it was written, since it must not move a branch otherwise.
    fn snapshot_for_gate(&mut self) -> std::result::Result<bool, String> {
        let reason = "rollback";
        match self.capture_snapshot(reason) {
            Ok(written) => {
                self.emit(written.event(reason))
                    .map_err(|e| format!("{e:#}"))?;
                Ok(true)
            }
            Err(e) => {
                let why = format!("{e:#}");
                let _ = self.emit(
                    Event::new(EventKind::SnapshotFailed, None)
                        .with("reason", reason)
                        .with("error", why.as_str()),
                );
                Err(why)
            }
        }
    }

    /// Whether the last pane listing showed the session. A control client attaching
    /// while tmux before 3.7 sends notifications can crash it (tmux/tmux#4980: a client
    /// not yet identified is written to), so none is started, tick after tick, for a
    /// session that is not there, as while its session is killed and made again.
    fn session_listed(&self) -> bool {
        let session = self.layout.session.as_str();
        self.last_panes.iter().any(|p| p.session == session)
    }

    /// Attaches the control-mode client; on failure the other paths carry on without it
    /// and the next tick tries again.
    async fn connect_control(&mut self) {
        let mut started = ControlClient::start_guarded(
            self.tmux.socket(),
            self.layout.session.as_str(),
            &self.orch_exe,
        )
        .await;
        if let Err(crate::tmux::control::ControlError::Spawn(e)) = &started {
            // The orch binary is gone (replaced by a rebuild): a client without its
            // guard is better than none; the next supervisor removes it if it is left.
            tracing::warn!("cannot run the control client's guard ({e}); attaching without it");
            started = ControlClient::start(self.tmux.socket(), self.layout.session.as_str()).await;
        }
        match started {
            Ok((client, mut events)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    while let Some(ev) = events.recv().await {
                        if tx.send(Input::Tmux(ev)).is_err() {
                            break;
                        }
                    }
                });
                self.control = Some(client);
            }
            Err(e) => tracing::warn!("tmux control client unavailable: {e}"),
        }
        if self.control.is_some() {
            tracing::debug!("tmux control client attached");
        }
    }

    /// Reads the screens that changed since the last look, in one tmux call, and tells
    /// the core what each agent is doing.
    async fn classify_activity(&mut self) -> Result<()> {
        let mut targets: Vec<(String, String)> = Vec::new();
        for a in &self.core.agents {
            // Only a screen that printed since the last look can have changed.
            if let (true, true, Some(pane)) = (
                self.dirty.contains(a.name()),
                a.pid.is_some(),
                a.pane.clone(),
            ) {
                targets.push((a.name().to_owned(), pane));
            }
        }
        self.dirty.clear();
        if targets.is_empty() {
            return Ok(());
        }
        let panes: Vec<&str> = targets.iter().map(|(_, p)| p.as_str()).collect();
        let Ok(screens) = self.tmux.capture_screens(&panes) else {
            return Ok(());
        };
        for ((agent, _), screen) in targets.into_iter().zip(screens) {
            let Some(profile) = self.activity.get(&agent) else {
                continue;
            };
            let activity = profile.classify(&screen);
            tracing::trace!(agent, ?activity, "screen read");
            // The tail is kept for the report of a screen nothing recognises.
            let tail = match activity {
                Activity::Unknown => Some(crate::monitor::activity::screen_tail(&screen)),
                Activity::Waiting => Some(profile.question(&screen)),
                _ => None,
            };
            let changed = self
                .core
                .agent(&agent)
                .is_some_and(|a| a.screen != activity);
            if changed || tail.is_some() {
                self.feed(Msg::Activity {
                    agent,
                    activity,
                    source: Source::Screen,
                    tail,
                })
                .await?;
            }
        }
        Ok(())
    }

    /// The resources tier: CPU and memory of every live agent's process tree, from one
    /// read of the process table.
    async fn sample_resources(&mut self) -> Result<()> {
        let live: Vec<(String, u32)> = self
            .core
            .agents
            .iter()
            .filter_map(|a| a.pid.map(|p| (a.name().to_owned(), p)))
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let roots: Vec<u32> = live.iter().map(|(_, p)| *p).collect();
        let usage = self.sampler.sample(&roots)?;
        for (agent, pid) in live {
            if let Some(u) = usage.get(&pid) {
                self.feed(Msg::Resources {
                    agent,
                    rss_bytes: u.rss_bytes,
                    cpu_percent: u.cpu_percent,
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Journals an event and prints it. Never fails: a journal that cannot be written (a
    /// full disk) is reported once (`write_failed`, on stdout) and written again as soon
    /// as it works, so the supervisor goes on either way.
    fn emit(&mut self, event: Event) -> Result<()> {
        let now = SystemTime::now();
        let line = event.to_line(now);
        let journaled = self.journal.append_line(&line);
        let report = match &journaled {
            Ok(()) => self.health.worked("events", Instant::now()),
            Err(e) => self
                .health
                .failed("events", &format!("{e:#}"), Instant::now()),
        };
        // stdout may be closed (a pipe whose reader left): the journal still has it.
        let _ = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
        self.broadcast(&line);
        if let Some(agent) = &event.agent {
            self.publish_now(agent);
        }
        if let Some(report) = report {
            let report = report.to_line(now);
            if journaled.is_ok() {
                let _ = self.journal.append_line(&report);
            }
            let _ = writeln!(self.out, "{report}").and_then(|()| self.out.flush());
        }
        Ok(())
    }
}

/// An agent as a dashboard shows it; times as Unix milliseconds.
fn view(a: &super::core::Supervised, now: Instant, wall: SystemTime) -> control::AgentView {
    let ms = |at: Option<Instant>| {
        at.and_then(|t| wall.checked_sub(now.saturating_duration_since(t)))
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
    };
    control::AgentView {
        name: a.name().to_owned(),
        role: a.spec.role.to_string(),
        profile: crate::profile::hooks::profile_name(a.spec.profile).to_owned(),
        pane: a.pane.clone(),
        pid: a.pid,
        state: a.state.as_str().to_owned(),
        activity: a.activity.as_str().to_owned(),
        restarts: a.restarts,
        exit_status: a.exit_status,
        cpu_percent: a.cpu_percent,
        rss_bytes: a.rss_bytes,
        started_at_ms: ms(a.started_at),
        last_output_ms: ms(a.last_output),
        output_seq: a.output_seq,
        last_line: a.last_line.clone(),
        waiting_on: (a.activity == Activity::Waiting)
            .then(|| a.screen_tail.clone())
            .flatten(),
    }
}

/// `now + after`, never overflowing: validation keeps durations within a year, and the
/// runtime must not panic even if one slipped through.
fn deadline(now: Instant, after: Duration) -> Instant {
    now.checked_add(after.min(crate::layout::MAX_DURATION))
        .unwrap_or(now)
}

/// A tokio interval of `period` that never panics: a zero period (tokio's "period must be
/// non-zero") becomes 1 ms, a huge one is capped at a year. `delayed`: the first tick
/// comes after one period instead of at once.
fn every(period: Duration, delayed: bool) -> tokio::time::Interval {
    let period = period.clamp(Duration::from_millis(1), crate::layout::MAX_DURATION);
    let now = tokio::time::Instant::now();
    let start = if delayed {
        now.checked_add(period).unwrap_or(now)
    } else {
        now
    };
    let mut interval = tokio::time::interval_at(start, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Exit status and signal of a zombie, read from /proc (field 52, exit_code, in wait(2)
/// encoding), while its parent has not collected it yet.
fn zombie_exit(pid: u32) -> Option<(Option<i32>, Option<i32>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    if fields.first() != Some(&"Z") {
        return None;
    }
    let code: i32 = fields.get(49)?.parse().ok()?;
    let signal = code & 0x7f;
    Some(if signal == 0 {
        (Some((code >> 8) & 0xff), None)
    } else {
        (None, Some(signal))
    })
}

/// Each agent's screen reader: its profile's patterns with the layout's overrides. Agents
/// with the same settings share one (compiled pattern sets are the bulk of the
/// supervisor's memory otherwise).
fn activity_profiles(layout: &Layout) -> HashMap<String, Arc<ActivityProfile>> {
    let mut shared: HashMap<String, Arc<ActivityProfile>> = HashMap::new();
    let mut out = HashMap::new();
    for a in &layout.agents {
        let o = &a.activity;
        let key = format!(
            "{:?}/{:?}/{:?}/{:?}",
            a.profile, o.working, o.waiting, o.idle
        );
        let profile = shared
            .entry(key)
            .or_insert_with(|| Arc::new(ActivityProfile::for_agent(a)))
            .clone();
        out.insert(a.name.to_string(), profile);
    }
    out
}

/// The last screen without the blank rows around it.
fn tidy_screen(screen: &str) -> String {
    screen.trim_matches('\n').trim_end().to_owned()
}

/// The tmux command the `pane-died` hook runs. `run-shell -b` because a hook's own
/// commands are not format-expanded, and without `-b` output would put the pane in view
/// mode (TMUX_NOTES).
fn hook_command(exe: &Path, tmux: &Tmux, state_root: &Path, session: &str) -> String {
    let args = [
        exe.to_string_lossy().into_owned(),
        "--socket".into(),
        tmux.socket_name(),
        "--state-dir".into(),
        state_root.to_string_lossy().into_owned(),
        "hook".into(),
        "pane-died".into(),
        "--session".into(),
        session.to_owned(),
    ];
    let shell: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    let shell = format!("{} '#{{hook_pane}}'", shell.join(" "));
    // Inside tmux double quotes, \ " and $ are special.
    let escaped = shell
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('$', "\\$");
    format!("run-shell -b \"{escaped}\"")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
