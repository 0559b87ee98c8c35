//! The dashboard (`orch`, `orch dashboard`): a full-screen view of one session, driven
//! from the keyboard, a client of the session's supervisor.
//!
//! - [`app`]: the state and `update(state, input) -> intents`, pure;
//! - [`view`]: drawing, a read-only projection of the state;
//! - [`run`]: the one event loop (terminal input, the supervisor's subscription, the
//!   results of intents) that draws only when something changed, and carries intents out
//!   through the same domain functions the commands call.
//!
//! Quitting never stops the agents or their supervision: the supervisor runs on its own
//! (started in the background when none runs) and the dashboard only subscribes to it.

pub mod app;
mod run;
pub mod view;

pub use run::{Options, run};
