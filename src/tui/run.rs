//! The dashboard's event loop and its edges: the terminal (one guard, restored on quit,
//! on SIGTERM/SIGHUP and on panic), the supervisor's subscription, and the intents,
//! carried out on blocking threads through the domain functions `orch` commands use
//! (`session::agent::control`, `messaging::send::send`, `snapshot::take_manual`,
//! `gate::session::call`).
//!
//! It draws only when something changed, at most every [`FRAME`]; a flooding pane
//! becomes at most one preview read in flight at a time and one subscription line per
//! agent per 50 ms, never a render per byte. Logs go to the session's log file, never to
//! the terminal.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

use super::app::{App, Input, Intent, update};
use crate::gate::service::{Answer, Call};
use crate::layout::Layout;
use crate::messaging::acl::Sender;
use crate::messaging::queue::Priority;
use crate::messaging::send::{Outcome, SendRequest, send};
use crate::state::StateDir;
use crate::supervisor::background::Spawn;
use crate::tmux::Tmux;

/// The least time between two frames.
const FRAME: Duration = Duration::from_millis(10);

/// What the dashboard shows and how to reach its supervisor.
pub struct Options {
    pub layout: Layout,
    pub layout_file: Option<PathBuf>,
    pub tmux: Tmux,
    pub state: StateDir,
    /// How to start the supervisor when none runs.
    pub spawn: Spawn,
}

/// Brings the session up (through its supervisor, started in the background if none
/// runs), then shows the dashboard until `q`.
pub fn run(opts: Options) -> Result<()> {
    let session = opts.layout.session.to_string();
    let dir = opts.state.session_dir(&session)?;
    opts.spawn
        .ensure(&dir)
        .context("starting the session's supervisor")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut guard = TerminalGuard::enter()?;
    let size = guard.terminal.size()?;
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let app = App::new(&session, size.width, size.height, color);
    let mut frames = 0;
    let started = Instant::now();
    let result = runtime.block_on(event_loop(app, &mut guard, &opts, dir, &mut frames));
    drop(guard);
    // `cargo bench --bench dashboard` reads this line.
    tracing::info!(
        frames,
        secs = started.elapsed().as_secs_f64(),
        "the dashboard closed"
    );
    result
}

/// Raw mode, the alternate screen and mouse reports, undone on drop and on panic.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<std::io::Stdout>>,
}

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard> {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // The loop runs on the main thread: its panic ends the dashboard. One in a
                // worker thread (an intent carried out) is caught there, and the screen
                // stays the dashboard's.
                if std::thread::current().name() == Some("main") {
                    restore_terminal();
                }
                previous(info);
            }));
        });
        take_terminal()?;
        let terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))
            .context("opening the terminal")?;
        Ok(TerminalGuard { terminal })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Whether the dashboard holds the terminal (so it is given back once: leaving the
/// alternate screen twice would move the cursor back over what was printed meanwhile,
/// such as a panic's message).
static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn take_terminal() -> Result<()> {
    use crossterm::{cursor, event, execute, terminal};
    TAKEN.store(true, std::sync::atomic::Ordering::SeqCst);
    terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
    execute!(
        std::io::stdout(),
        terminal::EnterAlternateScreen,
        event::EnableMouseCapture,
        cursor::Hide
    )
    .context("taking the terminal")?;
    Ok(())
}

/// Gives the terminal back as it was; cannot fail or panic (it runs in the panic hook).
fn restore_terminal() {
    use crossterm::{cursor, event, execute, terminal};
    if !TAKEN.swap(false, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        event::DisableMouseCapture,
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn event_loop(
    mut app: App,
    guard: &mut TerminalGuard,
    opts: &Options,
    dir: PathBuf,
    frames: &mut u64,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, mut rx) = mpsc::unbounded_channel::<Input>();
    tokio::spawn(subscription(dir.clone(), tx.clone()));
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut keys = Some(EventStream::new());
    let mut clock = tokio::time::interval(Duration::from_secs(60));
    let mut preview = PreviewReader::default();
    app.now_ms = now_ms();
    let mut dirty = true;
    let mut drawn = Instant::now() - FRAME;
    // While the user is in an agent's pane, tmux owns the terminal: nothing is drawn or
    // read, but the supervisor's lines keep the state current.
    let mut visiting = false;
    #[cfg(debug_assertions)]
    let panic_after_draw = std::env::var_os("ORCH_DASHBOARD_PANIC").is_some();
    loop {
        if dirty && !visiting && drawn.elapsed() >= FRAME {
            guard.terminal.draw(|f| super::view::render(&app, f))?;
            drawn = Instant::now();
            dirty = false;
            *frames += 1;
            if std::mem::take(&mut app.bell) {
                let _ = std::io::stdout()
                    .write_all(b"\x07")
                    .and_then(|()| std::io::stdout().flush());
            }
            #[cfg(debug_assertions)]
            if panic_after_draw {
                panic!("ORCH_DASHBOARD_PANIC: a forced panic after the first frame");
            }
        }
        let until_frame = FRAME.saturating_sub(drawn.elapsed());
        let input = tokio::select! {
            biased;
            _ = sigterm.recv() => break,
            _ = sighup.recv() => break,
            ev = next_key(&mut keys) => match ev {
                Some(Ok(TermEvent::Key(k))) => Input::Key(k),
                Some(Ok(TermEvent::Mouse(m))) => Input::Mouse(m),
                Some(Ok(TermEvent::Resize(w, h))) => Input::Resize(w, h),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(anyhow::Error::from(e).context("reading the terminal")),
                None => break,
            },
            Some(input) = rx.recv() => input,
            _ = clock.tick() => Input::Clock(now_ms()),
            _ = tokio::time::sleep(until_frame), if dirty && !visiting => continue,
        };
        let mut intents = Vec::new();
        match input {
            Input::Preview { .. } => preview.busy = false,
            Input::Back(_) => {
                // A new alternate screen is blank, and a new terminal has blank buffers,
                // so the next frame is drawn whole. (`Terminal::clear` would ask the
                // terminal where its cursor is, which races with tmux's last output.)
                take_terminal()?;
                guard.terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))
                    .context("opening the terminal")?;
                let size = guard.terminal.size()?;
                intents.extend(update(&mut app, Input::Resize(size.width, size.height)));
                keys = Some(EventStream::new());
                visiting = false;
            }
            _ => {}
        }
        intents.extend(update(&mut app, input));
        dirty = true;
        for intent in intents {
            match intent {
                Intent::Quit => return Ok(()),
                Intent::Visit { pane } => {
                    // Stop reading the terminal first: tmux owns it until the user detaches.
                    keys = None;
                    restore_terminal();
                    visiting = true;
                    visit(&opts.tmux, &app.session, &pane, &tx);
                }
                Intent::Preview { .. } => preview.want(intent, &opts.tmux, &tx),
                other => carry_out(other, opts, &tx),
            }
        }
        preview.next(&opts.tmux, &tx);
        if app.quit {
            break;
        }
    }
    Ok(())
}

async fn next_key(keys: &mut Option<EventStream>) -> Option<std::io::Result<TermEvent>> {
    match keys {
        Some(k) => k.next().await,
        None => std::future::pending().await,
    }
}

/// Reads the selected agent's pane, one read at a time: while one runs, only the newest
/// request waits.
#[derive(Default)]
struct PreviewReader {
    busy: bool,
    waiting: Option<Intent>,
}

impl PreviewReader {
    fn want(&mut self, intent: Intent, tmux: &Tmux, tx: &mpsc::UnboundedSender<Input>) {
        self.waiting = Some(intent);
        self.next(tmux, tx);
    }

    fn next(&mut self, tmux: &Tmux, tx: &mpsc::UnboundedSender<Input>) {
        if self.busy {
            return;
        }
        let Some(Intent::Preview {
            agent,
            pane,
            scroll,
            height,
            seq,
        }) = self.waiting.take()
        else {
            return;
        };
        self.busy = true;
        let tmux = tmux.clone();
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            let text = read_preview(&tmux, &pane, scroll, height);
            let _ = tx.send(Input::Preview {
                agent,
                seq,
                scroll,
                text,
            });
        });
    }
}

/// `height` rows of the pane ending `scroll` rows above its last non-blank row, with
/// their colours.
fn read_preview(tmux: &Tmux, pane: &str, scroll: u16, height: u16) -> ratatui::text::Text<'static> {
    let top = -(i64::from(scroll) + i64::from(height));
    match tmux.capture_coloured(pane, top, 10_000) {
        Ok(bytes) => preview_text(&bytes, scroll, height),
        Err(_) => ratatui::text::Text::raw("(the pane cannot be read)"),
    }
}

/// The `height` rows of a coloured capture that end `scroll` rows above its last row
/// with something on it (a screen's blank rows below the prompt are not shown). Pure.
fn preview_text(capture: &[u8], scroll: u16, height: u16) -> ratatui::text::Text<'static> {
    use ansi_to_tui::IntoText;
    let Ok(mut text) = capture.into_text() else {
        return ratatui::text::Text::raw("(the pane's output cannot be read)");
    };
    let blank = |l: &ratatui::text::Line<'_>| l.spans.iter().all(|s| s.content.trim().is_empty());
    while text.lines.last().is_some_and(blank) {
        text.lines.pop();
    }
    let end = text.lines.len().saturating_sub(scroll as usize);
    let start = end.saturating_sub(height as usize);
    text.lines.truncate(end);
    text.lines.drain(..start);
    text
}

/// Follows the supervisor's subscription, subscribing again when it goes away (a new
/// supervisor is picked up within a second). A lost supervisor is not started again
/// from here: `orch layout down` in another terminal stops it on purpose.
async fn subscription(dir: PathBuf, tx: mpsc::UnboundedSender<Input>) {
    let mut said = false;
    loop {
        match crate::supervisor::control::subscribe(&dir).await {
            Ok(Some(mut lines)) => {
                said = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send(Input::Line(line)).is_err() {
                        return;
                    }
                }
            }
            Ok(None) if !said => {
                said = true;
                let _ = tx.send(Input::Lost(
                    "no supervisor runs (`orch supervise`, or opening the dashboard again, starts one)"
                        .into(),
                ));
            }
            Ok(None) => {}
            Err(e) => {
                let _ = tx.send(Input::Lost(format!("{e:#}")));
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Shows `pane` through tmux on a blocking thread; [`Input::Back`] says when the user
/// is back.
fn visit(tmux: &Tmux, session: &str, pane: &str, tx: &mpsc::UnboundedSender<Input>) {
    let (tmux, session, pane, tx) = (
        tmux.clone(),
        session.to_owned(),
        pane.to_owned(),
        tx.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let visited = tmux.visit(&session, &pane);
        let _ = tx.send(Input::Back(match visited {
            Ok(true) => Ok("back from the pane".to_owned()),
            Ok(false) => Ok(format!("switched to pane {pane}")),
            Err(e) => Err(format!("{e}")),
        }));
    });
}

/// Carries out an intent on a blocking thread; its outcome comes back as an input.
fn carry_out(intent: Intent, opts: &Options, tx: &mpsc::UnboundedSender<Input>) {
    let layout = opts.layout.clone();
    let tmux = opts.tmux.clone();
    let state = opts.state.clone();
    let layout_file = opts.layout_file.clone();
    let tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let input = match intent {
            Intent::Control { agent, action } => Input::Done(
                crate::session::agent::control(&layout, &tmux, &state, action, &agent)
                    .map(|o| crate::session::agent::describe(&agent, action, &o))
                    .map_err(|e| format!("{e:#}")),
            ),
            Intent::Send { to, text } => {
                Input::Done(send_message(&layout, &tmux, &state, to, &text))
            }
            Intent::Snapshot => Input::Done(
                crate::snapshot::take_manual(&layout, &tmux, &state, layout_file.as_deref())
                    .map(|w| format!("snapshot {} written", w.id))
                    .map_err(|e| format!("{e:#}")),
            ),
            Intent::Gate(call) => gate(&layout, &tmux, &state, layout_file.as_deref(), call),
            Intent::Keys { agent, pane, keys } => Input::Done(
                tmux.press_keys(&pane, &keys)
                    .map(|()| format!("sent {} to {agent}", keys.join(" ")))
                    .map_err(|e| format!("{e}")),
            ),
            Intent::Visit { .. } | Intent::Preview { .. } | Intent::Quit => return,
        };
        let _ = tx.send(input);
    });
}

/// `m` / `M`: the same send as `orch send`, from the user.
fn send_message(
    layout: &Layout,
    tmux: &Tmux,
    state: &StateDir,
    to: Option<String>,
    text: &str,
) -> Result<String, String> {
    let dir = state
        .session_dir(layout.session.as_str())
        .map_err(|e| format!("{e:#}"))?;
    let text = crate::tmux::paste_safe(text);
    let target = to.unwrap_or_else(|| "all".to_owned());
    let req = SendRequest {
        target: &target,
        text: &text,
        priority: Priority::Normal,
        enter: true,
        when_idle: false,
        wait: false,
        timeout: None,
    };
    let report =
        send(layout, tmux, &dir, Sender::User, &req, |_, _| {}).map_err(|e| format!("{e:#}"))?;
    let (mut delivered, mut queued, mut failed) = (0, 0, Vec::new());
    for (agent, o) in &report.outcomes {
        match o {
            Outcome::Delivered { .. } => delivered += 1,
            Outcome::Queued(_) | Outcome::TimedOut(_) => queued += 1,
            Outcome::Failed(r) => failed.push(format!("{agent}: {r}")),
        }
    }
    if let Some(f) = failed.first() {
        return Err(f.clone());
    }
    Ok(match (delivered, queued) {
        (d, 0) => format!("message delivered to {target} ({d} agent(s))"),
        (d, q) => {
            format!("message to {target}: {d} delivered, {q} queued (they get it when they run)")
        }
    })
}

fn gate(
    layout: &Layout,
    tmux: &Tmux,
    state: &StateDir,
    layout_file: Option<&std::path::Path>,
    call: Call,
) -> Input {
    let answer = crate::gate::session::call(layout, tmux, state, layout_file, call, &mut |_| {});
    match answer {
        Ok(Answer::List { proposals }) => Input::Proposals(proposals),
        Ok(Answer::Show { details }) => Input::Details(details),
        Ok(Answer::Approved { executed, .. }) => Input::Done(Ok(format!(
            "rollback {} ({}) executed: {} moved to {}",
            executed.id,
            executed.kind.as_str(),
            executed.branch,
            executed.to.get(..8).unwrap_or(&executed.to)
        ))),
        Ok(Answer::Rejected { proposal }) => {
            Input::Done(Ok(format!("rollback {} rejected", proposal.id)))
        }
        Ok(other) => Input::Done(Ok(format!("{other:?}"))),
        // A session without `quality:` has no rollbacks to list.
        Err(e)
            if e.downcast_ref::<crate::gate::BadInput>()
                .is_some_and(|b| matches!(b, crate::gate::BadInput::NoQuality)) =>
        {
            Input::Proposals(Vec::new())
        }
        Err(e) => Input::Done(Err(format!("{e:#}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::preview_text;

    fn rows(text: &ratatui::text::Text<'_>) -> Vec<String> {
        text.lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect()
    }

    #[test]
    fn the_preview_ends_at_the_last_row_with_something_on_it_and_keeps_colours() {
        let capture = b"one\n\x1b[31mtwo\x1b[0m\nthree\n$ \n\n   \n\x1b[0m\n";
        let text = preview_text(capture, 0, 2);
        assert_eq!(rows(&text), ["three", "$ "]);
        // Two rows back into the history.
        let text = preview_text(capture, 2, 2);
        assert_eq!(rows(&text), ["one", "two"]);
        let red = text.lines[1]
            .spans
            .iter()
            .find(|s| s.content == "two")
            .expect("two");
        assert_eq!(red.style.fg, Some(ratatui::style::Color::Red));
        // Scrolled past the top: what there is.
        assert_eq!(rows(&preview_text(capture, 10, 3)), Vec::<String>::new());
    }
}
