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
    Status,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentReport>,
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
}

/// Sends a request to the session's supervisor. `Ok(None)` when no supervisor listens.
pub fn request(session_dir: &Path, req: &Request) -> Result<Option<Reply>> {
    let path = session_dir.join(CONTROL_SOCKET);
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
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

/// Listens on the control socket, replacing a dead supervisor's socket file (the caller
/// holds the session lock, so no live supervisor owns it).
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("listening on {}", path.display()))?;
    crate::state::restrict_socket(path)?;
    Ok(listener)
}

/// A request and where its reply goes.
pub type Incoming = (Request, tokio::sync::oneshot::Sender<Reply>);

/// Serves connections until the listener fails, handing each request to `requests`.
pub async fn serve(
    listener: tokio::net::UnixListener,
    requests: tokio::sync::mpsc::UnboundedSender<Incoming>,
) {
    let uid = rustix::process::getuid().as_raw();
    while let Ok((stream, _)) = listener.accept().await {
        // Only our own user may steer our agents.
        if stream.peer_cred().map(|c| c.uid()).ok() != Some(uid) {
            continue;
        }
        tokio::spawn(serve_one(stream, requests.clone()));
    }
}

async fn serve_one(
    stream: tokio::net::UnixStream,
    requests: tokio::sync::mpsc::UnboundedSender<Incoming>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if tokio::io::BufReader::new(read)
        .read_line(&mut line)
        .await
        .is_err()
    {
        return;
    }
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => {
            let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
            if requests.send((req, reply_tx)).is_err() {
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
        let _ = write.write_all(format!("{text}\n").as_bytes()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            while let Some((req, reply)) = rx.recv().await {
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
