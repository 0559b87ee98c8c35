//! Messages between agents (SPEC §5.4): who may message whom ([`acl`]), a persistent
//! per-agent queue ([`queue`]), confirmed delivery into a pane ([`deliver`]) and a
//! hash-chained audit log of everything that happened to a message ([`audit`]).
//!
//! `acl`, the queue ordering and the confirmation matching are pure; only `deliver` runs
//! tmux (through [`crate::tmux::Tmux`]) and only `queue` and `audit` touch files.

pub mod acl;
pub mod audit;
pub mod deliver;
pub mod drain;
pub mod queue;

/// File names inside `<state-dir>/<session>/`.
pub const QUEUE_DIR: &str = "queue";
pub const AUDIT_FILE: &str = "audit.jsonl";
