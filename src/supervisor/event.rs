//! Supervisor events: what `orch supervise` prints as JSON lines and appends to
//! `<state-dir>/<session>/events.jsonl`.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};

/// SPEC §4's event kinds (those the supervisor emits so far).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    SessionUp,
    SupervisorStarted,
    SupervisorStopped,
    AgentStarted,
    AgentExited,
    AgentRestarted,
    AgentBackoff,
    AgentFatal,
    AgentStopped,
    AgentStalled,
    AgentRecovered,
    Escalated,
    ErrorStorm,
    MemoryLeak,
    LimitExceeded,
    ConfigReloaded,
    ConfigRejected,
    SnapshotWritten,
    SnapshotFailed,
    Restored,
    MessageQueued,
    MessageDelivered,
    MessageFailed,
    MessageRefused,
    ActivityChanged,
    ActivityUnrecognised,
    /// The tmux server died with every agent in it (no agent is respawned into a new one).
    ServerDied,
    /// Processes of a previous incarnation that outlived their tmux server were stopped.
    StaleProcessesStopped,
    CheckStarted,
    CheckPassed,
    CheckFailed,
    CheckFlaky,
    RollbackProposed,
    RollbackExecuted,
    RollbackRejected,
    RollbackUndone,
    /// A queue file could not be read: set aside, and its message recovered from a
    /// snapshot when one holds it.
    MessageCorrupt,
    /// Writing one kind of state file failed (said once until it works again).
    WriteFailed,
    /// Writing that kind of file works again.
    WriteRecovered,
}

/// One event. `ts` is stamped by the shell when the event is written: the pure core
/// has no wall clock.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl Event {
    pub fn new(kind: EventKind, agent: Option<&str>) -> Self {
        Self {
            kind,
            agent: agent.map(str::to_owned),
            fields: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    /// The JSON line, `ts` first as SPEC §4 shows it.
    pub fn to_line(&self, at: SystemTime) -> String {
        let mut obj = Map::new();
        obj.insert(
            "ts".into(),
            Value::String(humantime::format_rfc3339_millis(at).to_string()),
        );
        if let Ok(Value::Object(rest)) = serde_json::to_value(self) {
            obj.extend(rest);
        }
        Value::Object(obj).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shape() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_300_000_123);
        let line = Event::new(EventKind::AgentExited, Some("worker1"))
            .with("exit_status", 3)
            .to_line(at);
        assert_eq!(
            line,
            r#"{"ts":"2026-11-21T22:26:40.123Z","kind":"agent_exited","agent":"worker1","exit_status":3}"#
        );
    }
}
