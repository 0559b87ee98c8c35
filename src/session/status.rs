//! `orch status`: one `list-panes` call and one read of the process table, whatever the
//! number of agents.

use serde::Serialize;

use crate::layout::Layout;
use crate::monitor::resources::ProcessTable;
use crate::supervisor::control::AgentReport;
use crate::tmux::{Pane, Tmux};

use super::{NotRunning, agent_panes};

/// `orch status --json`, exactly SPEC §4's shape.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub session: String,
    pub supervisor: SupervisorStatus,
    pub agents: Vec<AgentStatus>,
}

#[derive(Debug, Serialize)]
pub struct SupervisorStatus {
    pub running: bool,
    pub pid: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct AgentStatus {
    pub name: String,
    pub role: String,
    pub pane: Option<String>,
    pub pid: Option<u32>,
    pub state: AgentState,
    pub restarts: u32,
    pub exit_status: Option<i32>,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    /// Read from the agent's screen by the supervisor; `unknown` without one.
    pub activity: String,
    pub uptime_secs: Option<f64>,
    /// Measured from pane output by the supervisor; `null` without one.
    pub last_output_secs_ago: Option<f64>,
}

/// Process states (SPEC §2). Without a supervisor only running, exited (the pane is kept
/// for inspection) and stopped (no pane) can be seen.
pub use crate::supervisor::core::ProcState as AgentState;

/// What a running supervisor knows beyond tmux: its pid and, per agent, the supervised
/// state, restart count and output times.
pub type SupervisorView = (u32, Vec<AgentReport>);

/// Reads the state of every agent of the layout's session.
pub fn status(
    layout: &Layout,
    tmux: &Tmux,
    supervisor: Option<SupervisorView>,
) -> anyhow::Result<StatusReport> {
    let session = layout.session.as_str();
    let panes = tmux.list_panes()?;
    if !panes.iter().any(|p| p.session == session) {
        return Err(NotRunning {
            session: session.to_owned(),
            socket: tmux.socket_name(),
        }
        .into());
    }
    let table = ProcessTable::read()?;
    let mut report = report(layout, &panes, &table);
    if let Some((pid, agents)) = supervisor {
        report.supervisor = SupervisorStatus {
            running: true,
            pid: Some(pid),
        };
        for a in &mut report.agents {
            if let Some(view) = agents.iter().find(|v| v.name == a.name) {
                a.restarts = view.restarts;
                a.activity = view.activity.clone();
                a.last_output_secs_ago =
                    view.last_output_secs_ago.map(|s| (s * 10.0).round() / 10.0);
                // tmux 3.3a does not always record a dead pane's status; the supervisor
                // read it from the process (an adopted agent's too).
                if a.exit_status.is_none() && a.state == AgentState::Exited {
                    a.exit_status = view.exit_status;
                }
                // The supervisor knows states tmux cannot show: backoff, fatal, stalled...
                if let Ok(state) =
                    serde_json::from_value(serde_json::Value::String(view.state.clone()))
                {
                    a.state = state;
                }
            }
        }
    }
    Ok(report)
}

fn report(layout: &Layout, panes: &[Pane], table: &ProcessTable) -> StatusReport {
    let session = layout.session.as_str();
    let ours: Vec<&Pane> = agent_panes(panes, session).collect();
    let mut agents: Vec<AgentStatus> = layout
        .agents
        .iter()
        .map(|a| {
            let pane = ours
                .iter()
                .find(|p| p.agent.as_deref() == Some(a.name.as_str()));
            agent_status(a.name.as_str(), a.role.as_str(), pane.copied(), table)
        })
        .collect();
    // Panes of agents the layout no longer names are still shown: they still run.
    for p in &ours {
        let name = p.agent.as_deref().unwrap_or_default();
        if !layout.agents.iter().any(|a| a.name.as_str() == name) {
            agents.push(agent_status(
                name,
                p.role.as_deref().unwrap_or(""),
                Some(p),
                table,
            ));
        }
    }
    StatusReport {
        session: session.to_owned(),
        supervisor: SupervisorStatus {
            running: false,
            pid: None,
        },
        agents,
    }
}

fn agent_status(name: &str, role: &str, pane: Option<&Pane>, table: &ProcessTable) -> AgentStatus {
    let (state, exit_status, usage) = match pane {
        None => (AgentState::Stopped, None, None),
        Some(p) if p.dead => {
            // A shell reports death by signal N as status 128+N; do the same.
            let status = p.dead_status.or(p.dead_signal.map(|s| 128 + s));
            (AgentState::Exited, status, None)
        }
        Some(p) => (
            AgentState::Running,
            None,
            p.pid.and_then(|pid| table.usage(pid)),
        ),
    };
    AgentStatus {
        name: name.to_owned(),
        role: role.to_owned(),
        pane: pane.map(|p| p.id.clone()),
        pid: pane.and_then(|p| p.pid),
        state,
        restarts: 0,
        exit_status,
        cpu_percent: usage.map(|u| (u.cpu_percent * 10.0).round() / 10.0),
        rss_bytes: usage.map(|u| u.rss_bytes),
        activity: "unknown".to_owned(),
        uptime_secs: usage.map(|u| u.uptime_secs as f64),
        last_output_secs_ago: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_pane(status: Option<i32>, signal: Option<i32>) -> Pane {
        Pane {
            dead: true,
            dead_status: status,
            dead_signal: signal,
            role: Some("BOSS".into()),
            current_path: String::new(),
            ..Pane::sample("%1", "s", Some("a"))
        }
    }

    #[test]
    fn exit_status_and_signals() {
        let table = ProcessTable::read().expect("process table");
        let exited = agent_status("a", "BOSS", Some(&dead_pane(Some(3), None)), &table);
        assert_eq!(
            (exited.state, exited.exit_status),
            (AgentState::Exited, Some(3))
        );
        let killed = agent_status("a", "BOSS", Some(&dead_pane(None, Some(9))), &table);
        assert_eq!(killed.exit_status, Some(137));
        let unknown = agent_status("a", "BOSS", Some(&dead_pane(None, None)), &table);
        assert_eq!(
            (unknown.state, unknown.exit_status),
            (AgentState::Exited, None)
        );
        let missing = agent_status("a", "BOSS", None, &table);
        assert_eq!(
            (missing.state, missing.pane, missing.pid),
            (AgentState::Stopped, None, None)
        );
    }
}
