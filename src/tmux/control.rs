//! orch's own tmux control-mode client (`tmux -C`), for what the CLI cannot tell us in
//! time: when each pane last printed something (stall and activity detection) and that
//! the tmux server died, both within milliseconds.
//!
//! Invariants:
//! - The client sends tmux no commands. Replies inside `%begin`/`%end` blocks are not
//!   escaped, so a pane that prints `%output …` or `%end …` could forge protocol lines
//!   there; block contents are skipped and never turned into events. Ask tmux questions
//!   through [`super::Tmux`] instead.
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
        let reader = tokio::spawn(read_events(stdout, tx, Arc::clone(&lost)));
        Ok((
            ControlClient {
                child,
                stdin,
                reader,
                lost,
                group,
            },
            rx,
        ))
    }

    /// Process id of the `tmux -C` client process (not of the server), or of its guard
    /// when started by [`ControlClient::start_guarded`].
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
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

/// The reader task: tmux's stdout to events, until `%exit`, EOF or the receiver is gone.
async fn read_events<R: AsyncRead + Unpin>(
    mut stdout: BufReader<R>,
    tx: mpsc::Sender<ControlEvent>,
    lost_total: Arc<AtomicU64>,
) {
    let mut parser = Parser::new();
    // Dropped output per pane, reported as OutputLost once the channel has room again.
    let mut lost: HashMap<String, (Instant, usize)> = HashMap::new();
    let mut line = Vec::new();
    let exit = loop {
        tokio::select! {
            biased;
            permit = tx.reserve(), if !lost.is_empty() => {
                let Ok(permit) = permit else { return };
                if let Some(key) = lost.keys().next().cloned()
                    && let Some((at, bytes)) = lost.remove(&key)
                {
                    permit.send(ControlEvent::OutputLost { pane: key, at, bytes });
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
                let event = parser.feed(&line, Instant::now());
                line.clear();
                match event {
                    None => {}
                    Some(exit @ ControlEvent::Exit { .. }) => break exit,
                    Some(ControlEvent::Output { pane, at, bytes }) => {
                        if let Some(entry) = lost.get_mut(&pane) {
                            // Keep per-pane order: never report output after a loss
                            // before the loss itself.
                            entry.0 = at;
                            entry.1 += bytes.len();
                            lost_total.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        match tx.try_send(ControlEvent::Output { pane, at, bytes }) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(ControlEvent::Output {
                                pane,
                                at,
                                bytes,
                            })) => {
                                lost.insert(pane, (at, bytes.len()));
                                lost_total.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => return,
                        }
                    }
                    // Structural events are rare and must not be lost; waiting for room
                    // here cannot make tmux drop us the way an output flood could.
                    Some(other) => {
                        let sent = match flush_lost(&tx, &mut lost).await {
                            Ok(()) => tx.send(other).await.is_ok(),
                            Err(_) => false,
                        };
                        if !sent {
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
    // Losses first, so the consumer's last-output times are final when Exit arrives.
    if flush_lost(&tx, &mut lost).await.is_ok() {
        let _ = tx.send(exit).await;
    }
}

async fn flush_lost(
    tx: &mpsc::Sender<ControlEvent>,
    lost: &mut HashMap<String, (Instant, usize)>,
) -> Result<(), mpsc::error::SendError<ControlEvent>> {
    for (pane, (at, bytes)) in lost.drain() {
        tx.send(ControlEvent::OutputLost { pane, at, bytes })
            .await?;
    }
    Ok(())
}

/// The control-mode protocol as a pure state machine: lines in, events out. It tracks
/// `%begin`/`%end` blocks so that nothing inside a command reply becomes an event.
#[derive(Debug, Default)]
pub struct Parser {
    /// The `time number flags` guard of the open `%begin` block, if any. A block ends only
    /// at `%end`/`%error` with the same guard, so a reply line that merely looks like
    /// `%end …` does not end it early.
    block: Option<Vec<u8>>,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a `%begin` block is open (its lines are being skipped).
    pub fn in_block(&self) -> bool {
        self.block.is_some()
    }

    /// Feeds one line (with or without its `\n`), read at `at`.
    pub fn feed(&mut self, line: &[u8], at: Instant) -> Option<ControlEvent> {
        let line = trim_eol(line);
        if let Some(guard) = &self.block {
            let end = line
                .strip_prefix(b"%end ")
                .or_else(|| line.strip_prefix(b"%error "));
            if end == Some(guard.as_slice()) {
                self.block = None;
            }
            return None;
        }
        if let Some(guard) = line.strip_prefix(b"%begin ") {
            self.block = Some(guard.to_vec());
            return None;
        }
        parse_line(line, at)
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

    /// A consumer that never reads must not stall the reader: output is dropped, counted,
    /// and reported per pane as OutputLost before Exit once the consumer catches up.
    #[tokio::test]
    async fn slow_consumer_loses_output_not_exit() {
        let mut text = Vec::new();
        let n = EVENT_CAPACITY + 50;
        for i in 0..n {
            text.extend_from_slice(format!("%output %{} line{i}\\012\n", i % 2).as_bytes());
        }
        text.extend_from_slice(b"%pane-mode-changed %0\n%exit too far behind\n");
        let (tx, mut rx) = mpsc::channel(EVENT_CAPACITY);
        let lost = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(read_events(
            BufReader::new(std::io::Cursor::new(text)),
            tx,
            Arc::clone(&lost),
        ));
        // The reader gets through everything while nobody is reading.
        tokio::time::timeout(Duration::from_secs(5), async {
            while lost.load(Ordering::Relaxed) < 50 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("reader made progress without a consumer");
        let mut outputs = 0;
        let mut lost_panes = Vec::new();
        let mut rest = Vec::new();
        while let Some(e) = rx.recv().await {
            match e {
                ControlEvent::Output { .. } => outputs += 1,
                ControlEvent::OutputLost { pane, bytes, .. } => {
                    assert!(bytes > 0);
                    lost_panes.push(pane);
                }
                other => rest.push(other),
            }
        }
        task.await.expect("reader task");
        assert_eq!(outputs, EVENT_CAPACITY);
        assert_eq!(lost.load(Ordering::Relaxed), 50);
        lost_panes.sort();
        assert_eq!(lost_panes, ["%0", "%1"]);
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
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[2], ControlEvent::Exit { reason: None });
    }
}
