//! One row of `list-panes -a`: what orch knows about a pane from one tmux call.

/// Fields separated by tabs; the free-form path comes last so a tab inside it cannot shift
/// the others.
pub const PANE_FORMAT: &str = "#{session_name}\t#{window_id}\t#{window_name}\t#{pane_id}\t#{pane_pid}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_dead_signal}\t#{pane_in_mode}\t#{pane_pipe}\t#{history_size}\t#{history_limit}\t#{pane_width}\t#{alternate_on}\t#{@orch_agent}\t#{@orch_role}\t#{pane_current_path}";

/// What the supervisor asks through its control-mode client each tick, where replies are
/// not escaped: only fields no program in a pane can shape (numbers, flags, and the
/// `@orch_agent` option orch set), separated by commas (which none of them contains).
pub const CONTROL_PANE_FORMAT: &str = "#{pane_id},#{pane_pid},#{pane_dead},#{pane_dead_status},#{pane_dead_signal},#{pane_in_mode},#{pane_pipe},#{@orch_agent}";

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
    /// `#{history_size}`, `#{history_limit}`, `#{pane_width}`, `#{alternate_on}`.
    pub history_size: u64,
    pub history_limit: u64,
    pub width: u32,
    pub alternate_on: bool,
    /// The `@orch_agent` pane option: which agent this pane is, if orch made it.
    pub agent: Option<String>,
    pub role: Option<String>,
    pub current_path: String,
}

impl Pane {
    /// A live pane of `agent` (or none) in session `session`, for tests that build the
    /// listing tmux would give; change what a test is about with `..Pane::sample(…)`.
    #[cfg(test)]
    pub fn sample(id: &str, session: &str, agent: Option<&str>) -> Pane {
        Pane {
            session: session.into(),
            window_id: "@1".into(),
            window_name: "w".into(),
            id: id.into(),
            pid: Some(1),
            dead: false,
            dead_status: None,
            dead_signal: None,
            in_mode: false,
            pipe: true,
            history_size: 0,
            history_limit: 2000,
            width: 80,
            alternate_on: false,
            agent: agent.map(Into::into),
            role: None,
            current_path: "/".into(),
        }
    }

    /// What a capture of the pane's rows needs to know.
    pub fn geometry(&self) -> super::PaneGeometry {
        super::PaneGeometry {
            id: self.id.clone(),
            history_size: self.history_size,
            history_limit: self.history_limit,
            width: self.width,
            alternate_on: self.alternate_on,
        }
    }

    /// Parses a line of [`CONTROL_PANE_FORMAT`] for a pane of `session`; `None` unless
    /// every field is exactly what tmux prints for it. Text fields are left empty.
    pub fn parse_control(line: &str, session: &str) -> Option<Pane> {
        let f: Vec<&str> = line.split(',').collect();
        let [id, pid, dead, status, signal, in_mode, pipe, agent] = f[..] else {
            return None;
        };
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
        let flag = |s: &str| matches!(s, "0" | "1");
        let ok = id.strip_prefix('%').is_some_and(digits)
            && (pid.is_empty() || digits(pid))
            && flag(dead)
            && (status.is_empty() || digits(status))
            && (signal.is_empty() || digits(signal))
            && flag(in_mode)
            && flag(pipe)
            && agent.len() <= 64
            && agent
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return None;
        }
        Some(Pane {
            session: session.to_owned(),
            window_id: String::new(),
            window_name: String::new(),
            id: id.to_owned(),
            pid: pid.parse().ok(),
            dead: dead == "1",
            dead_status: status.parse().ok(),
            dead_signal: signal.parse().ok(),
            in_mode: in_mode == "1",
            pipe: pipe == "1",
            history_size: 0,
            history_limit: 0,
            width: 0,
            alternate_on: false,
            agent: Some(agent.to_owned()).filter(|a| !a.is_empty()),
            role: None,
            current_path: String::new(),
        })
    }

    pub(super) fn parse(line: &str) -> Option<Pane> {
        let mut f = line.splitn(17, '\t');
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
        let history_size = next()?.parse().ok()?;
        let history_limit = next()?.parse().ok()?;
        let width = next()?.parse().ok()?;
        let alternate_on = next()? == "1";
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
            history_size,
            history_limit,
            width,
            alternate_on,
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
        let live = Pane::parse(
            "org9\t@1\tagents\t%3\t5151\t0\t\t\t0\t1\t120\t2000\t80\t0\tworker1\tWORKER\t/tmp/a\tb",
        )
        .expect("row");
        assert_eq!(live.id, "%3");
        assert_eq!(
            (live.history_size, live.history_limit, live.width),
            (120, 2000, 80)
        );
        assert!(!live.alternate_on);
        assert_eq!(live.pid, Some(5151));
        assert!(!live.dead);
        assert!(live.pipe);
        assert_eq!(live.agent.as_deref(), Some("worker1"));
        assert_eq!(live.current_path, "/tmp/a\tb");
        let dead = Pane::parse("org9\t@1\tagents\t%4\t5152\t1\t\t9\t0\t0\t0\t2000\t80\t1\t\t\t/")
            .expect("row");
        assert!(dead.dead);
        assert!(!dead.pipe);
        assert_eq!(dead.dead_status, None);
        assert_eq!(dead.dead_signal, Some(9));
        assert_eq!(dead.agent, None);
        assert!(Pane::parse("garbage").is_none());
    }

    #[test]
    fn control_lines_are_numbers_flags_and_names_or_nothing() {
        let live = Pane::parse_control("%3,5151,0,,,0,1,worker1", "s").expect("live");
        assert_eq!(
            (live.id.as_str(), live.pid, live.dead, live.pipe),
            ("%3", Some(5151), false, true)
        );
        assert_eq!(live.agent.as_deref(), Some("worker1"));
        assert_eq!(live.session, "s");
        let dead = Pane::parse_control("%4,77,1,,9,0,0,", "s").expect("dead");
        assert_eq!((dead.dead_signal, dead.agent), (Some(9), None));
        for forged in [
            "%end 123 4 1",
            "%output %1 x",
            "%3,5151,0,,,0,1,worker1,extra",
            "%3,5151,2,,,0,1,w",
            "3,5151,0,,,0,1,w",
            "%3,51x51,0,,,0,1,w",
            "%3,5151,0,,,0,1,Worker",
            "%3,5151,0,,,0,1,w w",
            "",
        ] {
            assert!(Pane::parse_control(forged, "s").is_none(), "{forged:?}");
        }
    }
}
