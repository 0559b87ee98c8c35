//! Zero-loss handover: snapshots of a whole session, and restoring a session from one.

pub mod format;
pub mod restore;
