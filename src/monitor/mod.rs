//! Watching agents: resource usage of each agent's process tree, and what each agent is
//! doing as its screen shows it.

pub mod activity;
pub mod resources;
