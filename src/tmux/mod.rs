//! The only code that runs tmux.
//!
//! Every call goes through [`Tmux`], which honours the socket (`tmux -L NAME`), chains
//! several tmux commands into one process where it can (one tmux round trip costs
//! ~2.6 ms; a fork per pane per tick is what makes peers slow), and escapes arguments so
//! tmux's own command parser cannot reinterpret them (a trailing `;` ends a command).
//! Commands are built with `tmux_interface`'s typed builders.

pub mod control;
pub mod guard;
mod many;
mod panes;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tmux_interface::{
    AllowActions, CapturePane, DisplayMessage, KillPane, KillServer, KillSession, KillWindow,
    ListClients, ListPanes, ListWindows, LoadBuffer, NewSession, NewWindow, PasteBuffer, PipePane,
    RefreshClient, RespawnPane, SelectLayout, SelectPane, SelectWindow, SendKeys, SetHook,
    SetOption, ShowOptions, SplitWindow, State, SwitchClient, TmuxCommand,
};

pub use panes::{CONTROL_PANE_FORMAT, PANE_FORMAT, Pane};

/// The session option holding orch's status text, and how the status line names it.
const ATTENTION_OPTION: &str = "@orch_attention";
const ATTENTION_REF: &str = "#{@orch_attention}";
/// The session's own `status-right` and `status-right-length` before orch's text was put
/// in front (empty: it had none, the global one showed).
const RIGHT_BEFORE: &str = "@orch_status_right_before";
const LENGTH_BEFORE: &str = "@orch_status_length_before";
/// Columns added to `status-right-length` for orch's text (`orch: 9 waiting · 2 rollbacks`).
const ATTENTION_ROOM: usize = 40;

/// `set-option` of one session option (`target` is `=session:`).
fn set_session_option<'a>(target: &str, name: &'a str, value: &str) -> TmuxCommand<'a> {
    SetOption::new()
        .target_pane(target.to_owned())
        .option(name)
        .value(value.to_owned())
        .build()
}

/// `set-option -u` of one session option: the global one shows again.
fn unset_session_option<'a>(target: &str, name: &'a str) -> TmuxCommand<'a> {
    SetOption::new()
        .target_pane(target.to_owned())
        .unset()
        .option(name)
        .build()
}

/// `show-options -qv` of one session option: its own value, empty when it has none.
fn show_session_option<'a>(target: &str, name: &'a str) -> TmuxCommand<'a> {
    ShowOptions::new()
        .quiet()
        .value()
        .target_pane(target.to_owned())
        .option(name)
        .build()
}

/// Name of the throwaway first window of a new session. tmux creates a session's first
/// window before any session option can be set, and `history-limit` only applies to panes
/// created after it is set, so the agents' window is always the second one.
const BOOT_WINDOW: &str = "orch-boot";

/// The commands of a sequence, for an error: all of a short one, each name once (with
/// the count) for a long one, so a failed 800-pane batch stays one readable line.
fn command_names(names: &[String]) -> String {
    if names.len() <= 4 {
        return names.join("; ");
    }
    let mut unique: Vec<&str> = Vec::new();
    for n in names {
        if !unique.contains(&n.as_str()) {
            unique.push(n);
        }
    }
    format!("{} ({} commands)", unique.join(", "), names.len())
}

/// tmux refuses a command sequence whose arguments exceed its message size (16 KiB,
/// "command too long"); stay well below it.
const MAX_BATCH_BYTES: usize = 12 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TmuxError {
    #[error("tmux was not found on PATH; install tmux 3.2 or newer (e.g. `apt-get install tmux`)")]
    NotInstalled,
    #[error("no tmux server is running on socket {0}")]
    NoServer(String),
    #[error("tmux {command} failed: {message}")]
    Failed { command: String, message: String },
    #[error("could not run tmux: {0}")]
    Io(#[from] std::io::Error),
    /// The pane cannot take input now: it is dead, or in copy mode (or another mode).
    #[error("pane {pane} is {why}; not pasting")]
    NotReady { pane: String, why: &'static str },
}

/// A handle on one tmux server, named by its socket.
#[derive(Clone, Debug, Default)]
pub struct Tmux {
    socket: Option<String>,
}

/// What a new pane runs and where.
#[derive(Clone, Debug)]
pub struct PaneSpec<'a> {
    pub agent: &'a str,
    pub role: &'a str,
    pub cwd: &'a Path,
    pub env: Vec<(String, String)>,
    /// `None` runs tmux's default command, i.e. the user's shell.
    pub command: Option<String>,
    /// Everything the pane prints is appended to this file (`pipe-pane -O`), if set.
    pub transcript: Option<std::path::PathBuf>,
    /// A command that reads the pane's output on stdin and appends it to the file given as
    /// its last argument (orch's redacting filter); `None` appends with `cat`.
    pub transcript_filter: Option<String>,
}

/// A pane's screen, cursor row and terminal at one moment ([`Tmux::pane_input`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaneInput {
    pub dead: bool,
    pub in_mode: bool,
    /// The cursor's row on the visible screen, from 0.
    pub cursor_y: usize,
    /// Rows of history above the visible screen (`#{history_size}`).
    pub history_size: u64,
    /// `#{pane_tty}`, e.g. `/dev/pts/3`.
    pub tty: PathBuf,
    pub screen: String,
}

impl PaneInput {
    /// The screen row the cursor is on.
    pub fn cursor_line(&self) -> &str {
        self.screen.lines().nth(self.cursor_y).unwrap_or("")
    }
}

/// Where new panes go.
#[derive(Clone, Copy, Debug)]
pub enum PanesTarget<'a> {
    /// Create the session, with the named window for the panes.
    NewSession {
        session: &'a str,
        window: &'a str,
        history_limit: u32,
        width: u16,
        height: u16,
    },
    /// Create the named window in an existing session.
    NewWindow {
        session: &'a str,
        window: &'a str,
        history_limit: u32,
    },
    /// Add panes to an existing window, by window id (`@3`).
    Window { id: &'a str },
}

/// A window's geometry and which of its panes show the alternate screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowInfo {
    /// `@N`.
    pub id: String,
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// `#{window_layout}`, for `select-layout`.
    pub layout: String,
    /// The tmux server's pid: pane ids and histories belong to one server's lifetime.
    pub server_pid: u32,
}

/// What [`Tmux::session_view`] returns.
#[derive(Clone, Debug, Default)]
pub struct SessionView {
    /// Every pane on the server.
    pub panes: Vec<Pane>,
    /// The session's windows.
    pub windows: Vec<WindowInfo>,
}

impl SessionView {
    /// A pane's geometry.
    pub fn pane(&self, id: &str) -> Option<PaneGeometry> {
        self.panes.iter().find(|p| p.id == id).map(Pane::geometry)
    }
}

/// A pane's history and width, as a capture of row ranges needs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaneGeometry {
    pub id: String,
    /// `#{history_size}`: rows above the screen (row -1 is the last of them).
    pub history_size: u64,
    /// `#{history_limit}`: past it tmux drops the oldest rows.
    pub history_limit: u64,
    /// `#{pane_width}`: a different width reflows the history.
    pub width: u32,
    /// `#{alternate_on}`: a program is on the alternate screen.
    pub alternate_on: bool,
}

/// Which rows of a pane a capture takes, always with colours and wrapped lines joined
/// (`capture-pane -e -J`). Rows are numbered like tmux numbers them: 0 is the screen's
/// first row, -1 the newest history row. tmux clamps a range that reaches past the
/// history, and `-E -1` with no history is the screen's first row: callers ask only for
/// rows they know exist, and check [`CapturedAt`] to learn whether that still held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// History and screen, `-S - -E -`.
    Whole,
    /// The whole history, `-S - -E -1` (only when there is one).
    History,
    /// `-S FIRST -E LAST`.
    Range(i64, i64),
    /// The visible screen, `-S 0 -E -`.
    Screen,
    /// While a program is on the alternate screen, tmux's saved normal screen, `-a -q`.
    Alternate,
}

impl Rows {
    /// The history row a capture of these rows ends on, if it ends in the history.
    fn last_history_row(self) -> Option<i64> {
        match self {
            Rows::History => Some(-1),
            Rows::Range(_, last) if last < 0 => Some(last),
            _ => None,
        }
    }
}

/// One capture of a pane's rows.
#[derive(Clone, Debug)]
pub struct PaneCapture<'a> {
    pub pane: &'a str,
    pub rows: Rows,
    /// Whether the bytes must end exactly as a tmux buffer's would (no newline after a
    /// last row the terminal wrapped), at the cost of one more small capture; a capture
    /// that is only compared with another of the same rows does not need it.
    pub exact: bool,
}

/// What [`Tmux::capture_panes`] returns.
#[derive(Clone, Debug, Default)]
pub struct PaneCaptures {
    pub at: Vec<CapturedAt>,
    /// Each capture's bytes, as a tmux buffer would hold them.
    pub parts: Vec<Vec<u8>>,
}

/// What tmux said of a pane in the same command sequence as its captures, before them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedAt {
    pub pane: String,
    pub history_size: u64,
    pub width: u32,
    pub server_pid: u32,
}

/// Facts about a running server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub socket_path: String,
    pub pid: u32,
    pub version: String,
}

impl Tmux {
    /// `socket` is a tmux socket name (`-L`); `None` lets tmux choose, which is `$TMUX`'s
    /// server inside tmux and the `default` socket elsewhere.
    pub fn new(socket: Option<String>) -> Self {
        Self { socket }
    }

    /// The socket given with `--socket`, if any.
    pub fn socket(&self) -> Option<&str> {
        self.socket.as_deref()
    }

    /// The visible screens of several panes in ONE tmux process (more only past tmux's
    /// message size: one per ~100 panes). Between captures it prints a marker with a
    /// random nonce, which no pane can forge.
    pub fn capture_screens(&self, panes: &[&str]) -> Result<Vec<String>, TmuxError> {
        // capture-pane, display-message and their arguments: well under 120 bytes a pane.
        const PANES_PER_PROCESS: usize = MAX_BATCH_BYTES / 120;
        if panes.len() > PANES_PER_PROCESS {
            let mut all = Vec::with_capacity(panes.len());
            for chunk in panes.chunks(PANES_PER_PROCESS) {
                all.extend(self.capture_screens(chunk)?);
            }
            return Ok(all);
        }
        if panes.is_empty() {
            return Ok(Vec::new());
        }
        let nonce = format!(
            "@@orch-screen-{:x}-{:x}@@",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let mut cmds = Vec::new();
        for pane in panes {
            cmds.push(
                CapturePane::new()
                    .stdout()
                    .join()
                    .target_pane((*pane).to_owned())
                    .build(),
            );
            cmds.push(
                DisplayMessage::new()
                    .print()
                    .target_pane((*pane).to_owned())
                    .message(nonce.clone())
                    .build(),
            );
        }
        let out = self.run(cmds)?;
        let mut screens: Vec<String> = out
            .split(&format!("{nonce}\n"))
            .map(str::to_owned)
            .collect();
        screens.truncate(panes.len());
        if screens.len() != panes.len() {
            return Err(TmuxError::Failed {
                command: "capture-pane".into(),
                message: "fewer screens than panes".into(),
            });
        }
        Ok(screens)
    }

    /// The socket name as users know it, for messages and for ORCH_SOCKET.
    pub fn socket_name(&self) -> String {
        if let Some(s) = &self.socket {
            return s.clone();
        }
        // Inside tmux without --socket, tmux talks to $TMUX's server: name that one.
        std::env::var("TMUX")
            .ok()
            .and_then(|t| t.split(',').next().map(str::to_owned))
            .and_then(|path| {
                Path::new(&path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "default".to_owned())
    }

    fn base_command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        if let Some(s) = &self.socket {
            cmd.arg("-L").arg(s);
        }
        cmd
    }

    /// Runs a sequence of tmux commands in ONE tmux process and returns its stdout.
    fn run(&self, commands: Vec<TmuxCommand<'_>>) -> Result<String, TmuxError> {
        self.run_with_stdin(commands, None)
    }

    /// [`Tmux::run`], with `input` on tmux's stdin when given (for `load-buffer -`).
    fn run_with_stdin(
        &self,
        commands: Vec<TmuxCommand<'_>>,
        input: Option<&[u8]>,
    ) -> Result<String, TmuxError> {
        self.run_bytes(commands, input)
            .map(|out| String::from_utf8_lossy(&out).into_owned())
    }

    /// [`Tmux::run_with_stdin`], returning stdout as it came.
    fn run_bytes(
        &self,
        commands: Vec<TmuxCommand<'_>>,
        input: Option<&[u8]>,
    ) -> Result<Vec<u8>, TmuxError> {
        let (stdout, result) = self.run_partial(commands, input);
        result.map(|()| stdout)
    }

    /// [`Tmux::run_bytes`], keeping what tmux printed before a command of the sequence
    /// failed (tmux stops a sequence at its first failing command): markers printed
    /// between commands then tell how far it got.
    fn run_partial(
        &self,
        commands: Vec<TmuxCommand<'_>>,
        input: Option<&[u8]>,
    ) -> (Vec<u8>, Result<(), TmuxError>) {
        match self.run_output(commands, input) {
            Ok((stdout, result)) => (stdout, result),
            Err(e) => (Vec::new(), Err(e)),
        }
    }

    fn run_output(
        &self,
        commands: Vec<TmuxCommand<'_>>,
        input: Option<&[u8]>,
    ) -> Result<(Vec<u8>, Result<(), TmuxError>), TmuxError> {
        use std::io::Write;
        let mut cmd = self.base_command();
        let mut what = Vec::new();
        for (i, c) in commands.iter().enumerate() {
            if i > 0 {
                cmd.arg(";");
            }
            let argv = c.to_vec();
            if let Some(name) = argv.first() {
                what.push(name.to_string());
            }
            cmd.args(argv.iter().map(|a| escape_arg(a)));
        }
        let output = match input {
            None => cmd.stdin(Stdio::null()).output().map_err(not_installed)?,
            Some(input) => {
                let mut child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(not_installed)?;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(input)?;
                }
                child.wait_with_output()?
            }
        };
        if output.status.success() {
            return Ok((output.stdout, Ok(())));
        }
        let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if is_no_server(&message) {
            return Err(TmuxError::NoServer(self.socket_name()));
        }
        Ok((
            output.stdout,
            Err(TmuxError::Failed {
                command: command_names(&what),
                message,
            }),
        ))
    }

    /// Every pane on the server, in ONE `list-panes -a` call whatever the number of panes.
    /// No server means no panes.
    pub fn list_panes(&self) -> Result<Vec<Pane>, TmuxError> {
        Ok(self.panes_on_server()?.unwrap_or_default())
    }

    /// Every pane on the server as [`Tmux::list_panes`], or `None` when no server runs on
    /// the socket (which a listing of no panes cannot tell apart).
    pub fn panes_on_server(&self) -> Result<Option<Vec<Pane>>, TmuxError> {
        match self.run(vec![ListPanes::new().all().format(PANE_FORMAT).build()]) {
            Ok(out) => Ok(Some(out.lines().filter_map(Pane::parse).collect())),
            Err(TmuxError::NoServer(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every pane on the server (as [`Tmux::list_panes`]) and `session`'s windows, in ONE
    /// tmux process. No server, or no such session: `panes` says which, `windows` is empty.
    pub fn session_view(&self, session: &str) -> Result<SessionView, TmuxError> {
        let nonce = nonce();
        let cmds = vec![
            ListPanes::new().all().format(PANE_FORMAT).build(),
            DisplayMessage::new()
                .print()
                .message(format!("{nonce} windows"))
                .build(),
            ListWindows::new()
                .target_session(format!("={session}"))
                .format("#{window_id}\t#{window_width}\t#{window_height}\t#{pid}\t#{window_name}\t#{window_layout}")
                .build(),
        ];
        let out = match self.run(cmds) {
            Ok(out) => out,
            // No session of that name (or no server): only the panes are of interest.
            Err(TmuxError::Failed { .. } | TmuxError::NoServer(_)) => {
                return Ok(SessionView {
                    panes: self.list_panes()?,
                    windows: Vec::new(),
                });
            }
            Err(e) => return Err(e),
        };
        let (panes, windows) = out
            .split_once(&format!("{nonce} windows\n"))
            .unwrap_or((&out, ""));
        let windows = windows
            .lines()
            .map(|line| {
                let bad = || TmuxError::Failed {
                    command: "list-windows".into(),
                    message: format!("unexpected reply {line:?}"),
                };
                let f: Vec<&str> = line.splitn(6, '\t').collect();
                let [id, w, h, pid, name, layout] = f[..] else {
                    return Err(bad());
                };
                Ok(WindowInfo {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    width: w.parse().map_err(|_| bad())?,
                    height: h.parse().map_err(|_| bad())?,
                    layout: layout.to_owned(),
                    server_pid: pid.parse().map_err(|_| bad())?,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(SessionView {
            panes: panes.lines().filter_map(Pane::parse).collect(),
            windows,
        })
    }

    /// Captures rows of panes, with colours, in one tmux process (more only past tmux's
    /// message size). Returns what tmux said of each pane and each capture's bytes, in the
    /// order of `captures`, in which a pane's captures must be consecutive.
    ///
    /// Every command in the sequence returns at once (`capture-pane -p` only queues its
    /// output for the client), and tmux reads no pane output while it runs such a sequence:
    /// a pane's captures and its [`CapturedAt`] describe one moment. The output comes back
    /// on stdout between marker lines that start with a random nonce no pane can have
    /// printed. Nothing is written to disk and no buffer is left in the server.
    ///
    /// `-p` ends every capture with a newline, also one whose last row the terminal
    /// wrapped onto the next (where a buffer would have none); for an
    /// [`exact`](PaneCapture::exact) capture that ends on a history row, a probe of that
    /// row and the next (two newlines: not wrapped) tells which, and the bytes are
    /// returned as a buffer would hold them. (tmux spends ~0.1 ms on each command of the
    /// sequence, so the probes and markers are kept to what the parsing needs.)
    pub fn capture_panes(&self, captures: &[PaneCapture<'_>]) -> Result<PaneCaptures, TmuxError> {
        let nonce = nonce();
        let marker = |what: String| {
            DisplayMessage::new()
                .print()
                .message(format!("{nonce} {what}"))
                .build()
        };
        let mut result = PaneCaptures::default();
        let mut batch: Vec<TmuxCommand<'_>> = Vec::new();
        let mut i = 0;
        while i < captures.len() {
            let pane = captures[i].pane;
            let n = captures[i..].iter().take_while(|c| c.pane == pane).count();
            let mut group = vec![
                DisplayMessage::new()
                    .print()
                    .target_pane(pane.to_owned())
                    .message(format!(
                        "{nonce} at #{{pane_id}}\t#{{history_size}}\t#{{pane_width}}\t#{{pid}}"
                    ))
                    .build(),
            ];
            for (k, c) in captures[i..i + n].iter().enumerate() {
                group.push(marker(format!("part {}", i + k)));
                group.push(capture_rows(c).build());
                if let Some(last) = c.rows.last_history_row().filter(|_| c.exact) {
                    group.push(marker(format!("probe {}", i + k)));
                    group.push(
                        CapturePane::new()
                            .stdout()
                            .join()
                            .start_line(last.to_string())
                            .end_line((last + 1).to_string())
                            .target_pane(pane.to_owned())
                            .build(),
                    );
                }
            }
            // The next pane's first marker ends this pane's last capture; the batch's
            // last capture needs one of its own.
            if !batch.is_empty() && argv_len(&batch) + argv_len(&group) > MAX_BATCH_BYTES {
                batch.push(marker("end".into()));
                parse_captures(
                    &self.run_bytes(std::mem::take(&mut batch), None)?,
                    &nonce,
                    &mut result,
                )?;
            }
            batch.extend(group);
            i += n;
        }
        if !batch.is_empty() {
            batch.push(marker("end".into()));
            parse_captures(&self.run_bytes(batch, None)?, &nonce, &mut result)?;
        }
        if result.parts.len() != captures.len() {
            return Err(TmuxError::Failed {
                command: "capture-pane".into(),
                message: format!(
                    "{} captures asked for, {} returned",
                    captures.len(),
                    result.parts.len()
                ),
            });
        }
        Ok(result)
    }

    /// Creates one pane per spec, named and arranged, in as few tmux processes as tmux's
    /// message size allows (one for a 9-agent layout). Returns the new pane ids in spec
    /// order.
    ///
    /// Each pane gets `@orch_agent`/`@orch_role` pane options and its title. The window
    /// gets `remain-on-exit on` in the same command sequence that creates its first pane, so
    /// even a command that exits at once leaves a dead pane to inspect rather than nothing.
    pub fn create_panes(
        &self,
        target: PanesTarget<'_>,
        arrange: &str,
        specs: &[PaneSpec<'_>],
    ) -> Result<Vec<String>, TmuxError> {
        self.create_panes_with_layout(target, arrange, specs, None)
    }

    /// [`Tmux::create_panes`], then `select-layout` with a saved `#{window_layout}` string
    /// in the same command sequence, so the panes have their final size before tmux reads
    /// anything they print.
    pub fn create_panes_with_layout(
        &self,
        target: PanesTarget<'_>,
        arrange: &str,
        specs: &[PaneSpec<'_>],
        final_layout: Option<&str>,
    ) -> Result<Vec<String>, TmuxError> {
        let Some((first, rest)) = specs.split_first() else {
            return Ok(Vec::new());
        };
        // After new-window (or split-window) without -d, the new window is its session's
        // current window and the new pane its active pane, so `=S:` (or `@ID`) names
        // exactly what was just created. tmux runs one client's command sequence without
        // interleaving another client's commands, so nothing can move focus in between.
        let mut batch = Vec::new();
        let mut finish = Vec::new();
        let (win, new_window_made) = match target {
            PanesTarget::NewSession {
                session,
                window,
                history_limit,
                width,
                height,
            } => {
                batch.push(
                    NewSession::new()
                        .detached()
                        .session_name(session)
                        .window_name(BOOT_WINDOW)
                        .width(width.into())
                        .height(height.into())
                        .shell_command("cat")
                        .build(),
                );
                let win = format!("={session}:");
                batch.extend(new_window(session, window, history_limit, first, &win));
                finish.push(
                    KillWindow::new()
                        .target_window(format!("={session}:{BOOT_WINDOW}"))
                        .build(),
                );
                (win, true)
            }
            PanesTarget::NewWindow {
                session,
                window,
                history_limit,
            } => {
                let win = format!("={session}:");
                batch.extend(new_window(session, window, history_limit, first, &win));
                (win, true)
            }
            PanesTarget::Window { id } => {
                let win = id.to_owned();
                batch.extend(split_pane(&win, first, arrange));
                (win, false)
            }
        };
        let mut ids = Vec::with_capacity(specs.len());
        let mut win = win;
        let mut window_id_pending = new_window_made;
        let mut pending = rest;
        loop {
            let mut taken = 0;
            for spec in pending {
                let group = split_pane(&win, spec, arrange);
                if !batch.is_empty() && argv_len(&batch) + argv_len(&group) > MAX_BATCH_BYTES {
                    break;
                }
                batch.extend(group);
                taken += 1;
            }
            if taken == pending.len()
                && let Some(layout) = final_layout
            {
                finish.push(
                    SelectLayout::new()
                        .target_pane(win.clone())
                        .layout_name(layout.to_owned())
                        .build(),
                );
            }
            batch.append(&mut finish);
            let out = self.run(std::mem::take(&mut batch))?;
            let mut lines = out.lines().map(str::trim);
            if window_id_pending {
                // new-window printed "@window %pane"; later batches name the window by id.
                let (window_id, pane_id) = lines
                    .next()
                    .and_then(|l| l.split_once(' '))
                    .ok_or_else(|| TmuxError::Failed {
                        command: "new-window".into(),
                        message: format!("unexpected reply {out:?}"),
                    })?;
                ids.push(pane_id.to_owned());
                win = window_id.to_owned();
                window_id_pending = false;
            }
            ids.extend(lines.filter(|l| l.starts_with('%')).map(str::to_owned));
            pending = &pending[taken..];
            if pending.is_empty() {
                break;
            }
        }
        if ids.len() != specs.len() {
            return Err(TmuxError::Failed {
                command: "split-window".into(),
                message: format!(
                    "expected {} new pane ids, tmux printed {}",
                    specs.len(),
                    ids.len()
                ),
            });
        }
        Ok(ids)
    }

    /// Starts a pane's command again (`respawn-pane -k`, which also works while tmux has
    /// not yet noticed the old process died) and returns the new process id. Pane options
    /// (`@orch_agent`) and history survive a respawn.
    ///
    /// tmux up to 3.7c at least (tmux/tmux#5499, fixed on master in August 2026) keeps a
    /// pane's read offsets across a respawn. When a control client (the supervisor's own,
    /// or a user's `tmux -CC`) has not been sent all of the old process's output, as when
    /// an agent printed and died at once, the server reads past the new process's first
    /// output and dies with every session. Each such client is paused on the pane (its
    /// unsent output dropped) and continued from the pane's offset in the same command
    /// list, which leaves no reader behind.
    pub fn respawn_pane(&self, pane: &str, spec: &PaneSpec<'_>) -> Result<u32, TmuxError> {
        self.respawn_listed(pane, spec, &self.control_clients_of_pane(pane))
    }

    /// [`Tmux::respawn_pane`], given the control clients as they were just listed.
    fn respawn_listed(
        &self,
        pane: &str,
        spec: &PaneSpec<'_>,
        clients: &[String],
    ) -> Result<u32, TmuxError> {
        match self.respawn_among(pane, spec, clients) {
            // A client gone since the listing fails its pause, and tmux drops the rest of
            // the list with it, the respawn included: list them again, once.
            Err(TmuxError::Failed { message, .. })
                if !clients.is_empty() && message.contains("can't find client") =>
            {
                self.respawn_among(pane, spec, &self.control_clients_of_pane(pane))
            }
            other => other,
        }
    }

    /// [`Tmux::respawn_pane`] with the control clients `clients` paused around it.
    fn respawn_among(
        &self,
        pane: &str,
        spec: &PaneSpec<'_>,
        clients: &[String],
    ) -> Result<u32, TmuxError> {
        let mut respawn = RespawnPane::new()
            .kill()
            .target_pane(pane.to_owned())
            .start_directory(spec.cwd.to_string_lossy().into_owned())
            .build();
        push_env_and_command(&mut respawn, spec);
        let pid = DisplayMessage::new()
            .print()
            .target_pane(pane.to_owned())
            .message("#{pane_pid}")
            .build();
        let mut cmds = control_offsets(clients, pane, State::Pause);
        cmds.push(respawn);
        cmds.extend(control_offsets(clients, pane, State::Continue));
        // The pipe survives respawn-pane (tmux 3.3a), but its `cat` still holds the file it
        // opened, which a rotation may have renamed: open it again on the current file.
        cmds.extend(pipe_transcript(pane, spec));
        cmds.push(pid);
        let out = self.run(cmds)?;
        out.trim().parse().map_err(|_| TmuxError::Failed {
            command: "respawn-pane".into(),
            message: format!("expected the new pane pid, tmux printed {out:?}"),
        })
    }

    /// Pipes each `(pane, transcript)` again, replacing any pipe the pane still has, in as
    /// few tmux processes as the command size allows (one for any usual session).
    pub fn pipe_transcripts(
        &self,
        pipes: &[(&str, &Path)],
        filter: Option<&str>,
    ) -> Result<(), TmuxError> {
        let mut batch = Vec::new();
        for (pane, file) in pipes {
            let group = vec![pipe_command(pane, file, filter)];
            if !batch.is_empty() && argv_len(&batch) + argv_len(&group) > MAX_BATCH_BYTES {
                self.run(std::mem::take(&mut batch))?;
            }
            batch.extend(group);
        }
        if !batch.is_empty() {
            self.run(batch)?;
        }
        Ok(())
    }

    /// Types `text` into a pane as one paste, then presses Enter: [`Tmux::paste`], then
    /// [`Tmux::press_enter`] in a second tmux process, so the program has the whole paste
    /// before the key that submits it. Never sends Ctrl-C, which would throw away what the
    /// agent was typing.
    pub fn paste_text(&self, pane: &str, text: &str) -> Result<(), TmuxError> {
        self.paste(pane, text)?;
        self.press_enter(pane)
    }

    /// Pastes `text` into a pane WITHOUT pressing Enter: `load-buffer -b B -` (text on
    /// stdin, so neither tmux nor a shell interprets it) and `paste-buffer -p -d -r -b B -t
    /// PANE` (bracketed paste when the program asked for it; `-r` keeps LF) in one tmux
    /// process. ESC and control characters other than `\n` and `\t` are removed first: an
    /// embedded `ESC [201~` would end a bracketed paste early. Refuses a dead pane or one in
    /// copy mode.
    pub fn paste(&self, pane: &str, text: &str) -> Result<(), TmuxError> {
        self.check_ready(pane)?;
        let buffer = unique_buffer_name();
        let load = LoadBuffer::new()
            .buffer_name(buffer.clone())
            .path("-")
            .build();
        let paste = PasteBuffer::new()
            .bracket_codes()
            .delete()
            .no_replacement()
            .buffer_name(buffer)
            .target_pane(pane.to_owned())
            .build();
        self.run_with_stdin(vec![load, paste], Some(paste_safe(text).as_bytes()))
            .map(drop)
    }

    /// Presses Enter in a pane (`send-keys -t PANE Enter`), as its own key. Refuses a dead
    /// pane or one in copy mode, where Enter would act on the mode instead.
    pub fn press_enter(&self, pane: &str) -> Result<(), TmuxError> {
        self.check_ready(pane)?;
        self.run(vec![
            SendKeys::new()
                .target_pane(pane.to_owned())
                .key("Enter")
                .build(),
        ])
        .map(drop)
    }

    /// [`TmuxError::NotReady`] unless the pane is alive and in no mode.
    fn check_ready(&self, pane: &str) -> Result<(), TmuxError> {
        let state = self.run(vec![
            DisplayMessage::new()
                .print()
                .target_pane(pane.to_owned())
                .message("#{pane_dead} #{pane_in_mode}")
                .build(),
        ])?;
        let why = match state.trim() {
            "0 0" => return Ok(()),
            s if s.starts_with('1') => "dead",
            _ => "in copy mode",
        };
        Err(TmuxError::NotReady {
            pane: pane.to_owned(),
            why,
        })
    }

    /// Whether `session` exists on this server (no server: it does not).
    pub fn has_session(&self, session: &str) -> Result<bool, TmuxError> {
        Ok(self.list_panes()?.iter().any(|p| p.session == session))
    }

    /// Waits until the server on this socket is either answering or really gone, at most
    /// `timeout`. Right after `kill-server` the old server still holds the socket for a
    /// moment and a new one started then fails (4 times in 5 on tmux 3.3a). Returns whether
    /// a server is running.
    pub fn wait_server_settled(&self, timeout: std::time::Duration) -> Result<bool, TmuxError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.server_info() {
                Ok(info) => return Ok(info.is_some()),
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                // A dying server is gone within tens of milliseconds; restore waits on
                // this, so look often (each look is one short tmux process).
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    }

    /// What a pane shows and where its cursor is, in ONE tmux process: for confirming that
    /// a paste landed and that Enter submitted it.
    pub fn pane_input(&self, pane: &str) -> Result<PaneInput, TmuxError> {
        let mut all = self.pane_inputs(&[pane])?;
        all.pop().ok_or_else(|| TmuxError::Failed {
            command: "capture-pane".into(),
            message: "no screen".into(),
        })
    }

    /// [`Tmux::pane_input`] for several panes, in ONE tmux process whatever their number.
    /// Each pane's part starts with a line of its state behind a random nonce, which no
    /// pane can forge.
    pub fn pane_inputs(&self, panes: &[&str]) -> Result<Vec<PaneInput>, TmuxError> {
        // display-message with its format, capture-pane, their arguments: under 200 bytes
        // a pane; past tmux's message size, one process per batch.
        const PANES_PER_PROCESS: usize = MAX_BATCH_BYTES / 200;
        if panes.len() > PANES_PER_PROCESS {
            let mut all = Vec::with_capacity(panes.len());
            for chunk in panes.chunks(PANES_PER_PROCESS) {
                all.extend(self.pane_inputs(chunk)?);
            }
            return Ok(all);
        }
        let nonce = nonce();
        let mut cmds = Vec::with_capacity(panes.len() * 2);
        for pane in panes {
            cmds.push(
                DisplayMessage::new()
                    .print()
                    .target_pane((*pane).to_owned())
                    .message(format!(
                        "{nonce}\t#{{pane_dead}}\t#{{pane_in_mode}}\t#{{cursor_y}}\t#{{history_size}}\t#{{pane_tty}}"
                    ))
                    .build(),
            );
            // Not joined: row N of the capture is row N of the screen, where the cursor is.
            cmds.push(
                CapturePane::new()
                    .stdout()
                    .target_pane((*pane).to_owned())
                    .build(),
            );
        }
        let out = self.run(cmds)?;
        let parsed = parse_pane_inputs(&out, &nonce);
        if parsed.len() != panes.len() {
            return Err(TmuxError::Failed {
                command: "capture-pane".into(),
                message: format!("{} screens for {} panes", parsed.len(), panes.len()),
            });
        }
        Ok(parsed)
    }

    /// The visible screen of a pane as text (what a person sees in it now).
    pub fn capture_screen(&self, pane: &str) -> Result<String, TmuxError> {
        self.run(vec![
            CapturePane::new()
                .stdout()
                .join()
                .target_pane(pane.to_owned())
                .build(),
        ])
    }

    /// Runs `command` (a tmux command, format-expanded) whenever a pane of `session` dies.
    pub fn set_pane_died_hook(&self, session: &str, command: &str) -> Result<(), TmuxError> {
        let hook = SetHook::new()
            .target_session(format!("={session}:"))
            .hook_name("pane-died")
            .command(command.to_owned());
        self.run(vec![hook.build()]).map(drop)
    }

    pub fn unset_pane_died_hook(&self, session: &str) -> Result<(), TmuxError> {
        let hook = SetHook::new()
            .unset()
            .target_session(format!("={session}:"))
            .hook_name("pane-died");
        self.run(vec![hook.build()]).map(drop)
    }

    /// Names of the control-mode clients attached to the session holding `pane`. One that
    /// cannot be listed is left out: the respawn it is for goes ahead.
    fn control_clients_of_pane(&self, pane: &str) -> Vec<String> {
        match self.control_clients(pane.to_owned()) {
            Ok(clients) => clients.into_iter().map(|(_, name)| name).collect(),
            Err(e) => {
                tracing::debug!(pane, "listing the control clients: {e}");
                Vec::new()
            }
        }
    }

    /// Process ids of the control-mode clients attached to `session` (none without a
    /// server or such a session).
    pub fn control_client_pids(&self, session: &str) -> Result<Vec<u32>, TmuxError> {
        match self.control_clients(format!("={session}")) {
            Ok(clients) => Ok(clients.into_iter().filter_map(|(pid, _)| pid).collect()),
            Err(TmuxError::NoServer(_) | TmuxError::Failed { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// `(pid, name)` of each control-mode client attached to the session `target` names
    /// (a session or one of its panes).
    fn control_clients(&self, target: String) -> Result<Vec<(Option<u32>, String)>, TmuxError> {
        let cmd = ListClients::new()
            .target_session(target)
            .format("#{client_control_mode}\t#{client_pid}\t#{client_name}")
            .build();
        Ok(self
            .run(vec![cmd])?
            .lines()
            .filter_map(|l| {
                let (pid, name) = l.strip_prefix("1\t")?.split_once('\t')?;
                Some((pid.parse().ok(), name.to_owned()))
            })
            .collect())
    }

    /// Kills panes (and their processes) in one tmux process; a pane already gone is no
    /// error.
    pub fn kill_panes(&self, panes: &[&str]) -> Result<(), TmuxError> {
        for chunk in panes.chunks(200) {
            let cmds = chunk
                .iter()
                .map(|p| KillPane::new().target_pane((*p).to_owned()).build())
                .collect();
            match self.run(cmds) {
                Ok(_) | Err(TmuxError::Failed { .. } | TmuxError::NoServer(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Kills the server on this socket and everything in it (`orch demo` does this to its
    /// own server, which it started on a socket of its own). No server is no error. Never
    /// the default server: without `--socket` this refuses.
    pub fn kill_server(&self) -> Result<(), TmuxError> {
        if self.socket.is_none() {
            return Err(TmuxError::Failed {
                command: "kill-server".into(),
                message: "orch kills only a server on a socket of its own (--socket)".into(),
            });
        }
        match self.run(vec![KillServer::new().build()]) {
            Ok(_) | Err(TmuxError::NoServer(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Kills a session and everything in it.
    pub fn kill_session(&self, session: &str) -> Result<(), TmuxError> {
        self.run(vec![
            KillSession::new()
                .target_session(format!("={session}"))
                .build(),
        ])
        .map(drop)
    }

    /// Facts about the server, or `None` when none is running on this socket.
    pub fn server_info(&self) -> Result<Option<ServerInfo>, TmuxError> {
        let cmd = DisplayMessage::new()
            .print()
            .message("#{socket_path}\t#{pid}\t#{version}")
            .build();
        match self.run(vec![cmd]) {
            Ok(out) => {
                let mut f = out.trim_end_matches('\n').split('\t');
                let (Some(path), Some(pid), Some(version)) = (f.next(), f.next(), f.next()) else {
                    return Err(TmuxError::Failed {
                        command: "display-message".into(),
                        message: format!("unexpected reply {out:?}"),
                    });
                };
                Ok(Some(ServerInfo {
                    socket_path: path.to_owned(),
                    pid: pid.parse().unwrap_or(0),
                    version: version.to_owned(),
                }))
            }
            Err(TmuxError::NoServer(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Shows `pane` to the user, who comes back when they detach: inside the same tmux
    /// server, the current client switches to it (`Ok(false)`: nothing to wait for);
    /// elsewhere a client attaches to it in this terminal and the call returns once it
    /// detaches (`Ok(true)`). Used by the dashboard, which gives up the terminal meanwhile.
    pub fn visit(&self, session: &str, pane: &str) -> Result<bool, TmuxError> {
        let select = vec![
            SelectWindow::new().target_window(pane.to_owned()).build(),
            SelectPane::new().target_pane(pane.to_owned()).build(),
        ];
        if self.same_server_as_client()? {
            let mut cmds = select;
            cmds.push(SwitchClient::new().target_session(pane.to_owned()).build());
            return self.run(cmds).map(|_| false);
        }
        self.run(select)?;
        let mut cmd = self.base_command();
        cmd.args(["attach-session", "-t", &format!("={session}")]);
        cmd.env_remove("TMUX");
        let status = cmd.status().map_err(not_installed)?;
        if status.success() {
            Ok(true)
        } else {
            Err(TmuxError::Failed {
                command: "attach-session".into(),
                message: format!("tmux attach exited with {status}"),
            })
        }
    }

    /// Whether this process runs inside a client of this very server ($TMUX names it).
    fn same_server_as_client(&self) -> Result<bool, TmuxError> {
        let inside = std::env::var("TMUX")
            .ok()
            .and_then(|t| t.split(',').next().map(str::to_owned));
        match inside {
            Some(client_socket) => Ok(self
                .server_info()?
                .is_some_and(|s| s.socket_path == client_socket)),
            None => Ok(false),
        }
    }

    /// A pane's rows `top..=bottom` with their colours (`capture-pane -e -p`; negative
    /// rows are history, 0 is the top of the screen), for the dashboard's preview.
    pub fn capture_coloured(
        &self,
        pane: &str,
        top: i64,
        bottom: i64,
    ) -> Result<Vec<u8>, TmuxError> {
        self.run_bytes(
            vec![
                CapturePane::new()
                    .stdout()
                    .escape_sequences()
                    .start_line(top.to_string())
                    .end_line(bottom.to_string())
                    .target_pane(pane.to_owned())
                    .build(),
            ],
            None,
        )
    }

    /// Presses `keys` (tmux key names such as `Enter`, `Escape`, `y`) in a pane, in order:
    /// how the dashboard answers an agent CLI's approval prompt with its profile's keys.
    /// Refuses a dead pane or one in copy mode.
    pub fn press_keys(&self, pane: &str, keys: &[String]) -> Result<(), TmuxError> {
        self.check_ready(pane)?;
        let mut send = SendKeys::new().target_pane(pane.to_owned());
        for k in keys {
            send = send.key(k.clone());
        }
        self.run(vec![send.build()]).map(drop)
    }

    /// Shows `text` (what needs the human, for someone attached to one of the agents'
    /// panes) in front of `session`'s right-hand status line, keeping what the user had
    /// there. The text lives in a session option that the status line names; the first
    /// call puts that name in front of the session's `status-right` (and makes room in
    /// `status-right-length`), remembering both to give back in [`Tmux::hide_attention`].
    pub fn show_attention(&self, session: &str, text: &str) -> Result<(), TmuxError> {
        let target = format!("={session}:");
        let local = self.run(vec![
            set_session_option(&target, ATTENTION_OPTION, text),
            show_session_option(&target, "status-right"),
        ])?;
        if local.contains(ATTENTION_REF) {
            return Ok(());
        }
        let local_length = self.run(vec![show_session_option(&target, "status-right-length")])?;
        let shown = self.run(vec![
            DisplayMessage::new()
                .print()
                .target_pane(target.clone())
                .message("#{status-right-length}\t#{status-right}")
                .build(),
        ])?;
        let (length, right) = shown
            .trim_end_matches('\n')
            .split_once('\t')
            .unwrap_or(("40", ""));
        let length: usize = length.parse().unwrap_or(40);
        self.run(vec![
            set_session_option(&target, RIGHT_BEFORE, local.trim_end_matches('\n')),
            set_session_option(&target, LENGTH_BEFORE, local_length.trim_end_matches('\n')),
            set_session_option(&target, "status-right", &format!("{ATTENTION_REF} {right}")),
            set_session_option(
                &target,
                "status-right-length",
                &(length + ATTENTION_ROOM).to_string(),
            ),
        ])
        .map(drop)
    }

    /// Gives `session`'s status line back as it was before [`Tmux::show_attention`]:
    /// its own `status-right` and `status-right-length`, or the global ones it had.
    pub fn hide_attention(&self, session: &str) -> Result<(), TmuxError> {
        let target = format!("={session}:");
        let got = |name: &str| {
            self.run(vec![show_session_option(&target, name)])
                .map(|v| v.trim_end_matches('\n').to_owned())
        };
        if !got("status-right")?.contains(ATTENTION_REF) {
            return Ok(());
        }
        let restore = |name: &'static str, before: String| {
            if before.is_empty() {
                unset_session_option(&target, name)
            } else {
                set_session_option(&target, name, &before)
            }
        };
        let right = restore("status-right", got(RIGHT_BEFORE)?);
        let length = restore("status-right-length", got(LENGTH_BEFORE)?);
        let mut commands = vec![right, length];
        for name in [ATTENTION_OPTION, RIGHT_BEFORE, LENGTH_BEFORE] {
            commands.push(unset_session_option(&target, name));
        }
        self.run(commands).map(drop)
    }

    pub fn attach(&self, session: &str) -> Result<(), TmuxError> {
        let inside = std::env::var("TMUX")
            .ok()
            .and_then(|t| t.split(',').next().map(str::to_owned));
        if let Some(client_socket) = inside {
            let same_server = self
                .server_info()?
                .is_some_and(|s| s.socket_path == client_socket);
            if same_server {
                return self
                    .run(vec![
                        SwitchClient::new()
                            .target_session(format!("={session}"))
                            .build(),
                    ])
                    .map(drop);
            }
        }
        let mut cmd = self.base_command();
        cmd.args(["attach-session", "-t", &format!("={session}")]);
        // Attaching from inside another server's pane nests one client in another, which
        // works once tmux is told it is not inside itself.
        cmd.env_remove("TMUX");
        use std::os::unix::process::CommandExt;
        Err(not_installed(cmd.exec()))
    }
}

fn new_window<'a>(
    session: &str,
    window: &str,
    history_limit: u32,
    spec: &PaneSpec<'a>,
    win: &str,
) -> Vec<TmuxCommand<'a>> {
    let mut cmds = vec![
        SetOption::new()
            .target_pane(format!("={session}:"))
            .option("history-limit")
            .value(history_limit.to_string())
            .build(),
    ];
    let mut nw = NewWindow::new()
        .target_window(format!("={session}:"))
        .window_name(window.to_owned())
        .start_directory(spec.cwd.to_string_lossy().into_owned())
        .print()
        .format("#{window_id} #{pane_id}")
        .build();
    push_env_and_command(&mut nw, spec);
    cmds.push(nw);
    for (option, value) in [
        ("remain-on-exit", "on"),
        ("pane-border-status", "top"),
        ("pane-border-format", " #{@orch_agent} · #{@orch_role} "),
    ] {
        cmds.push(
            SetOption::new()
                .window()
                .target_pane(win.to_owned())
                .option(option)
                .value(value)
                .build(),
        );
    }
    cmds.extend(name_pane(win, spec));
    cmds
}

/// `capture-pane -p -e -J -t PANE` with the rows of `c`.
fn capture_rows<'a>(c: &PaneCapture<'_>) -> CapturePane<'a> {
    let capture = CapturePane::new()
        .stdout()
        .escape_sequences()
        .join()
        .target_pane(c.pane.to_owned());
    match c.rows {
        Rows::Whole => capture.start_line("-").end_line("-"),
        Rows::History => capture.start_line("-").end_line("-1"),
        Rows::Range(first, last) => capture
            .start_line(first.to_string())
            .end_line(last.to_string()),
        Rows::Screen => capture.start_line("0").end_line("-"),
        Rows::Alternate => capture.alternate_screen().quiet(),
    }
}

/// 128 random bits as hex: `RandomState` is seeded from the OS once per process and
/// then per instance, so two instances hash the same input differently.
fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    };
    format!("orch-{:016x}{:016x}", word(), word())
}

/// Splits the output of a capture sequence at its marker lines into `into`.
fn parse_captures(out: &[u8], nonce: &str, into: &mut PaneCaptures) -> Result<(), TmuxError> {
    let bad = |why: &str| TmuxError::Failed {
        command: "capture-pane".into(),
        message: format!("unexpected capture output: {why}"),
    };
    let prefix = format!("{nonce} ");
    // (marker text, start of the marker line, start of the bytes after it)
    let mut markers: Vec<(&[u8], usize, usize)> = Vec::new();
    let mut at = 0;
    while at < out.len() {
        let end = out[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(out.len(), |p| at + p);
        if out[at..end].starts_with(prefix.as_bytes()) {
            markers.push((&out[at + prefix.len()..end], at, (end + 1).min(out.len())));
        }
        at = end + 1;
    }
    let mut pending_part: Option<Vec<u8>> = None;
    for (k, (text, _, body)) in markers.iter().enumerate() {
        let next = markers.get(k + 1).map_or(out.len(), |m| m.1);
        let bytes = &out[*body..next.max(*body)];
        let text = String::from_utf8_lossy(text);
        let (kind, rest) = text.split_once(' ').unwrap_or((&text, ""));
        match kind {
            "at" => {
                if let Some(done) = pending_part.take() {
                    into.parts.push(done);
                }
                let f: Vec<&str> = rest.split('\t').collect();
                let seen = match f[..] {
                    [pane, hist, width, pid] => (|| {
                        Some(CapturedAt {
                            pane: pane.to_owned(),
                            history_size: hist.parse().ok()?,
                            width: width.parse().ok()?,
                            server_pid: pid.parse().ok()?,
                        })
                    })(),
                    _ => None,
                };
                into.at.push(seen.ok_or_else(|| bad(&text))?);
            }
            "part" => {
                if let Some(done) = pending_part.take() {
                    into.parts.push(done);
                }
                pending_part = Some(bytes.to_vec());
            }
            "probe" => {
                let wrapped = bytes.iter().filter(|b| **b == b'\n').count() < 2;
                if let Some(part) = pending_part.as_mut()
                    && wrapped
                    && part.last() == Some(&b'\n')
                {
                    part.pop();
                }
            }
            "end" => {
                if let Some(done) = pending_part.take() {
                    into.parts.push(done);
                }
            }
            _ => return Err(bad(&text)),
        }
    }
    if pending_part.is_some() {
        return Err(bad("the output stops inside a capture"));
    }
    Ok(())
}

/// Bytes tmux receives for these commands (arguments plus separators).
fn argv_len(cmds: &[TmuxCommand<'_>]) -> usize {
    cmds.iter()
        .map(|c| c.to_vec().iter().map(|a| a.len() + 2).sum::<usize>() + 2)
        .sum()
}

fn split_pane<'a>(win: &str, spec: &PaneSpec<'a>, arrange: &str) -> Vec<TmuxCommand<'a>> {
    let mut split = SplitWindow::new()
        .target_pane(win.to_owned())
        .start_directory(spec.cwd.to_string_lossy().into_owned())
        .print()
        .format("#{pane_id}")
        .build();
    push_env_and_command(&mut split, spec);
    let mut cmds = vec![split];
    cmds.extend(name_pane(win, spec));
    // Re-arrange after every split so the active pane never gets too small to split again.
    cmds.push(
        SelectLayout::new()
            .target_pane(win.to_owned())
            .layout_name(arrange.to_owned())
            .build(),
    );
    cmds
}

/// `pipe-pane -O -t PANE 'cat >> FILE'`: appends what the pane prints to its transcript.
fn pipe_transcript<'a>(pane: &str, spec: &PaneSpec<'_>) -> Option<TmuxCommand<'a>> {
    let file = spec.transcript.as_deref()?;
    Some(pipe_command(pane, file, spec.transcript_filter.as_deref()))
}

fn pipe_command<'a>(pane: &str, file: &Path, filter: Option<&str>) -> TmuxCommand<'a> {
    let command = transcript_pipe_command(file, filter);
    // tmux_interface names the flags after the pane's side: its `stdin()` emits `-O`
    // (what the pane writes goes to the command).
    PipePane::new()
        .stdin()
        .target_pane(pane.to_owned())
        .shell_command(command)
        .build()
}

/// The shell command `pipe-pane -O` runs to append what a pane prints to `file`: the
/// transcript filter given, else `cat`.
pub fn transcript_pipe_command(file: &Path, filter: Option<&str>) -> String {
    let file = shell_quote(&file.to_string_lossy());
    match filter {
        Some(filter) => format!("{filter} {file}"),
        None => format!("cat >> {file}"),
    }
}

/// Quotes `s` as one word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `refresh-client -t CLIENT -A PANE:STATE` for each control client: `pause` drops the
/// output not yet sent to it, `continue` makes it read on from the pane's own offset.
fn control_offsets<'a>(clients: &[String], pane: &str, state: State) -> Vec<TmuxCommand<'a>> {
    clients
        .iter()
        .map(|client| {
            RefreshClient::new()
                .target_client(client.clone())
                .allow_actions(AllowActions {
                    pane: pane.to_owned().into(),
                    state: state.clone(),
                })
                .build()
        })
        .collect()
}

/// Identity of the pane that was just created (the active pane of `win`).
fn name_pane<'a>(win: &str, spec: &PaneSpec<'a>) -> Vec<TmuxCommand<'a>> {
    let mut cmds = vec![
        SetOption::new()
            .pane()
            .target_pane(win.to_owned())
            .option("@orch_agent")
            .value(spec.agent.to_owned())
            .build(),
        SetOption::new()
            .pane()
            .target_pane(win.to_owned())
            .option("@orch_role")
            .value(spec.role.to_owned())
            .build(),
        SelectPane::new()
            .target_pane(win.to_owned())
            .title(spec.agent.to_owned())
            .build(),
    ];
    cmds.extend(pipe_transcript(win, spec));
    cmds
}

fn push_env_and_command<'a>(cmd: &mut TmuxCommand<'a>, spec: &PaneSpec<'a>) {
    // tmux_interface's builders take one -e; tmux takes any number.
    for (k, v) in &spec.env {
        cmd.push_option("-e", format!("{k}={v}"));
    }
    if let Some(command) = &spec.command {
        cmd.push_param(with_path(command, &spec.env));
    }
}

/// `command` run with the PATH of `env`, if it sets one: tmux 3.3a gives a new pane the
/// PATH of the client that made it, whatever `-e PATH=…` says, so the command sets it
/// itself (the shell tmux runs it with reads `export` before anything else).
fn with_path(command: &str, env: &[(String, String)]) -> String {
    match env.iter().rev().find(|(k, _)| k == "PATH") {
        Some((_, path)) => format!("export PATH={}; {command}", shell_quote(path)),
        None => command.to_owned(),
    }
}

/// Text that is safe to paste: no ESC, no control characters except `\n` and `\t`.
pub fn paste_safe(text: &str) -> String {
    text.chars()
        .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
        .collect()
}

/// Splits the output of [`Tmux::pane_inputs`] at its nonce lines. Pure.
fn parse_pane_inputs(out: &str, nonce: &str) -> Vec<PaneInput> {
    let sep = format!("{nonce}\t");
    let mut parts = out.split(&sep);
    parts.next(); // before the first nonce: nothing
    parts
        .filter_map(|part| {
            let (head, screen) = part.split_once('\n').unwrap_or((part, ""));
            let f: Vec<&str> = head.splitn(5, '\t').collect();
            let [dead, in_mode, cursor, history, tty] = f[..] else {
                return None;
            };
            Some(PaneInput {
                dead: dead == "1",
                in_mode: in_mode != "0",
                cursor_y: cursor.parse().unwrap_or(0),
                history_size: history.parse().unwrap_or(0),
                tty: PathBuf::from(tty),
                screen: screen.to_owned(),
            })
        })
        .collect()
}

/// A paste buffer name no other client of the server is using.
fn unique_buffer_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("orch-paste-{}-{n}-{nanos:x}", std::process::id())
}

/// tmux splits its argument list into commands at any argument ending in `;`; a literal
/// trailing `;` must be written `\;`.
fn escape_arg(arg: &str) -> OsString {
    match arg.strip_suffix(';') {
        Some(head) => format!("{head}\\;").into(),
        None => arg.into(),
    }
}

fn is_no_server(stderr: &str) -> bool {
    stderr.contains("no server running on")
        || (stderr.contains("error connecting to")
            && (stderr.contains("No such file or directory")
                || stderr.contains("Connection refused")))
}

fn not_installed(e: std::io::Error) -> TmuxError {
    if e.kind() == std::io::ErrorKind::NotFound {
        TmuxError::NotInstalled
    } else {
        TmuxError::Io(e)
    }
}

/// The installed tmux version, e.g. `(3, 3)` for "tmux 3.3a".
pub fn version() -> Result<(String, Option<(u32, u32)>), TmuxError> {
    let out = Command::new("tmux")
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .map_err(not_installed)?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok((text.clone(), parse_version(&text)))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    // "tmux 3.3a", "tmux next-3.4", "tmux 3.2-rc2"
    let v = text.split_whitespace().nth(1)?;
    let v = v.trim_start_matches(|c: char| !c.is_ascii_digit());
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

#[cfg(test)]
mod pane_input_tests {
    use super::*;

    #[test]
    fn pane_inputs_split_at_their_nonce_lines() {
        let out = "N\t0\t0\t1\t40\t/dev/pts/3\n$ echo hi\nhi\n$ \nN\t1\t1\t0\t0\t/dev/pts/4\nbye\n";
        let got = parse_pane_inputs(out, "N");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].cursor_line(), "hi");
        assert_eq!(got[0].history_size, 40);
        assert_eq!(got[0].tty, PathBuf::from("/dev/pts/3"));
        assert!(!got[0].dead && got[1].dead && got[1].in_mode);
        assert_eq!(got[1].screen, "bye\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_semicolons_are_escaped() {
        assert_eq!(escape_arg("echo a;"), OsString::from("echo a\\;"));
        assert_eq!(escape_arg(";"), OsString::from("\\;"));
        assert_eq!(escape_arg("a;b"), OsString::from("a;b"));
    }

    /// A private tmux server for one unit test, killed (by its socket) when dropped, even
    /// when an assertion fails.
    struct UnitServer {
        socket: String,
    }

    impl UnitServer {
        fn new(tag: &str) -> (UnitServer, Tmux) {
            let socket = format!("orch-test-unit-{}-{tag}", std::process::id());
            (
                UnitServer {
                    socket: socket.clone(),
                },
                Tmux::new(Some(socket)),
            )
        }

        fn run(&self, args: &[&str]) -> std::process::Output {
            std::process::Command::new("tmux")
                .arg("-L")
                .arg(&self.socket)
                .args(args)
                .output()
                .expect("tmux")
        }

        /// Starts the server with a detached session `name` running `command`.
        fn session(&self, name: &str, command: &str) {
            let args = ["-f", "/dev/null", "new-session", "-d", "-s", name, command];
            assert!(self.run(&args).status.success(), "{args:?}");
        }

        /// `display-message -p -t TARGET FORMAT`, trimmed.
        fn display(&self, target: &str, format: &str) -> String {
            let out = self.run(&["display-message", "-p", "-t", target, format]);
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
    }

    impl Drop for UnitServer {
        fn drop(&mut self) {
            let _ = std::process::Command::new("tmux")
                .args(["-L", self.socket.as_str(), "kill-server"])
                .output();
            let uid = rustix::process::getuid().as_raw();
            let _ = std::fs::remove_file(format!("/tmp/tmux-{uid}/{}", self.socket));
        }
    }

    #[test]
    fn a_control_client_gone_since_the_listing_does_not_stop_the_respawn() {
        let (server, tmux) = UnitServer::new("respawn");
        server.session("r", "sleep 600");
        let pane = server.display("=r", "#{pane_id}");
        let pid = || {
            server
                .display(&pane, "#{pane_pid}")
                .parse::<u32>()
                .expect("pid")
        };
        let before = pid();
        let cwd = std::env::temp_dir();
        let spec = PaneSpec {
            agent: "a",
            role: "R",
            cwd: &cwd,
            env: Vec::new(),
            command: Some("exec sleep 601".to_owned()),
            transcript: None,
            transcript_filter: None,
        };
        let gone = ["client-4194304".to_owned()];
        // tmux drops the rest of a command list at its first error: nothing respawned.
        let err = tmux
            .respawn_among(&pane, &spec, &gone)
            .expect_err("no such client");
        assert!(err.to_string().contains("can't find client"), "{err}");
        assert_eq!(pid(), before);
        let new = tmux
            .respawn_listed(&pane, &spec, &gone)
            .expect("listed again");
        assert_ne!(new, before);
        assert_eq!(new, pid());
    }

    #[test]
    fn screens_of_several_panes_in_one_call() {
        let (server, tmux) = UnitServer::new("screens");
        server.session("u", "printf 'one\\n-dash first\\n'; exec sleep 30");
        server.run(&["split-window", "-t", "u", "printf 'two\\n'; exec sleep 30"]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let panes = tmux.list_panes().expect("panes");
        let ids: Vec<&str> = panes.iter().map(|p| p.id.as_str()).collect();
        let screens = tmux.capture_screens(&ids).expect("screens");
        assert_eq!(screens.len(), 2);
        assert!(screens[0].contains("one\n-dash first"), "{screens:?}");
        assert!(
            screens[1].contains("two") && !screens[1].contains("one"),
            "{screens:?}"
        );
    }

    #[test]
    fn quoting_and_paste_filtering() {
        assert_eq!(shell_quote("/a/b.log"), "/a/b.log");
        assert_eq!(shell_quote("it's here"), "'it'\\''s here'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(paste_safe("a\x1b[201~b\tc\r\nd\x07\u{9b}"), "a[201~b\tc\nd");
    }

    #[test]
    fn transcript_pipe_is_output_only() {
        let spec = PaneSpec {
            agent: "a",
            role: "r",
            cwd: Path::new("/"),
            env: Vec::new(),
            command: None,
            transcript: Some("/t/a b.log".into()),
            transcript_filter: None,
        };
        let argv: Vec<String> = pipe_transcript("%1", &spec)
            .map(|c| c.to_vec().iter().map(|a| a.to_string()).collect())
            .unwrap_or_default();
        assert_eq!(argv, ["pipe-pane", "-O", "-t", "%1", "cat >> '/t/a b.log'"]);
    }

    #[test]
    fn captures_return_exact_bytes_with_colours_and_leave_nothing_behind() {
        let (server, tmux) = UnitServer::new("capture");
        let run = |args: &[&str]| server.run(args);
        // 20 columns: the first line wraps onto a second row; a line that looks like a
        // marker cannot confuse the parser, which needs the nonce.
        run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "u",
            "-x",
            "20",
            "-y",
            "5",
            "printf 'aaaaaaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbbbbbcc\\n\\033[31mred\\033[0m line\\norch- part 0\\n'; seq 1 6; exec sleep 30",
        ]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let pane = tmux.list_panes().expect("panes")[0].id.clone();
        // What tmux buffers hold for the same rows, to compare with.
        let buffered = |first: &str, last: &str| {
            run(&[
                "capture-pane",
                "-e",
                "-J",
                "-b",
                "t",
                "-S",
                first,
                "-E",
                last,
                "-t",
                &pane,
            ]);
            run(&["show-buffer", "-b", "t"]).stdout
        };
        let hist: u64 = String::from_utf8_lossy(
            &run(&["display", "-p", "-t", &pane, "#{history_size}"]).stdout,
        )
        .trim()
        .parse()
        .expect("history size");
        assert!(hist >= 6, "{hist}");
        let rows = [
            Rows::Whole,
            Rows::History,
            Rows::Range(-(hist as i64), -(hist as i64) + 1), // ends inside the wrapped line
            Rows::Range(-(hist as i64), -(hist as i64) + 2), // ends after it
            Rows::Screen,
        ];
        let captures: Vec<PaneCapture<'_>> = rows
            .iter()
            .map(|r| PaneCapture {
                pane: &pane,
                rows: *r,
                exact: true,
            })
            .collect();
        let got = tmux.capture_panes(&captures).expect("capture");
        assert_eq!(got.at.len(), 1);
        assert_eq!(got.at[0].pane, pane);
        assert_eq!(got.at[0].history_size, hist);
        assert_eq!(got.at[0].width, 20);
        let h = hist as i64;
        let expected = [
            buffered("-", "-"),
            buffered("-", "-1"),
            buffered(&(-h).to_string(), &(-h + 1).to_string()),
            buffered(&(-h).to_string(), &(-h + 2).to_string()),
            buffered("0", "-"),
        ];
        run(&["delete-buffer", "-b", "t"]);
        for (i, (got, want)) in got.parts.iter().zip(&expected).enumerate() {
            assert_eq!(
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(want),
                "capture {i} ({:?})",
                rows[i]
            );
        }
        assert!(
            !got.parts[2].ends_with(b"\n"),
            "a wrapped row has no newline"
        );
        assert!(
            got.parts[0].windows(8).any(|w| w == b"\x1b[31mred"),
            "colours kept"
        );
        let buffers = run(&["list-buffers", "-F", "#{buffer_name}"]);
        assert!(buffers.stdout.is_empty(), "{buffers:?}");
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("tmux 3.3a"), Some((3, 3)));
        assert_eq!(parse_version("tmux 3.2"), Some((3, 2)));
        assert_eq!(parse_version("tmux next-3.4"), Some((3, 4)));
        assert_eq!(parse_version("tmux 3.2-rc2"), Some((3, 2)));
        assert_eq!(parse_version("tmux master"), None);
    }
}
