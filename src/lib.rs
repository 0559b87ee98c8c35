//! orch: a tmux-native orchestrator for teams of AI coding agents.
//!
//! Modules by domain: `layout` (the YAML schema), `tmux` (the only code that runs tmux),
//! `session` (bring a session up and down, report it), `supervisor` (one per session:
//! restarts, stalls, events), `monitor` (resources, activity, memory trend, output lines and
//! error storms), `profile` (what orch knows of each agent CLI, as data), `gate` (the
//! quality gate and rollback), `git` (the one door to git2: agent worktrees, and refs,
//! commits and reverts for the gate), `process` (signals), `state` (the state dir),
//! `cli`, `agent_sim` (the simulated agent of the demo and tests) and `demo` (the simulated
//! organisation of `orch demo`).

pub mod agent_sim;
pub mod cli;
pub mod demo;
pub mod digest;
pub mod error;
pub mod gate;
pub mod git;
pub mod layout;
pub mod logging;
pub mod messaging;
pub mod monitor;
pub mod process;
pub mod profile;
pub mod session;
pub mod snapshot;
pub mod state;
pub mod supervisor;
pub mod tmux;
pub mod tui;
