//! Watching agents: resource usage of each agent's process tree, and pure detectors over
//! what is observed (memory trend, pane output).

pub mod output;
pub mod resources;
pub mod trend;
