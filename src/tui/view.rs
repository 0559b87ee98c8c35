//! What the dashboard draws: a read-only projection of [`App`] into a frame. The same
//! geometry ([`geometry`]) places the panels when drawing and tells where a click
//! landed, so both agree at every size.
//!
//! From 80×24 up: the agents (a grid of cards where they fit, a list otherwise) on the
//! left; on the right, from 100 columns, the selected agent's pane, the rollback prompt
//! when one waits, the alerts and the events; below 100 columns the preview goes under
//! the agents and the alerts and events shrink to a line each. The last row is the
//! status bar.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph, Sparkline, Wrap};

use super::app::{App, Card, Confirm, Mode};

/// A card's size in the grid.
const CARD_WIDTH: u16 = 22;
const CARD_HEIGHT: u16 = 6;
/// From this width the side panels sit beside the agents.
const WIDE: u16 = 100;

/// Where everything goes at the app's size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Geometry {
    pub title: Rect,
    pub agents: Rect,
    /// Each shown agent's card or row.
    pub cells: Vec<(String, Rect)>,
    pub columns: u16,
    pub preview: Rect,
    pub rollback: Option<Rect>,
    pub alerts: Rect,
    pub events: Rect,
    pub status: Rect,
}

/// Cards per row when the grid fits, else 1 (a list).
pub fn grid_columns(app: &App) -> u16 {
    geometry(app).columns
}

/// Rows of the pane the preview shows.
pub fn preview_rows(app: &App) -> u16 {
    geometry(app).preview.height.saturating_sub(2).max(1)
}

/// The agent whose card or row is at (`x`, `y`).
pub fn agent_at(app: &App, x: u16, y: u16) -> Option<String> {
    geometry(app)
        .cells
        .into_iter()
        .find(|(_, r)| contains(*r, x, y))
        .map(|(n, _)| n)
}

pub fn in_preview(app: &App, x: u16, y: u16) -> bool {
    contains(geometry(app).preview, x, y)
}

fn contains(r: Rect, x: u16, y: u16) -> bool {
    x >= r.x && x < r.x + r.width && y >= r.y && y < r.y + r.height
}

pub fn geometry(app: &App) -> Geometry {
    let area = Rect::new(0, 0, app.width.max(20), app.height.max(8));
    let [title, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    let pending = !app.proposals.is_empty();
    let n = app.order().len() as u16;
    let (agents, preview, rollback, alerts, events);
    if body.width >= WIDE {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .areas(body);
        agents = left;
        let rb = if pending { 9 } else { 0 };
        let [p, r, a, e] = Layout::vertical([
            Constraint::Min(6),
            Constraint::Length(rb),
            Constraint::Length(6),
            Constraint::Length(8),
        ])
        .areas(right);
        preview = p;
        rollback = pending.then_some(r);
        alerts = a;
        events = e;
    } else {
        let list_rows = (n + 2).min(body.height / 2).max(3);
        let rb = if pending { 5 } else { 0 };
        let [l, r, p, a, e] = Layout::vertical([
            Constraint::Length(list_rows),
            Constraint::Length(rb),
            Constraint::Min(3),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(body);
        agents = l;
        preview = p;
        rollback = pending.then_some(r);
        alerts = a;
        events = e;
    }
    let inner = Rect::new(
        agents.x + 1,
        agents.y + 1,
        agents.width.saturating_sub(2),
        agents.height.saturating_sub(2),
    );
    // As square a grid as fits (3×3 for nine agents), wider when the rows run out; a
    // list when even the widest grid does not fit.
    let fit_cols = (inner.width / CARD_WIDTH).max(1);
    let fit_rows = inner.height / CARD_HEIGHT;
    let square = (1..=n.max(1)).find(|c| c * c >= n).unwrap_or(1);
    let columns = (square..=fit_cols).find(|c| n.div_ceil(*c) <= fit_rows);
    let grid = fit_cols >= 2 && columns.is_some();
    let columns = if grid {
        columns.unwrap_or(1).min(n.max(1))
    } else {
        1
    };
    let names: Vec<String> = app.order().iter().map(|c| c.view.name.clone()).collect();
    let mut cells = Vec::new();
    if grid {
        let w = inner.width / columns;
        for (i, name) in names.into_iter().enumerate() {
            let (col, row) = (i as u16 % columns, i as u16 / columns);
            cells.push((
                name,
                Rect::new(
                    inner.x + col * w,
                    inner.y + row * CARD_HEIGHT,
                    w,
                    CARD_HEIGHT,
                ),
            ));
        }
    } else {
        // A list, scrolled so the selection shows.
        let at = app
            .order()
            .iter()
            .position(|c| Some(&c.view.name) == app.selected.as_ref())
            .unwrap_or(0) as u16;
        let first = at.saturating_sub(inner.height.saturating_sub(1));
        for (i, name) in names.into_iter().enumerate().skip(first as usize) {
            let y = inner.y + (i as u16 - first);
            if y >= inner.y + inner.height {
                break;
            }
            cells.push((name, Rect::new(inner.x, y, inner.width, 1)));
        }
    }
    Geometry {
        title,
        agents,
        cells,
        columns,
        preview,
        rollback,
        alerts,
        events,
        status,
    }
}

/// Colours, unless `NO_COLOR`.
struct Paint {
    color: bool,
}

impl Paint {
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    fn state(&self, state: &str) -> Style {
        match state {
            "running" => self.fg(Color::Green),
            "starting" => self.fg(Color::Cyan),
            "stalled" | "backoff" => self.fg(Color::Yellow).add_modifier(Modifier::BOLD),
            "fatal" | "exited" => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            _ => self.fg(Color::Gray),
        }
    }

    fn activity(&self, activity: &str) -> Style {
        match activity {
            "waiting" => self.fg(Color::Magenta).add_modifier(Modifier::BOLD),
            "working" => self.fg(Color::Blue),
            "idle" => self.fg(Color::Gray),
            _ => self.fg(Color::DarkGray),
        }
    }
}

pub fn render(app: &App, frame: &mut Frame<'_>) {
    let g = geometry(app);
    let paint = Paint { color: app.color };
    title(app, &g, &paint, frame);
    agents(app, &g, &paint, frame);
    preview(app, &g, frame);
    if let Some(r) = g.rollback {
        rollback(app, r, &paint, frame);
    }
    log_panel(frame, g.alerts, "alerts", &app.alerts, &paint, true);
    log_panel(frame, g.events, "events", &app.events, &paint, false);
    status(app, &g, &paint, frame);
    match &app.mode {
        Mode::Help => help(frame),
        Mode::Diff { scroll } => diff(app, *scroll, frame),
        _ => {}
    }
}

fn title(app: &App, g: &Geometry, paint: &Paint, frame: &mut Frame<'_>) {
    let mut spans = vec![Span::styled(
        format!(" orch · {} ", app.session),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    match (app.connected, app.supervisor_pid) {
        (true, Some(pid)) => spans.push(Span::raw(format!("· supervisor {pid} "))),
        _ => spans.push(Span::styled("· no supervisor ", paint.fg(Color::Red))),
    }
    if app.server_down {
        spans.push(Span::styled(
            "· tmux server down, restoring ",
            paint.fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    let summary = app.summary();
    if !summary.is_empty() {
        spans.push(Span::styled(
            format!("· {summary} "),
            paint.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), g.title);
}

fn agents(app: &App, g: &Geometry, paint: &Paint, frame: &mut Frame<'_>) {
    let label = if app.filter.is_empty() {
        format!(" agents ({}) ", app.agents.len())
    } else {
        format!(
            " agents: /{} ({} of {}) ",
            app.filter,
            g.cells.len(),
            app.agents.len()
        )
    };
    frame.render_widget(Block::bordered().title(label), g.agents);
    for (name, rect) in &g.cells {
        let Some(card) = app.card(name) else { continue };
        let selected = app.selected.as_deref() == Some(name.as_str());
        if g.columns > 1 {
            draw_card(app, card, *rect, selected, paint, frame);
        } else {
            draw_row(app, card, *rect, selected, paint, frame);
        }
    }
}

fn draw_card(app: &App, c: &Card, r: Rect, selected: bool, paint: &Paint, frame: &mut Frame<'_>) {
    let v = &c.view;
    let urgent = app.needs_human(c);
    let border = match (selected, urgent) {
        (_, true) => paint.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        (true, false) => paint.fg(Color::Cyan),
        _ => Style::new(),
    };
    let mark = if urgent { "! " } else { "" };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(if selected {
            BorderType::Thick
        } else {
            BorderType::Plain
        })
        .border_style(border)
        .title(Line::from(vec![
            Span::styled(
                format!(" {mark}{} ", v.name),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!("{} ", v.role)),
        ]));
    let inner = block.inner(r);
    frame.render_widget(block, r);
    let [l1, l2, l3, l4] = Layout::vertical([Constraint::Length(1); 4]).areas(inner);
    let mut state = vec![Span::styled(v.state.clone(), paint.state(&v.state))];
    if live(&v.state) {
        state.push(Span::raw(" · "));
        state.push(Span::styled(
            v.activity.clone(),
            paint.activity(&v.activity),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(state)), l1);
    frame.render_widget(Paragraph::new(stats_line(app, c)), l2);
    let [spark, rss] = Layout::horizontal([Constraint::Min(4), Constraint::Length(7)]).areas(l3);
    let samples: Vec<u64> = c.rss.iter().copied().collect();
    frame.render_widget(
        Sparkline::default()
            .data(&samples[samples.len().saturating_sub(spark.width as usize)..])
            .style(paint.fg(Color::Green)),
        spark,
    );
    frame.render_widget(Paragraph::new(megabytes(v.rss_bytes)), rss);
    frame.render_widget(Paragraph::new(last_line(c)), l4);
}

fn draw_row(app: &App, c: &Card, r: Rect, selected: bool, paint: &Paint, frame: &mut Frame<'_>) {
    let v = &c.view;
    let mut style = Style::new();
    if selected {
        style = style.add_modifier(Modifier::REVERSED);
    }
    let mark = if app.needs_human(c) { "!" } else { " " };
    let line = Line::from(vec![
        Span::styled(
            format!("{mark}{:<10.10} ", v.name),
            style.add_modifier(Modifier::BOLD),
        ),
        Span::styled(format!("{:<8.8} ", v.state), paint.state(&v.state)),
        Span::styled(
            format!(
                "{:<8.8} ",
                if live(&v.state) {
                    v.activity.as_str()
                } else {
                    ""
                }
            ),
            paint.activity(&v.activity),
        ),
        Span::raw(format!("{} ", stats(app, c))),
        Span::styled(last_line(c), Style::new().fg(Color::DarkGray)),
    ]);
    frame.render_widget(Paragraph::new(line).style(style), r);
}

/// Whether the agent's process runs (its activity means something).
fn live(state: &str) -> bool {
    matches!(state, "running" | "starting" | "stalled")
}

fn stats(app: &App, c: &Card) -> String {
    let v = &c.view;
    let up = v
        .started_at_ms
        .filter(|_| live(&v.state))
        .map_or_else(|| "-".to_owned(), |t| uptime(app.now_ms.saturating_sub(t)));
    let cpu = v
        .cpu_percent
        .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}%"));
    format!("up {up} ↻{} {cpu}", v.restarts)
}

fn stats_line(app: &App, c: &Card) -> Line<'static> {
    let mut s = stats(app, c);
    if let Some(x) = c.view.exit_status {
        s.push_str(&format!(" exit {x}"));
    }
    Line::raw(s)
}

/// The line under a card: what an agent waits on, else the last it printed.
fn last_line(c: &Card) -> String {
    let v = &c.view;
    match (&v.waiting_on, &v.last_line) {
        (Some(q), _) if v.activity == "waiting" => {
            format!("? {}", q.lines().next().unwrap_or(""))
        }
        (_, Some(l)) => l.clone(),
        _ => String::new(),
    }
}

/// Uptime in whole minutes (so an idle dashboard redraws once a minute, not every second).
pub fn uptime(ms: u64) -> String {
    let m = ms / 60_000;
    match m {
        0 => "<1m".to_owned(),
        m if m < 60 => format!("{m}m"),
        m if m < 48 * 60 => format!("{}h{:02}m", m / 60, m % 60),
        m => format!("{}d", m / (24 * 60)),
    }
}

fn megabytes(b: Option<u64>) -> String {
    b.map_or_else(String::new, |b| format!("{:>4}M", b / (1 << 20)))
}

fn preview(app: &App, g: &Geometry, frame: &mut Frame<'_>) {
    let who = app.selected.clone().unwrap_or_default();
    let scroll = if app.preview.scroll > 0 {
        format!(" ({} rows back; PgDn for now)", app.preview.scroll)
    } else {
        String::new()
    };
    let block = Block::bordered().title(format!(" {who}{scroll} "));
    let text = if app.preview.agent.as_deref() == Some(who.as_str()) {
        app.preview.text.clone()
    } else {
        Text::raw("")
    };
    frame.render_widget(Paragraph::new(text).block(block), g.preview);
}

fn rollback(app: &App, r: Rect, paint: &Paint, frame: &mut Frame<'_>) {
    let Some(p) = app.current_proposal() else {
        return;
    };
    let risk_style = match p.risk.as_str() {
        "low" => paint.fg(Color::Green),
        "medium" => paint.fg(Color::Yellow),
        _ => paint.fg(Color::Red).add_modifier(Modifier::BOLD),
    };
    let others = app.proposals.len() - 1;
    let alternatives = app
        .proposals
        .iter()
        .filter(|o| o.branch == p.branch && o.tip == p.tip)
        .count()
        - 1;
    let more = match (others, alternatives) {
        (0, _) => String::new(),
        (o, a) if o == a => format!(" (+{a} alternative(s): orch rollback list)"),
        (o, _) => format!(" (+{o} more)"),
    };
    let block = Block::bordered().border_style(risk_style).title(format!(
        " rollback {}{more}: y approve · n reject · d diff ",
        p.id
    ));
    let mut lines = vec![Line::from(vec![
        Span::styled(format!("{} risk ", p.risk.as_str()), risk_style),
        Span::raw(format!("{} on {}: {}", p.kind.as_str(), p.branch, p.why)),
    ])];
    let details = app.details.as_ref().filter(|d| d.proposal.id == p.id);
    match details {
        Some(d) => {
            for c in &d.commits {
                let who = c.agent.as_deref().unwrap_or("?");
                lines.push(Line::raw(format!(
                    "  {} {who}: {}",
                    short(&c.id),
                    c.subject
                )));
            }
            for f in &d.changes {
                lines.push(Line::raw(format!(
                    "  {}  +{} -{}",
                    f.path, f.added, f.deleted
                )));
            }
        }
        None => lines.push(Line::raw(format!("  agents: {}", p.agents.join(", ")))),
    }
    for t in p.output_tail.iter().rev().take(2).rev() {
        lines.push(Line::styled(
            format!("  | {t}"),
            Style::new().fg(Color::DarkGray),
        ));
    }
    frame.render_widget(Paragraph::new(lines).block(block), r);
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn log_panel(
    frame: &mut Frame<'_>,
    r: Rect,
    name: &str,
    items: &std::collections::VecDeque<super::app::Logged>,
    paint: &Paint,
    alert: bool,
) {
    if r.height < 3 {
        // One line: the newest.
        let newest = items
            .back()
            .map(|e| {
                format!(
                    "{name}: {} {} {}",
                    e.kind,
                    e.agent.as_deref().unwrap_or(""),
                    e.detail
                )
            })
            .unwrap_or_else(|| format!("{name}: none"));
        frame.render_widget(Paragraph::new(newest), r);
        return;
    }
    let rows = r.height.saturating_sub(2) as usize;
    let style = if alert {
        paint.fg(Color::Red)
    } else {
        Style::new()
    };
    let lines: Vec<Line<'static>> = items
        .iter()
        .rev()
        .take(rows)
        .rev()
        .map(|e| {
            Line::from(vec![
                Span::styled(format!("{} ", e.time), Style::new().fg(Color::DarkGray)),
                Span::styled(e.kind.clone(), style),
                Span::raw(format!(
                    " {} {}",
                    e.agent.as_deref().unwrap_or(""),
                    e.detail
                )),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(format!(" {name} ({}) ", items.len()))),
        r,
    );
}

fn status(app: &App, g: &Geometry, paint: &Paint, frame: &mut Frame<'_>) {
    let line = match &app.mode {
        Mode::Compose { to, text } => Line::raw(format!(
            "message to {}: {text}▏ (Enter send · Esc cancel)",
            to.as_deref().unwrap_or("all")
        )),
        Mode::Filter => Line::raw(format!("filter: {}▏ (Enter keep · Esc clear)", app.filter)),
        Mode::Confirm(Confirm::Approve { id, risk }) => Line::styled(
            format!(
                "rollback {id} is {} risk: press y again to carry it out, anything else to cancel",
                risk.as_str()
            ),
            paint.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        _ => match &app.status {
            Some(s) => Line::styled(
                s.text.clone(),
                if s.error {
                    paint.fg(Color::Red)
                } else {
                    paint.fg(Color::Green)
                },
            ),
            None => Line::raw(
                "? help · ↑↓←→ select · Enter go to pane · r restart · s stop/start · m message · M all · S snapshot · y/n rollback · q quit",
            ),
        },
    };
    frame.render_widget(Paragraph::new(line), g.status);
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

pub const HELP: &[(&str, &str)] = &[
    ("↑↓←→ hjkl, click", "select an agent"),
    ("Tab", "the next agent that needs you"),
    ("Enter", "go to its pane (detach to come back)"),
    ("r / s", "restart / stop or start it"),
    ("m / M", "message it / all agents"),
    ("Y / N", "answer its CLI's approval prompt"),
    ("S", "snapshot the session"),
    ("y / n", "approve / reject the rollback"),
    ("d", "the rollback's full diff"),
    ("PgUp PgDn, wheel", "scroll the preview into history"),
    ("/", "filter the agents"),
    ("o", "sort: needs you, name, cpu, memory, restarts"),
    ("?", "this help"),
    ("q", "quit (agents and supervisor keep running)"),
];

fn help(frame: &mut Frame<'_>) {
    let widest = HELP
        .iter()
        .map(|(_, what)| what.chars().count())
        .max()
        .unwrap_or(0);
    let area = centered(frame.area(), widest as u16 + 19 + 3, HELP.len() as u16 + 2);
    let lines: Vec<Line<'static>> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!(" {k:<18}"),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys (any key closes) ")),
        area,
    );
}

fn diff(app: &App, scroll: u16, frame: &mut Frame<'_>) {
    let area = frame.area();
    frame.render_widget(Clear, area);
    let text = match &app.details {
        Some(d) => {
            let p = &d.proposal;
            let mut s = format!(
                "rollback {} ({}, {} risk) on {}: {}\n\n",
                p.id,
                p.kind.as_str(),
                p.risk.as_str(),
                p.branch,
                p.why
            );
            for c in &d.commits {
                s.push_str(&format!(
                    "{} {} ({}): {}\n",
                    short(&c.id),
                    c.author,
                    c.agent.as_deref().unwrap_or("?"),
                    c.subject
                ));
            }
            s.push('\n');
            for f in &d.changes {
                s.push_str(&format!("{}  +{} -{}\n", f.path, f.added, f.deleted));
            }
            s.push_str("\nthe check failed:\n");
            for t in &p.output_tail {
                s.push_str(&format!("  {t}\n"));
            }
            if let Some(diff) = &d.diff {
                s.push('\n');
                s.push_str(diff);
            }
            s
        }
        None => "loading…".to_owned(),
    };
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0))
            .block(
                Block::bordered().title(" rollback (↑↓ PgUp PgDn scroll · any other key closes) "),
            ),
        area,
    );
}

#[cfg(test)]
mod tests {
    //! Whole screens, drawn into ratatui's `TestBackend` and kept as insta snapshots
    //! (`cargo insta review` after a deliberate change).

    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::gate::state::Proposal;
    use crate::gate::{CommitView, ProposalDetails};
    use crate::git::repo::FileChange;
    use crate::supervisor::control::{AgentView, Line as Sub};
    use crate::tui::app::{Input, update};

    const NOW: u64 = 1_796_000_000_000;

    fn agent(name: &str, role: &str, state: &str, activity: &str) -> AgentView {
        AgentView {
            name: name.into(),
            role: role.into(),
            profile: "claude".into(),
            pane: Some(format!("%{}", name.len())),
            pid: Some(4242),
            state: state.into(),
            activity: activity.into(),
            restarts: 0,
            cpu_percent: Some(2.5),
            rss_bytes: Some(180 << 20),
            started_at_ms: Some(NOW - 754_000),
            output_seq: 3,
            last_line: Some(format!("{name}: tests pass")),
            ..AgentView::default()
        }
    }

    fn org9() -> Vec<AgentView> {
        let mut agents = vec![
            agent("president", "PRESIDENT", "running", "idle"),
            agent("boss1", "BOSS", "running", "working"),
            agent("boss2", "BOSS", "running", "idle"),
        ];
        for i in 1..=6 {
            agents.push(agent(&format!("worker{i}"), "WORKER", "running", "working"));
        }
        agents
    }

    fn line(l: &Sub) -> Input {
        Input::Line(serde_json::to_string(l).expect("json"))
    }

    /// The dashboard after the supervisor's first lines, at `w`×`h`, with a preview
    /// of the selected agent.
    fn app(agents: Vec<AgentView>, w: u16, h: u16) -> App {
        let mut app = App::new("org9", w, h, true);
        app.now_ms = NOW;
        update(
            &mut app,
            line(&Sub::State {
                session: "org9".into(),
                supervisor_pid: 4100,
                server_down: false,
                agents: agents.clone(),
            }),
        );
        // A few memory samples, for the sparklines.
        for step in 1..=6u64 {
            for a in &agents {
                let mut a = a.clone();
                a.rss_bytes = a.rss_bytes.map(|b| b + step * (8 << 20));
                update(&mut app, line(&Sub::Agent { agent: Box::new(a) }));
            }
        }
        let selected = app.selected.clone().unwrap_or_default();
        let seq = app.card(&selected).map_or(0, |c| c.view.output_seq);
        update(
            &mut app,
            Input::Preview {
                agent: selected,
                seq,
                scroll: 0,
                text: Text::raw(
                    "$ cargo test\n   Compiling orch v0.1.0\ntest result: ok. 42 passed\n$",
                ),
            },
        );
        for (i, kind) in ["supervisor_started", "session_up", "agent_started"]
            .iter()
            .enumerate()
        {
            update(
                &mut app,
                Input::Line(format!(
                    r#"{{"ts":"2026-12-01T09:00:0{i}.000Z","kind":"{kind}","agent":"president"}}"#
                )),
            );
        }
        app
    }

    fn screen(app: &App) -> TestBackend {
        let mut terminal =
            Terminal::new(TestBackend::new(app.width, app.height)).expect("a test terminal");
        terminal.draw(|f| render(app, f)).expect("draw");
        terminal.backend().clone()
    }

    #[test]
    fn all_running() {
        let app = app(org9(), 160, 45);
        assert_eq!(geometry(&app).columns, 3, "nine agents make a 3×3 grid");
        insta::assert_snapshot!(screen(&app));
    }

    #[test]
    fn one_fatal_and_one_stalled() {
        let mut agents = org9();
        agents[4].state = "fatal".into();
        agents[4].restarts = 5;
        agents[4].exit_status = Some(1);
        agents[4].last_line = Some("panicked at src/main.rs:3".into());
        agents[6].state = "stalled".into();
        let mut app = app(agents, 160, 45);
        update(
            &mut app,
            Input::Line(r#"{"ts":"2026-12-01T09:01:00.000Z","kind":"agent_fatal","agent":"worker2","restarts_in_window":5}"#.into()),
        );
        update(
            &mut app,
            Input::Line(r#"{"ts":"2026-12-01T09:02:00.000Z","kind":"agent_stalled","agent":"worker4","silent_for_ms":300000}"#.into()),
        );
        let shown: Vec<&str> = app.order().iter().map(|c| c.view.name.as_str()).collect();
        assert_eq!(&shown[..2], ["worker2", "worker4"]);
        insta::assert_snapshot!(screen(&app));
    }

    #[test]
    fn an_agent_waiting_for_approval_comes_first_with_its_question() {
        let mut agents = org9();
        agents[7].activity = "waiting".into();
        agents[7].waiting_on = Some("Do you want to run `rm -rf target`?\n❯ 1. Yes".into());
        let app = app(agents, 160, 45);
        assert_eq!(app.order()[0].view.name, "worker5");
        let text = format!("{}", screen(&app));
        assert!(text.contains("? Do you want to run"), "{text}");
        insta::assert_snapshot!(text);
    }

    fn high_risk() -> (Proposal, ProposalDetails) {
        let p: Proposal = serde_json::from_value(serde_json::json!({
            "id": "7f3a9c21", "risk": "high", "kind": "reset", "commits": ["a1b2c3d4e5", "b2c3d4e5f6"],
            "files": ["src/lib.rs", "Cargo.toml"], "agents": ["worker3", "worker1"], "status": "pending",
            "backup_ref": "refs/orch/backup/7f3a9c21", "branch": "main", "tip": "b2c3d4e5f6",
            "new_tip": "0a1b2c3d4e", "green": "0a1b2c3d4e", "why": "2 commits since the last green",
            "created": "2026-12-01T09:03:00Z", "waiting": "high risk: asks a human",
            "output_tail": ["test lib::adds ... FAILED", "test result: FAILED. 41 passed; 1 failed"],
            "failure": "exit status 101"
        }))
        .expect("a proposal");
        let details = ProposalDetails {
            proposal: p.clone(),
            commits: vec![
                CommitView {
                    id: "a1b2c3d4e5".into(),
                    subject: "Speed up the parser".into(),
                    author: "worker3".into(),
                    agent: Some("worker3".into()),
                },
                CommitView {
                    id: "b2c3d4e5f6".into(),
                    subject: "Bump serde".into(),
                    author: "worker1".into(),
                    agent: Some("worker1".into()),
                },
            ],
            changes: vec![
                FileChange {
                    path: "src/lib.rs".into(),
                    added: 12,
                    deleted: 40,
                },
                FileChange {
                    path: "Cargo.toml".into(),
                    added: 1,
                    deleted: 1,
                },
            ],
            diff: Some("diff --git a/src/lib.rs b/src/lib.rs\n-fast()\n+slow()\n".into()),
        };
        (p, details)
    }

    #[test]
    fn a_pending_high_risk_rollback() {
        let mut app = app(org9(), 160, 45);
        let (p, details) = high_risk();
        update(&mut app, Input::Proposals(vec![p]));
        update(&mut app, Input::Details(Box::new(details)));
        let text = format!("{}", screen(&app));
        assert!(text.contains("high risk"), "{text}");
        assert!(text.contains("Speed up the parser"), "{text}");
        assert!(text.contains("src/lib.rs  +12 -40"), "{text}");
        insta::assert_snapshot!(text);
        // `d`: the full diff.
        update(
            &mut app,
            Input::Key(crossterm::event::KeyEvent::from(
                crossterm::event::KeyCode::Char('d'),
            )),
        );
        assert!(format!("{}", screen(&app)).contains("+slow()"));
    }

    #[test]
    fn the_help_overlay() {
        let mut app = app(org9(), 160, 45);
        update(
            &mut app,
            Input::Key(crossterm::event::KeyEvent::from(
                crossterm::event::KeyCode::Char('?'),
            )),
        );
        let text = format!("{}", screen(&app));
        for (keys, what) in HELP {
            assert!(
                text.contains(keys) && text.contains(what),
                "{keys}: {what}\n{text}"
            );
        }
        insta::assert_snapshot!(text);
    }

    #[test]
    fn at_80_by_24_nothing_overlaps() {
        let mut agents = org9();
        agents[2].state = "fatal".into();
        let mut app = app(agents, 80, 24);
        let (p, details) = high_risk();
        update(&mut app, Input::Proposals(vec![p]));
        update(&mut app, Input::Details(Box::new(details)));
        let g = geometry(&app);
        let mut panels = vec![g.title, g.agents, g.preview, g.alerts, g.events, g.status];
        panels.extend(g.rollback);
        for (i, a) in panels.iter().enumerate() {
            assert!(
                a.x + a.width <= 80 && a.y + a.height <= 24,
                "{a:?} is off screen"
            );
            for b in &panels[i + 1..] {
                assert!(!a.intersects(*b), "{a:?} overlaps {b:?}");
            }
        }
        insta::assert_snapshot!(screen(&app));
    }

    #[test]
    fn two_hundred_agents_make_a_scrolled_list() {
        let agents: Vec<AgentView> = (0..200)
            .map(|i| agent(&format!("a{i:03}"), "WORKER", "running", "working"))
            .collect();
        let mut app = app(agents, 160, 45);
        assert_eq!(geometry(&app).columns, 1);
        // The selection scrolls the list.
        for _ in 0..60 {
            update(
                &mut app,
                Input::Key(crossterm::event::KeyEvent::from(
                    crossterm::event::KeyCode::Down,
                )),
            );
        }
        assert_eq!(app.selected.as_deref(), Some("a060"));
        let text = format!("{}", screen(&app));
        assert!(text.contains("a060") && !text.contains("a000 "), "{text}");
        insta::assert_snapshot!(text);
    }
}
