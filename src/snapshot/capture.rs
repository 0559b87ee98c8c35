//! Reading a running session into a [`Captured`] snapshot: the document plus the pane
//! contents it refers to, redacted, in memory, not yet stored.
//!
//! tmux work per snapshot, whatever the number of agents: one `list-panes -a`, one call
//! for the window's geometry and alternate-screen flags, and one call that writes every
//! pane's contents straight to files (`capture-pane … \; save-buffer … \; delete-buffer`).
//! Those files go to a private temporary folder under `snapshots/` and are removed before
//! this returns.
//!
//! The alternate screen (tmux 3.3a, checked by `tests/snapshot.rs`): while a program is on
//! it, `capture-pane -S - -E -` (the `scrollback` blob) returns the normal history FOLLOWED
//! BY THE ALTERNATE SCREEN (its last `window.height`-ish lines), and `capture-pane -a`
//! (the `alternate` blob) returns tmux's saved NORMAL screen: the lines the program
//! covered, which are in neither. So the normal transcript is `scrollback` without its
//! trailing screen, then `alternate`; what the program showed is the end of `scrollback`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::format::{AgentSnapshot, BlobRef, FORMAT, Snapshot, WindowShape};
use super::redact::Redactor;
use crate::layout::Layout;
use crate::session::NotRunning;
use crate::state::{StateDir, create_private_dir};
use crate::supervisor::control::AgentReport;
use crate::tmux::{PaneCapture, Tmux};

/// A snapshot taken but not yet stored.
#[derive(Debug)]
pub struct Captured {
    /// `checksum` is empty until the store writes it.
    pub snapshot: Snapshot,
    /// Contents by SHA-256 (hex), each already redacted.
    pub blobs: Vec<Blob>,
    pub(super) redactor: Redactor,
}

#[derive(Debug)]
pub struct Blob {
    pub sha256: String,
    pub bytes: Vec<u8>,
}

impl Captured {
    /// Records the layout file the session came from (redacted like everything else).
    pub fn with_layout_file(mut self, path: Option<&Path>) -> Self {
        self.snapshot.layout_file = path.map(|p| p.to_string_lossy().into_owned());
        self
    }
}

/// Reads the session of `layout`. States, activity and restarts come from `supervisor`
/// (a running supervisor's report) when given, else from tmux alone (`running`,
/// `exited`, `stopped`), like `orch status`.
pub fn capture(
    layout: &Layout,
    tmux: &Tmux,
    state: &StateDir,
    reason: &str,
    supervisor: Option<&[AgentReport]>,
) -> Result<Captured> {
    capture_reusing(layout, tmux, state, reason, supervisor, &Reuse::new())
}

/// Blob references of panes known not to have changed since an earlier snapshot, by pane
/// id: those panes are not captured again (a coloured capture of a long history is tmux's
/// most expensive command, and it blocks the tmux server while it runs).
pub type Reuse = std::collections::HashMap<String, (Option<BlobRef>, Option<BlobRef>)>;

/// [`capture`], taking the contents of the panes in `reuse` from that earlier snapshot.
pub fn capture_reusing(
    layout: &Layout,
    tmux: &Tmux,
    state: &StateDir,
    reason: &str,
    supervisor: Option<&[AgentReport]>,
    reuse: &Reuse,
) -> Result<Captured> {
    let session = layout.session.as_str();
    let redactor = Redactor::new(&layout.snapshot.redact)?;
    let queue = crate::messaging::queue::Queue::new(&state.root().join(session));
    let panes = tmux.list_panes()?;
    let ours: Vec<&crate::tmux::Pane> = panes
        .iter()
        .filter(|p| p.session == session && p.agent.is_some())
        .collect();
    if !panes.iter().any(|p| p.session == session) {
        return Err(NotRunning {
            session: session.to_owned(),
            socket: tmux.socket_name(),
        }
        .into());
    }
    // The agents' window: the one holding the layout's window name, else the first agent pane's.
    let window_id = ours
        .iter()
        .find(|p| p.window_name == layout.window.as_str())
        .or(ours.first())
        .map(|p| p.window_id.clone());
    let window = match &window_id {
        Some(id) => tmux.window_info(id)?,
        None => crate::tmux::WindowInfo {
            name: layout.window.as_str().to_owned(),
            width: 0,
            height: 0,
            layout: String::new(),
            alternate_on: Vec::new(),
        },
    };

    let snapshots = state
        .session_dir(session)?
        .join(super::store::SNAPSHOTS_DIR);
    create_private_dir(&snapshots)?;
    let temp = TempDir::new(&snapshots)?;

    // Agents in layout order, then panes of agents the layout no longer names.
    let mut agents: Vec<(String, String, Option<String>, Option<&crate::tmux::Pane>)> = layout
        .agents
        .iter()
        .map(|a| {
            let pane = ours
                .iter()
                .find(|p| p.agent.as_deref() == Some(a.name.as_str()))
                .copied();
            (
                a.name.as_str().to_owned(),
                a.role.as_str().to_owned(),
                a.command.clone(),
                pane,
            )
        })
        .collect();
    for p in &ours {
        let name = p.agent.clone().unwrap_or_default();
        if !agents.iter().any(|(n, ..)| *n == name) {
            agents.push((name, p.role.clone().unwrap_or_default(), None, Some(p)));
        }
    }

    let blobs_dir = snapshots.join(super::store::BLOBS_DIR);
    let reusable = |p: &crate::tmux::Pane| -> Option<(Option<BlobRef>, Option<BlobRef>)> {
        let (main, alt) = reuse.get(&p.id)?;
        // Only while the blobs are still stored.
        let stored = |b: &Option<BlobRef>| {
            b.as_ref()
                .is_none_or(|b| blobs_dir.join(&b.sha256).is_file())
        };
        (stored(main) && stored(alt)).then(|| (main.clone(), alt.clone()))
    };
    let mut refs: Vec<(Option<BlobRef>, Option<BlobRef>)> = vec![(None, None); agents.len()];
    let mut files: Vec<(usize, bool, PathBuf)> = Vec::new();
    for (i, (_, _, _, pane)) in agents.iter().enumerate() {
        if let Some(r) = pane.and_then(reusable) {
            refs[i] = r;
            continue;
        }
        if let Some(p) = pane {
            files.push((i, false, temp.path.join(format!("{i}.main"))));
            if window.alternate_on.contains(&p.id) {
                files.push((i, true, temp.path.join(format!("{i}.alt"))));
            }
        }
    }
    let requests: Vec<PaneCapture<'_>> = files
        .iter()
        .filter_map(|(i, alternate, file)| {
            agents[*i].3.map(|p| PaneCapture {
                pane: p.id.as_str(),
                file,
                alternate: *alternate,
            })
        })
        .collect();
    if requests.is_empty() {
        // Nothing changed since the snapshot being reused: no tmux call at all.
    } else if let Err(e) = tmux.capture_to_files(&requests) {
        // A program may have left the alternate screen since we asked; `-a -q` then makes
        // no buffer and the sequence stops. Capture once more without the alternates.
        let main_only: Vec<PaneCapture<'_>> =
            requests.into_iter().filter(|r| !r.alternate).collect();
        tmux.capture_to_files(&main_only)
            .with_context(|| format!("capturing the panes (first attempt: {e})"))?;
        files.retain(|(_, alternate, _)| !alternate);
    }

    let mut blobs: Vec<Blob> = Vec::new();
    for (i, alternate, file) in &files {
        let raw = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let bytes = redactor.redact_bytes(&raw);
        let sha256 = hex(&Sha256::digest(&bytes));
        let blob_ref = BlobRef {
            sha256: sha256.clone(),
            bytes: bytes.len() as u64,
            lines: bytecount_lines(&bytes),
        };
        if *alternate {
            refs[*i].1 = Some(blob_ref);
        } else {
            refs[*i].0 = Some(blob_ref);
        }
        if !blobs.iter().any(|b| b.sha256 == sha256) {
            blobs.push(Blob { sha256, bytes });
        }
    }
    drop(temp);

    let agents = agents
        .into_iter()
        .zip(refs)
        .map(|((name, role, command, pane), (scrollback, alternate))| {
            let report = supervisor.and_then(|r| r.iter().find(|a| a.name == name));
            let (tmux_state, exit_status) = match pane {
                None => ("stopped", None),
                Some(p) if p.dead => ("exited", p.dead_status.or(p.dead_signal.map(|s| 128 + s))),
                Some(_) => ("running", None),
            };
            let last_message = queue.last(&name).map(|m| m.text);
            let pending: Vec<serde_json::Value> = queue
                .pending(&name)
                .unwrap_or_default()
                .iter()
                .filter_map(|m| serde_json::to_value(m).ok())
                .collect();
            AgentSnapshot {
                state: report.map_or_else(|| tmux_state.to_owned(), |r| r.state.clone()),
                activity: report.map_or_else(|| "unknown".to_owned(), |r| r.activity.clone()),
                restarts: report.map_or(0, |r| r.restarts),
                exit_status,
                pane: pane.map(|p| p.id.clone()),
                // tmux reports no path for a dead pane.
                cwd: pane
                    .map(|p| p.current_path.clone())
                    .filter(|c| !c.is_empty()),
                name,
                role,
                command,
                last_message,
                // Messages still waiting go with the snapshot and are queued again on
                // restore.
                pending,
                scrollback,
                alternate,
            }
        })
        .collect();

    let now = std::time::SystemTime::now();
    let created = humantime::format_rfc3339_millis(now).to_string();
    let snapshot = Snapshot {
        format: FORMAT,
        id: new_id(&created),
        session: session.to_owned(),
        created,
        reason: reason.to_owned(),
        layout_file: None,
        layout: serde_json::to_value(layout).context("serializing the layout")?,
        window: WindowShape {
            name: window.name,
            width: window.width,
            height: window.height,
            layout: window.layout,
        },
        agents,
        checksum: String::new(),
    };
    Ok(Captured {
        snapshot,
        blobs,
        redactor,
    })
}

/// `2026-11-21T23:58:00.123Z` → `20261121T235800.123Z-<4 hex>`: sorts by time; the suffix
/// separates snapshots taken in the same millisecond.
pub(super) fn new_id(created: &str) -> String {
    let stamp: String = created.chars().filter(|c| *c != '-' && *c != ':').collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mix = (nanos ^ std::process::id().rotate_left(16)).wrapping_mul(2_654_435_761);
    format!("{stamp}-{:04x}", mix >> 16 & 0xffff)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Lines in a capture: newline-terminated lines plus a final unterminated one.
fn bytecount_lines(bytes: &[u8]) -> u64 {
    let newlines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
    newlines + u64::from(!bytes.is_empty() && bytes.last() != Some(&b'\n'))
}

/// `snapshots/.capture.tmp-<pid>-<nanos>/`, mode 0700 (tmux's client writes the files with
/// our umask), removed when dropped. A killed capture leaves it for the store's cleanup.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(parent: &Path) -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = parent.join(format!(".capture.tmp-{}-{nanos:x}", std::process::id()));
        create_private_dir(&path)?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time() {
        let a = new_id("2026-11-21T23:58:00.123Z");
        assert!(a.starts_with("20261121T235800.123Z-"), "{a}");
        assert_eq!(a.len(), "20261121T235800.123Z-1a2b".len());
        assert!(new_id("2026-11-21T23:58:00.124Z") > a);
    }

    #[test]
    fn line_counts() {
        assert_eq!(bytecount_lines(b""), 0);
        assert_eq!(bytecount_lines(b"a\nb\n"), 2);
        assert_eq!(bytecount_lines(b"a\nb"), 2);
    }
}
