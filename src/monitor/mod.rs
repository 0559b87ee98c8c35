//! Watching agents: resource usage of each agent's process tree.

pub mod resources;
