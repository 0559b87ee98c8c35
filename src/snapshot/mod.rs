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

pub use capture::{Captured, Reuse, capture, capture_reusing};
pub use store::{Listed, Loaded, Store, Written, list, load};

use crate::layout::Layout;
use crate::state::StateDir;
use crate::supervisor::control::AgentReport;
use crate::tmux::Tmux;

/// Captures the session and stores the snapshot; `Written::duration` covers both.
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
        &Reuse::new(),
    )
    .map(|t| t.written)
}

/// What [`take_reusing`] did.
pub struct Taken {
    pub written: Written,
    /// This snapshot's pane contents, to reuse for panes that do not change before the
    /// next one.
    pub refs: Reuse,
    /// Panes whose contents came from `reuse` instead of a new capture.
    pub reused: usize,
}

/// [`take`], reusing the contents of unchanged panes (see [`capture::Reuse`]).
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
    let captured = capture_reusing(layout, tmux, state, reason, supervisor, reuse)?
        .with_layout_file(layout_file);
    let mut refs = Reuse::new();
    let mut reused = 0;
    for a in &captured.snapshot.agents {
        if let Some(pane) = &a.pane {
            let r = (a.scrollback.clone(), a.alternate.clone());
            if reuse.get(pane) == Some(&r) {
                reused += 1;
            }
            refs.insert(pane.clone(), r);
        }
    }
    let store = Store::open(&state.session_dir(layout.session.as_str())?)?;
    let mut written = store.write(captured, layout.snapshot.keep)?;
    written.duration = started.elapsed();
    Ok(Taken {
        written,
        refs,
        reused,
    })
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
