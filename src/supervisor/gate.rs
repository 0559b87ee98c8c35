//! The quality gate as a source of the supervisor: it watches the repository (notify on
//! `refs/heads/**`, `packed-refs` and `HEAD`, a burst of ref updates debounced into one
//! scan of the newest tips, and a poll of the refs as the fallback tier), runs the gate
//! on its own threads so a check of many minutes never blocks the supervisor's loop, and
//! feeds what the gate asks of its host into that loop as [`FromGate`] messages.
//!
//! Threads: the scanner (one pass of the gate per trigger; triggers that pile up while a
//! check runs become one pass), the debouncer (notify events → triggers), and one short
//! thread per control request (`orch check`, `orch rollback …`), which waits on the gate's
//! locks, not on the scanner.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::control::Reply;
use super::event::{Event, EventKind};
use crate::gate::service::{self, Call};
use crate::gate::{BadInput, Config, Gate, Host};

/// A burst of ref updates is over after this long without one…
const QUIET: Duration = Duration::from_millis(30);
/// …or after this long in all, whichever comes first.
const MAX_DEBOUNCE: Duration = Duration::from_millis(120);
/// The fallback tier: the refs are read this often even without a notify event.
const POLL: Duration = Duration::from_secs(5);
/// How long the gate waits for the loop to deliver a message before moving on.
const DELIVER_PATIENCE: Duration = Duration::from_secs(15);

/// What the gate asks of the supervisor's loop.
pub(super) enum FromGate {
    Event(Event),
    /// Take the pre-rollback snapshot; answer whether it was written.
    Snapshot(mpsc::Sender<Result<bool, String>>),
    /// Deliver what is queued (the gate just queued an urgent message).
    Deliver(mpsc::Sender<()>),
    Restart {
        agent: String,
        done: mpsc::Sender<Result<(), String>>,
    },
}

type Sink = Arc<dyn Fn(FromGate) + Send + Sync>;

/// The running gate of a supervised session.
pub(super) struct GateSource {
    gate: Arc<Gate>,
    sink: Sink,
    /// Set as the supervisor stops: the loop answers nothing any more.
    closed: Arc<AtomicBool>,
    scan: mpsc::Sender<()>,
    _watcher: Option<notify::RecommendedWatcher>,
}

/// The gate's host inside the supervisor: everything goes through the loop.
#[derive(Clone)]
struct LoopHost {
    sink: Sink,
    closed: Arc<AtomicBool>,
}

/// How long the gate waits for the loop to take a snapshot or restart an agent.
const LOOP_PATIENCE: Duration = Duration::from_secs(120);

impl LoopHost {
    /// Waits for the loop's answer, giving up when the supervisor stops.
    fn wait<T>(&self, rx: &mpsc::Receiver<T>, patience: Duration) -> Option<T> {
        let deadline = Instant::now() + patience;
        while !self.closed.load(Ordering::SeqCst) && Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(v) => return Some(v),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
        None
    }
}

impl Host for LoopHost {
    fn emit(&mut self, event: Event) {
        (self.sink)(FromGate::Event(event));
    }

    fn snapshot(&mut self) -> Result<bool> {
        let (tx, rx) = mpsc::channel();
        (self.sink)(FromGate::Snapshot(tx));
        self.wait(&rx, LOOP_PATIENCE)
            .ok_or_else(|| anyhow::anyhow!("the supervisor did not take the snapshot (stopping?)"))?
            .map_err(anyhow::Error::msg)
    }

    fn deliver_now(&mut self, _agent: &str) {
        let (tx, rx) = mpsc::channel();
        (self.sink)(FromGate::Deliver(tx));
        let _ = self.wait(&rx, DELIVER_PATIENCE);
    }

    fn restart(&mut self, agent: &str) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        (self.sink)(FromGate::Restart {
            agent: agent.to_owned(),
            done: tx,
        });
        self.wait(&rx, LOOP_PATIENCE)
            .ok_or_else(|| anyhow::anyhow!("the supervisor did not restart {agent} (stopping?)"))?
            .map_err(anyhow::Error::msg)
    }
}

impl GateSource {
    /// How many rollback decisions wait for the human; `None` while the gate holds its
    /// state (it may be waiting for the loop that asks: never block on it).
    pub(super) fn pending(&self) -> Option<usize> {
        self.gate
            .try_list()
            .map(|list| crate::gate::state::pending_decisions(&list))
    }

    /// Starts the gate with the layout's settings `cfg`. A gate that cannot start (the
    /// repository is not one) says why in an `escalated` event; the rest of the
    /// supervisor carries on without it.
    pub(super) fn start(
        cfg: Config,
        sink: impl Fn(FromGate) + Send + Sync + 'static,
    ) -> Option<GateSource> {
        let sink: Sink = Arc::new(sink);
        let gate = match Gate::open(cfg) {
            Ok(g) => Arc::new(g),
            Err(e) => {
                sink(FromGate::Event(
                    Event::new(EventKind::Escalated, None)
                        .with("reason", format!("the quality gate cannot start: {e:#}")),
                ));
                return None;
            }
        };
        let (scan_tx, scan_rx) = mpsc::channel::<()>();
        let watcher = watch(&gate, scan_tx.clone());
        let closed = Arc::new(AtomicBool::new(false));
        let host = LoopHost {
            sink: sink.clone(),
            closed: closed.clone(),
        };
        let g = gate.clone();
        std::thread::Builder::new()
            .name("orch-gate".into())
            .spawn(move || scanner(&g, host, &scan_rx))
            .ok()?;
        // The first pass: tips that changed while no supervisor watched.
        let _ = scan_tx.send(());
        Some(GateSource {
            gate,
            sink,
            closed,
            scan: scan_tx,
            _watcher: watcher,
        })
    }

    /// Answers a control request on a thread of its own; an approved rollback's branch
    /// is then checked again by the scanner.
    pub(super) fn request(&self, call: Call, reply: tokio::sync::oneshot::Sender<Reply>) {
        let gate = self.gate.clone();
        let mut host = LoopHost {
            sink: self.sink.clone(),
            closed: self.closed.clone(),
        };
        let scan = self.scan.clone();
        let spawned = std::thread::Builder::new()
            .name("orch-gate-request".into())
            .spawn(move || {
                let approving = matches!(call, Call::Approve { .. });
                let answer = service::call(&gate, call, &mut host, false);
                if approving && answer.is_ok() {
                    let _ = scan.send(());
                }
                let _ = reply.send(gate_reply(answer));
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a gate request thread: {e}");
        }
    }
}

impl Drop for GateSource {
    fn drop(&mut self) {
        // No check outlives the supervisor, no rollback starts now, and one that is
        // moving a branch is let finish (the loop answers nothing any more).
        self.closed.store(true, Ordering::SeqCst);
        self.gate.stop();
        if !self.gate.wait_idle(Duration::from_secs(30)) {
            tracing::warn!("a rollback was still running as the supervisor stopped");
        }
    }
}

/// The reply for a gate answer; a mistake of the user's says so, for exit status 2.
pub(super) fn gate_reply(answer: Result<service::Answer>) -> Reply {
    match answer {
        Ok(a) => Reply {
            ok: true,
            gate: serde_json::to_value(a).ok(),
            ..Reply::default()
        },
        Err(e) => Reply {
            ok: false,
            error: Some(format!("{e:#}")),
            gate: Some(serde_json::json!({
                "bad_input": e.downcast_ref::<BadInput>().is_some()
            })),
            ..Reply::default()
        },
    }
}

/// Runs a pass of the gate per trigger, and one every [`POLL`] without any.
fn scanner(gate: &Gate, mut host: LoopHost, triggers: &mpsc::Receiver<()>) {
    // A failure that repeats (say, every poll) is reported once until it changes.
    let mut last_failure: Option<String> = None;
    loop {
        match triggers.recv_timeout(POLL) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Everything that piled up is one pass, on the newest tips.
        while triggers.try_recv().is_ok() {}
        if gate.is_stopping() {
            return;
        }
        match gate.scan(&mut host, false) {
            Ok(_) => last_failure = None,
            Err(_) if gate.is_stopping() => return,
            Err(e) => {
                let why = format!("{e:#}");
                tracing::warn!("quality gate pass failed: {why}");
                if last_failure.as_deref() != Some(why.as_str()) {
                    host.emit(
                        Event::new(EventKind::Escalated, None)
                            .with("reason", format!("the quality gate failed: {why}")),
                    );
                    last_failure = Some(why);
                }
            }
        }
    }
}

/// Watches the repository's refs: each burst of changes becomes one trigger. `None`
/// (the poll carries on alone) when the repository cannot be watched.
fn watch(gate: &Gate, scan: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let common: PathBuf = crate::git::repo::Repo::open(&gate.config().repo)
        .ok()?
        .common_dir();
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        // Lock files come and go around every update; the rename into place counts.
        if ev.paths.iter().all(|p| {
            p.extension().is_some_and(|e| e == "lock")
                || p.file_name()
                    .is_some_and(|n| n == "index" || n == "ORIG_HEAD")
        }) {
            return;
        }
        let _ = tx.send(());
    })
    .map_err(|e| tracing::warn!("cannot watch the repository: {e}"))
    .ok()?;
    watcher
        .watch(&common, notify::RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!("cannot watch {}: {e}", common.display()))
        .ok()?;
    let heads = common.join("refs").join("heads");
    if let Err(e) = watcher.watch(&heads, notify::RecursiveMode::Recursive) {
        tracing::warn!("cannot watch {}: {e}", heads.display());
    }
    std::thread::Builder::new()
        .name("orch-gate-debounce".into())
        .spawn(move || debounce(&rx, &scan))
        .ok()?;
    Some(watcher)
}

/// Turns each burst of events into one trigger, [`QUIET`] after its last event (at most
/// [`MAX_DEBOUNCE`] after its first).
fn debounce(events: &mpsc::Receiver<()>, scan: &mpsc::Sender<()>) {
    while events.recv().is_ok() {
        let first = Instant::now();
        loop {
            let left = MAX_DEBOUNCE.saturating_sub(first.elapsed());
            if left.is_zero() {
                break;
            }
            match events.recv_timeout(QUIET.min(left)) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if scan.send(()).is_err() {
            return;
        }
    }
}
