//! Reading a running session into a [`Captured`] snapshot: the document plus the pane
//! contents it refers to, redacted, in memory, not yet stored. Nothing unredacted is
//! written anywhere: the captures come back on a tmux client's stdout.
//!
//! tmux work per snapshot, whatever the number of agents: one call for the panes and the
//! session's geometry (history size, width, alternate-screen flag of each pane,
//! [`Tmux::session_view`]) and one that captures every pane ([`Tmux::capture_panes`]); a
//! third or fourth only for a pane that printed between the two.
//!
//! What is captured of a pane depends on the previous snapshot of it ([`Reuse`]): nothing
//! if the supervisor knows it printed nothing since; only the rows added to its history
//! since, plus its screen, when the history provably only grew ([`HistoryMark`]: same
//! server, same width, at least as many rows, and the newest rows of then found unchanged
//! where they must have moved to); else its whole history and its screen. A coloured
//! capture of a long history is tmux's most expensive command and blocks the server while
//! it runs, so a snapshot of a working session costs what the agents printed since the
//! last one, not what they printed since they started.
//!
//! The alternate screen (tmux 3.3a, checked by `tests/snapshot.rs`): while a program is on
//! it, the history rows are the normal history and the screen rows are the ALTERNATE
//! screen, and `capture-pane -a` (the `alternate` blob) returns tmux's saved NORMAL screen:
//! the lines the program covered, which are in neither. So the normal transcript is the
//! history part of `scrollback`, then `alternate`; what the program showed is the screen
//! part of `scrollback` (see `restore::replay_bytes`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::digest::sha256_hex;
use anyhow::{Context, Result};

use super::format::{AgentSnapshot, BlobRef, FORMAT, HistoryMark, Snapshot, WindowShape};
use super::redact::Redactor;
use crate::layout::Layout;
use crate::session::NotRunning;
use crate::state::{StateDir, create_private_dir};
use crate::supervisor::control::AgentReport;
use crate::tmux::{
    CapturedAt, PaneCapture, PaneCaptures, PaneGeometry, Rows, SessionView, Tmux, WindowInfo,
};

/// A snapshot taken but not yet stored.
#[derive(Debug)]
pub struct Captured {
    /// `checksum` is empty until the store writes it.
    pub snapshot: Snapshot,
    /// Contents by SHA-256 (hex), each already redacted.
    pub blobs: Vec<Blob>,
    pub(super) redactor: Redactor,
    pub stats: CaptureStats,
}

/// How the panes' contents were read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CaptureStats {
    /// Taken unchanged from the previous snapshot, without a capture.
    pub kept: usize,
    /// Only the rows printed since the previous snapshot captured.
    pub appended: usize,
}

#[derive(Debug)]
pub struct Blob {
    pub sha256: String,
    pub bytes: Vec<u8>,
}

impl Captured {
    /// Records the layout file the session came from (redacted like everything else).
    pub fn with_layout_file(mut self, path: Option<&Path>) -> Self {
        self.snapshot.layout_file = path.map(|p| p.to_string_lossy().into_owned());
        self
    }
}

/// Reads the session of `layout`. States, activity and restarts come from `supervisor`
/// (a running supervisor's report) when given, else from tmux alone (`running`,
/// `exited`, `stopped`), like `orch status`.
pub fn capture(
    layout: &Layout,
    tmux: &Tmux,
    state: &StateDir,
    reason: &str,
    supervisor: Option<&[AgentReport]>,
) -> Result<Captured> {
    capture_reusing(layout, tmux, state, reason, supervisor, &Reuse::default())
}

/// What a snapshot may take from the one before it.
#[derive(Clone, Debug, Default)]
pub struct Reuse {
    /// Each pane's contents in the previous snapshot, by pane id: a pane whose history
    /// only grew since gets just its new rows captured.
    pub previous: HashMap<String, PaneContents>,
    /// Panes known to have printed nothing since (the supervisor's control client says
    /// so): their contents are taken as they were, with no capture at all.
    pub unchanged: HashSet<String>,
    /// The blobs of `previous` were checked against their hashes just now (loading the
    /// snapshot does that); otherwise a blob is checked before anything builds on it.
    pub verified: bool,
}

impl Reuse {
    /// Everything `snap` captured, to build on.
    pub fn from_snapshot(snap: &Snapshot) -> Reuse {
        let previous = snap
            .agents
            .iter()
            .filter_map(|a| Some((a.pane.clone()?, PaneContents::of(a))))
            .collect();
        Reuse {
            previous,
            unchanged: HashSet::new(),
            verified: false,
        }
    }
}

/// A pane's contents in a snapshot (the fields of [`AgentSnapshot`] that hold them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaneContents {
    pub scrollback: Option<BlobRef>,
    pub history_bytes: Option<u64>,
    pub history_mark: Option<HistoryMark>,
    pub alternate: Option<BlobRef>,
}

impl PaneContents {
    fn of(a: &AgentSnapshot) -> PaneContents {
        PaneContents {
            scrollback: a.scrollback.clone(),
            history_bytes: a.history_bytes,
            history_mark: a.history_mark.clone(),
            alternate: a.alternate.clone(),
        }
    }
}

/// How many of the newest history rows are checked at their new position before only
/// the rows below them are captured (see [`HistoryMark`]).
const ANCHOR_ROWS: u64 = 20;

/// The same once the history is 80 % full: tmux may then drop its oldest rows (a tenth
/// of them at a time), and only an anchor that is not found where it moved to tells; the
/// longer it is, the less likely output that repeats itself can pass for it.
const FULL_ANCHOR_ROWS: u64 = 200;

/// How many rows anchor the history of a pane of geometry `g`.
fn anchor_rows(g: &PaneGeometry) -> u64 {
    let rows = if g.history_size * 10 >= g.history_limit * 8 {
        FULL_ANCHOR_ROWS
    } else {
        ANCHOR_ROWS
    };
    g.history_size.min(rows)
}

/// How a pane's contents are read this time.
#[derive(Clone, Debug)]
enum Plan {
    /// Unchanged since the previous snapshot: its contents, no capture.
    Keep(Box<PaneContents>),
    /// History and screen, captured apart so that the next snapshot can append; with
    /// `append`, only the history rows added since the previous snapshot.
    Read {
        geometry: PaneGeometry,
        append: Option<Append>,
    },
    /// One capture of everything, when the pane would not hold still for the others.
    Whole,
}

/// The previous snapshot's history of a pane, to add new rows to.
#[derive(Clone, Debug)]
struct Append {
    /// Already redacted; empty or ending with a newline.
    prefix: Vec<u8>,
    mark: HistoryMark,
}

/// The captures a plan makes, by what they hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    OldAnchor,
    History,
    Anchor,
    Screen,
    Whole,
    Alternate,
}

impl Plan {
    fn parts(&self, alternate_on: bool) -> Vec<(Part, Rows)> {
        let mut parts = Vec::new();
        let history = |parts: &mut Vec<(Part, Rows)>, g: &PaneGeometry| {
            let newest = anchor_rows(g);
            if newest > 0 {
                parts.push((Part::Anchor, Rows::Range(-(newest as i64), -1)));
            }
            parts.push((Part::Screen, Rows::Screen));
        };
        match self {
            Plan::Keep(_) => return parts,
            Plan::Read {
                geometry,
                append: Some(Append { mark, .. }),
            } => {
                // `plan` and `read_outcome` append only to a history that did not shrink.
                let new = geometry.history_size.saturating_sub(mark.rows) as i64;
                let anchor = mark.anchor_rows as i64;
                if anchor > 0 {
                    parts.push((Part::OldAnchor, Rows::Range(-(new + anchor), -(new + 1))));
                }
                if new > 0 {
                    parts.push((Part::History, Rows::Range(-new, -1)));
                }
                history(&mut parts, geometry);
            }
            Plan::Read {
                geometry,
                append: None,
            } => {
                if geometry.history_size > 0 {
                    parts.push((Part::History, Rows::History));
                }
                history(&mut parts, geometry);
            }
            Plan::Whole => parts.push((Part::Whole, Rows::Whole)),
        }
        if alternate_on {
            parts.push((Part::Alternate, Rows::Alternate));
        }
        parts
    }
}

/// [`capture`], building on an earlier snapshot's pane contents (see [`Reuse`]).
pub fn capture_reusing(
    layout: &Layout,
    tmux: &Tmux,
    state: &StateDir,
    reason: &str,
    supervisor: Option<&[AgentReport]>,
    reuse: &Reuse,
) -> Result<Captured> {
    let session = layout.session.as_str();
    let redactor = Redactor::new(&layout.snapshot.redact)?;
    let queue = crate::messaging::queue::Queue::new(&state.root().join(session));
    let view = tmux.session_view(session)?;
    let panes = &view.panes;
    let ours: Vec<&crate::tmux::Pane> = panes
        .iter()
        .filter(|p| p.session == session && p.agent.is_some())
        .collect();
    if !panes.iter().any(|p| p.session == session) {
        return Err(NotRunning {
            session: session.to_owned(),
            socket: tmux.socket_name(),
        }
        .into());
    }
    // The agents' window: the one holding the layout's window name, else the first agent pane's.
    let window_id = ours
        .iter()
        .find(|p| p.window_name == layout.window.as_str())
        .or(ours.first())
        .map(|p| p.window_id.clone());
    let window = window_id
        .and_then(|id| view.windows.iter().find(|w| w.id == id))
        .cloned()
        .unwrap_or_else(|| WindowInfo {
            id: String::new(),
            name: layout.window.as_str().to_owned(),
            width: 0,
            height: 0,
            layout: String::new(),
            server_pid: view.windows.first().map_or(0, |w| w.server_pid),
        });

    let snapshots = state
        .session_dir(session)?
        .join(super::store::SNAPSHOTS_DIR);
    create_private_dir(&snapshots)?;

    // Agents in layout order, then panes of agents the layout no longer names.
    let mut agents: Vec<(String, String, Option<String>, Option<&crate::tmux::Pane>)> = layout
        .agents
        .iter()
        .map(|a| {
            let pane = ours
                .iter()
                .find(|p| p.agent.as_deref() == Some(a.name.as_str()))
                .copied();
            (
                a.name.as_str().to_owned(),
                a.role.as_str().to_owned(),
                a.command.clone(),
                pane,
            )
        })
        .collect();
    for p in &ours {
        let name = p.agent.clone().unwrap_or_default();
        if !agents.iter().any(|(n, ..)| *n == name) {
            agents.push((name, p.role.clone().unwrap_or_default(), None, Some(p)));
        }
    }

    let blobs_dir = snapshots.join(super::store::BLOBS_DIR);
    let agent_panes: Vec<Option<&crate::tmux::Pane>> = agents.iter().map(|a| a.3).collect();
    let (contents, blobs, stats) = read_panes(
        tmux,
        &view,
        window.server_pid,
        &agent_panes,
        reuse,
        &blobs_dir,
        &redactor,
    )?;

    let agents = agents
        .into_iter()
        .zip(contents)
        .map(|((name, role, command, pane), contents)| {
            let report = supervisor.and_then(|r| r.iter().find(|a| a.name == name));
            let (tmux_state, exit_status) = match pane {
                None => ("stopped", None),
                Some(p) if p.dead => ("exited", p.dead_status.or(p.dead_signal.map(|s| 128 + s))),
                Some(_) => ("running", None),
            };
            let last_message = queue.last(&name).map(|m| m.text);
            let pending: Vec<serde_json::Value> = queue
                .pending(&name)
                .unwrap_or_default()
                .iter()
                .filter_map(|m| serde_json::to_value(m).ok())
                .collect();
            AgentSnapshot {
                state: report.map_or_else(|| tmux_state.to_owned(), |r| r.state.clone()),
                activity: report.map_or_else(|| "unknown".to_owned(), |r| r.activity.clone()),
                restarts: report.map_or(0, |r| r.restarts),
                exit_status,
                pane: pane.map(|p| p.id.clone()),
                // tmux reports no path for a dead pane.
                cwd: pane
                    .map(|p| p.current_path.clone())
                    .filter(|c| !c.is_empty()),
                name,
                role,
                command,
                last_message,
                // Messages still waiting go with the snapshot and are queued again on
                // restore.
                pending,
                scrollback: contents.scrollback,
                history_bytes: contents.history_bytes,
                history_mark: contents.history_mark,
                alternate: contents.alternate,
            }
        })
        .collect();

    let now = std::time::SystemTime::now();
    let created = humantime::format_rfc3339_millis(now).to_string();
    let snapshot = Snapshot {
        format: FORMAT,
        id: new_id(&created),
        session: session.to_owned(),
        created,
        reason: reason.to_owned(),
        layout_file: None,
        layout: serde_json::to_value(layout).context("serializing the layout")?,
        window: WindowShape {
            name: window.name,
            width: window.width,
            height: window.height,
            layout: window.layout,
        },
        agents,
        quality_gate: crate::gate::snapshot_section(&state.root().join(session)),
        checksum: String::new(),
    };
    Ok(Captured {
        snapshot,
        blobs,
        redactor,
        stats,
    })
}

/// Reads the contents of each pane in `panes` (by agent; `None`: no pane), building on
/// `reuse`: the contents, the blobs they need, and how they were read.
fn read_panes(
    tmux: &Tmux,
    view: &SessionView,
    server_pid: u32,
    panes: &[Option<&crate::tmux::Pane>],
    reuse: &Reuse,
    blobs_dir: &Path,
    redactor: &Redactor,
) -> Result<(Vec<PaneContents>, Vec<Blob>, CaptureStats)> {
    let mut plans: Vec<(usize, Plan)> = panes
        .iter()
        .enumerate()
        .filter_map(|(i, pane)| Some((i, plan((*pane)?, view, server_pid, reuse, blobs_dir))))
        .collect();
    let mut contents: Vec<PaneContents> = vec![PaneContents::default(); panes.len()];
    let mut blobs: Vec<Blob> = Vec::new();
    let mut stats = CaptureStats::default();
    // A pane that printed between our look at it and its capture is planned again from
    // what the capture saw (see `read_outcome`); after a third miss, one capture of
    // everything.
    for round in 0..4 {
        if plans.is_empty() {
            break;
        }
        let asked: Vec<(usize, Part, Rows)> = plans
            .iter()
            .flat_map(|(i, plan)| {
                let alternate_on = panes[*i]
                    .and_then(|p| view.pane(&p.id))
                    .is_some_and(|g| g.alternate_on);
                plan.parts(alternate_on)
                    .into_iter()
                    .map(move |(part, rows)| (*i, part, rows))
            })
            .collect();
        let requests: Vec<PaneCapture<'_>> = asked
            .iter()
            .filter_map(|(i, part, rows)| {
                panes[*i].map(|p| PaneCapture {
                    pane: p.id.as_str(),
                    rows: *rows,
                    // Anchors are only hashed and compared with anchors.
                    exact: !matches!(part, Part::OldAnchor | Part::Anchor),
                })
            })
            .collect();
        let PaneCaptures { at, mut parts } = if requests.is_empty() {
            PaneCaptures::default()
        } else {
            tmux.capture_panes(&requests)
                .context("capturing the panes")?
        };
        // Each part is used once: taken, not copied.
        let mut read = |i: usize, part: Part| -> Option<Vec<u8>> {
            let k = asked.iter().position(|(j, p, _)| *j == i && *p == part)?;
            parts.get_mut(k).map(std::mem::take)
        };
        let mut again = Vec::new();
        for (i, plan) in std::mem::take(&mut plans) {
            let Some(pane) = panes[i] else { continue };
            let seen = at.iter().find(|a| a.pane == pane.id);
            let appending = matches!(
                plan,
                Plan::Read {
                    append: Some(_),
                    ..
                }
            );
            let result = match plan {
                Plan::Keep(kept) => {
                    stats.kept += 1;
                    Ok(*kept)
                }
                Plan::Whole => {
                    let whole = read(i, Part::Whole).unwrap_or_default();
                    Ok(PaneContents {
                        scrollback: Some(keep_blob(&mut blobs, redactor.redact_bytes(&whole))),
                        ..PaneContents::default()
                    })
                }
                Plan::Read { geometry, append } => match seen {
                    None => Err(Plan::Read {
                        geometry,
                        append: None,
                    }),
                    Some(seen) => read_outcome(ReadOutcome {
                        geometry,
                        append,
                        seen,
                        server_pid,
                        first_try: round == 0,
                        old_anchor: read(i, Part::OldAnchor),
                    })
                    .map(|(prefix, mark)| {
                        stats.appended += usize::from(appending);
                        assembled(
                            &mut blobs,
                            redactor,
                            prefix,
                            mark,
                            read(i, Part::History).unwrap_or_default(),
                            read(i, Part::Screen).unwrap_or_default(),
                            read(i, Part::Anchor).unwrap_or_default(),
                        )
                    }),
                },
            };
            match result {
                Ok(mut c) => {
                    // `-a -q` gives nothing when the program has left the alternate screen.
                    if let Some(alt) = read(i, Part::Alternate).filter(|a| a != b"\n") {
                        c.alternate = Some(keep_blob(&mut blobs, redactor.redact_bytes(&alt)));
                    }
                    contents[i] = c;
                }
                Err(retry) if round < 2 => again.push((i, retry)),
                Err(_) => again.push((i, Plan::Whole)),
            }
        }
        plans = again;
    }
    Ok((contents, blobs, stats))
}

/// How to read `pane` given what the previous snapshot holds of it.
fn plan(
    pane: &crate::tmux::Pane,
    view: &SessionView,
    server_pid: u32,
    reuse: &Reuse,
    blobs_dir: &Path,
) -> Plan {
    let Some(geometry) = view.pane(&pane.id) else {
        return Plan::Whole;
    };
    let previous = reuse.previous.get(&pane.id);
    let stored = |b: &Option<BlobRef>| {
        b.as_ref()
            .is_none_or(|b| blobs_dir.join(&b.sha256).is_file())
    };
    if let Some(prev) = previous
        && reuse.unchanged.contains(&pane.id)
        && stored(&prev.scrollback)
        && stored(&prev.alternate)
    {
        return Plan::Keep(Box::new(prev.clone()));
    }
    let appendable = previous.and_then(|prev| {
        let mark = prev.history_mark.as_ref()?;
        let blob = prev.scrollback.as_ref()?;
        let cut = usize::try_from(prev.history_bytes?).ok()?;
        if mark.server_pid != server_pid
            || mark.width != geometry.width
            || mark.rows > geometry.history_size
        {
            return None;
        }
        // The stored history, only if the blob is intact and it ends where a line does.
        let mut bytes = std::fs::read(blobs_dir.join(&blob.sha256)).ok()?;
        let intact = if reuse.verified {
            bytes.len() as u64 == blob.bytes
        } else {
            sha256_hex(&bytes) == blob.sha256
        };
        if !intact || cut > bytes.len() {
            return None;
        }
        bytes.truncate(cut);
        (bytes.is_empty() || bytes.ends_with(b"\n")).then(|| (bytes, mark.clone()))
    });
    Plan::Read {
        geometry,
        append: appendable.map(|(prefix, mark)| Append { prefix, mark }),
    }
}

/// A pane's captures under [`Plan::Read`], and what tmux said of the pane then.
struct ReadOutcome<'a> {
    geometry: PaneGeometry,
    append: Option<Append>,
    seen: &'a CapturedAt,
    server_pid: u32,
    first_try: bool,
    old_anchor: Option<Vec<u8>>,
}

/// Whether the captures of a [`Plan::Read`] can be used: the history prefix to build on
/// and the mark of the result; otherwise the plan to try next.
///
/// The rows a capture asked for were counted from the history size seen just before; the
/// capture itself reports the size at its moment. Appending needs the two to agree (the
/// new rows and the old anchor were counted from the bottom) and the anchor to match; a
/// pane that printed in between is tried once more from what the capture saw, then read
/// whole. Reading the whole history does not depend on the count, except that a pane
/// with no history had none asked for, and the anchor rows must still exist.
fn read_outcome(o: ReadOutcome<'_>) -> Result<(Vec<u8>, HistoryMark), Plan> {
    let ReadOutcome {
        geometry: planned,
        append,
        seen,
        server_pid,
        first_try,
        old_anchor,
    } = o;
    let now = PaneGeometry {
        history_size: seen.history_size,
        width: seen.width,
        ..planned.clone()
    };
    let anchor_rows = anchor_rows(&planned);
    let mark = |g: &PaneGeometry| HistoryMark {
        server_pid: seen.server_pid,
        width: g.width,
        rows: g.history_size,
        anchor_rows,
        anchor: String::new(),
    };
    let moved = seen.history_size != planned.history_size
        || seen.width != planned.width
        || seen.server_pid != server_pid;
    match append {
        Some(append) => {
            let anchored = append.mark.anchor_rows == 0
                || old_anchor.is_some_and(|rows| sha256_hex(&rows) == append.mark.anchor);
            if !moved && anchored {
                Ok((append.prefix, mark(&planned)))
            } else if moved
                && first_try
                && append.mark.rows <= now.history_size
                && append.mark.width == now.width
                && append.mark.server_pid == seen.server_pid
            {
                // Only printed more: the same append, counted from what the capture saw.
                Err(Plan::Read {
                    geometry: now,
                    append: Some(append),
                })
            } else {
                Err(Plan::Read {
                    geometry: now,
                    append: None,
                })
            }
        }
        None if seen.history_size >= anchor_rows
            && (planned.history_size > 0 || seen.history_size == 0) =>
        {
            Ok((Vec::new(), mark(&now)))
        }
        None => Err(Plan::Read {
            geometry: now,
            append: None,
        }),
    }
}

/// Adds a blob unless it is there already; its reference.
fn keep_blob(blobs: &mut Vec<Blob>, bytes: Vec<u8>) -> BlobRef {
    let sha256 = sha256_hex(&bytes);
    let blob_ref = BlobRef {
        sha256: sha256.clone(),
        bytes: bytes.len() as u64,
        lines: bytecount_lines(&bytes),
    };
    if !blobs.iter().any(|b| b.sha256 == sha256) {
        blobs.push(Blob { sha256, bytes });
    }
    blob_ref
}

/// A pane's contents from its history parts and screen, with the mark for next time
/// (`mark.anchor` is filled in here, from the newest history rows as captured).
fn assembled(
    blobs: &mut Vec<Blob>,
    redactor: &Redactor,
    prefix: Vec<u8>,
    mut mark: HistoryMark,
    history: Vec<u8>,
    screen: Vec<u8>,
    anchor: Vec<u8>,
) -> PaneContents {
    let joined = join_history(prefix, &history, &screen, redactor);
    mark.anchor = sha256_hex(&anchor);
    PaneContents {
        scrollback: Some(keep_blob(blobs, joined.bytes)),
        history_bytes: joined.history_bytes.map(|b| b as u64),
        history_mark: joined.appendable.then_some(mark),
        alternate: None,
    }
}

/// Scrollback made of parts captured apart.
#[derive(Debug, PartialEq, Eq)]
struct Joined {
    bytes: Vec<u8>,
    /// Where the screen starts, if the history ends where a line does.
    history_bytes: Option<usize>,
    /// Whether new history rows can simply follow these bytes next time.
    appendable: bool,
}

/// `prefix` (redacted history from before, empty or ending with a newline), then the new
/// history rows and the screen, redacted. Each capture starts with tmux's default colours
/// while the text before it may have left others on, hence a reset between parts.
///
/// Redaction patterns match within a line, so lines can be redacted part by part, except
/// a private key block left open, which is redacted together with all that follows; a
/// line the terminal wrapped from the last history row onto the screen goes with the
/// screen.
fn join_history(prefix: Vec<u8>, history: &[u8], screen: &[u8], redactor: &Redactor) -> Joined {
    let mut out = Joiner::new(prefix);
    if redactor.leaves_block_open(history) {
        let mut raw = Joiner::new(history.to_vec());
        raw.push(screen);
        out.push(&redactor.redact_bytes(&raw.bytes));
        return Joined {
            bytes: out.bytes,
            history_bytes: None,
            appendable: false,
        };
    }
    let cut = history
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let (lines, partial) = history.split_at(cut);
    out.push(&redactor.redact_bytes(lines));
    let history_bytes = out.bytes.len();
    let mut rest = Joiner::new(partial.to_vec());
    rest.push(screen);
    out.push(&redactor.redact_bytes(&rest.bytes));
    Joined {
        bytes: out.bytes,
        history_bytes: Some(history_bytes),
        appendable: partial.is_empty(),
    }
}

/// Concatenates captures, resetting colours between them when the text so far has any.
pub(super) struct Joiner {
    bytes: Vec<u8>,
    coloured: bool,
}

const RESET: &[u8] = b"\x1b[0m";

impl Joiner {
    pub(super) fn new(bytes: Vec<u8>) -> Joiner {
        let coloured = bytes.contains(&0x1b);
        Joiner { bytes, coloured }
    }

    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub(super) fn push(&mut self, part: &[u8]) {
        if part.is_empty() {
            return;
        }
        if self.coloured {
            self.bytes.extend_from_slice(RESET);
        }
        self.coloured |= part.contains(&0x1b);
        self.bytes.extend_from_slice(part);
    }
}

/// `2026-11-21T23:58:00.123Z` → `20261121T235800.123Z-<4 hex>`: sorts by time; the suffix
/// separates snapshots taken in the same millisecond.
pub(super) fn new_id(created: &str) -> String {
    let stamp: String = created.chars().filter(|c| *c != '-' && *c != ':').collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mix = (nanos ^ std::process::id().rotate_left(16)).wrapping_mul(2_654_435_761);
    format!("{stamp}-{:04x}", mix >> 16 & 0xffff)
}

/// Lines in a capture: newline-terminated lines plus a final unterminated one.
fn bytecount_lines(bytes: &[u8]) -> u64 {
    let newlines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
    newlines + u64::from(!bytes.is_empty() && bytes.last() != Some(&b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time() {
        let a = new_id("2026-11-21T23:58:00.123Z");
        assert!(a.starts_with("20261121T235800.123Z-"), "{a}");
        assert_eq!(a.len(), "20261121T235800.123Z-1a2b".len());
        assert!(new_id("2026-11-21T23:58:00.124Z") > a);
    }

    fn redactor() -> Redactor {
        Redactor::new(&[]).expect("patterns")
    }

    #[test]
    fn history_and_screen_join_with_a_reset_only_after_colour() {
        let r = redactor();
        let plain = join_history(b"old\n".to_vec(), b"a\nb\n", b"screen\n", &r);
        assert_eq!(plain.bytes, b"old\na\nb\nscreen\n");
        assert_eq!(plain.history_bytes, Some(8));
        assert!(plain.appendable);

        let coloured = join_history(Vec::new(), b"\x1b[31ma\n", b"b\n", &r);
        assert_eq!(coloured.bytes, b"\x1b[31ma\n\x1b[0mb\n");
        assert_eq!(coloured.history_bytes, Some(7));
    }

    #[test]
    fn a_line_wrapped_onto_the_screen_goes_with_the_screen_and_is_redacted_whole() {
        let r = redactor();
        // The newest history row continues on the screen: the key spans both captures.
        let joined = join_history(
            b"old\n".to_vec(),
            b"x\nkey sk-abcdefghij",
            b"klmnopqrstuvwx1234\n$ \n",
            &r,
        );
        assert_eq!(joined.bytes, b"old\nx\nkey [REDACTED]\n$ \n");
        assert_eq!(joined.history_bytes, Some(6));
        assert!(
            !joined.appendable,
            "the next snapshot must capture everything"
        );
    }

    #[test]
    fn a_key_block_open_at_the_end_of_the_history_is_redacted_with_the_screen() {
        let r = redactor();
        let joined = join_history(
            Vec::new(),
            b"ok\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n",
            b"c2VjcmV0\n-----END RSA PRIVATE KEY-----\n$ \n",
            &r,
        );
        let text = String::from_utf8_lossy(&joined.bytes);
        assert!(!text.contains("MIIE") && !text.contains("c2Vj"), "{text}");
        assert!(text.starts_with("ok\n[REDACTED]"), "{text}");
        assert_eq!(joined.history_bytes, None);
        assert!(!joined.appendable);
    }

    fn geometry(history_size: u64) -> PaneGeometry {
        PaneGeometry {
            id: "%1".into(),
            history_size,
            history_limit: 10_000,
            width: 80,
            alternate_on: false,
        }
    }

    #[test]
    fn a_history_near_its_limit_is_anchored_longer() {
        assert_eq!(anchor_rows(&geometry(5)), 5);
        assert_eq!(anchor_rows(&geometry(7_999)), 20);
        assert_eq!(anchor_rows(&geometry(8_000)), 200);
    }

    #[test]
    fn an_append_checks_the_old_anchor_where_it_moved_to_and_reads_only_new_rows() {
        let mark = HistoryMark {
            server_pid: 1,
            width: 80,
            rows: 100,
            anchor_rows: 20,
            anchor: String::new(),
        };
        let plan = Plan::Read {
            geometry: geometry(130),
            append: Some(Append {
                prefix: Vec::new(),
                mark,
            }),
        };
        assert_eq!(
            plan.parts(false),
            vec![
                (Part::OldAnchor, Rows::Range(-50, -31)),
                (Part::History, Rows::Range(-30, -1)),
                (Part::Anchor, Rows::Range(-20, -1)),
                (Part::Screen, Rows::Screen),
            ]
        );
    }

    #[test]
    fn a_pane_with_no_history_is_never_asked_for_history_rows() {
        // `-E -1` with no history would be the screen's first row.
        let plan = Plan::Read {
            geometry: geometry(0),
            append: None,
        };
        assert_eq!(
            plan.parts(true),
            vec![
                (Part::Screen, Rows::Screen),
                (Part::Alternate, Rows::Alternate)
            ]
        );
        let plan = Plan::Read {
            geometry: geometry(5),
            append: None,
        };
        assert_eq!(
            plan.parts(false),
            vec![
                (Part::History, Rows::History),
                (Part::Anchor, Rows::Range(-5, -1)),
                (Part::Screen, Rows::Screen),
            ]
        );
    }

    fn seen(history_size: u64) -> CapturedAt {
        CapturedAt {
            pane: "%1".into(),
            history_size,
            width: 80,
            server_pid: 1,
        }
    }

    fn outcome(
        planned: u64,
        seen_rows: u64,
        append: Option<Append>,
        first_try: bool,
        old_anchor: &[u8],
    ) -> Result<(Vec<u8>, HistoryMark), Plan> {
        let seen = seen(seen_rows);
        read_outcome(ReadOutcome {
            geometry: geometry(planned),
            append,
            seen: &seen,
            server_pid: 1,
            first_try,
            old_anchor: Some(old_anchor.to_vec()),
        })
    }

    #[test]
    fn appending_needs_the_pane_to_hold_still_and_its_anchor_in_place() {
        let append = Append {
            prefix: b"old\n".to_vec(),
            mark: HistoryMark {
                server_pid: 1,
                width: 80,
                rows: 100,
                anchor_rows: 20,
                anchor: sha256_hex(b"rows"),
            },
        };
        let (prefix, mark) =
            outcome(130, 130, Some(append.clone()), true, b"rows").expect("append");
        assert_eq!(prefix, b"old\n");
        assert_eq!((mark.rows, mark.anchor_rows), (130, 20));
        // Printed between the look and the capture: once more, from what the capture saw.
        match outcome(130, 140, Some(append.clone()), true, b"rows") {
            Err(Plan::Read {
                geometry,
                append: Some(_),
            }) => assert_eq!(geometry.history_size, 140),
            other => panic!("{other:?}"),
        }
        // Cleared (fewer rows than before) or resized in between: the whole history.
        assert!(matches!(
            outcome(130, 50, Some(append.clone()), true, b"rows"),
            Err(Plan::Read { append: None, .. })
        ));
        // Again: the whole history.
        assert!(matches!(
            outcome(140, 150, Some(append.clone()), false, b"rows"),
            Err(Plan::Read { append: None, .. })
        ));
        // Rows dropped or cleared: the anchor is not where it should be.
        assert!(matches!(
            outcome(130, 130, Some(append), true, b"other rows"),
            Err(Plan::Read { append: None, .. })
        ));
    }

    #[test]
    fn a_whole_history_read_records_the_size_the_capture_saw() {
        let (prefix, mark) = outcome(500, 520, None, true, b"").expect("read");
        assert!(prefix.is_empty());
        assert_eq!((mark.rows, mark.anchor_rows), (520, 20));
        // No history was asked for, but by then there was one.
        assert!(outcome(0, 3, None, true, b"").is_err());
        // Fewer rows than the anchor asked for (cleared in between).
        assert!(outcome(500, 5, None, true, b"").is_err());
        assert!(outcome(0, 0, None, true, b"").is_ok());
    }

    #[test]
    fn line_counts() {
        assert_eq!(bytecount_lines(b""), 0);
        assert_eq!(bytecount_lines(b"a\nb\n"), 2);
        assert_eq!(bytecount_lines(b"a\nb"), 2);
    }
}
