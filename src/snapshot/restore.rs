//! `orch restore`: rebuild a session from a snapshot.
//!
//! The session comes back with the saved window size and pane geometry (the saved
//! `#{window_layout}`), each pane first replaying its saved history (`cat FILE`) and then
//! running its agent again (the profile's resume command where it has one), with the
//! same cwd, ORCH_* environment, identity options and transcript as `layout up` gives it.
//! Unless told not to, each agent is then told what happened in a handover message, queued
//! like any message and delivered once the agent looks ready ([`super::handover`]).
//!
//! A snapshot is only used when it verifies: its document checksum (see
//! [`super::format`]) and every blob it names, by SHA-256. `latest` is the newest one that
//! does, so a torn or tampered newest snapshot falls back to the one before.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::format::{AgentSnapshot, BlobRef, Snapshot};
use super::handover::{Handover, ReplayGuard};
use crate::cli::BadInput;
use crate::layout::{Layout, Profile};
use crate::monitor::activity::ActivityProfile;
use crate::profile::{HandoverStyle, resume_command};
use crate::state::{StateDir, create_private_dir};
use crate::tmux::{PaneSpec, PanesTarget, Tmux, TmuxError, shell_quote};

/// How long to wait for a server that is shutting down to be gone.
const SERVER_SETTLE: Duration = Duration::from_secs(5);

/// Lines of history kept beyond the longest saved one, so nothing replayed scrolls off.
const HISTORY_MARGIN: u64 = 1000;

/// Which snapshot to restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Which {
    Latest,
    Id(String),
}

impl Which {
    pub fn parse(arg: Option<&str>) -> Which {
        match arg {
            None | Some("latest") => Which::Latest,
            Some(id) => Which::Id(id.to_owned()),
        }
    }
}

/// What to restore and how.
#[derive(Clone, Debug)]
pub struct RestoreRequest<'a> {
    /// The session whose snapshots to read.
    pub from_session: &'a str,
    pub which: Which,
    /// Restore under this name instead of the snapshot's.
    pub as_session: Option<&'a str>,
    /// Queue the handover message for each agent.
    pub handover: bool,
    /// The session's layout as the caller loaded it, for the agents' real environment
    /// (the snapshot's copy is redacted); `None`: the layout file the snapshot names.
    pub layout: Option<&'a Layout>,
}

/// What `restore` did.
#[derive(Clone, Debug)]
pub struct RestoreReport {
    pub snapshot_id: String,
    pub session: String,
    /// `(agent, new pane id)`, in window order.
    pub panes: Vec<(String, String)>,
    /// From the start of `restore` until every pane was running (its history replaying).
    pub duration: Duration,
    /// Agents not restored or not told, and why.
    pub notes: Vec<String>,
    /// The handovers queued, for whoever delivers them ([`super::handover::deliver`]).
    pub handovers: Vec<Handover>,
    /// Processes of the previous incarnation that outlived their tmux server and were
    /// stopped before the agents started again.
    pub stopped: Vec<crate::process::Marked>,
}

/// `sha256:<hex>` of the document with `checksum` empty (format.rs's rule).
pub fn document_checksum(snap: &Snapshot) -> Result<String, String> {
    super::store::checksum(snap).map_err(|e| format!("{e:#}"))
}

/// `<state-dir>/<session>/snapshots`.
pub fn snapshots_dir(state: &StateDir, session: &str) -> PathBuf {
    super::store::snapshots_dir(&state.root().join(session))
}

/// Loads the snapshot `which` of `session`, verified by the store (`latest`: the newest
/// good one; corrupt ones are skipped with a warning).
pub fn load(state: &StateDir, session: &str, which: &Which) -> Result<Snapshot> {
    let id = match which {
        Which::Latest => "latest",
        Which::Id(id) => id.as_str(),
    };
    let loaded = super::store::load(&state.root().join(session), id).map_err(|e| {
        if e.downcast_ref::<super::store::NoSuchSnapshot>().is_some() {
            BadInput(format!("{e:#}")).into()
        } else {
            e
        }
    })?;
    for (id, why) in &loaded.skipped {
        tracing::warn!(id, why, "skipped a snapshot that does not verify");
    }
    Ok(loaded.snapshot)
}

/// Restores a session from a snapshot. Refuses (as bad input) when the target session is
/// running.
pub fn restore(tmux: &Tmux, state: &StateDir, req: &RestoreRequest<'_>) -> Result<RestoreReport> {
    let started = Instant::now();
    let snap = load(state, req.from_session, &req.which)?;
    let session = req.as_session.unwrap_or(&snap.session).to_owned();

    let server_up = tmux
        .wait_server_settled(SERVER_SETTLE)
        .context("waiting for the tmux server to settle")?;
    tracing::debug!(elapsed = ?started.elapsed(), server_up, "snapshot loaded, server settled");
    // No server (the usual case after a crash): no session to collide with, and one tmux
    // round trip saved.
    if server_up && tmux.has_session(&session)? {
        return Err(BadInput(format!(
            "session {session} is already running on tmux socket {}; restore under another name with --session NAME, or stop it first with `orch layout down`",
            tmux.socket_name()
        ))
        .into());
    }

    // One restore of a session at a time: the supervisor restores a session whose server
    // died by itself, and `orch restore` must not race it.
    let _restoring = lock_restore(state, &session)?;

    // What outlived the old server (a CLI's child that ignores the hangup, a daemon it
    // started) would run beside the restored agents, on the same files.
    let socket = tmux.socket_name();
    let state_root = state.root().to_string_lossy().into_owned();
    let stopped = crate::process::marked(&[
        ("ORCH_SESSION", session.as_str()),
        ("ORCH_SOCKET", socket.as_str()),
        ("ORCH_STATE_DIR", state_root.as_str()),
    ]);
    if !stopped.is_empty() {
        let pids: Vec<u32> = stopped.iter().map(|m| m.pid).collect();
        tracing::warn!(?pids, "stopping processes that outlived the tmux server");
        crate::process::stop_all(&pids, SURVIVOR_GRACE);
    }

    let on_disk;
    let layout = match req.layout {
        Some(l) => Some(l),
        None => {
            on_disk = snap.layout_file.as_ref().and_then(|f| {
                crate::layout::load(&crate::layout::LayoutSource::File(f.into())).ok()
            });
            on_disk.as_ref()
        }
    };

    let blobs = snapshots_dir(state, req.from_session).join("blobs");
    let replay_dir = state.session_dir(&session)?.join("restore").join(&snap.id);
    create_private_dir(&replay_dir)?;

    let mut notes = Vec::new();
    let agents: Vec<&AgentSnapshot> = snap.agents.iter().filter(|a| a.pane.is_some()).collect();
    for a in snap.agents.iter().filter(|a| a.pane.is_none()) {
        notes.push(format!(
            "{}: had no pane in the snapshot, not restored",
            a.name
        ));
    }
    // The layout's own secret patterns keep applying to what the restored panes print.
    let redact: Vec<String> =
        serde_json::from_value(snap.layout["snapshot"]["redact"].clone()).unwrap_or_default();
    let filter = crate::session::transcript::filter_command(&redact);
    let mut plans = Vec::with_capacity(agents.len());
    for agent in &agents {
        let transcript = crate::session::transcript_or_warn(state, &session, &agent.name);
        let live = layout.and_then(|l| l.agents.iter().find(|a| a.name.as_str() == agent.name));
        let handover = (req.handover).then(|| {
            crate::tmux::paste_safe(&handover_message(&snap, agent, transcript.as_deref()))
        });
        plans.push(plan_agent(
            &snap,
            agent,
            &Sources {
                blobs: &blobs,
                replay_dir: &replay_dir,
                state,
                session: &session,
                live,
            },
            transcript.map(|file| (file, filter.clone())),
            handover,
            &mut notes,
        )?);
    }
    tracing::debug!(elapsed = ?started.elapsed(), "replay files written");
    let specs: Vec<PaneSpec<'_>> = agents
        .iter()
        .zip(&plans)
        .map(|(agent, plan)| {
            let mut env = crate::session::orch_env(&session, &agent.name, &agent.role, tmux, state);
            env.extend(plan.env.iter().cloned());
            PaneSpec {
                agent: &agent.name,
                role: &agent.role,
                cwd: &plan.cwd,
                env,
                command: Some(plan.command.clone()),
                // A pane that replays its history pipes its transcript itself, after the
                // replay; the others are piped as they are made.
                transcript: plan
                    .transcript
                    .as_ref()
                    .filter(|_| !plan.pipes_itself())
                    .map(|(file, _)| file.clone()),
                transcript_filter: filter.clone(),
            }
        })
        .collect();

    let saved_lines = agents
        .iter()
        .filter_map(|a| a.scrollback.as_ref().map(|b| b.lines))
        .max()
        .unwrap_or(0);
    let history_limit = saved_lines
        .saturating_add(u64::from(snap.window.height))
        .saturating_add(HISTORY_MARGIN)
        .max(layout_scrollback(&snap.layout));
    let target = PanesTarget::NewSession {
        session: &session,
        window: &snap.window.name,
        history_limit: u32::try_from(history_limit).unwrap_or(u32::MAX),
        width: clamp_u16(snap.window.width),
        height: clamp_u16(snap.window.height),
    };
    let saved_layout =
        layout_fits(&snap.window.layout, specs.len()).then_some(snap.window.layout.as_str());
    if saved_layout.is_none() {
        notes.push(format!(
            "the saved pane layout does not fit {} panes; they are tiled instead",
            specs.len()
        ));
    }
    let mut created = tmux.create_panes_with_layout(target, "tiled", &specs, saved_layout);
    if let Err(TmuxError::Failed { message, .. }) = &created
        && message.contains("server exited unexpectedly")
    {
        // The old server was still on its way out when we reached it: nothing was made.
        tmux.wait_server_settled(SERVER_SETTLE)
            .context("waiting for the tmux server to settle")?;
        created = tmux.create_panes_with_layout(target, "tiled", &specs, saved_layout);
    }
    let ids = created.with_context(|| format!("recreating the panes of session {session}"))?;
    // What restore reports: the time until every pane runs. Queueing below syncs files.
    let duration = started.elapsed();
    tracing::debug!(?duration, "panes running");
    let panes: Vec<(String, String)> = agents.iter().map(|a| a.name.clone()).zip(ids).collect();

    // Messages that were waiting wait again, in the restored session's queues.
    let session_dir = state.session_dir(&session)?;
    let queue = crate::messaging::queue::Queue::new(&session_dir);
    // What each pane's replay ends with, so no message takes it for the new agent's prompt.
    let rows = replay_end_rows(tmux, &panes, &plans);
    let guards: Vec<Option<ReplayGuard>> = plans
        .iter()
        .zip(rows)
        .map(|(p, end_row)| {
            p.replay.as_ref().map(|(file, done)| ReplayGuard {
                end_row,
                ..ReplayGuard::new(file, done.clone())
            })
        })
        .collect();
    for (agent, guard) in agents.iter().zip(&guards) {
        for value in &agent.pending {
            let requeued =
                serde_json::from_value::<crate::messaging::queue::Message>(value.clone())
                    .map_err(anyhow::Error::from)
                    .and_then(|m| queue.requeue(&m, guard.clone()));
            if let Err(e) = requeued {
                notes.push(format!(
                    "{}: a pending message could not be queued again: {e:#}",
                    agent.name
                ));
            }
        }
    }
    let mut handovers = Vec::new();
    if req.handover {
        let mut rec = crate::messaging::drain::Recorder::open(&session_dir)?;
        let each = agents.iter().zip(&panes).zip(&plans).zip(&guards);
        for (((agent, pane), plan), guard) in each {
            // Shown in the pane already, or none.
            let Some(text) = plan.handover.as_deref() else {
                continue;
            };
            match queue_handover(&queue, &mut rec, &agent.name, text, guard.clone()) {
                Ok(message) => handovers.push(Handover {
                    agent: agent.name.clone(),
                    pane: pane.1.clone(),
                    message,
                    profile: plan.activity.clone(),
                    style: crate::messaging::deliver::InputStyle::for_agent(
                        plan.profile,
                        agent.command.as_deref(),
                    ),
                }),
                Err(e) => notes.push(format!(
                    "{}: handover message not queued: {e:#}",
                    agent.name
                )),
            }
        }
    }
    tracing::info!(session, snapshot = snap.id, ?duration, "restored");
    Ok(RestoreReport {
        snapshot_id: snap.id.clone(),
        session,
        panes,
        duration,
        notes,
        handovers,
        stopped,
    })
}

impl RestoreReport {
    /// What the journal records of this restore: `restored`, and a
    /// `stale_processes_stopped` per agent whose old processes had to be stopped.
    pub fn events(&self) -> Vec<crate::supervisor::event::Event> {
        use crate::supervisor::event::{Event, EventKind};
        // In the order they happened: the old processes went before the panes came.
        let mut out = Vec::new();
        let mut agents: Vec<Option<&str>> =
            self.stopped.iter().map(|m| m.agent.as_deref()).collect();
        agents.sort_unstable();
        agents.dedup();
        for agent in agents {
            let of: Vec<&crate::process::Marked> = self
                .stopped
                .iter()
                .filter(|m| m.agent.as_deref() == agent)
                .collect();
            out.push(
                Event::new(EventKind::StaleProcessesStopped, agent)
                    .with("pids", of.iter().map(|m| m.pid).collect::<Vec<_>>())
                    .with(
                        "commands",
                        of.iter().map(|m| m.command.clone()).collect::<Vec<_>>(),
                    )
                    .with(
                        "reason",
                        "they outlived the tmux server of the session restored",
                    ),
            );
        }
        out.push(
            Event::new(EventKind::Restored, None)
                .with("session", self.session.as_str())
                .with("snapshot", self.snapshot_id.as_str())
                .with("agents", self.panes.len())
                .with("duration_ms", self.duration.as_millis() as u64),
        );
        out
    }
}

/// How long restore waits for the panes' replays to be on screen before it looks where
/// each ended; a pane whose replay takes longer is told apart by its screen alone.
const REPLAY_WAIT: Duration = Duration::from_secs(2);

/// Where each pane's cursor is once its replay is on screen
/// ([`ReplayGuard::end_row`]), in plan order: waits until every replay marker exists and
/// has settled (tmux may still be parsing the end of a replay), then looks at every pane
/// in one tmux call.
fn replay_end_rows(
    tmux: &Tmux,
    panes: &[(String, String)],
    plans: &[AgentPlan],
) -> Vec<Option<u64>> {
    let markers: Vec<&Path> = plans
        .iter()
        .filter_map(|p| p.replay.as_ref().map(|(_, done)| done.as_path()))
        .collect();
    if markers.is_empty() {
        return vec![None; plans.len()];
    }
    let deadline = Instant::now() + REPLAY_WAIT;
    let settled = |m: &Path| crate::messaging::replay::replay_over(m, std::time::SystemTime::now());
    while !markers.iter().all(|m| settled(m)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ids: Vec<&str> = panes.iter().map(|(_, id)| id.as_str()).collect();
    let Ok(inputs) = tmux.pane_inputs(&ids) else {
        return vec![None; plans.len()];
    };
    plans
        .iter()
        .zip(inputs)
        .map(|(p, input)| {
            let over = p.replay.as_ref().is_some_and(|(_, done)| settled(done));
            over.then(|| input.history_size + input.cursor_y as u64)
        })
        .collect()
}

/// How long processes that outlived their server get to stop before SIGKILL.
const SURVIVOR_GRACE: Duration = Duration::from_secs(2);

/// The exclusive right to restore `session` (an flock, gone with its holder).
fn lock_restore(state: &StateDir, session: &str) -> Result<std::fs::File> {
    use rustix::fs::{FlockOperation, flock};
    let path = state.session_dir(session)?.join("restore.lock");
    let file = crate::state::open_lock_file(&path)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(BadInput(format!(
            "session {session} is being restored right now (its supervisor restores a session whose tmux server died by itself); wait for it with `orch events --follow`"
        ))
        .into()),
        Err(e) => Err(anyhow::Error::from(e).context(format!("locking {}", path.display()))),
    }
}

/// Queues `agent`'s handover, audited like any message. It goes FIRST, ahead of the
/// messages re-queued from the snapshot (and of any the queue kept): the new process knows
/// nothing of why it started or what its predecessor was doing, and every waiting message
/// was written for that predecessor; only after reading its transcript and last task can
/// the agent make sense of them.
fn queue_handover(
    queue: &crate::messaging::queue::Queue,
    rec: &mut crate::messaging::drain::Recorder,
    agent: &str,
    text: &str,
    after_replay: Option<ReplayGuard>,
) -> Result<crate::messaging::queue::Message> {
    use crate::messaging::queue::{Delivery, Priority};
    let how = Delivery {
        enter: true,
        when_ready: true,
        ready_within: None,
    };
    let msg = queue.push_first("orch", agent, Priority::High, text, how, after_replay)?;
    let mut f = serde_json::Map::new();
    f.insert("id".into(), msg.id.clone().into());
    f.insert("from".into(), "orch".into());
    f.insert("priority".into(), Priority::High.as_str().into());
    f.insert("bytes".into(), text.len().into());
    f.insert(
        "sha256".into(),
        crate::digest::sha256_hex(text.as_bytes()).into(),
    );
    rec.record(
        crate::supervisor::event::EventKind::MessageQueued,
        Some(agent),
        f,
    )?;
    Ok(msg)
}

/// How one agent's pane is started again.
struct AgentPlan {
    cwd: PathBuf,
    /// `sh -c 'cat REPLAY; exec …'`
    command: String,
    /// Its profile's `env`, then the agent's own from the saved layout.
    env: Vec<(String, String)>,
    /// The replay file and the marker its script creates once it is replayed.
    replay: Option<(PathBuf, PathBuf)>,
    /// How to read the agent's screen: its profile with the saved layout's overrides.
    activity: ActivityProfile,
    profile: Profile,
    /// The transcript and the filter command that appends to it.
    transcript: Option<(PathBuf, Option<String>)>,
    /// The handover to queue, unless the pane shows it itself (a shell would run it).
    handover: Option<String>,
}

/// Where a restored agent's plan comes from besides its snapshot.
struct Sources<'a> {
    blobs: &'a Path,
    replay_dir: &'a Path,
    state: &'a StateDir,
    session: &'a str,
    /// The agent in the layout on disk, if it is still there.
    live: Option<&'a crate::layout::Agent>,
}

impl AgentPlan {
    /// Whether the pane's script attaches the transcript itself once the replay is over,
    /// so the replayed history is not appended to it a second time.
    fn pipes_itself(&self) -> bool {
        self.replay.is_some() && self.transcript.is_some()
    }
}

fn plan_agent(
    snap: &Snapshot,
    agent: &AgentSnapshot,
    src: &Sources<'_>,
    transcript: Option<(PathBuf, Option<String>)>,
    handover: Option<String>,
    notes: &mut Vec<String>,
) -> Result<AgentPlan> {
    // The name becomes a file name below: only a valid agent name will do.
    crate::layout::AgentName::new(agent.name.clone())
        .map_err(|e| anyhow::anyhow!("the snapshot names an agent {:?}: {e}", agent.name))?;
    let saved = saved_agent(&snap.layout, &agent.name);
    let profile = saved
        .and_then(|a| a.get("profile"))
        .and_then(|p| serde_json::from_value::<Profile>(p.clone()).ok())
        .unwrap_or(Profile::Shell);
    let mut env: Vec<(String, String)> = crate::profile::get(profile).pane_env().collect();
    env.extend(agent_env(&agent.name, saved, src.live, notes));
    let cwd = [
        agent.cwd.as_deref().map(PathBuf::from),
        saved
            .and_then(|a| a.get("cwd"))
            .and_then(|c| c.as_str())
            .map(PathBuf::from),
        snap.layout
            .get("root")
            .and_then(|c| c.as_str())
            .map(PathBuf::from),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_dir())
    .unwrap_or_else(|| src.state.root().to_owned());

    let replay = match replay_bytes(agent, src.blobs)? {
        Some(bytes) => {
            let file = src.replay_dir.join(format!("{}.scrollback", agent.name));
            // Ending on a newline leaves the cursor on a blank row, so whatever shows
            // there afterwards is the new agent's (see `ReplayGuard::end_row`).
            let mut bytes = bytes;
            if bytes.last().is_some_and(|b| *b != b'\n') {
                bytes.push(b'\n');
            }
            crate::state::write_private(&file, &bytes)?;
            Some(file)
        }
        None => None,
    };
    let run = match agent.command.as_deref() {
        Some(cmd) => {
            let hooked =
                |c: &str| crate::session::with_activity_hooks(profile, c, src.state, src.session);
            let plain = hooked(cmd);
            let resumed = hooked(&resume_command(profile, cmd));
            env.extend(resumed.env.iter().cloned());
            format!(
                "exec sh -c {}",
                shell_quote(&resume_or_start(&resumed.command, &plain.command))
            )
        }
        None => "exec \"${SHELL:-sh}\" -l".to_owned(),
    };
    // The marker tells the handover that the replay is over (`:` and the redirection are
    // shell built-ins: no process more on the way to the agent). Created 0600 whatever
    // the pane's umask, in a subshell so the agent keeps the user's umask; its folder is
    // orch's private one, so no link can be planted in its place.
    let replay = replay.map(|file| {
        let done = file.with_extension("replayed");
        let _ = fs::remove_file(&done);
        (file, done)
    });
    // `tmux` inside the pane reaches its own server through $TMUX. Should it fail, the
    // supervisor pipes panes left without a transcript.
    let pipe = transcript
        .as_ref()
        .map_or_else(String::new, |(file, filter)| {
            format!(
                "tmux pipe-pane -O -t \"$TMUX_PANE\" {} 2>/dev/null; ",
                shell_quote(&crate::tmux::transcript_pipe_command(
                    file,
                    filter.as_deref()
                ))
            )
        });
    // A shell would run the handover as commands: the pane prints it instead, below the
    // replayed history, before the shell's first prompt.
    let (handover, show) = match handover {
        Some(text) if crate::profile::get(profile).handover == HandoverStyle::Show => {
            (None, format!("printf '%s\\n' {}; ", shell_quote(&text)))
        }
        other => (other, String::new()),
    };
    let script = match &replay {
        Some((file, done)) => format!(
            "cat {}; (umask 077; : >{}); {show}{pipe}{run}",
            shell_quote(&file.to_string_lossy()),
            shell_quote(&done.to_string_lossy())
        ),
        None => format!("{show}{run}"),
    };
    Ok(AgentPlan {
        cwd,
        command: format!("sh -c {}", shell_quote(&script)),
        env,
        replay,
        activity: activity_profile(profile, saved),
        profile,
        transcript,
        handover,
    })
}

/// The agent's own `env` as the snapshot saved it, except that a value the snapshot holds
/// redacted comes from the layout on disk (`live`): a snapshot never stores a secret, the
/// layout file does. Without it there, the variable is left unset, with a note, rather
/// than set to `[REDACTED]`.
fn agent_env(
    name: &str,
    saved: Option<&serde_json::Value>,
    live: Option<&crate::layout::Agent>,
    notes: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let saved_env = saved.and_then(|a| a.get("env")).and_then(|e| e.as_object());
    for (k, v) in saved_env.into_iter().flatten() {
        let Some(v) = v.as_str() else { continue };
        if !v.contains(super::redact::REDACTED) {
            env.push((k.clone(), v.to_owned()));
        } else if let Some(real) = live.and_then(|a| a.env.get(k)) {
            env.push((k.clone(), real.clone()));
        } else {
            notes.push(format!(
                "{name}: {k} is left unset: the snapshot holds it redacted and the layout on disk does not give it (set it there and run `orch restart {name}`)"
            ));
        }
    }
    env
}

/// A shell script that resumes the agent's conversation, and starts it afresh when there
/// is none to resume: Claude Code's `--continue` exits at once with an error then.
/// Only a resume that fails within its first seconds falls back: an agent that ran and
/// then failed is a crash for the supervisor to see.
fn resume_or_start(resume: &str, start: &str) -> String {
    if resume == start {
        return start.to_owned();
    }
    format!(
        "t=$(date +%s); {resume}; s=$?; if [ \"$s\" -ne 0 ] && [ $(( $(date +%s) - t )) -lt 10 ]; then exec {start}; fi; exit \"$s\""
    )
}

/// What a pane shows again before its command starts: its history and screen; when a
/// program was on the alternate screen, its history, then the normal screen the program
/// covered (tmux's saved screen), then what the program showed last, so the text that was
/// on screen is the last thing visible and nothing the pane held is left out.
fn replay_bytes(agent: &AgentSnapshot, blobs: &Path) -> Result<Option<Vec<u8>>> {
    let read = |blob: &BlobRef, what: &str| {
        fs::read(blobs.join(&blob.sha256))
            .with_context(|| format!("reading the {what} of {}", agent.name))
    };
    let Some(scrollback) = &agent.scrollback else {
        return Ok(None);
    };
    let scrollback = read(scrollback, "scrollback")?;
    let Some(alternate) = &agent.alternate else {
        return Ok(Some(scrollback));
    };
    let normal_screen = read(alternate, "saved normal screen")?;
    let cut = agent
        .history_bytes
        .and_then(|b| usize::try_from(b).ok())
        .filter(|b| *b <= scrollback.len());
    let (history, program_screen) = match cut {
        Some(cut) => scrollback.split_at(cut),
        // Older snapshots did not record where the history ends.
        None => (&scrollback[..], &[][..]),
    };
    let mut out = super::capture::Joiner::new(history.to_vec());
    out.push(&normal_screen);
    out.push(program_screen);
    Ok(Some(out.into_bytes()))
}

/// The screen markers of `profile`, with the saved agent's `activity` overrides when they
/// compile (the layout was validated when it was saved).
fn activity_profile(profile: Profile, saved: Option<&serde_json::Value>) -> ActivityProfile {
    let patterns = |kind: &str| {
        saved
            .and_then(|a| a.get("activity"))
            .and_then(|o| o.get(kind))
            .and_then(|p| serde_json::from_value::<Vec<String>>(p.clone()).ok())
    };
    let base = ActivityProfile::for_profile(profile);
    base.clone()
        .with_overrides(patterns("working"), patterns("waiting"), patterns("idle"))
        .unwrap_or(base)
}

/// The saved layout's entry for `agent` (`layout.agents[]` with that name).
fn saved_agent<'a>(layout: &'a serde_json::Value, agent: &str) -> Option<&'a serde_json::Value> {
    layout
        .get("agents")?
        .as_array()?
        .iter()
        .find(|a| a.get("name").and_then(|n| n.as_str()) == Some(agent))
}

/// Whether tmux will accept `layout` (a `#{window_layout}` string) for a window of
/// `panes` panes: its checksum matches and it has one cell per pane. A rejected layout
/// would abort the command sequence that creates the panes.
fn layout_fits(layout: &str, panes: usize) -> bool {
    let Some((sum, body)) = layout.split_once(',') else {
        return false;
    };
    let csum = body.bytes().fold(0u16, |c, b| {
        ((c >> 1) | ((c & 1) << 15)).wrapping_add(u16::from(b))
    });
    if u16::from_str_radix(sum, 16).ok() != Some(csum) {
        return false;
    }
    // A pane cell is `WxH,X,Y,ID` followed by `,`, `]`, `}` or the end; a split cell
    // has `[` or `{` after `WxH,X,Y`.
    let cells = regex::Regex::new(r"\d+x\d+,\d+,\d+,\d+")
        .map(|re| re.find_iter(body).count())
        .unwrap_or(0);
    cells == panes
}

fn layout_scrollback(layout: &serde_json::Value) -> u64 {
    layout
        .get("snapshot")
        .and_then(|s| s.get("scrollback_lines"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

fn clamp_u16(v: u32) -> u16 {
    u16::try_from(v.clamp(10, u32::from(u16::MAX))).unwrap_or(u16::MAX)
}

/// What an agent is told after a restore.
pub fn handover_message(
    snap: &Snapshot,
    agent: &AgentSnapshot,
    transcript: Option<&Path>,
) -> String {
    let transcript = transcript.map_or_else(
        || "no transcript is available".to_owned(),
        |p| format!("everything your pane printed is in {}", p.display()),
    );
    let task = agent
        .last_message
        .as_deref()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or("(none recorded)");
    format!(
        "[orch] This session was restored from snapshot {} taken at {}. Your previous process ended; {transcript}. Your last task was:\n{task}\nRead the transcript if you need context, then continue where you left off.",
        snap.id, snap.created
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::digest::sha256_hex;
    use crate::snapshot::format::{BlobRef, WindowShape};

    /// Writes a verified snapshot: its blobs and its document, checksummed.
    pub(crate) fn write_snapshot(dir: &Path, mut snap: Snapshot, blobs: &[&[u8]]) -> Snapshot {
        let blob_dir = dir.join("blobs");
        fs::create_dir_all(&blob_dir).expect("mkdir");
        for b in blobs {
            fs::write(blob_dir.join(sha256_hex(b)), b).expect("blob");
        }
        snap.checksum = document_checksum(&snap).expect("checksum");
        fs::write(
            dir.join(format!("{}.json", snap.id)),
            serde_json::to_vec(&snap).expect("json"),
        )
        .expect("doc");
        snap
    }

    fn snap(id: &str, history: &[u8]) -> Snapshot {
        Snapshot {
            format: crate::snapshot::format::FORMAT,
            id: id.into(),
            session: "s".into(),
            created: "2026-11-21T23:58:00.123Z".into(),
            reason: "manual".into(),
            layout_file: None,
            layout: serde_json::json!({}),
            window: WindowShape {
                name: "w".into(),
                width: 80,
                height: 24,
                layout: "x".into(),
            },
            agents: vec![AgentSnapshot {
                name: "a".into(),
                role: "R".into(),
                pane: Some("%1".into()),
                cwd: None,
                command: None,
                state: "running".into(),
                activity: "idle".into(),
                restarts: 0,
                exit_status: None,
                last_message: None,
                pending: Vec::new(),
                scrollback: Some(BlobRef {
                    sha256: sha256_hex(history),
                    bytes: history.len() as u64,
                    lines: 1,
                }),
                history_bytes: None,
                history_mark: None,
                alternate: None,
            }],
            quality_gate: None,
            checksum: String::new(),
        }
    }

    #[test]
    fn latest_skips_corrupt_and_incomplete_snapshots() {
        let tmp = tempfile::tempdir().expect("tmp");
        let state = StateDir::resolve(Some(tmp.path().to_owned())).expect("state");
        let dir = snapshots_dir(&state, "s");
        fs::create_dir_all(&dir).expect("mkdir");
        let good = write_snapshot(
            &dir,
            snap("20261121T000000.000Z-aaaa", b"old\n"),
            &[b"old\n"],
        );
        // Newer, but its blob is missing.
        write_snapshot(&dir, snap("20261121T000001.000Z-bbbb", b"lost\n"), &[]);
        // Newest, but torn.
        fs::write(
            dir.join("20261121T000002.000Z-cccc.json"),
            b"{\"format\":1,",
        )
        .expect("w");
        let got = load(&state, "s", &Which::Latest).expect("latest");
        assert_eq!(got, good);
        let err = load(&state, "s", &Which::Id("20261121T000001.000Z-bbbb".into()))
            .expect_err("missing blob");
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
    }

    #[test]
    fn saved_layouts_are_checked_before_use() {
        // As tmux 3.3a printed it.
        let two = "033f,160x40,0,0{80x40,0,0,0,79x40,81,0,1}";
        assert!(layout_fits(two, 2));
        assert!(!layout_fits(two, 3));
        assert!(!layout_fits("033e,160x40,0,0{80x40,0,0,0,79x40,81,0,1}", 2));
        assert!(!layout_fits("", 1));
    }

    #[test]
    fn handover_names_the_transcript_and_the_task() {
        let mut s = snap("id1", b"");
        s.agents[0].last_message = Some("fix the parser".into());
        let m = handover_message(&s, &s.agents[0], Some(Path::new("/st/s/transcripts/a.log")));
        assert!(m.contains("/st/s/transcripts/a.log") && m.contains("fix the parser"));
        assert!(m.contains("id1"));
    }
}
