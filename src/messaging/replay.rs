//! Telling a restored pane's replayed history from what its new agent shows.
//!
//! A restored pane first replays its saved history (`cat FILE`), which usually ends with
//! the OLD agent's prompt: read as is, the screen looks ready while the new agent CLI is
//! still starting, and a message pasted then is lost or garbled. The pane's script creates
//! a marker file once `cat` is done; a [`ReplayGuard`] counts the replay as over a moment
//! after that (tmux may still be parsing the last of it), and the agent as started once
//! the screen shows something the replay did not end with. Messages queued by a restore
//! carry the guard, so whoever delivers them (restore itself, the supervisor, `orch send`)
//! waits for it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::tmux::PaneInput;

/// How many of the last non-empty lines tell a replayed screen from a new one.
const COMPARED_LINES: usize = 3;

/// How much of the end of a replay file is read for its last lines.
const TAIL_BYTES: u64 = 64 * 1024;

/// How long after the marker the replay counts as on screen: `cat` has written it all,
/// tmux has at most a terminal buffer of it left to parse.
const SETTLE: Duration = Duration::from_millis(100);

/// What a pane's history replay ends with, and the file that says it is over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayGuard {
    /// Created by the pane's script once `cat` has written the whole replay.
    pub done: PathBuf,
    /// The replay's last non-empty lines, escapes dropped and blanks squeezed.
    pub tail: Vec<String>,
    /// Where the cursor was once the replay was on screen, counted in rows from the top
    /// of the pane's history (`#{history_size}` + `#{cursor_y}`). A replay ends with a
    /// newline, so that row and those below it were blank: anything on them is the new
    /// agent's. Known when restore could look in time; a CLI that resumes its
    /// conversation draws just what the replay ended with, which only this tells apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_row: Option<u64>,
}

impl ReplayGuard {
    /// The guard for a pane replaying `replay` (the file it `cat`s). Reads only the end
    /// of the file: a few lines are compared, and a replay can be megabytes.
    pub fn new(replay: &Path, done: PathBuf) -> ReplayGuard {
        let bytes = read_end(replay, TAIL_BYTES).unwrap_or_default();
        let mut tail = screen_lines(&String::from_utf8_lossy(&bytes));
        tail.drain(..tail.len().saturating_sub(COMPARED_LINES));
        ReplayGuard {
            done,
            tail,
            end_row: None,
        }
    }

    /// Whether the replay is over and on screen: its marker exists and is 100 ms old.
    pub fn is_over(&self, now: SystemTime) -> bool {
        replay_over(&self.done, now)
    }

    /// Whether the pane still shows only the end of the replay (nothing new below it).
    pub fn still_shown(&self, pane: &PaneInput) -> bool {
        self.fresh(pane).is_none()
    }

    /// What the new agent has drawn since the replay: the screen from the row where the
    /// replay ended (all of it once that row scrolled away); `None` while nothing is there.
    /// Its activity is read from this part alone: the replay above it ends with the old
    /// agent's prompt and footer, which would pass for the new one's. Without the row
    /// (older guards), the whole screen once it no longer ends like the replay.
    pub fn fresh(&self, pane: &PaneInput) -> Option<String> {
        match self.end_row {
            Some(end) => {
                let skip = end
                    .checked_sub(pane.history_size)
                    .map_or(0, |first| usize::try_from(first).unwrap_or(usize::MAX));
                let part: Vec<&str> = pane.screen.lines().skip(skip).collect();
                part.iter()
                    .any(|l| !l.trim().is_empty())
                    .then(|| part.join("\n"))
            }
            None => (!shows_only_replay(&pane.screen, &self.tail)).then(|| pane.screen.clone()),
        }
    }
}

/// Whether the replay whose marker is `done` is over and on screen: the marker exists
/// and is [`SETTLE`] old.
pub fn replay_over(done: &Path, now: SystemTime) -> bool {
    std::fs::metadata(done)
        .and_then(|m| m.modified())
        .is_ok_and(|at| now.duration_since(at).is_ok_and(|d| d >= SETTLE))
}

/// The last `n` bytes of a file (all of a shorter one).
fn read_end(path: &Path, n: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(n)))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// Whether the bottom of `screen` is still the end of the replay: its last non-empty
/// lines are the replay's (the top one may be cut where a wrapped line leaves the
/// screen).
fn shows_only_replay(screen: &str, tail: &[String]) -> bool {
    let lines = screen_lines(screen);
    let n = lines.len().min(tail.len());
    if n == 0 {
        return lines.is_empty() && tail.is_empty();
    }
    let (shown, replayed) = (&lines[lines.len() - n..], &tail[tail.len() - n..]);
    shown
        .iter()
        .zip(replayed)
        .enumerate()
        .all(|(i, (s, r))| s == r || (i == 0 && r.ends_with(s.as_str())))
}

/// The non-empty lines of terminal text, without escape sequences or control characters
/// and with every run of blanks made one space, so a replay file and the screen it
/// produced compare equal (tabs become spaces on screen, trailing blanks vary).
fn screen_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut clean = String::with_capacity(line.len());
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                skip_escape(&mut chars);
            } else if c.is_whitespace() {
                clean.push(' ');
            } else if !c.is_control() {
                clean.push(c);
            }
        }
        let words: Vec<&str> = clean.split(' ').filter(|w| !w.is_empty()).collect();
        if !words.is_empty() {
            out.push(words.join(" "));
        }
    }
    out
}

/// Skips the rest of an escape sequence (CSI, OSC, or a two-character one).
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('[') => {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
        Some(']') => {
            while let Some(c) = chars.next() {
                if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                    break;
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn screen_lines_drop_escapes_controls_and_blank_runs() {
        let text = "\x1b[31mred\x1b[0m  text\t here   \n\n\x1b]2;title\x07$ \r\n";
        assert_eq!(screen_lines(text), ["red text here", "$"]);
    }

    #[test]
    fn the_top_line_may_be_cut_by_the_screen_edge() {
        let tail = lines(&["a long line that wrapped", "next", "$"]);
        assert!(shows_only_replay("that wrapped\nnext\n$\n", &tail));
        assert!(shows_only_replay("next\n$\n", &tail));
        assert!(!shows_only_replay("next\n$\n$\n", &tail));
        assert!(!shows_only_replay("", &tail));
        assert!(shows_only_replay("", &[]));
    }

    fn pane(screen: &str, history_size: u64) -> PaneInput {
        PaneInput {
            dead: false,
            in_mode: false,
            cursor_y: 0,
            history_size,
            tty: "/dev/null".into(),
            screen: screen.into(),
        }
    }

    #[test]
    fn a_resumed_cli_drawing_what_the_replay_ended_with_is_new() {
        let guard = ReplayGuard {
            done: "/nonexistent".into(),
            tail: lines(&["› fix it", "› Ask Codex to do anything", "? for shortcuts"]),
            end_row: Some(103),
        };
        // Right after the replay: history 100, the cursor on blank row 3 of the screen.
        let replayed = "› fix it\n› Ask Codex to do anything\n? for shortcuts\n\n\n";
        assert!(guard.still_shown(&pane(replayed, 100)));
        // The resumed CLI drew the same lines again, below: the old ones scrolled up.
        assert!(!guard.still_shown(&pane(replayed, 104)));
        // Only what it drew counts: the replayed footer above a loading screen is not it.
        let loading = "› Ask Codex to do anything\n? for shortcuts\n\n   loading\n";
        assert_eq!(
            guard.fresh(&pane(loading, 100)).as_deref(),
            Some("   loading")
        );
        // A shell drew its prompt on the blank row, identical to the replayed one.
        let prompt = "$\n$\n$\n$\n\n";
        let g = ReplayGuard {
            tail: lines(&["$", "$", "$"]),
            ..guard.clone()
        };
        assert!(g.still_shown(&pane("$\n$\n$\n\n\n", 100)));
        assert!(!g.still_shown(&pane(prompt, 100)));
        // Without the row (older guards): the screen comparison.
        let old = ReplayGuard { end_row: None, ..g };
        assert!(
            old.still_shown(&pane(prompt, 100)),
            "what the row alone tells"
        );
    }

    #[test]
    fn the_guard_reads_the_end_of_the_replay_and_waits_for_its_marker() {
        let d = tempfile::tempdir().expect("tmp");
        let file = d.path().join("a.scrollback");
        let mut text = "x\n".repeat(100_000);
        text.push_str("last but two\n\x1b[1mlast but one\x1b[0m\nold $ \n\n");
        std::fs::write(&file, text).expect("write");
        let g = ReplayGuard::new(&file, d.path().join("a.replayed"));
        assert_eq!(g.tail, ["last but two", "last but one", "old $"]);
        let now = SystemTime::now();
        assert!(!g.is_over(now));
        std::fs::write(&g.done, "").expect("marker");
        assert!(!g.is_over(SystemTime::now()), "not settled yet");
        assert!(g.is_over(SystemTime::now() + SETTLE));
    }
}
