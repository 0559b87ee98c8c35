//! `orch status [--json]`.

use std::process::ExitCode;

use anyhow::Result;

use super::{Context, out};
use crate::layout::Size;
use crate::session::{self, StatusReport};
use crate::supervisor::control::{Request, request};
use crate::supervisor::store::supervisor_pid;

pub(super) fn run(ctx: &Context, json: bool) -> Result<ExitCode> {
    let layout = ctx.layout()?;
    let tmux = ctx.tmux();
    let dir = ctx.state()?.root().join(layout.session.as_str());
    let supervisor = match supervisor_pid(&dir) {
        // It holds the lock, so it runs, answering or not: never "not running".
        Some(pid) => match request(&dir, &Request::Status) {
            Ok(Some(r)) if r.ok => Some((pid, r.agents)),
            Ok(Some(r)) => {
                let why = r.error.unwrap_or_default();
                eprintln!("orch: the supervisor (pid {pid}) runs but did not report: {why}");
                Some((pid, Vec::new()))
            }
            Ok(None) | Err(_) => {
                eprintln!(
                    "orch: the supervisor (pid {pid}) runs but did not answer on its control socket; states below are tmux's"
                );
                Some((pid, Vec::new()))
            }
        },
        None => None,
    };
    let report = session::status(&layout, &tmux, supervisor)?;
    // Never silent about messages that could not be read (stderr: the JSON keeps its shape).
    let queue = crate::messaging::queue::Queue::new(&dir);
    for a in &layout.agents {
        let name = a.name.as_str();
        let (unreadable, set_aside) = (
            queue.scan(name).map_or(0, |(_, bad)| bad.len()),
            queue.corrupt_count(name),
        );
        if unreadable + set_aside > 0 {
            eprintln!(
                "orch: {name}: {} queued message file(s) could not be read ({} set aside in {}); see `orch events`",
                unreadable + set_aside,
                set_aside,
                dir.join("queue").join(name).join("corrupt").display()
            );
        }
    }
    if json {
        out!("{}", serde_json::to_string(&report)?)?;
    } else {
        print_table(&report, &tmux.socket_name())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(r: &StatusReport, socket: &str) -> std::io::Result<()> {
    let supervisor = match r.supervisor.pid {
        Some(pid) if r.supervisor.running => format!("running (pid {pid})"),
        _ => "not running".to_owned(),
    };
    out!(
        "session {} on tmux socket {socket}; supervisor {supervisor}",
        r.session
    )?;
    let header = [
        "AGENT", "ROLE", "PANE", "PID", "STATE", "EXIT", "RESTARTS", "CPU%", "MEM", "UPTIME",
        "ACTIVITY",
    ];
    let dash = || "-".to_owned();
    let rows: Vec<[String; 11]> = r
        .agents
        .iter()
        .map(|a| {
            [
                a.name.clone(),
                a.role.clone(),
                a.pane.clone().unwrap_or_else(dash),
                a.pid.map_or_else(dash, |p| p.to_string()),
                a.state.as_str().to_owned(),
                a.exit_status.map_or_else(dash, |s| s.to_string()),
                a.restarts.to_string(),
                a.cpu_percent.map_or_else(dash, |c| format!("{c:.1}")),
                a.rss_bytes.map_or_else(dash, |b| Size(b).to_string()),
                a.uptime_secs.map_or_else(dash, |s| {
                    humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string()
                }),
                a.activity.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    out!("{}", line(&header.map(str::to_owned)))?;
    for row in &rows {
        out!("{}", line(row))?;
    }
    Ok(())
}
