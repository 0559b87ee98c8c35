//! The dashboard's state, and what each input does to it: [`update`] is pure — keys,
//! mouse, the supervisor's lines and the answers to earlier intents go in; the state
//! changes and [`Intent`]s (things to do: a restart, a message, an approval) come out.
//! The event loop carries the intents out and feeds their results back as inputs, so
//! everything here is tested without a terminal.

use std::collections::VecDeque;

use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::text::Text;
use serde_json::Value;

use crate::gate::ProposalDetails;
use crate::gate::plan::Risk;
use crate::gate::service::Call;
use crate::gate::state::{Proposal, Status};
use crate::session::agent::Action;
use crate::supervisor::control::{AgentView, Line};

/// Memory samples kept per agent for its sparkline.
pub const RSS_SAMPLES: usize = 40;
/// Events and alerts kept.
const EVENTS_KEPT: usize = 500;
const ALERTS_KEPT: usize = 100;

/// Event kinds that are alerts: something a human should look at.
pub const ALERT_KINDS: &[&str] = &[
    "agent_fatal",
    "agent_stalled",
    "error_storm",
    "memory_leak",
    "limit_exceeded",
    "message_failed",
    "message_corrupt",
    "escalated",
    "server_died",
    "write_failed",
    "activity_unrecognised",
    "check_failed",
];

/// One agent's card.
#[derive(Clone, Debug, PartialEq)]
pub struct Card {
    pub view: AgentView,
    /// Its memory over time, oldest first, one sample per change the supervisor sent.
    pub rss: VecDeque<u64>,
}

/// One event as the events and alerts panels show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// `HH:MM:SS` of its timestamp.
    pub time: String,
    pub kind: String,
    pub agent: Option<String>,
    /// The fields worth a glance (reason, exit status, pattern, …).
    pub detail: String,
}

/// The selected agent's pane as the preview shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Preview {
    pub agent: Option<String>,
    /// The `output_seq` it was read at.
    pub seq: u64,
    /// Rows back into the history (0: the live screen).
    pub scroll: u16,
    pub text: Text<'static>,
}

/// How the agents are ordered (`o` cycles): those that need a human first, then the
/// layout's order, by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    NeedsYou,
    Name,
    Cpu,
    Memory,
    Restarts,
}

impl Sort {
    pub fn label(self) -> &'static str {
        match self {
            Sort::NeedsYou => "needs you",
            Sort::Name => "name",
            Sort::Cpu => "cpu",
            Sort::Memory => "memory",
            Sort::Restarts => "restarts",
        }
    }

    fn next(self) -> Sort {
        match self {
            Sort::NeedsYou => Sort::Name,
            Sort::Name => Sort::Cpu,
            Sort::Cpu => Sort::Memory,
            Sort::Memory => Sort::Restarts,
            Sort::Restarts => Sort::NeedsYou,
        }
    }
}

/// What the keyboard is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Help,
    /// Typing a message: to one agent, or to all (`None`).
    Compose {
        to: Option<String>,
        text: String,
    },
    /// Typing the filter.
    Filter,
    /// The full details (and diff) of a proposal, scrolled.
    Diff {
        scroll: u16,
    },
    /// An action that asks once more.
    Confirm(Confirm),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirm {
    /// A high or critical rollback.
    Approve { id: String, risk: Risk },
    /// Keys that answer an agent CLI's own approval prompt.
    Answer {
        agent: String,
        pane: String,
        approve: bool,
        keys: Vec<String>,
    },
}

/// What the status bar says after an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusLine {
    pub text: String,
    pub error: bool,
}

/// Something for the event loop to do; its result comes back as [`Input::Done`] (or as
/// the input named).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    Control {
        agent: String,
        action: Action,
    },
    /// A message to one agent, or to all (`None`).
    Send {
        to: Option<String>,
        text: String,
    },
    Snapshot,
    /// A gate call; a list comes back as [`Input::Proposals`], details as
    /// [`Input::Details`], the rest as [`Input::Done`].
    Gate(Call),
    /// Show the pane to the user (switch to it inside tmux, else attach until detached).
    Visit {
        pane: String,
    },
    /// Answer an agent CLI's prompt with its profile's keys.
    Keys {
        agent: String,
        pane: String,
        keys: Vec<String>,
    },
    /// Read the agent's pane for the preview: `height` rows ending `scroll` rows back.
    Preview {
        agent: String,
        pane: String,
        scroll: u16,
        height: u16,
        seq: u64,
    },
    Quit,
}

/// Everything that can happen to the dashboard.
#[derive(Clone, Debug)]
pub enum Input {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize(u16, u16),
    /// A line from the supervisor's subscription.
    Line(String),
    Preview {
        agent: String,
        seq: u64,
        scroll: u16,
        text: Text<'static>,
    },
    Proposals(Vec<Proposal>),
    Details(Box<ProposalDetails>),
    /// An intent's outcome, in one sentence.
    Done(Result<String, String>),
    /// The user is back from a pane (the terminal is the dashboard's again).
    Back(Result<String, String>),
    /// The wall clock (Unix ms): uptimes are shown in minutes, so it ticks once a minute.
    Clock(u64),
    /// The subscription ended.
    Lost(String),
}

/// The whole dashboard.
#[derive(Clone, Debug)]
pub struct App {
    pub session: String,
    pub supervisor_pid: Option<u32>,
    pub connected: bool,
    pub server_down: bool,
    /// In layout order.
    pub agents: Vec<Card>,
    pub events: VecDeque<Logged>,
    pub alerts: VecDeque<Logged>,
    /// Pending proposals, oldest first.
    pub proposals: Vec<Proposal>,
    /// The current proposal in full (for the rollback panel and the diff view).
    pub details: Option<Box<ProposalDetails>>,
    pub selected: Option<String>,
    pub preview: Preview,
    pub mode: Mode,
    pub filter: String,
    pub sort: Sort,
    pub status: Option<StatusLine>,
    pub now_ms: u64,
    /// The terminal's size.
    pub width: u16,
    pub height: u16,
    /// Colours allowed (`NO_COLOR` unset).
    pub color: bool,
    /// Ring the terminal bell once (a new approval).
    pub bell: bool,
    pub quit: bool,
}

impl App {
    pub fn new(session: &str, width: u16, height: u16, color: bool) -> App {
        App {
            session: session.to_owned(),
            supervisor_pid: None,
            connected: false,
            server_down: false,
            agents: Vec::new(),
            events: VecDeque::new(),
            alerts: VecDeque::new(),
            proposals: Vec::new(),
            details: None,
            selected: None,
            preview: Preview::default(),
            mode: Mode::Normal,
            filter: String::new(),
            sort: Sort::NeedsYou,
            status: None,
            now_ms: 0,
            width,
            height,
            color,
            bell: false,
            quit: false,
        }
    }

    pub fn card(&self, name: &str) -> Option<&Card> {
        self.agents.iter().find(|c| c.view.name == name)
    }

    /// The agents in the order shown (by default those that need a human first: waiting,
    /// fatal, stalled, named in a pending rollback; then the layout's order), only those
    /// the filter matches.
    pub fn order(&self) -> Vec<&Card> {
        let needle = self.filter.to_lowercase();
        let mut shown: Vec<(usize, &Card)> = self
            .agents
            .iter()
            .filter(|c| {
                needle.is_empty()
                    || [&c.view.name, &c.view.role, &c.view.state, &c.view.activity]
                        .iter()
                        .any(|f| f.to_lowercase().contains(&needle))
            })
            .enumerate()
            .collect();
        match self.sort {
            Sort::NeedsYou => shown.sort_by_key(|(i, c)| (self.urgency(c), *i)),
            Sort::Name => shown.sort_by(|(_, a), (_, b)| a.view.name.cmp(&b.view.name)),
            Sort::Cpu => shown.sort_by(|(_, a), (_, b)| {
                let cpu = |c: &Card| c.view.cpu_percent.unwrap_or(0.0);
                cpu(b).total_cmp(&cpu(a))
            }),
            Sort::Memory => shown.sort_by_key(|(_, c)| std::cmp::Reverse(c.view.rss_bytes)),
            Sort::Restarts => shown.sort_by_key(|(_, c)| std::cmp::Reverse(c.view.restarts)),
        }
        shown.into_iter().map(|(_, c)| c).collect()
    }

    /// 0 (needs a human most) to 9 (fine).
    pub fn urgency(&self, c: &Card) -> u8 {
        match (c.view.activity.as_str(), c.view.state.as_str()) {
            ("waiting", _) => 0,
            (_, "fatal") => 1,
            (_, "stalled") => 2,
            _ if self
                .proposals
                .iter()
                .any(|p| p.agents.contains(&c.view.name)) =>
            {
                3
            }
            (_, "backoff" | "exited") => 4,
            _ => 9,
        }
    }

    pub fn needs_human(&self, c: &Card) -> bool {
        self.urgency(c) <= 3
    }

    /// What needs the human, e.g. `2 waiting · 1 fatal · 1 rollback`; empty when nothing.
    pub fn summary(&self) -> String {
        crate::supervisor::control::attention(
            self.agents
                .iter()
                .map(|c| (c.view.state.as_str(), c.view.activity.as_str())),
            crate::gate::state::pending_decisions(&self.proposals),
        )
    }

    /// The proposal `y`/`n`/`d` act on: the one naming the selected agent, else the
    /// oldest pending one.
    pub fn current_proposal(&self) -> Option<&Proposal> {
        let sel = self.selected.as_deref();
        self.proposals
            .iter()
            .find(|p| sel.is_some_and(|s| p.agents.iter().any(|a| a == s)))
            .or_else(|| self.proposals.first())
    }

    fn selected_card(&self) -> Option<&Card> {
        self.selected.as_deref().and_then(|s| self.card(s))
    }

    fn say(&mut self, text: impl Into<String>, error: bool) {
        self.status = Some(StatusLine {
            text: text.into(),
            error,
        });
    }

    /// Keeps a selection that exists (the first shown agent otherwise).
    fn fix_selection(&mut self) {
        let order = self.order();
        let keep = self
            .selected
            .as_deref()
            .is_some_and(|s| order.iter().any(|c| c.view.name == s));
        if !keep {
            self.selected = order.first().map(|c| c.view.name.clone());
        }
    }

    /// Rows the preview shows (the loop reads that many).
    pub fn preview_height(&self) -> u16 {
        super::view::preview_rows(self)
    }
}

/// Applies `input`; returns what to do.
pub fn update(app: &mut App, input: Input) -> Vec<Intent> {
    let mut out = Vec::new();
    match input {
        Input::Key(key) if key.kind != KeyEventKind::Release => key_input(app, key, &mut out),
        Input::Key(_) => {}
        Input::Mouse(m) => mouse_input(app, m, &mut out),
        Input::Resize(w, h) => {
            app.width = w;
            app.height = h;
            app.preview.seq = u64::MAX; // read it again at the new size
        }
        Input::Line(line) => line_input(app, &line, &mut out),
        Input::Preview {
            agent,
            seq,
            scroll,
            text,
        } => {
            if app.selected.as_deref() == Some(agent.as_str()) && app.preview.scroll == scroll {
                app.preview = Preview {
                    agent: Some(agent),
                    seq,
                    scroll,
                    text,
                };
            }
        }
        Input::Proposals(list) => {
            app.proposals = list
                .into_iter()
                .filter(|p| p.status == Status::Pending)
                .collect();
            let current = app.current_proposal().map(|p| p.id.clone());
            if app.details.as_ref().map(|d| &d.proposal.id) != current.as_ref() {
                app.details = None;
                if let Some(id) = current {
                    out.push(Intent::Gate(Call::Show { id, diff: true }));
                }
            }
        }
        Input::Details(d) => app.details = Some(d),
        Input::Done(Ok(text)) | Input::Back(Ok(text)) => app.say(text, false),
        Input::Done(Err(text)) | Input::Back(Err(text)) => app.say(text, true),
        Input::Clock(ms) => app.now_ms = ms,
        Input::Lost(why) => {
            app.connected = false;
            app.say(format!("lost the supervisor: {why}"), true);
        }
    }
    app.fix_selection();
    out.extend(preview_wanted(app));
    out
}

/// The preview to read now, if the selected agent printed since (or the selection or
/// the scroll changed).
fn preview_wanted(app: &App) -> Option<Intent> {
    let card = app.selected_card()?;
    let pane = card.view.pane.clone()?;
    let fresh = app.preview.agent.as_deref() == Some(card.view.name.as_str())
        && app.preview.seq == card.view.output_seq;
    (!fresh).then(|| Intent::Preview {
        agent: card.view.name.clone(),
        pane,
        scroll: app.preview.scroll,
        height: app.preview_height(),
        seq: card.view.output_seq,
    })
}

fn line_input(app: &mut App, line: &str, out: &mut Vec<Intent>) {
    let Ok(value) = serde_json::from_str::<Value>(line) else {
        return;
    };
    if value.get("type").is_some() {
        match serde_json::from_value::<Line>(value) {
            Ok(Line::State {
                session,
                supervisor_pid,
                server_down,
                agents,
            }) => {
                if app
                    .status
                    .as_ref()
                    .is_some_and(|s| s.text.starts_with("lost the supervisor"))
                {
                    app.say(
                        format!("connected to the supervisor (pid {supervisor_pid})"),
                        false,
                    );
                }
                app.session = session;
                app.supervisor_pid = Some(supervisor_pid);
                app.server_down = server_down;
                app.connected = true;
                app.agents = agents
                    .into_iter()
                    .map(|view| Card {
                        rss: view.rss_bytes.into_iter().collect(),
                        view,
                    })
                    .collect();
                out.push(Intent::Gate(Call::List));
            }
            Ok(Line::History { events }) => {
                app.events.clear();
                app.alerts.clear();
                for event in &events {
                    log_event(app, event);
                }
            }
            Ok(Line::Agent { agent }) => agent_changed(app, *agent),
            Err(_) => {}
        }
        return;
    }
    let Some(kind) = log_event(app, &value) else {
        return;
    };
    match kind.as_str() {
        k if k.starts_with("rollback_") || k.starts_with("check_") => {
            out.push(Intent::Gate(Call::List));
        }
        "activity_changed" if value["to"] == "waiting" => app.bell = true,
        "server_died" => app.server_down = true,
        "restored" => app.server_down = false,
        _ => {}
    }
}

/// Puts an event into the events panel (and the alerts panel, if it is one); returns
/// its kind.
fn log_event(app: &mut App, value: &Value) -> Option<String> {
    let kind = value["kind"].as_str()?.to_owned();
    let logged = Logged {
        time: value["ts"]
            .as_str()
            .and_then(|t| t.get(11..19))
            .unwrap_or("")
            .to_owned(),
        agent: value["agent"].as_str().map(str::to_owned),
        detail: detail(value),
        kind: kind.clone(),
    };
    if ALERT_KINDS.contains(&kind.as_str()) {
        push_capped(&mut app.alerts, logged.clone(), ALERTS_KEPT);
    }
    push_capped(&mut app.events, logged, EVENTS_KEPT);
    Some(kind)
}

fn agent_changed(app: &mut App, view: AgentView) {
    match app.agents.iter_mut().find(|c| c.view.name == view.name) {
        Some(card) => {
            if let Some(rss) = view.rss_bytes
                && card.view.rss_bytes != Some(rss)
            {
                push_capped(&mut card.rss, rss, RSS_SAMPLES);
            }
            card.view = view;
        }
        None => app.agents.push(Card {
            rss: view.rss_bytes.into_iter().collect(),
            view,
        }),
    }
}

fn push_capped<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    if q.len() == cap {
        q.pop_front();
    }
    q.push_back(v);
}

/// The fields of an event worth a glance, in one line.
fn detail(v: &Value) -> String {
    let mut parts = Vec::new();
    for key in [
        "reason",
        "exit_status",
        "signal",
        "to",
        "pattern",
        "rss_bytes",
        "id",
        "risk",
        "branch",
        "commit",
        "error",
        "what",
        "snapshot",
    ] {
        match &v[key] {
            Value::Null => {}
            Value::String(s) => parts.push(format!("{key}={}", first_line(s))),
            other => parts.push(format!("{key}={other}")),
        }
    }
    parts.join(" ")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn key_input(app: &mut App, key: KeyEvent, out: &mut Vec<Intent>) {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        app.quit = true;
        out.push(Intent::Quit);
        return;
    }
    match app.mode.clone() {
        Mode::Help => app.mode = Mode::Normal,
        Mode::Compose { to, mut text } => match key.code {
            KeyCode::Esc => app.mode = Mode::Normal,
            KeyCode::Enter if !text.trim().is_empty() => {
                app.mode = Mode::Normal;
                app.say(
                    format!("sending to {}…", to.as_deref().unwrap_or("all")),
                    false,
                );
                out.push(Intent::Send { to, text });
            }
            KeyCode::Backspace => {
                text.pop();
                app.mode = Mode::Compose { to, text };
            }
            KeyCode::Char(c) => {
                text.push(c);
                app.mode = Mode::Compose { to, text };
            }
            _ => {}
        },
        Mode::Filter => match key.code {
            KeyCode::Esc => {
                app.filter.clear();
                app.mode = Mode::Normal;
            }
            KeyCode::Enter => app.mode = Mode::Normal,
            KeyCode::Backspace => {
                app.filter.pop();
            }
            KeyCode::Char(c) => app.filter.push(c),
            _ => {}
        },
        Mode::Diff { scroll } => match key.code {
            KeyCode::Down | KeyCode::Char('j') => app.mode = Mode::Diff { scroll: scroll + 1 },
            KeyCode::Up | KeyCode::Char('k') => {
                app.mode = Mode::Diff {
                    scroll: scroll.saturating_sub(1),
                }
            }
            KeyCode::PageDown => {
                app.mode = Mode::Diff {
                    scroll: scroll + 20,
                }
            }
            KeyCode::PageUp => {
                app.mode = Mode::Diff {
                    scroll: scroll.saturating_sub(20),
                }
            }
            _ => app.mode = Mode::Normal,
        },
        Mode::Confirm(c) => {
            app.mode = Mode::Normal;
            match (c, key.code) {
                (Confirm::Approve { id, .. }, KeyCode::Char('y')) => {
                    app.say(format!("approving rollback {id}…"), false);
                    out.push(Intent::Gate(Call::Approve { id }));
                }
                (
                    Confirm::Answer {
                        agent,
                        pane,
                        approve,
                        keys,
                    },
                    KeyCode::Char(ch),
                ) if ch == if approve { 'Y' } else { 'N' } => {
                    out.push(Intent::Keys { agent, pane, keys });
                }
                _ => app.say("cancelled", false),
            }
        }
        Mode::Normal => normal_key(app, key, out),
    }
}

fn normal_key(app: &mut App, key: KeyEvent, out: &mut Vec<Intent>) {
    let columns = super::view::grid_columns(app);
    match key.code {
        KeyCode::Char('q') => {
            app.quit = true;
            out.push(Intent::Quit);
        }
        KeyCode::Char('?') => app.mode = Mode::Help,
        KeyCode::Char('/') => app.mode = Mode::Filter,
        KeyCode::Char('o') => {
            app.sort = app.sort.next();
            app.say(format!("sorted by {}", app.sort.label()), false);
        }
        KeyCode::Down | KeyCode::Char('j') => move_selection(app, columns as isize),
        KeyCode::Up | KeyCode::Char('k') => move_selection(app, -(columns as isize)),
        KeyCode::Right | KeyCode::Char('l') => move_selection(app, 1),
        KeyCode::Left | KeyCode::Char('h') => move_selection(app, -1),
        KeyCode::Tab => {
            let order: Vec<(String, bool)> = app
                .order()
                .iter()
                .map(|c| (c.view.name.clone(), app.needs_human(c)))
                .collect();
            let at = order
                .iter()
                .position(|(n, _)| Some(n) == app.selected.as_ref())
                .unwrap_or(0);
            let next = (1..=order.len())
                .map(|k| &order[(at + k) % order.len()])
                .find(|(_, needs)| *needs);
            match next {
                Some((name, _)) => select(app, name.clone()),
                None => app.say("no agent needs you", false),
            }
        }
        KeyCode::PageUp => {
            app.preview.scroll = app.preview.scroll.saturating_add(10);
            app.preview.seq = u64::MAX;
        }
        KeyCode::PageDown => {
            app.preview.scroll = app.preview.scroll.saturating_sub(10);
            app.preview.seq = u64::MAX;
        }
        KeyCode::Char('S') => {
            app.say("taking a snapshot…", false);
            out.push(Intent::Snapshot);
        }
        KeyCode::Char('M') => {
            app.mode = Mode::Compose {
                to: None,
                text: String::new(),
            }
        }
        KeyCode::Char('y') => match app.current_proposal() {
            None => app.say("no rollback waits for you", false),
            Some(p) if p.risk >= Risk::High => {
                app.mode = Mode::Confirm(Confirm::Approve {
                    id: p.id.clone(),
                    risk: p.risk,
                })
            }
            Some(p) => {
                let id = p.id.clone();
                app.say(format!("approving rollback {id}…"), false);
                out.push(Intent::Gate(Call::Approve { id }));
            }
        },
        KeyCode::Char('n') => match app.current_proposal() {
            None => app.say("no rollback waits for you", false),
            Some(p) => {
                let id = p.id.clone();
                app.say(format!("rejecting rollback {id}…"), false);
                out.push(Intent::Gate(Call::Reject { id }));
            }
        },
        KeyCode::Char('d') => {
            if app.current_proposal().is_some() {
                app.mode = Mode::Diff { scroll: 0 };
            } else {
                app.say("no rollback to show", false);
            }
        }
        _ => agent_key(app, key, out),
    }
}

/// Keys that act on the selected agent.
fn agent_key(app: &mut App, key: KeyEvent, out: &mut Vec<Intent>) {
    let Some(card) = app.selected_card().cloned() else {
        return;
    };
    let name = card.view.name.clone();
    let live = matches!(
        card.view.state.as_str(),
        "starting" | "running" | "stalled" | "backoff"
    );
    match key.code {
        KeyCode::Enter => match card.view.pane {
            Some(pane) => out.push(Intent::Visit { pane }),
            None => app.say(format!("{name} has no pane"), true),
        },
        KeyCode::Char('r') => {
            app.say(format!("restarting {name}…"), false);
            out.push(Intent::Control {
                agent: name,
                action: Action::Restart,
            });
        }
        KeyCode::Char('s') => {
            let action = if live { Action::Stop } else { Action::Start };
            app.say(format!("{} {name}…", action.verb()), false);
            out.push(Intent::Control {
                agent: name,
                action,
            });
        }
        KeyCode::Char('m') => {
            app.mode = Mode::Compose {
                to: Some(name),
                text: String::new(),
            }
        }
        KeyCode::Char(c @ ('Y' | 'N')) => {
            let approve = c == 'Y';
            let keys = crate::layout::Profile::from_name(&card.view.profile)
                .and_then(|p| crate::profile::get(p).approval.clone());
            match (card.view.activity.as_str(), keys, card.view.pane) {
                ("waiting", Some(k), Some(pane)) => {
                    let keys = if approve { k.approve } else { k.deny };
                    app.say(
                        format!("press {c} again to send {} to {name}", keys.join(" ")),
                        false,
                    );
                    app.mode = Mode::Confirm(Confirm::Answer {
                        agent: name,
                        pane,
                        approve,
                        keys,
                    });
                }
                ("waiting", ..) => app.say(format!("orch knows no answer keys for {name}"), true),
                _ => app.say(format!("{name} is not waiting for an answer"), false),
            }
        }
        _ => {}
    }
}

fn select(app: &mut App, name: String) {
    if app.selected.as_deref() != Some(name.as_str()) {
        app.preview.scroll = 0;
    }
    app.selected = Some(name);
}

fn move_selection(app: &mut App, by: isize) {
    let order: Vec<String> = app.order().iter().map(|c| c.view.name.clone()).collect();
    if order.is_empty() {
        return;
    }
    let at = order
        .iter()
        .position(|n| Some(n) == app.selected.as_ref())
        .unwrap_or(0) as isize;
    let to = (at + by).clamp(0, order.len() as isize - 1) as usize;
    select(app, order[to].clone());
}

fn mouse_input(app: &mut App, m: MouseEvent, out: &mut Vec<Intent>) {
    match m.kind {
        MouseEventKind::Down(MouseButton::Left) => {
            if let Some(name) = super::view::agent_at(app, m.column, m.row) {
                select(app, name);
            }
        }
        MouseEventKind::ScrollUp => {
            if super::view::in_preview(app, m.column, m.row) {
                app.preview.scroll = app.preview.scroll.saturating_add(3);
                app.preview.seq = u64::MAX;
            } else {
                move_selection(app, -1);
            }
        }
        MouseEventKind::ScrollDown => {
            if super::view::in_preview(app, m.column, m.row) {
                app.preview.scroll = app.preview.scroll.saturating_sub(3);
                app.preview.seq = u64::MAX;
            } else {
                move_selection(app, 1);
            }
        }
        _ => {}
    }
    let _ = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn view(name: &str, state: &str, activity: &str) -> AgentView {
        AgentView {
            name: name.into(),
            role: "WORKER".into(),
            profile: "claude".into(),
            pane: Some(format!("%{}", name.len())),
            pid: Some(100),
            state: state.into(),
            activity: activity.into(),
            ..AgentView::default()
        }
    }

    fn state_line(agents: Vec<AgentView>) -> String {
        serde_json::to_string(&Line::State {
            session: "org9".into(),
            supervisor_pid: 42,
            server_down: false,
            agents,
        })
        .expect("json")
    }

    fn key(c: char) -> Input {
        Input::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
    }

    fn app_with(agents: Vec<AgentView>) -> App {
        let mut app = App::new("org9", 120, 40, true);
        update(&mut app, Input::Line(state_line(agents)));
        app
    }

    #[test]
    fn agents_that_need_a_human_come_first() {
        let app = app_with(vec![
            view("president", "running", "working"),
            view("worker1", "fatal", "unknown"),
            view("worker2", "running", "waiting"),
            view("worker3", "stalled", "unknown"),
        ]);
        let order: Vec<&str> = app.order().iter().map(|c| c.view.name.as_str()).collect();
        assert_eq!(order, ["worker2", "worker1", "worker3", "president"]);
        assert_eq!(app.summary(), "1 waiting · 1 fatal · 1 stalled");
        assert_eq!(app.selected.as_deref(), Some("worker2"));
    }

    #[test]
    fn keys_become_intents() {
        let mut app = app_with(vec![
            view("a", "running", "idle"),
            view("b", "exited", "unknown"),
        ]);
        // b exited: it comes first, and is selected.
        assert_eq!(app.selected.as_deref(), Some("b"));
        let acts = |intents: Vec<Intent>| -> Vec<Intent> {
            intents
                .into_iter()
                .filter(|i| !matches!(i, Intent::Preview { .. }))
                .collect()
        };
        assert_eq!(
            acts(update(&mut app, key('r'))),
            [Intent::Control {
                agent: "b".into(),
                action: Action::Restart
            }]
        );
        // `s` starts what is not running, stops what is.
        assert_eq!(
            acts(update(&mut app, key('s'))),
            [Intent::Control {
                agent: "b".into(),
                action: Action::Start
            }]
        );
        update(&mut app, key('l'));
        assert_eq!(app.selected.as_deref(), Some("a"));
        assert_eq!(
            acts(update(&mut app, key('s'))),
            [Intent::Control {
                agent: "a".into(),
                action: Action::Stop
            }]
        );
        assert_eq!(acts(update(&mut app, key('S'))), [Intent::Snapshot]);
        update(&mut app, key('h'));
        // m, typing, Enter: a message to the selected agent.
        update(&mut app, key('m'));
        for c in "hi there".chars() {
            update(&mut app, key(c));
        }
        let intents = update(
            &mut app,
            Input::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
        );
        assert!(intents.contains(&Intent::Send {
            to: Some("b".into()),
            text: "hi there".into()
        }));
        assert_eq!(app.mode, Mode::Normal);
        // M: to all.
        update(&mut app, key('M'));
        assert_eq!(
            app.mode,
            Mode::Compose {
                to: None,
                text: String::new()
            }
        );
        update(
            &mut app,
            Input::Key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)),
        );
        assert!(update(&mut app, key('q')).contains(&Intent::Quit));
        assert!(app.quit);
    }

    #[test]
    fn the_preview_is_read_when_the_selected_agent_printed() {
        let mut app = app_with(vec![view("a", "running", "idle")]);
        // The first look at the selected agent.
        let i = preview_wanted(&app).expect("a preview");
        let Intent::Preview { seq, .. } = i else {
            panic!()
        };
        update(
            &mut app,
            Input::Preview {
                agent: "a".into(),
                seq,
                scroll: 0,
                text: Text::raw("$"),
            },
        );
        assert_eq!(preview_wanted(&app), None, "nothing printed since");
        let mut printed = view("a", "running", "idle");
        printed.output_seq = 7;
        let intents = update(
            &mut app,
            Input::Line(
                serde_json::to_string(&Line::Agent {
                    agent: Box::new(printed),
                })
                .expect("json"),
            ),
        );
        assert!(
            intents
                .iter()
                .any(|i| matches!(i, Intent::Preview { seq: 7, .. }))
        );
    }

    fn proposal(id: &str, risk: Risk, agent: &str) -> Proposal {
        serde_json::from_value(serde_json::json!({
            "id": id, "risk": risk.as_str(), "kind": "revert", "commits": ["abc"],
            "files": ["src/a.rs"], "agents": [agent], "status": "pending",
            "backup_ref": format!("refs/orch/backup/{id}"), "branch": "main", "tip": "abc",
            "new_tip": "def", "green": "012", "why": "revert abc", "created": "2026-12-01T00:00:00Z",
            "output_tail": ["FAILED"], "failure": "exit status 1"
        }))
        .expect("a proposal")
    }

    #[test]
    fn y_approves_the_rollback_and_high_risk_asks_again() {
        let mut app = app_with(vec![
            view("w1", "running", "idle"),
            view("w2", "running", "idle"),
        ]);
        assert!(
            update(&mut app, key('y'))
                .iter()
                .all(|i| !matches!(i, Intent::Gate(_)))
        );
        update(
            &mut app,
            Input::Proposals(vec![proposal("p1", Risk::Medium, "w2")]),
        );
        // w2 is named in a pending rollback: it sorts first.
        assert_eq!(app.order()[0].view.name, "w2");
        let intents = update(&mut app, key('y'));
        assert!(intents.contains(&Intent::Gate(Call::Approve { id: "p1".into() })));
        update(
            &mut app,
            Input::Proposals(vec![proposal("p2", Risk::High, "w1")]),
        );
        assert!(
            update(&mut app, key('y'))
                .iter()
                .all(|i| !matches!(i, Intent::Gate(Call::Approve { .. })))
        );
        assert!(matches!(app.mode, Mode::Confirm(Confirm::Approve { .. })));
        let intents = update(&mut app, key('y'));
        assert!(intents.contains(&Intent::Gate(Call::Approve { id: "p2".into() })));
        // n rejects at once.
        let intents = update(&mut app, key('n'));
        assert!(intents.contains(&Intent::Gate(Call::Reject { id: "p2".into() })));
    }

    #[test]
    fn capital_y_answers_a_waiting_cli_with_its_profiles_keys() {
        let mut app = app_with(vec![view("w1", "running", "waiting")]);
        assert!(
            update(&mut app, key('Y'))
                .iter()
                .all(|i| !matches!(i, Intent::Keys { .. }))
        );
        assert!(
            app.status
                .as_ref()
                .is_some_and(|s| s.text.contains("press Y again to send 1")),
            "{:?}",
            app.status
        );
        let intents = update(&mut app, key('Y'));
        assert!(intents.contains(&Intent::Keys {
            agent: "w1".into(),
            pane: "%2".into(),
            keys: vec!["1".into()]
        }));
        // Not waiting: nothing to answer.
        let mut app = app_with(vec![view("w1", "running", "idle")]);
        update(&mut app, key('N'));
        assert_eq!(app.mode, Mode::Normal);
    }

    #[test]
    fn events_fill_the_panels_and_a_new_approval_rings_once() {
        let mut app = app_with(vec![view("w1", "running", "idle")]);
        update(&mut app, Input::Line(r#"{"ts":"2026-12-01T10:11:12.000Z","kind":"agent_fatal","agent":"w1","restarts_in_window":5}"#.into()));
        update(
            &mut app,
            Input::Line(
                r#"{"ts":"2026-12-01T10:11:13.000Z","kind":"agent_started","agent":"w1"}"#.into(),
            ),
        );
        assert_eq!(app.events.len(), 2);
        assert_eq!(app.alerts.len(), 1);
        assert_eq!(app.alerts[0].time, "10:11:12");
        assert!(!app.bell);
        let intents = update(
            &mut app,
            Input::Line(
                r#"{"ts":"2026-12-01T10:11:14.000Z","kind":"rollback_proposed","id":"x"}"#.into(),
            ),
        );
        assert!(intents.contains(&Intent::Gate(Call::List)));
        update(
            &mut app,
            Input::Line(r#"{"kind":"activity_changed","agent":"w1","to":"waiting"}"#.into()),
        );
        assert!(app.bell);
    }

    #[test]
    fn tab_jumps_to_the_next_agent_that_needs_a_human_and_the_filter_narrows() {
        let mut app = app_with(vec![
            view("a", "running", "waiting"),
            view("b", "running", "idle"),
            view("c", "fatal", "unknown"),
        ]);
        assert_eq!(app.selected.as_deref(), Some("a"));
        update(
            &mut app,
            Input::Key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE)),
        );
        assert_eq!(app.selected.as_deref(), Some("c"));
        update(
            &mut app,
            Input::Key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE)),
        );
        assert_eq!(app.selected.as_deref(), Some("a"));
        update(&mut app, key('/'));
        update(&mut app, key('b'));
        update(
            &mut app,
            Input::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
        );
        let shown: Vec<&str> = app.order().iter().map(|c| c.view.name.as_str()).collect();
        assert_eq!(shown, ["b"]);
        assert_eq!(app.selected.as_deref(), Some("b"));
    }

    #[test]
    fn a_click_selects_and_the_wheel_and_page_keys_scroll_the_preview() {
        use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
        let mut app = app_with(vec![
            view("a", "running", "idle"),
            view("b", "running", "idle"),
        ]);
        let g = crate::tui::view::geometry(&app);
        let (_, rect) = g.cells.iter().find(|(n, _)| n == "b").expect("b's card");
        let mouse = |kind, column, row| {
            Input::Mouse(MouseEvent {
                kind,
                column,
                row,
                modifiers: KeyModifiers::NONE,
            })
        };
        let intents = update(
            &mut app,
            mouse(
                MouseEventKind::Down(MouseButton::Left),
                rect.x + 2,
                rect.y + 1,
            ),
        );
        assert_eq!(app.selected.as_deref(), Some("b"));
        assert!(
            intents
                .iter()
                .any(|i| matches!(i, Intent::Preview { agent, scroll: 0, .. } if agent == "b"))
        );
        // The wheel over the preview goes back into the pane's history…
        let p = g.preview;
        let intents = update(&mut app, mouse(MouseEventKind::ScrollUp, p.x + 3, p.y + 3));
        assert_eq!(app.preview.scroll, 3);
        assert!(
            intents
                .iter()
                .any(|i| matches!(i, Intent::Preview { scroll: 3, .. }))
        );
        // …and so do PgUp and PgDn.
        update(
            &mut app,
            Input::Key(KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE)),
        );
        assert_eq!(app.preview.scroll, 13);
        update(
            &mut app,
            Input::Key(KeyEvent::new(KeyCode::PageDown, KeyModifiers::NONE)),
        );
        update(
            &mut app,
            Input::Key(KeyEvent::new(KeyCode::PageDown, KeyModifiers::NONE)),
        );
        assert_eq!(app.preview.scroll, 0);
        // Over the agents, the wheel moves the selection.
        update(
            &mut app,
            mouse(MouseEventKind::ScrollUp, rect.x + 2, rect.y + 1),
        );
        assert_eq!(app.selected.as_deref(), Some("a"));
    }

    #[test]
    fn o_cycles_the_sort_order() {
        let mut big = view("a", "running", "idle");
        big.rss_bytes = Some(900);
        big.restarts = 1;
        let mut busy = view("c", "running", "working");
        busy.cpu_percent = Some(80.0);
        let mut app = app_with(vec![busy, view("b", "fatal", "unknown"), big]);
        let names = |app: &App| -> Vec<String> {
            app.order().iter().map(|c| c.view.name.clone()).collect()
        };
        assert_eq!(names(&app), ["b", "c", "a"], "needs you first");
        update(&mut app, key('o'));
        assert_eq!(app.sort, Sort::Name);
        assert_eq!(names(&app), ["a", "b", "c"]);
        update(&mut app, key('o'));
        assert_eq!(names(&app)[0], "c", "by cpu");
        update(&mut app, key('o'));
        assert_eq!(names(&app)[0], "a", "by memory");
        update(&mut app, key('o'));
        assert_eq!(names(&app)[0], "a", "by restarts");
        update(&mut app, key('o'));
        assert_eq!(app.sort, Sort::NeedsYou);
    }
}
