//! The supervisor: one per session, it watches every agent and applies the layout's
//! policies. `core` decides (pure); `run` observes tmux and the processes, feeds `core`,
//! and carries out its effects.

pub mod background;
pub mod control;
pub mod core;
mod deaths;
pub mod event;
mod fds;
mod gate;
pub mod health;
mod layout_watch;
mod queues;
mod run;
pub mod store;

pub use run::{SuperviseOptions, supervise};
