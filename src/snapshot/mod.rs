//! Zero-loss handover: snapshots of a whole session, and restoring a session from one.
//!
//! Writing one: [`capture`] reads the session from tmux (and the supervisor's report),
//! redacting secrets; [`store::Store::write`] stores it atomically and applies retention.
//! [`take`] does both. Reading: [`store::list`], [`store::load`].

pub mod capture;
pub mod format;
pub mod handover;
pub mod redact;
pub mod restore;
pub mod store;

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

pub use capture::{CaptureStats, Captured, Reuse, capture, capture_reusing};
pub use store::{Listed, Loaded, Store, Written, list, load};

use crate::layout::Layout;
use crate::state::StateDir;
use crate::supervisor::control::AgentReport;
use crate::tmux::Tmux;

/// Captures the session and stores the snapshot; `Written::duration` covers both. Builds
/// on the newest good snapshot of the session: panes whose history only grew since get
/// just their new rows captured.
pub fn take(
    layout: &Layout,
    tmux: &Tmux,
    state: &StateDir,
    reason: &str,
    supervisor: Option<&[AgentReport]>,
    layout_file: Option<&Path>,
) -> Result<Written> {
    take_reusing(
        layout,
        tmux,
        state,
        reason,
        supervisor,
        layout_file,
        &Reuse::default(),
    )
    .map(|t| t.written)
}

/// A snapshot a human asked for (`orch snapshot`, the dashboard's `S`): with the running
/// supervisor's view of the agents when one runs, and journaled.
pub fn take_manual(
    layout: &Layout,
    tmux: &Tmux,
    state: &StateDir,
    layout_file: Option<&Path>,
) -> Result<Written> {
    use crate::supervisor::control::{Request, request};
    let dir = state.root().join(layout.session.as_str());
    let supervisor = match crate::supervisor::store::supervisor_pid(&dir) {
        Some(_) => request(&dir, &Request::Status)
            .ok()
            .flatten()
            .map(|r| r.agents),
        None => None,
    };
    let written = take(
        layout,
        tmux,
        state,
        "manual",
        supervisor.as_deref(),
        layout_file,
    )?;
    written.record(&dir, "manual")?;
    Ok(written)
}

/// What [`take_reusing`] did.
pub struct Taken {
    pub written: Written,
    /// This snapshot's pane contents, for the next one to build on.
    pub refs: Reuse,
}

/// [`take`], building on `reuse` (see [`capture::Reuse`]); with nothing in it, on the
/// newest good snapshot on disk.
pub fn take_reusing(
    layout: &Layout,
    tmux: &Tmux,
    state: &StateDir,
    reason: &str,
    supervisor: Option<&[AgentReport]>,
    layout_file: Option<&Path>,
    reuse: &Reuse,
) -> Result<Taken> {
    let started = Instant::now();
    let session = layout.session.as_str();
    let from_disk;
    let reuse = if reuse.previous.is_empty() {
        from_disk = restore::load(state, session, &restore::Which::Latest)
            .map(|snap| Reuse {
                verified: true,
                ..Reuse::from_snapshot(&snap)
            })
            .unwrap_or_default();
        &from_disk
    } else {
        reuse
    };
    let captured = capture_reusing(layout, tmux, state, reason, supervisor, reuse)?
        .with_layout_file(layout_file);
    let refs = Reuse::from_snapshot(&captured.snapshot);
    let store = Store::open(&state.session_dir(session)?)?;
    let mut written = store.write(captured, layout.snapshot.keep)?;
    written.duration = started.elapsed();
    Ok(Taken { written, refs })
}

impl Written {
    /// The `snapshot_written` event for this snapshot.
    pub fn event(&self, reason: &str) -> crate::supervisor::event::Event {
        use crate::supervisor::event::{Event, EventKind};
        Event::new(EventKind::SnapshotWritten, None)
            .with("id", self.id.as_str())
            .with("reason", reason)
            .with("path", self.path.to_string_lossy().as_ref())
            .with("bytes", self.bytes)
            .with("new_blob_bytes", self.new_blob_bytes)
            .with("reused_panes", self.stats.kept)
            .with("appended_panes", self.stats.appended)
            .with(
                "duration_ms",
                (self.duration.as_secs_f64() * 10_000.0).round() / 10.0,
            )
    }

    /// Appends the `snapshot_written` event to the session's journal (for snapshots
    /// written by a command rather than the supervisor).
    pub fn record(&self, session_dir: &Path, reason: &str) -> Result<()> {
        let mut journal = crate::supervisor::store::Journal::open(session_dir)?;
        journal
            .append(&self.event(reason), std::time::SystemTime::now())
            .map(drop)
    }
}

/// The copy of a queued message that the newest good snapshot of the session holds, by
/// its queue file name, with that snapshot's id: how a queue file that can no longer be
/// read gets its message back.
pub fn queued_copy(
    session_dir: &Path,
    agent: &str,
    file_name: &str,
) -> Option<(String, crate::messaging::queue::Message)> {
    let loaded = store::load(session_dir, "latest").ok()?;
    let snap = loaded.snapshot;
    let a = snap.agents.iter().find(|a| a.name == agent)?;
    a.pending
        .iter()
        .filter_map(|v| serde_json::from_value::<crate::messaging::queue::Message>(v.clone()).ok())
        .find(|m| m.to == agent && m.file_name() == file_name)
        .map(|m| (snap.id.clone(), m))
}
