//! One row of `list-panes -a`: what orch knows about a pane from one tmux call.

/// Fields separated by tabs; the free-form path comes last so a tab inside it cannot shift
/// the others.
pub const PANE_FORMAT: &str = "#{session_name}\t#{window_id}\t#{window_name}\t#{pane_id}\t#{pane_pid}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_dead_signal}\t#{pane_in_mode}\t#{pane_pipe}\t#{@orch_agent}\t#{@orch_role}\t#{pane_current_path}";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pane {
    pub session: String,
    pub window_id: String,
    pub window_name: String,
    /// `%N`, stable for the pane's life.
    pub id: String,
    pub pid: Option<u32>,
    pub dead: bool,
    /// Exit status of a dead pane that exited normally.
    pub dead_status: Option<i32>,
    /// Signal that killed a dead pane (tmux leaves the status empty then).
    pub dead_signal: Option<i32>,
    pub in_mode: bool,
    /// Whether the pane's output is piped (`pipe-pane`), i.e. reaches its transcript.
    pub pipe: bool,
    /// The `@orch_agent` pane option: which agent this pane is, if orch made it.
    pub agent: Option<String>,
    pub role: Option<String>,
    pub current_path: String,
}

impl Pane {
    pub(super) fn parse(line: &str) -> Option<Pane> {
        let mut f = line.splitn(13, '\t');
        let mut next = || f.next();
        let session = next()?.to_owned();
        let window_id = next()?.to_owned();
        let window_name = next()?.to_owned();
        let id = next()?.to_owned();
        let pid = next()?.parse().ok();
        let dead = next()? == "1";
        let dead_status = next()?.parse().ok();
        let dead_signal = next()?.parse().ok();
        let in_mode = next()? == "1";
        let pipe = next()? == "1";
        let agent = Some(next()?.to_owned()).filter(|s| !s.is_empty());
        let role = Some(next()?.to_owned()).filter(|s| !s.is_empty());
        let current_path = next()?.to_owned();
        Some(Pane {
            session,
            window_id,
            window_name,
            id,
            pid,
            dead,
            dead_status,
            dead_signal,
            in_mode,
            pipe,
            agent,
            role,
            current_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_live_and_a_dead_pane() {
        let live =
            Pane::parse("org9\t@1\tagents\t%3\t5151\t0\t\t\t0\t1\tworker1\tWORKER\t/tmp/a\tb")
                .expect("row");
        assert_eq!(live.id, "%3");
        assert_eq!(live.pid, Some(5151));
        assert!(!live.dead);
        assert!(live.pipe);
        assert_eq!(live.agent.as_deref(), Some("worker1"));
        assert_eq!(live.current_path, "/tmp/a\tb");
        let dead = Pane::parse("org9\t@1\tagents\t%4\t5152\t1\t\t9\t0\t0\t\t\t/").expect("row");
        assert!(dead.dead);
        assert!(!dead.pipe);
        assert_eq!(dead.dead_status, None);
        assert_eq!(dead.dead_signal, Some(9));
        assert_eq!(dead.agent, None);
        assert!(Pane::parse("garbage").is_none());
    }
}
