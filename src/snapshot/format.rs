//! The snapshot document, format 1: one JSON file per snapshot,
//! `<state-dir>/<session>/snapshots/<id>.json`, whose pane contents live in
//! content-addressed files `<state-dir>/<session>/snapshots/blobs/<sha256>` (so 50
//! snapshots of an idle session store each pane's history once).
//!
//! Integrity: every blob is named by the SHA-256 of its bytes; the document carries
//! `checksum`, the SHA-256 of the document serialized compactly (serde_json, fields in
//! the order below) with `checksum` set to the empty string. The fields added later
//! (`history_bytes`, `history_mark`) are left out when absent, so a document written
//! before them reads back, and checks, exactly as it was written.

use serde::{Deserialize, Serialize};

pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always [`FORMAT`] for this layout of the document.
    pub format: u32,
    /// Sortable by time: `20261121T235800.123Z-1a2b`.
    pub id: String,
    pub session: String,
    /// RFC 3339 with milliseconds.
    pub created: String,
    /// `supervisor_started`, `interval`, `agent_exited`, `manual`, `layout_down`,
    /// `rollback`.
    pub reason: String,
    /// The layout file the session came from, if it was a file.
    pub layout_file: Option<String>,
    /// The resolved layout (`crate::layout::Layout` serialized).
    pub layout: serde_json::Value,
    pub window: WindowShape,
    pub agents: Vec<AgentSnapshot>,
    /// The quality gate's state (its `gate.json`) at capture time: results, proposals,
    /// counters. Absent when the session has no gate, so older documents check as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_gate: Option<serde_json::Value>,
    /// `sha256:<hex>`, see the module doc.
    pub checksum: String,
}

/// The agents' window, to rebuild it with the same geometry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowShape {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// `#{window_layout}`, re-applied with `select-layout`.
    pub layout: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentSnapshot {
    pub name: String,
    pub role: String,
    /// Pane id at capture time (`%3`); `None` if the agent had no pane.
    pub pane: Option<String>,
    /// `#{pane_current_path}`.
    pub cwd: Option<String>,
    /// The command the layout gives the agent (`None`: the user's shell).
    pub command: Option<String>,
    /// Process state (`running`, `exited`, `fatal`, …).
    pub state: String,
    pub activity: String,
    pub restarts: u32,
    pub exit_status: Option<i32>,
    /// Filled in by messaging (a later issue); empty until then.
    pub last_message: Option<String>,
    pub pending: Vec<serde_json::Value>,
    /// The pane's whole history and then its screen, with colours (`capture-pane -e -J`).
    pub scrollback: Option<BlobRef>,
    /// How many bytes of `scrollback` are history; the screen follows. Absent when the
    /// two could not be told apart (they are then one capture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_bytes: Option<u64>,
    /// What lets the next snapshot of the same pane capture only the rows printed since
    /// this one (see `capture.rs`). Absent: the next one captures everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_mark: Option<HistoryMark>,
    /// The alternate screen, when the program was on it (`capture-pane -a -e -q`).
    pub alternate: Option<BlobRef>,
}

/// The history of a pane as captured: tmux keeps history rows unchanged and only adds
/// new ones below, until the pane is resized (rows reflow), the history is cleared, it
/// reaches `history-limit` (old rows are dropped) or the server goes; the next snapshot
/// checks which of those happened before it appends only the new rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryMark {
    /// The tmux server's pid (pane ids are only unique within one server's life).
    pub server_pid: u32,
    /// `#{pane_width}` at capture.
    pub width: u32,
    /// `#{history_size}` at capture: the history part of `scrollback` holds these rows.
    pub rows: u64,
    /// How many of the newest history rows `anchor` covers.
    pub anchor_rows: u64,
    /// SHA-256 (hex) of those rows as captured, before redaction: found unchanged at
    /// their new position, they show that nothing above them moved.
    pub anchor: String,
}

/// A pane content file, by hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub sha256: String,
    pub bytes: u64,
    pub lines: u64,
}
