//! Zero-loss handover: snapshots of a whole session, and restoring a session from one.
//!
//! Writing one: [`capture`] reads the session from tmux (and the supervisor's report),
//! redacting secrets; [`store::Store::write`] stores it atomically and applies retention.
//! [`take`] does both. Reading: [`store::list`], [`store::load`].

pub mod capture;
pub mod format;
pub mod redact;
pub mod restore;
pub mod store;

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

pub use capture::{Captured, capture};
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
    let started = Instant::now();
    let captured = capture(layout, tmux, state, reason, supervisor)?.with_layout_file(layout_file);
    let store = Store::open(&state.session_dir(layout.session.as_str())?)?;
    let mut written = store.write(captured, layout.snapshot.keep)?;
    written.duration = started.elapsed();
    Ok(written)
}
