//! The supervisor's control socket: `<state-dir>/<session>/control.sock`, mode 0600, and
//! only peers with our uid are served. One JSON request line, one JSON reply line.

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
