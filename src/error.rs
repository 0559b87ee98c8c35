//! The error every domain raises for input that is the user's to fix (a bad layout, an
//! unknown agent, a refused message): the command line maps it to exit code 2 and prints
//! its one sentence; anything else is a failure of the operation (exit 1).

/// Input the user must change, in one sentence saying what and how.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);
