//! orch's own tmux control-mode client (`tmux -C`), for what the CLI cannot tell us in
//! time: when each pane last printed something (stall and activity detection) and that
//! the tmux server died, both within milliseconds.
//!
//! Invariants:
//! - Replies inside `%begin`/`%end` blocks are not escaped, so a pane whose text ends up
//!   in a reply (`capture-pane`) could forge protocol lines there; block contents never
//!   become events. The client runs only commands whose replies no pane can shape
//!   ([`ControlClient::session_panes`]: ids, pids, flags, the agent name orch set) and
//!   checks every line of them; anything with pane text goes through [`super::Tmux`].
//!   A reply goes to the oldest command waiting (tmux answers in order), recognised by
//!   the `1` in its `%begin` flags (this client's command).
//! - Output is gathered per pane and handed over every `FLUSH_EVERY`; a flooding pane
//!   is decoded up to `PANE_BUDGET` an interval and only counted past it.
//! - stdin stays open for the client's whole life: tmux control mode exits on stdin EOF.
//! - Reading tmux's stdout never waits for a slow consumer because of output: tmux drops
//!   a control client that falls too far behind (`%exit too far behind`), and losing the
//!   whole channel is worse than losing some output events (see [`ControlEvent::OutputLost`]).
//! - The event stream ends with exactly one [`ControlEvent::Exit`], unless the client is
//!   dropped first.
//!
//! This is an accelerator, not the only source of truth: tmux control mode has been
//! reported to wedge, so the pidfd + hook + reconciliation-poll paths must work without it.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Room for bursts from every pane of a 9-agent window without dropping output events.
const EVENT_CAPACITY: usize = 1024;

/// How long `start` waits for tmux to answer the attach before giving up.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the client could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("could not run tmux for control mode: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("tmux refused the control-mode attach to session {session}: {message}")]
    Attach { session: String, message: String },
    #[error("tmux control mode ended before attaching to session {session}: {message}")]
    Closed { session: String, message: String },
    #[error("tmux did not answer the control-mode attach to session {session} within {timeout:?}")]
    Timeout { session: String, timeout: Duration },
    #[error("reading from tmux control mode failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("a command through tmux control mode failed: {0}")]
    Command(String),
    /// tmux did not take or answer a command in time: the client may be wedged.
    #[error("tmux control mode did not answer within {0:?}")]
    NoReply(Duration),
}

/// Something tmux reported about the attached session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlEvent {
    /// A pane printed `bytes` (decoded from tmux's escaping, so exactly what the program
    /// wrote, possibly cut in the middle of a UTF-8 sequence or escape sequence).
    Output {
        /// Pane id, e.g. `%3`.
        pane: String,
        /// When orch read the line (for `%extended-output`, minus the age tmux reports).
        at: Instant,
        bytes: Vec<u8>,
    },
    /// Output events of `pane` were dropped because the consumer fell behind; `at` is the
    /// time of the last dropped one, so last-output times stay correct.
    OutputLost {
        pane: String,
        at: Instant,
        /// Number of bytes whose events were dropped.
        bytes: usize,
    },
    /// The pane entered or left a mode (copy mode, view mode): keys sent now would go to
    /// the mode, not the program.
    PaneModeChanged { pane: String },
    /// The active pane of `window` (`@1`) changed to `pane`.
    WindowPaneChanged { window: String, pane: String },
    /// A window (`@1`) was added to the attached session.
    WindowAdd { window: String },
    /// A window (`@1`) was closed.
    WindowClose { window: String },
    /// A window's layout changed, e.g. a pane was split off or closed.
    LayoutChange { window: String, layout: String },
    /// The client is now attached to `session` (`$1`) named `name`.
    SessionChanged { session: String, name: String },
    /// The control client is gone. `reason` is tmux's text after `%exit` (e.g. `server
    /// exited unexpectedly`, `too far behind`), `None` after a plain `%exit` (orderly
    /// detach, `kill-server`, session destroyed) or when stdout closed without `%exit`.
    Exit { reason: Option<String> },
}

/// A running `tmux -C attach-session`. Dropping it kills that tmux client process (never
/// the server) and ends the event stream.
pub struct ControlClient {
    child: Child,
    /// Held, never written: tmux control mode exits when its stdin reaches EOF.
    stdin: Option<ChildStdin>,
    reader: JoinHandle<()>,
    lost: Arc<AtomicU64>,
    /// The child leads a process group (the guard and tmux): killed as a whole.
    group: bool,
    /// Commands sent through [`ControlClient::command`] awaiting their reply.
    waiters: Waiters,
}

/// Kills the client process, or its whole process group (the guard with its tmux).
fn kill_client(child: &mut Child, group: bool) {
    match (group, child.id()) {
        (true, Some(pid)) => {
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
        _ => {
            let _ = child.start_kill();
        }
    }
}

impl ControlClient {
    /// Attaches a control client to `session` on the server at socket name `socket`
    /// (`tmux -L`; `None` lets tmux choose, as [`super::Tmux::new`] does), waits until tmux
    /// accepted the attach, and returns the client with its event stream.
    ///
    /// Never starts a tmux server (`-N`): a missing server is an error, not a new one.
    pub async fn start(
        socket: Option<&str>,
        session: &str,
    ) -> Result<(ControlClient, mpsc::Receiver<ControlEvent>), ControlError> {
        let mut cmd = Command::new("tmux");
        cmd.args(command_args(socket, session)).kill_on_drop(true);
        Self::start_command(cmd, session, false).await
    }

    /// [`ControlClient::start`], with tmux run by `orch control-guard` (`orch` is the
    /// orch binary), which kills it the moment this process dies: see [`super::guard`].
    /// The guard and tmux share a process group of their own, which dropping the client
    /// kills.
    pub async fn start_guarded(
        socket: Option<&str>,
        session: &str,
        orch: &std::path::Path,
    ) -> Result<(ControlClient, mpsc::Receiver<ControlEvent>), ControlError> {
        let mut cmd = Command::new(orch);
        cmd.arg(super::guard::GUARD_COMMAND)
            .arg(std::process::id().to_string())
            .arg("--")
            .args(command_args(socket, session))
            .process_group(0);
        Self::start_command(cmd, session, true).await
    }

    async fn start_command(
        mut cmd: Command,
        session: &str,
        group: bool,
    ) -> Result<(ControlClient, mpsc::Receiver<ControlEvent>), ControlError> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(ControlError::Spawn)?;
        let stdin = child.stdin.take();
        let mut stderr = child.stderr.take();
        let Some(stdout) = child.stdout.take() else {
            return Err(ControlError::Spawn(std::io::Error::other("no stdout pipe")));
        };
        let mut stdout = BufReader::new(stdout);

        let attached = tokio::time::timeout(ATTACH_TIMEOUT, read_attach_reply(&mut stdout)).await;
        let failure = match attached {
            Ok(Ok(AttachReply::Attached)) => None,
            Ok(Ok(AttachReply::Refused(message))) => Some(ControlError::Attach {
                session: session.to_owned(),
                message,
            }),
            Ok(Ok(AttachReply::Closed)) => Some(ControlError::Closed {
                session: session.to_owned(),
                message: read_stderr(stderr.take()).await,
            }),
            Ok(Err(e)) => Some(ControlError::Io(e)),
            Err(_) => Some(ControlError::Timeout {
                session: session.to_owned(),
                timeout: ATTACH_TIMEOUT,
            }),
        };
        if let Some(err) = failure {
            // kill_on_drop does not reap; wait so no zombie is left behind.
            kill_client(&mut child, group);
            let _ = child.wait().await;
            return Err(err);
        }

        if let Some(stderr) = stderr {
            // A pipe nobody reads could block tmux once full; its text is only for logs.
            tokio::spawn(async move {
                let text = read_stderr(Some(stderr)).await;
                if !text.is_empty() {
                    tracing::debug!(stderr = %text, "tmux control client stderr");
                }
            });
        }

        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
        let lost = Arc::new(AtomicU64::new(0));
        let waiters = Waiters::default();
        let reader = tokio::spawn(read_events_answering(
            stdout,
            tx,
            Arc::clone(&lost),
            Arc::clone(&waiters),
        ));
        Ok((
            ControlClient {
                child,
                stdin,
                reader,
                lost,
                group,
                waiters,
            },
            rx,
        ))
    }

    /// Process id of the `tmux -C` client process (not of the server), or of its guard
    /// when started by [`ControlClient::start_guarded`].
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Runs one tmux command through this client and returns the lines of its reply,
    /// without a tmux process. Replies are not escaped: use it only for commands whose
    /// output no pane can shape (numbers, ids, names orch set), and check every line.
    /// `line` must be one non-empty line (an empty one detaches the client).
    pub async fn command(
        &mut self,
        line: &str,
        within: Duration,
    ) -> Result<Vec<Vec<u8>>, ControlError> {
        use tokio::io::AsyncWriteExt;
        if line.trim().is_empty() || line.contains(['\n', '\r']) {
            return Err(ControlError::Command("not a single command line".into()));
        }
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| ControlError::Command("the client is detached".into()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Queued before it is written: the reply cannot come first.
        self.waiters
            .lock()
            .map_err(|_| ControlError::Command("reply queue poisoned".into()))?
            .push_back(tx);
        let written = tokio::time::timeout(within, async {
            stdin.write_all(format!("{line}\n").as_bytes()).await?;
            stdin.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ControlError::Io(e)),
            Err(_) => return Err(ControlError::NoReply(within)),
        }
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(Ok(body))) => Ok(body),
            Ok(Ok(Err(message))) => Err(ControlError::Command(message)),
            Ok(Err(_)) => Err(ControlError::NoReply(within)),
            Err(_) => Err(ControlError::NoReply(within)),
        }
    }

    /// Every pane of `session`, asked through this client (no tmux process): the fields
    /// of [`super::Pane`] that no pane can forge (ids, pids, flags, the agent name orch
    /// set); text fields are left empty. Any line that is not exactly that fails the
    /// whole reply, and the caller asks the CLI instead.
    pub async fn session_panes(&mut self, session: &str) -> Result<Vec<super::Pane>, ControlError> {
        let cmd = format!(
            "list-panes -s -t ={session} -F '{}'",
            super::panes::CONTROL_PANE_FORMAT
        );
        if !session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ControlError::Command("not a plain session name".into()));
        }
        let body = self.command(&cmd, Duration::from_secs(1)).await?;
        body.iter()
            .map(|line| {
                std::str::from_utf8(line)
                    .ok()
                    .and_then(|l| super::Pane::parse_control(l, session))
                    .ok_or_else(|| {
                        ControlError::Command(format!(
                            "unexpected list-panes line {:?}",
                            String::from_utf8_lossy(line)
                        ))
                    })
            })
            .collect()
    }

    /// How many output events were dropped so far because the consumer was slow.
    pub fn lost_outputs(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Detaches cleanly: closing stdin makes tmux send `%exit` and quit, so the event
    /// stream still ends with [`ControlEvent::Exit`]. Kills the client if it lingers.
    pub async fn detach(mut self) {
        self.stdin.take();
        if tokio::time::timeout(Duration::from_secs(1), self.child.wait())
            .await
            .is_err()
        {
            kill_client(&mut self.child, self.group);
            let _ = self.child.wait().await;
        }
        // Let the reader deliver Exit before Drop aborts it; bounded, because a consumer
        // that stopped reading would leave it waiting for channel room forever.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.reader).await;
    }
}

impl Drop for ControlClient {
    fn drop(&mut self) {
        // Without this the reader could wait forever on a full channel nobody drains.
        self.reader.abort();
        if self.group {
            // kill_on_drop would kill the guard alone and leave tmux to it.
            kill_client(&mut self.child, true);
        }
    }
}

/// The tmux arguments of the control client, after the program name.
///
/// `-N`: never start a server. `-C`: control mode over plain pipes (`-CC` needs a tty).
/// `-f ignore-size`: this client's size must not count when tmux sizes the session's
/// windows (3.3a `attach-session -f` takes a comma-separated client-flag list).
/// `=SESSION`: exact session name, not a prefix or pattern.
pub fn command_args(socket: Option<&str>, session: &str) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(s) = socket {
        args.push("-L".to_owned());
        args.push(s.to_owned());
    }
    args.extend(
        ["-N", "-C", "attach-session", "-f", "ignore-size", "-t"]
            .into_iter()
            .map(str::to_owned),
    );
    args.push(format!("={session}"));
    args
}

enum AttachReply {
    Attached,
    Refused(String),
    Closed,
}

/// Reads tmux's reply to the attach command itself: the first `%begin` block. Its body is
/// read only here, as the error text of a refused attach; no pane is attached yet, so
/// nothing in it can be forged by a pane.
async fn read_attach_reply<R: AsyncRead + Unpin>(
    stdout: &mut BufReader<R>,
) -> std::io::Result<AttachReply> {
    let mut line = Vec::new();
    let mut begin: Option<Vec<u8>> = None;
    let mut body = Vec::new();
    loop {
        line.clear();
        if stdout.read_until(b'\n', &mut line).await? == 0 {
            return Ok(AttachReply::Closed);
        }
        let l = trim_eol(&line);
        match &begin {
            None => {
                if let Some(guard) = l.strip_prefix(b"%begin ") {
                    begin = Some(guard.to_vec());
                }
            }
            Some(guard) => {
                if l.strip_prefix(b"%end ") == Some(guard.as_slice()) {
                    return Ok(AttachReply::Attached);
                }
                if l.strip_prefix(b"%error ") == Some(guard.as_slice()) {
                    return Ok(AttachReply::Refused(
                        String::from_utf8_lossy(&body).trim().to_owned(),
                    ));
                }
                body.extend_from_slice(l);
                body.push(b'\n');
            }
        }
    }
}

async fn read_stderr(stderr: Option<tokio::process::ChildStderr>) -> String {
    let mut text = Vec::new();
    if let Some(mut s) = stderr {
        let _ = s.read_to_end(&mut text).await;
    }
    String::from_utf8_lossy(&text).trim().to_owned()
}

/// How often the reader hands over the output it gathered: a pane printing a flood is
/// one event per pane per interval, not one per line tmux sends.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// The most output of one pane decoded per interval; past it, lines are only counted
/// (reported as [`ControlEvent::OutputLost`]), so a flooding pane costs its bytes' scan
/// for a newline and little else.
const PANE_BUDGET: usize = 4 * 1024;

/// While a pane floods, the reader waits this long whenever it has read all there was,
/// so it wakes for a pipe full of lines rather than for each line tmux writes.
const FLOOD_PAUSE: Duration = Duration::from_millis(10);

/// The largest command reply kept (orch's replies are a line per pane).
const MAX_REPLY_BYTES: usize = 4 << 20;

/// A command sent to tmux waiting for its reply block.
type Waiter = tokio::sync::oneshot::Sender<Result<Vec<Vec<u8>>, String>>;

/// Commands sent and not answered yet, oldest first: tmux answers in order.
type Waiters = Arc<std::sync::Mutex<std::collections::VecDeque<Waiter>>>;

/// One pane's output gathered since the last flush.
#[derive(Default)]
struct Gathered {
    at: Option<Instant>,
    bytes: Vec<u8>,
    /// Bytes (as tmux sent them, escaped) not decoded: over budget, or no room to send.
    lost: usize,
    lost_at: Option<Instant>,
}

/// The reader task: tmux's stdout to events and command replies, until `%exit`, EOF or
/// the receiver is gone.
#[cfg(test)]
async fn read_events<R: AsyncRead + Unpin>(
    stdout: BufReader<R>,
    tx: mpsc::Sender<ControlEvent>,
    lost_total: Arc<AtomicU64>,
) {
    read_events_answering(stdout, tx, lost_total, Waiters::default()).await;
}

async fn read_events_answering<R: AsyncRead + Unpin>(
    mut stdout: BufReader<R>,
    tx: mpsc::Sender<ControlEvent>,
    lost_total: Arc<AtomicU64>,
    waiters: Waiters,
) {
    let mut parser = Parser::new();
    let mut gathered: HashMap<Vec<u8>, Gathered> = HashMap::new();
    let mut line = Vec::new();
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flooding = false;
    let exit = loop {
        tokio::select! {
            biased;
            _ = flush.tick(), if !gathered.is_empty() => {
                flooding = gathered.values().any(|g| g.lost > 0);
                if hand_over(&tx, &mut gathered).is_err() {
                    return;
                }
            }
            // Cancel safe: a partial line stays in `line` and the next call continues it.
            read = stdout.read_until(b'\n', &mut line) => {
                let n = match read {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading tmux control mode failed");
                        0
                    }
                };
                if n > 0 && line.last() != Some(&b'\n') {
                    // A last line without newline: the next read returns 0 (EOF).
                    continue;
                }
                if n == 0 && line.is_empty() {
                    break ControlEvent::Exit { reason: None };
                }
                let at = Instant::now();
                // The hot path: output of a pane, decoded only within its budget.
                if !parser.in_block()
                    && let Some((pane, data)) = output_line(&line)
                {
                    let g = gathered.entry(pane.to_vec()).or_default();
                    if g.bytes.len() < PANE_BUDGET {
                        g.bytes.extend_from_slice(&unescape(data));
                        g.at = Some(at);
                    } else {
                        g.lost += data.len();
                        g.lost_at = Some(at);
                        lost_total.fetch_add(1, Ordering::Relaxed);
                        flooding = true;
                    }
                    line.clear();
                    if flooding && stdout.buffer().is_empty() {
                        tokio::time::sleep(FLOOD_PAUSE).await;
                    }
                    continue;
                }
                let parsed = parser.feed_line(&line, at);
                line.clear();
                match parsed {
                    Parsed::Nothing => {}
                    Parsed::Reply { from_client: true, ok, body } => {
                        let waiter = waiters.lock().ok().and_then(|mut w| w.pop_front());
                        if let Some(w) = waiter {
                            let _ = w.send(if ok {
                                Ok(body)
                            } else {
                                Err(String::from_utf8_lossy(&body.concat()).trim().to_owned())
                            });
                        }
                    }
                    Parsed::Reply { .. } => {}
                    Parsed::Event(exit @ ControlEvent::Exit { .. }) => break exit,
                    Parsed::Event(ControlEvent::Output { pane, at, bytes }) => {
                        // Only %extended-output gets here (its age moves `at` back).
                        let g = gathered.entry(pane.into_bytes()).or_default();
                        g.bytes.extend_from_slice(&bytes);
                        g.at = Some(at);
                    }
                    // Structural events are rare and must not be lost, nor overtake the
                    // output gathered before them; waiting for room here cannot make tmux
                    // drop us the way an output flood could.
                    Parsed::Event(other) => {
                        if flush_all(&tx, &mut gathered).await.is_err()
                            || tx.send(other).await.is_err()
                        {
                            return;
                        }
                    }
                }
                if n == 0 {
                    break ControlEvent::Exit { reason: None };
                }
            }
        }
    };
    // Commands still waiting get no answer now.
    if let Ok(mut w) = waiters.lock() {
        w.clear();
    }
    // Output first, so the consumer's last-output times are final when Exit arrives.
    if flush_all(&tx, &mut gathered).await.is_ok() {
        let _ = tx.send(exit).await;
    }
}

/// `(pane, escaped data)` of a `%output %N DATA` line.
fn output_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = line.strip_prefix(b"%output ")?;
    let (pane, data) = split_word(rest)?;
    is_id(pane, b'%').then(|| (pane, trim_eol(data)))
}

/// Sends what was gathered without waiting: a pane whose events find no room keeps
/// gathering (past its budget, only counted), so the reader never waits on a slow
/// consumer because of output.
fn hand_over(
    tx: &mpsc::Sender<ControlEvent>,
    gathered: &mut HashMap<Vec<u8>, Gathered>,
) -> Result<(), ()> {
    let panes: Vec<Vec<u8>> = gathered.keys().cloned().collect();
    for pane in panes {
        let Some(g) = gathered.get_mut(&pane) else {
            continue;
        };
        let name = String::from_utf8_lossy(&pane).into_owned();
        if let Some(at) = g.at {
            let ev = ControlEvent::Output {
                pane: name.clone(),
                at,
                bytes: std::mem::take(&mut g.bytes),
            };
            match tx.try_send(ev) {
                Ok(()) => g.at = None,
                Err(mpsc::error::TrySendError::Full(ControlEvent::Output { bytes, .. })) => {
                    g.lost += bytes.len();
                    g.lost_at = g.lost_at.max(Some(at));
                    g.at = None;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
            }
        }
        if let Some(at) = g.lost_at {
            let ev = ControlEvent::OutputLost {
                pane: name,
                at,
                bytes: g.lost,
            };
            match tx.try_send(ev) {
                Ok(()) => {
                    g.lost = 0;
                    g.lost_at = None;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
            }
        }
        if g.at.is_none() && g.lost_at.is_none() {
            gathered.remove(&pane);
        }
    }
    Ok(())
}

/// Sends everything gathered, waiting for room.
async fn flush_all(
    tx: &mpsc::Sender<ControlEvent>,
    gathered: &mut HashMap<Vec<u8>, Gathered>,
) -> Result<(), mpsc::error::SendError<ControlEvent>> {
    for (pane, g) in gathered.drain() {
        let pane = String::from_utf8_lossy(&pane).into_owned();
        if let Some(at) = g.at {
            tx.send(ControlEvent::Output {
                pane: pane.clone(),
                at,
                bytes: g.bytes,
            })
            .await?;
        }
        if let Some(at) = g.lost_at {
            tx.send(ControlEvent::OutputLost {
                pane,
                at,
                bytes: g.lost,
            })
            .await?;
        }
    }
    Ok(())
}

/// What one line of the protocol is.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Nothing,
    Event(ControlEvent),
    /// A `%begin` block ended: a command's reply. `from_client`: the command came from
    /// this client (the guard's flags are 1); `ok`: it ended with `%end`, not `%error`.
    /// The lines of a reply to someone else are not kept.
    Reply {
        from_client: bool,
        ok: bool,
        body: Vec<Vec<u8>>,
    },
}

/// The control-mode protocol as a pure state machine: lines in, events out. It tracks
/// `%begin`/`%end` blocks so that nothing inside a command reply becomes an event.
#[derive(Debug, Default)]
pub struct Parser {
    /// The `time number flags` guard of the open `%begin` block, if any. A block ends only
    /// at `%end`/`%error` with the same guard, so a reply line that merely looks like
    /// `%end …` does not end it early.
    block: Option<Vec<u8>>,
    /// The open block's lines, kept for a block of this client's own command.
    body: Option<Vec<Vec<u8>>>,
    body_bytes: usize,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a `%begin` block is open (its lines are being skipped).
    pub fn in_block(&self) -> bool {
        self.block.is_some()
    }

    /// Feeds one line (with or without its `\n`), read at `at`; replies are dropped.
    pub fn feed(&mut self, line: &[u8], at: Instant) -> Option<ControlEvent> {
        match self.feed_line(line, at) {
            Parsed::Event(e) => Some(e),
            _ => None,
        }
    }

    /// Feeds one line and says what it was.
    pub fn feed_line(&mut self, line: &[u8], at: Instant) -> Parsed {
        let line = trim_eol(line);
        if let Some(guard) = &self.block {
            let end = line.strip_prefix(b"%end ");
            let error = line.strip_prefix(b"%error ");
            if end == Some(guard.as_slice()) || error == Some(guard.as_slice()) {
                let from_client = guard.rsplit(|&b| b == b' ').next() == Some(b"1");
                self.block = None;
                self.body_bytes = 0;
                return Parsed::Reply {
                    from_client,
                    ok: end.is_some(),
                    body: self.body.take().unwrap_or_default(),
                };
            }
            if let Some(body) = &mut self.body
                && self.body_bytes <= MAX_REPLY_BYTES
            {
                self.body_bytes += line.len() + 1;
                if self.body_bytes <= MAX_REPLY_BYTES {
                    body.push(line.to_vec());
                } else {
                    // Too long to be a reply to orch: cut short, so its parse fails.
                    body.push(b"\x00truncated".to_vec());
                }
            }
            return Parsed::Nothing;
        }
        if let Some(guard) = line.strip_prefix(b"%begin ") {
            let ours = guard.rsplit(|&b| b == b' ').next() == Some(b"1");
            self.block = Some(guard.to_vec());
            self.body = ours.then(Vec::new);
            return Parsed::Nothing;
        }
        match parse_line(line, at) {
            Some(e) => Parsed::Event(e),
            None => Parsed::Nothing,
        }
    }
}

/// Parses one notification line outside a `%begin` block; `None` for lines orch does not
/// use or cannot parse. Use [`Parser`] on a stream: this function knows nothing of blocks.
pub fn parse_line(line: &[u8], at: Instant) -> Option<ControlEvent> {
    let line = trim_eol(line);
    let (name, rest) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &b""[..]),
    };
    match name {
        b"%output" => {
            let (pane, data) = split_word(rest)?;
            Some(ControlEvent::Output {
                pane: pane_id(pane)?,
                at,
                bytes: unescape(data),
            })
        }
        b"%extended-output" => {
            // `%extended-output %PANE AGE_MS [more args] : DATA`
            let (pane, args) = split_word(rest)?;
            let (age, _) = split_word(args)?;
            let sep = find(args, b" : ")?;
            let age = text(age)?.parse::<u64>().ok()?;
            Some(ControlEvent::Output {
                pane: pane_id(pane)?,
                at: at.checked_sub(Duration::from_millis(age)).unwrap_or(at),
                bytes: unescape(&args[sep + 3..]),
            })
        }
        b"%pane-mode-changed" => Some(ControlEvent::PaneModeChanged {
            pane: pane_id(rest)?,
        }),
        b"%window-pane-changed" => {
            let (window, pane) = split_word(rest)?;
            Some(ControlEvent::WindowPaneChanged {
                window: window_id(window)?,
                pane: pane_id(pane)?,
            })
        }
        b"%window-add" => Some(ControlEvent::WindowAdd {
            window: window_id(rest)?,
        }),
        b"%window-close" => Some(ControlEvent::WindowClose {
            window: window_id(rest)?,
        }),
        b"%layout-change" => {
            let (window, layouts) = split_word(rest)?;
            let layout = split_word(layouts).map_or(layouts, |(first, _)| first);
            Some(ControlEvent::LayoutChange {
                window: window_id(window)?,
                layout: text(layout)?.to_owned(),
            })
        }
        b"%session-changed" => {
            let (session, name) = split_word(rest)?;
            if !is_id(session, b'$') {
                return None;
            }
            Some(ControlEvent::SessionChanged {
                session: text(session)?.to_owned(),
                name: String::from_utf8_lossy(name).into_owned(),
            })
        }
        b"%exit" => Some(ControlEvent::Exit {
            reason: (!rest.is_empty()).then(|| String::from_utf8_lossy(rest).into_owned()),
        }),
        _ => None,
    }
}

/// Decodes tmux's `%output` escaping: `\ooo` (three octal digits) is one byte and `\\` a
/// backslash. Anything malformed is kept literally rather than dropped, so a future tmux
/// escaping more or less than 3.3a does (which escapes bytes below 0x20 and `\`) still
/// yields every byte.
pub fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        if data.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
            continue;
        }
        let octal = data.get(i + 1..i + 4).and_then(|d| {
            d.iter().try_fold(0u16, |acc, &c| {
                (b'0'..=b'7')
                    .contains(&c)
                    .then(|| acc * 8 + u16::from(c - b'0'))
            })
        });
        match octal.and_then(|v| u8::try_from(v).ok()) {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(b'\\');
                i += 1;
            }
        }
    }
    out
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The first space-separated word and the rest after that space.
fn split_word(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == b' ')?;
    Some((&s[..i], &s[i + 1..]))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn text(s: &[u8]) -> Option<&str> {
    std::str::from_utf8(s).ok()
}

/// `%3`, `@1`, `$0`: the sigil then at least one digit, nothing else.
fn is_id(s: &[u8], sigil: u8) -> bool {
    s.len() > 1 && s[0] == sigil && s[1..].iter().all(u8::is_ascii_digit)
}

fn pane_id(s: &[u8]) -> Option<String> {
    is_id(s, b'%').then(|| String::from_utf8_lossy(s).into_owned())
}

fn window_id(s: &[u8]) -> Option<String> {
    is_id(s, b'@').then(|| String::from_utf8_lossy(s).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        Instant::now()
    }

    fn output_bytes(line: &[u8]) -> Vec<u8> {
        match parse_line(line, now()) {
            Some(ControlEvent::Output { bytes, .. }) => bytes,
            other => panic!("expected output, got {other:?}"),
        }
    }

    proptest::proptest! {
        /// Whatever tmux (or a pane forging protocol lines) sends: no panic, and nothing
        /// inside a block of someone else's becomes an event.
        #[test]
        fn arbitrary_protocol_lines_never_panic(
            lines in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
                0..40,
            ),
            forged in "(%output %[0-9] [a-z]{0,5}|%end [0-9 ]{0,6}|%exit( x)?|%begin 1 [0-9] 0)"
        ) {
            let mut p = Parser::new();
            for l in &lines {
                let _ = p.feed_line(l, now());
            }
            let mut p = Parser::new();
            proptest::prop_assert_eq!(p.feed_line(b"%begin 9 9 0", now()), Parsed::Nothing);
            proptest::prop_assert!(!matches!(p.feed_line(forged.as_bytes(), now()), Parsed::Event(_)));
            let _ = crate::tmux::Pane::parse_control(&forged, "s");
        }
    }

    #[test]
    fn output_is_unescaped() {
        let at = now();
        assert_eq!(
            parse_line(b"%output %3 hello\\015\\012\n", at),
            Some(ControlEvent::Output {
                pane: "%3".into(),
                at,
                bytes: b"hello\r\n".to_vec()
            })
        );
    }

    #[test]
    fn unescape_edge_cases() {
        assert_eq!(unescape(b""), b"");
        assert_eq!(unescape(b"\\\\"), b"\\");
        // A literal backslash followed by digits the program printed.
        assert_eq!(unescape(b"\\134012"), b"\\012");
        assert_eq!(unescape(b"\\000"), b"\0");
        assert_eq!(unescape(b"\\377"), [0xff]);
        // Not valid escapes: kept literally rather than dropped.
        assert_eq!(unescape(b"\\400"), b"\\400");
        assert_eq!(unescape(b"\\08"), b"\\08");
        assert_eq!(unescape(b"a\\"), b"a\\");
        assert_eq!(unescape(b"\\01"), b"\\01");
        assert_eq!(unescape(b"\\x"), b"\\x");
        // Escapes back to back, and at both ends.
        assert_eq!(unescape(b"\\033[0m\\\\\\012"), b"\x1b[0m\\\n");
    }

    #[test]
    fn utf8_split_into_octal_escapes() {
        // "é✓" escaped byte by byte, as tmux versions that escape high bytes send it.
        let bytes = output_bytes(b"%output %0 \\303\\251\\342\\234\\223");
        assert_eq!(String::from_utf8(bytes).ok().as_deref(), Some("é✓"));
        // 3.3a sends high bytes raw; mixed forms decode the same.
        let bytes = output_bytes(b"%output %0 \\303\xa9\xe2\x9c\x93");
        assert_eq!(String::from_utf8(bytes).ok().as_deref(), Some("é✓"));
        // A character cut across two %output lines: each event carries its half.
        let a = output_bytes(b"%output %0 \\342\\234");
        let b = output_bytes(b"%output %0 \\223");
        assert_eq!([a, b].concat(), "✓".as_bytes());
    }

    #[test]
    fn output_may_be_empty_or_contain_spaces_and_protocol_text() {
        assert_eq!(output_bytes(b"%output %1 "), b"");
        assert_eq!(output_bytes(b"%output %1  a  b "), b" a  b ");
        assert_eq!(output_bytes(b"%output %1 %exit now"), b"%exit now");
    }

    #[test]
    fn malformed_lines_give_nothing() {
        for line in [
            &b"%output"[..],
            b"%output %3",
            b"%output 3 x",
            b"%output %x x",
            b"%output % x",
            b"%pane-mode-changed",
            b"%pane-mode-changed 3",
            b"%window-pane-changed @1",
            b"%session-changed 0 name",
            b"plain text",
            b"",
        ] {
            assert_eq!(
                parse_line(line, now()),
                None,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn extended_output_subtracts_age() {
        let at = now();
        match parse_line(b"%extended-output %7 20 : a\\012", at) {
            Some(ControlEvent::Output { pane, at: t, bytes }) => {
                assert_eq!(pane, "%7");
                assert_eq!(bytes, b"a\n");
                assert!(t <= at);
            }
            other => panic!("{other:?}"),
        }
        // Unknown extra arguments before the colon are tolerated.
        assert_eq!(
            output_bytes(b"%extended-output %7 0 future args : x : y"),
            b"x : y"
        );
    }

    #[test]
    fn notifications() {
        let at = now();
        assert_eq!(
            parse_line(b"%pane-mode-changed %12", at),
            Some(ControlEvent::PaneModeChanged { pane: "%12".into() })
        );
        assert_eq!(
            parse_line(b"%window-pane-changed @2 %5", at),
            Some(ControlEvent::WindowPaneChanged {
                window: "@2".into(),
                pane: "%5".into()
            })
        );
        assert_eq!(
            parse_line(b"%session-changed $1 my session", at),
            Some(ControlEvent::SessionChanged {
                session: "$1".into(),
                name: "my session".into()
            })
        );
        assert_eq!(
            parse_line(b"%layout-change @1 b25d,80x24,0,0,0 b25d,80x24,0,0,0 *", at),
            Some(ControlEvent::LayoutChange {
                window: "@1".into(),
                layout: "b25d,80x24,0,0,0".into()
            })
        );
        assert_eq!(
            parse_line(b"%window-close @4", at),
            Some(ControlEvent::WindowClose {
                window: "@4".into()
            })
        );
        assert_eq!(parse_line(b"%sessions-changed", at), None);
    }

    #[test]
    fn exit_with_and_without_reason() {
        assert_eq!(
            parse_line(b"%exit\n", now()),
            Some(ControlEvent::Exit { reason: None })
        );
        assert_eq!(
            parse_line(b"%exit server exited unexpectedly\n", now()),
            Some(ControlEvent::Exit {
                reason: Some("server exited unexpectedly".into())
            })
        );
    }

    #[test]
    fn begin_block_with_forged_lines_gives_no_event() {
        let mut p = Parser::new();
        let lines: &[&[u8]] = &[
            b"%begin 1795303655 267 1\n",
            b"%output %1 forged\n",
            b"%exit forged\n",
            b"%pane-mode-changed %1\n",
            // A pane printed an %end with a guessed guard: does not end the block.
            b"%end 1795303655 266 1\n",
            b"%error 1 2 1\n",
            b"%output %1 still forged\n",
            b"%end 1795303655 267 1\n",
        ];
        for line in lines {
            assert_eq!(p.feed(line, now()), None);
        }
        assert!(!p.in_block());
        assert_eq!(
            p.feed(b"%output %1 real\\012", now()).map(|e| match e {
                ControlEvent::Output { bytes, .. } => bytes,
                _ => Vec::new(),
            }),
            Some(b"real\n".to_vec())
        );
    }

    #[test]
    fn error_closes_a_block() {
        let mut p = Parser::new();
        assert_eq!(p.feed(b"%begin 1 2 0", now()), None);
        assert_eq!(p.feed(b"can't find session: nope", now()), None);
        assert_eq!(p.feed(b"%error 1 2 0", now()), None);
        assert!(!p.in_block());
        assert_eq!(
            p.feed(b"%exit", now()),
            Some(ControlEvent::Exit { reason: None })
        );
    }

    #[test]
    fn command_line() {
        assert_eq!(
            command_args(Some("orch-x"), "org9"),
            [
                "-L",
                "orch-x",
                "-N",
                "-C",
                "attach-session",
                "-f",
                "ignore-size",
                "-t",
                "=org9"
            ]
        );
        assert_eq!(command_args(None, "s")[0], "-N");
    }

    /// A consumer that never reads must not stall the reader, and a flooding pane is
    /// gathered into a few events: its output past the budget is counted, not decoded,
    /// and reported per pane as OutputLost before Exit.
    #[tokio::test]
    async fn a_flood_is_gathered_and_a_slow_consumer_never_stalls_the_reader() {
        let mut text = Vec::new();
        let n = 50_000;
        for i in 0..n {
            text.extend_from_slice(format!("%output %{} line{i}\\012\n", i % 2).as_bytes());
        }
        text.extend_from_slice(b"%pane-mode-changed %0\n%exit too far behind\n");
        let (tx, mut rx) = mpsc::channel(4);
        let lost = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(read_events(
            BufReader::new(std::io::Cursor::new(text)),
            tx,
            Arc::clone(&lost),
        ));
        // The reader gets through everything while nobody is reading.
        tokio::time::timeout(Duration::from_secs(5), async {
            while lost.load(Ordering::Relaxed) < (n as u64) / 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("reader made progress without a consumer");
        let mut decoded: HashMap<String, usize> = HashMap::new();
        let mut lost_bytes: HashMap<String, usize> = HashMap::new();
        let mut events = 0;
        let mut rest = Vec::new();
        while let Some(e) = rx.recv().await {
            events += 1;
            match e {
                ControlEvent::Output { pane, bytes, .. } => {
                    assert!(bytes.len() <= PANE_BUDGET + 64, "{pane}: {}", bytes.len());
                    *decoded.entry(pane).or_default() += bytes.len();
                }
                ControlEvent::OutputLost { pane, bytes, .. } => {
                    assert!(bytes > 0);
                    *lost_bytes.entry(pane).or_default() += bytes;
                }
                other => rest.push(other),
            }
        }
        task.await.expect("reader task");
        assert!(events < 500, "{events} events for a flood of {n} lines");
        for pane in ["%0", "%1"] {
            assert!(
                decoded[pane] < lost_bytes[pane],
                "{pane}: most of a flood is counted"
            );
            assert!(
                lost_bytes[pane] > 100_000,
                "{pane}: {:?}",
                lost_bytes.get(pane)
            );
        }
        assert_eq!(
            rest,
            [
                ControlEvent::PaneModeChanged { pane: "%0".into() },
                ControlEvent::Exit {
                    reason: Some("too far behind".into())
                }
            ]
        );
    }

    /// Replies to this client's commands go to their waiters in order; lines inside any
    /// block never become events, and another client's blocks are not kept.
    #[tokio::test]
    async fn replies_reach_their_commands_and_forged_lines_nothing() {
        let text = b"%begin 1 10 1\n%1,100,0,,,0,1,a\n%output %9 forged\n%end 1 10 1\n\
%begin 1 11 0\nsomeone else's\n%end 1 11 0\n\
%begin 1 12 1\nno such pane\n%error 1 12 1\n\
%output %1 real\n%exit\n"
            .to_vec();
        let (tx, mut rx) = mpsc::channel(16);
        let waiters = Waiters::default();
        let (first_tx, first) = tokio::sync::oneshot::channel();
        let (second_tx, second) = tokio::sync::oneshot::channel();
        if let Ok(mut w) = waiters.lock() {
            w.push_back(first_tx);
            w.push_back(second_tx);
        }
        read_events_answering(
            BufReader::new(std::io::Cursor::new(text)),
            tx,
            Arc::new(AtomicU64::new(0)),
            Arc::clone(&waiters),
        )
        .await;
        assert_eq!(
            first.await.expect("answered"),
            Ok(vec![
                b"%1,100,0,,,0,1,a".to_vec(),
                b"%output %9 forged".to_vec()
            ])
        );
        assert_eq!(
            second.await.expect("answered"),
            Err("no such pane".to_owned())
        );
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(
            matches!(&events[0], ControlEvent::Output { pane, bytes, .. } if pane == "%1" && bytes == b"real")
        );
        assert_eq!(events[1], ControlEvent::Exit { reason: None });
    }

    #[tokio::test]
    async fn eof_without_exit_line_still_ends_with_exit() {
        let (tx, mut rx) = mpsc::channel(8);
        let text = b"%output %0 a\n%output %0 partial-no-newline".to_vec();
        read_events(
            BufReader::new(std::io::Cursor::new(text)),
            tx,
            Arc::new(AtomicU64::new(0)),
        )
        .await;
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        // Both lines of the pane come as one event (gathered), then Exit.
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(
            matches!(&events[0], ControlEvent::Output { bytes, .. } if bytes == b"apartial-no-newline")
        );
        assert_eq!(events[1], ControlEvent::Exit { reason: None });
    }
}
