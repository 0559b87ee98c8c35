//! The supervisor's control socket: `<state-dir>/<session>/control.sock`, mode 0600, and
//! only peers with our uid are served. One JSON request line, one JSON reply line. The
//! client side (`request`) is blocking std code for the CLI; the server side (`bind`,
//! `serve`) runs on the supervisor's tokio runtime.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::store::CONTROL_SOCKET;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Restart {
        agent: String,
    },
    Stop {
        agent: String,
    },
    Start {
        agent: String,
    },
    /// From the tmux `pane-died` hook.
    PaneDied {
        pane: String,
    },
    /// From an agent CLI's own hook (`orch hook activity`): what the agent is doing.
    Activity {
        agent: String,
        activity: crate::monitor::activity::Activity,
        event: String,
    },
    Status,
    /// `orch check` and `orch rollback …`, for the supervisor's quality gate.
    Gate {
        call: crate::gate::service::Call,
    },
    /// A dashboard: the connection stays open; after the reply come a [`Line::State`]
    /// with the whole session, then every event (as the journal has it) and every change
    /// of an agent ([`Line::Agent`]), one JSON line each.
    Subscribe,
}

/// What the supervisor knows of one agent, as a dashboard shows it. Times are Unix
/// milliseconds, so an unchanged agent needs no new line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub name: String,
    pub role: String,
    pub profile: String,
    pub pane: Option<String>,
    pub pid: Option<u32>,
    pub state: String,
    pub activity: String,
    pub restarts: u32,
    pub exit_status: Option<i32>,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub started_at_ms: Option<u64>,
    pub last_output_ms: Option<u64>,
    /// Grows whenever the agent prints: a dashboard reads its screen again then.
    pub output_seq: u64,
    /// The last line it printed.
    pub last_line: Option<String>,
    /// While waiting: the lines of its screen that ask.
    pub waiting_on: Option<String>,
}

/// What needs the human, e.g. `2 waiting · 1 fatal · 1 rollback`, from each agent's
/// (state, activity); empty when nothing does. The dashboard's title and the session's
/// tmux status line say the same.
pub fn attention<'a>(
    agents: impl IntoIterator<Item = (&'a str, &'a str)>,
    rollbacks: usize,
) -> String {
    let (mut waiting, mut fatal, mut stalled) = (0, 0, 0);
    for (state, activity) in agents {
        waiting += usize::from(activity == "waiting");
        fatal += usize::from(state == "fatal");
        stalled += usize::from(state == "stalled");
    }
    [
        (waiting, "waiting"),
        (fatal, "fatal"),
        (stalled, "stalled"),
        (rollbacks, "rollback"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect::<Vec<_>>()
    .join(" · ")
}

/// One line of a subscription that is not an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// The whole session, first.
    State {
        session: String,
        supervisor_pid: u32,
        /// The tmux server is gone (the session is being restored, or waits for it).
        server_down: bool,
        agents: Vec<AgentView>,
    },
    /// The newest events of the journal, oldest first, once after the state (what
    /// happened before this subscriber came).
    History { events: Vec<serde_json::Value> },
    /// One agent changed.
    Agent { agent: Box<AgentView> },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentReport>,
    /// The gate's answer (`crate::gate::service::Answer`), or `{"bad_input": true}` with
    /// `error` when the request was the user's mistake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<serde_json::Value>,
}

impl From<anyhow::Result<()>> for Reply {
    fn from(result: anyhow::Result<()>) -> Reply {
        match result {
            Ok(()) => Reply {
                ok: true,
                ..Reply::default()
            },
            Err(e) => Reply {
                ok: false,
                error: Some(format!("{e:#}")),
                ..Reply::default()
            },
        }
    }
}

/// What `orch status` learns from a running supervisor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentReport {
    pub name: String,
    pub state: String,
    pub restarts: u32,
    pub last_output_secs_ago: Option<f64>,
    pub activity: String,
    /// The last exit status the supervisor saw (from the process itself where tmux did
    /// not record one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
}

/// Sends a request to the session's supervisor. `Ok(None)` when no supervisor listens.
/// A supervisor busy with other connections is asked again for a while.
pub fn request(session_dir: &Path, req: &Request) -> Result<Option<Reply>> {
    request_waiting(session_dir, req, Some(Duration::from_secs(10)))
}

/// [`request`], waiting at most `patience` for the reply (`None`: as long as it takes).
/// A supervisor serving its most connections answers `busy`: asked again, a little later.
pub fn request_waiting(
    session_dir: &Path,
    req: &Request,
    patience: Option<Duration>,
) -> Result<Option<Reply>> {
    let mut attempt = 0;
    loop {
        let reply = request_once(session_dir, req, patience)?;
        match reply {
            Some(r) if r.error.as_deref() == Some(BUSY) && attempt < 20 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(25 * attempt));
            }
            other => return Ok(other),
        }
    }
}

fn request_once(
    session_dir: &Path,
    req: &Request,
    patience: Option<Duration>,
) -> Result<Option<Reply>> {
    let Some(stream) = connect(session_dir)? else {
        return Ok(None);
    };
    stream.set_read_timeout(patience)?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = &stream;
    writeln!(writer, "{}", serde_json::to_string(req)?)?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .context("reading the supervisor's reply")?;
    Ok(Some(
        serde_json::from_str(&line).context("the supervisor's reply is not valid JSON")?,
    ))
}

/// A connection to the session's supervisor; `None` when none listens.
fn connect(session_dir: &Path) -> Result<Option<UnixStream>> {
    let path = session_dir.join(CONTROL_SOCKET);
    // The folder's descriptor (if any) stays open until the connection is made.
    let short = short_socket_path(session_dir, &path);
    let connect_path = short.as_ref().map_or(path.as_path(), |(_, p)| p.as_path());
    match UnixStream::connect(connect_path) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("connecting to {}", path.display())),
    }
}

/// Sends a request without waiting for the reply, for callers that must not be held up
/// (an agent CLI waits for its hooks): the line is in the socket's buffer when this
/// returns, and the supervisor reads it when it gets to it. `Ok(false)` when no
/// supervisor listens.
pub fn notify(session_dir: &Path, req: &Request) -> Result<bool> {
    let Some(stream) = connect(session_dir)? else {
        return Ok(false);
    };
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut writer = &stream;
    writeln!(writer, "{}", serde_json::to_string(req)?)?;
    Ok(true)
}

/// Listens on the control socket, replacing a dead supervisor's socket file (the caller
/// holds the session lock, so no live supervisor owns it).
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    let dir = path.parent().context("the control socket has a folder")?;
    let short = short_socket_path(dir, path);
    let bind_path = short.as_ref().map_or(path, |(_, p)| p.as_path());
    let listener = tokio::net::UnixListener::bind(bind_path)
        .with_context(|| format!("listening on {}", path.display()))?;
    drop(short);
    crate::state::restrict_socket(path)?;
    Ok(listener)
}

/// A socket's path may be at most 107 bytes (`sun_path`); a deep state dir makes
/// `<state>/<session>/control.sock` longer. Then the socket is named through the folder's
/// descriptor, `/proc/self/fd/N/control.sock`, which the kernel resolves to the same
/// file. Keep the returned descriptor open while the path is used. `None`: the path is
/// short enough as it is (or the folder cannot be opened: the long path then fails with
/// its own error).
fn short_socket_path(
    dir: &Path,
    path: &Path,
) -> Option<(std::os::fd::OwnedFd, std::path::PathBuf)> {
    use std::os::fd::AsRawFd;
    if path.as_os_str().len() < 100 {
        return None;
    }
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    let name = path.file_name()?;
    let short = std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())).join(name);
    Some((fd, short))
}

/// A request, where its reply goes, and for a [`Request::Subscribe`], where the lines
/// that follow the reply go.
pub struct Incoming {
    pub req: Request,
    pub reply: tokio::sync::oneshot::Sender<Reply>,
    pub lines: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

/// How long a subscriber may take to read a line before it is dropped (a dashboard that
/// stopped reading must not make the supervisor hold its lines forever).
pub const SUBSCRIBER_PATIENCE: Duration = Duration::from_secs(5);

/// The longest request line served: every request is a few dozen bytes; a longer line is
/// refused before it costs memory.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;

/// Connections served at once; one more gets a `busy` reply at once and is closed, so
/// idle clients can never take the descriptors a restart needs.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send its request line, and to take the reply.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client is told when [`MAX_CONNECTIONS`] are being served.
pub const BUSY: &str = "the supervisor is busy serving other connections; try again";

/// Serves connections for as long as the runtime runs, handing each request to
/// `requests`. It never stops listening: an accept error (no descriptors left, say) is
/// logged once and retried after a pause.
pub async fn serve(
    listener: tokio::net::UnixListener,
    requests: tokio::sync::mpsc::UnboundedSender<Incoming>,
) {
    let uid = rustix::process::getuid().as_raw();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut failing = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                if std::mem::replace(&mut failing, false) {
                    tracing::info!("the control socket accepts connections again");
                }
                stream
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!("accepting on the control socket failed ({e}); retrying");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Only our own user may steer our agents.
        if stream.peer_cred().map(|c| c.uid()).ok() != Some(uid) {
            continue;
        }
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let requests = requests.clone();
                tokio::spawn(async move {
                    serve_one(stream, requests).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let reply = Reply {
                        ok: false,
                        error: Some(BUSY.into()),
                        ..Reply::default()
                    };
                    let _ = tokio::time::timeout(IDLE_TIMEOUT, write_reply(stream, &reply)).await;
                });
            }
        }
    }
}

async fn write_reply(mut stream: tokio::net::UnixStream, reply: &Reply) {
    use tokio::io::AsyncWriteExt;
    if let Ok(text) = serde_json::to_string(reply) {
        let _ = stream.write_all(format!("{text}\n").as_bytes()).await;
    }
}

/// Reads one request line of at most [`MAX_REQUEST_BYTES`] within [`IDLE_TIMEOUT`].
async fn read_request<R: tokio::io::AsyncRead + Unpin>(read: R) -> Result<String, String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES + 1));
    let mut line = Vec::new();
    match tokio::time::timeout(IDLE_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) => Err(format!("no request within {IDLE_TIMEOUT:?}")),
        Ok(Err(e)) => Err(format!("reading the request: {e}")),
        Ok(Ok(_)) if line.len() as u64 > MAX_REQUEST_BYTES => Err(format!(
            "bad request: longer than {} KiB",
            MAX_REQUEST_BYTES >> 10
        )),
        Ok(Ok(_)) => String::from_utf8(line).map_err(|_| "bad request: not UTF-8".to_owned()),
    }
}

async fn serve_one(
    stream: tokio::net::UnixStream,
    requests: tokio::sync::mpsc::UnboundedSender<Incoming>,
) {
    use tokio::io::AsyncWriteExt;
    let (read, mut write) = stream.into_split();
    let line = match read_request(read).await {
        Ok(line) => line,
        Err(error) => {
            let reply = Reply {
                ok: false,
                error: Some(error),
                ..Reply::default()
            };
            if let Ok(text) = serde_json::to_string(&reply) {
                let _ = tokio::time::timeout(
                    IDLE_TIMEOUT,
                    write.write_all(format!("{text}\n").as_bytes()),
                )
                .await;
            }
            return;
        }
    };
    let mut stream = None;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => {
            let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
            let lines = (req == Request::Subscribe).then(|| {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                stream = Some(rx);
                tx
            });
            let incoming = Incoming {
                req,
                reply: reply_tx,
                lines,
            };
            if requests.send(incoming).is_err() {
                return;
            }
            reply_rx.await.unwrap_or_default()
        }
        Err(e) => Reply {
            ok: false,
            error: Some(format!("bad request: {e}")),
            ..Reply::default()
        },
    };
    if let Ok(text) = serde_json::to_string(&reply) {
        let _ = tokio::time::timeout(
            IDLE_TIMEOUT,
            write.write_all(format!("{text}\n").as_bytes()),
        )
        .await;
    }
    // A subscription: every line the supervisor publishes, until either side goes.
    if let (true, Some(mut lines)) = (reply.ok, stream) {
        while let Some(line) = lines.recv().await {
            let sent = tokio::time::timeout(
                SUBSCRIBER_PATIENCE,
                write.write_all(format!("{line}\n").as_bytes()),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                return;
            }
        }
    }
}

/// Subscribes to the session's supervisor ([`Request::Subscribe`]): `None` when none
/// listens. The lines come on the returned stream, one JSON value each.
pub async fn subscribe(
    session_dir: &Path,
) -> Result<Option<tokio::io::Lines<tokio::io::BufReader<tokio::net::UnixStream>>>> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    // Connecting to a local socket does not block: the same connect as every request.
    let Some(stream) = connect(session_dir)? else {
        return Ok(None);
    };
    stream.set_nonblocking(true)?;
    let mut stream = tokio::net::UnixStream::from_std(stream)?;
    let req = serde_json::to_string(&Request::Subscribe)?;
    stream.write_all(format!("{req}\n").as_bytes()).await?;
    let mut lines = tokio::io::BufReader::new(stream).lines();
    let first = lines
        .next_line()
        .await?
        .context("the supervisor closed the subscription")?;
    let reply: Reply =
        serde_json::from_str(&first).context("the supervisor's reply is not valid JSON")?;
    if !reply.ok {
        anyhow::bail!(
            reply
                .error
                .unwrap_or_else(|| "the supervisor refused".into())
        );
    }
    Ok(Some(lines))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Arbitrary bytes as a request: a reply line comes back (an error unless the
        /// bytes are a request), never a panic, and the server keeps serving.
        #[test]
        fn arbitrary_requests_get_a_clear_answer(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            json in "\\{\"op\":\"[a-z_]{0,12}\"(,\"agent\":\"[a-z0-9]{0,8}\")?\\}",
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            for input in [bytes.clone(), json.into_bytes()] {
                let line = rt.block_on(read_request(std::io::Cursor::new(input.clone())));
                if let Ok(text) = line {
                    let _ = serde_json::from_str::<Request>(&text);
                }
            }
        }
    }

    #[test]
    fn oversized_idle_and_garbage_requests_are_answered_and_the_socket_keeps_serving() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(CONTROL_SOCKET);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let _guard = rt.enter();
        let listener = bind(&path).expect("bind");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Incoming>();
        rt.spawn(serve(listener, tx));
        rt.spawn(async move {
            while let Some(Incoming { reply, .. }) = rx.recv().await {
                let _ = reply.send(Reply {
                    ok: true,
                    ..Reply::default()
                });
            }
        });
        let thread = std::thread::spawn({
            let dir = dir.path().to_path_buf();
            move || {
                let huge = {
                    let mut raw = UnixStream::connect(dir.join(CONTROL_SOCKET)).expect("connect");
                    let chunk = vec![b'{'; 1 << 16];
                    for _ in 0..(MAX_REQUEST_BYTES as usize / chunk.len() + 2) {
                        if raw.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    let mut line = String::new();
                    let _ = BufReader::new(&raw).read_line(&mut line);
                    line
                };
                let after = request(&dir, &Request::Status).expect("request");
                (huge, after)
            }
        });
        let (huge, after) = rt.block_on(async {
            loop {
                if thread.is_finished() {
                    break thread.join().expect("client");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert!(huge.contains("longer than"), "{huge}");
        assert_eq!(after.map(|r| r.ok), Some(true));
    }

    #[test]
    fn a_request_gets_its_reply_and_garbage_a_clear_error() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(CONTROL_SOCKET);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let _guard = rt.enter();
        let listener = bind(&path).expect("bind");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Incoming>();
        rt.spawn(serve(listener, tx));
        rt.spawn(async move {
            while let Some(Incoming { req, reply, .. }) = rx.recv().await {
                let ok = req == Request::Stop { agent: "a".into() };
                let _ = reply.send(Reply {
                    ok,
                    ..Reply::default()
                });
            }
        });
        let thread = std::thread::spawn({
            let dir = dir.path().to_path_buf();
            move || {
                let reply = request(&dir, &Request::Stop { agent: "a".into() }).expect("request");
                let mut raw = UnixStream::connect(dir.join(CONTROL_SOCKET)).expect("connect");
                writeln!(raw, "not json").expect("write");
                let mut line = String::new();
                BufReader::new(&raw).read_line(&mut line).expect("read");
                (reply, line)
            }
        });
        let (reply, garbage) = rt.block_on(async {
            loop {
                if thread.is_finished() {
                    break thread.join().expect("client");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert_eq!(reply.map(|r| r.ok), Some(true));
        assert!(garbage.contains("bad request"), "{garbage}");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("socket").permissions(),
        ) & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            request(&dir.path().join("nowhere"), &Request::Status).expect("no supervisor"),
            None
        );
    }
}
