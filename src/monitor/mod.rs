//! Watching agents: resource usage of each agent's process tree, what each agent is
//! doing as its screen shows it, and pure detectors over what is observed (memory trend,
//! pane output).

pub mod activity;
pub mod output;
pub mod resources;
pub mod trend;
