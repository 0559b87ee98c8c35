//! The supervisor: one per session, it watches every agent and applies the layout's
//! policies. `core` decides (pure); the shell around it observes and acts.

pub mod core;
pub mod event;
