//! One step for many panes in one tmux process: pasting the same text into each (one
//! buffer, loaded once) and pressing Enter in each. A tmux process costs ~1–2 ms of CPU
//! (exec, dynamic linking, the handshake), which at 200 agents and six steps a message
//! is most of what `orch send all` spends; a sequence costs tmux ~0.1 ms a command.
//!
//! tmux stops a command sequence at its first failing command (a pane that vanished), so
//! each command is followed by a marker with a random nonce; the markers printed say
//! which commands ran, and the rest is tried again in a new process.

use tmux_interface::{
    DeleteBuffer, DisplayMessage, LoadBuffer, PasteBuffer, SendKeys, TmuxCommand,
};

use super::{MAX_BATCH_BYTES, Tmux, TmuxError, argv_len, nonce, paste_safe, unique_buffer_name};

impl Tmux {
    /// Pastes `text` (made [`paste_safe`]) into every pane, as [`Tmux::paste`] does for
    /// one, without pressing Enter and without checking the panes first (the caller has
    /// a listing of them). Each pane's result says whether its paste ran.
    pub fn paste_each(&self, panes: &[&str], text: &str) -> Vec<Result<(), TmuxError>> {
        let buffer = unique_buffer_name();
        let safe = paste_safe(text);
        let load = || {
            LoadBuffer::new()
                .buffer_name(buffer.clone())
                .path("-")
                .build()
        };
        let paste = |pane: &str| {
            PasteBuffer::new()
                .bracket_codes()
                .no_replacement()
                .buffer_name(buffer.clone())
                .target_pane(pane.to_owned())
                .build()
        };
        let mut loaded = false;
        let results = self.each(panes, paste, |first| {
            // The buffer is loaded by the first process that runs and kept for the rest.
            if loaded || !first {
                return None;
            }
            loaded = true;
            Some((load(), safe.as_bytes()))
        });
        let _ = self.run(vec![
            DeleteBuffer::new().buffer_name(buffer.clone()).build(),
        ]);
        results
    }

    /// Presses Enter in every pane (its own key, as [`Tmux::press_enter`]), without
    /// checking the panes first.
    pub fn press_enter_each(&self, panes: &[&str]) -> Vec<Result<(), TmuxError>> {
        let enter = |pane: &str| {
            SendKeys::new()
                .target_pane(pane.to_owned())
                .key("Enter")
                .build()
        };
        self.each(panes, enter, |_| None)
    }

    /// Runs `step(pane)` for every pane in as few tmux processes as tmux's message size
    /// allows, each followed by a marker. `prefix(first)` may put a command (with stdin)
    /// before the first step of a process.
    fn each<'a>(
        &self,
        panes: &[&str],
        step: impl Fn(&str) -> TmuxCommand<'a>,
        mut prefix: impl FnMut(bool) -> Option<(TmuxCommand<'a>, &'a [u8])>,
    ) -> Vec<Result<(), TmuxError>> {
        let nonce = nonce();
        let mut results: Vec<Option<Result<(), TmuxError>>> =
            std::iter::repeat_with(|| None).take(panes.len()).collect();
        let mut next = 0;
        while next < panes.len() {
            let mut cmds = Vec::new();
            let mut input = None;
            if let Some((cmd, stdin)) = prefix(true) {
                cmds.push(cmd);
                input = Some(stdin);
            }
            let start = next;
            let mut end = next;
            while end < panes.len() {
                let group = vec![
                    step(panes[end]),
                    DisplayMessage::new()
                        .print()
                        .message(format!("{nonce} {end}"))
                        .build(),
                ];
                if end > start && argv_len(&cmds) + argv_len(&group) > MAX_BATCH_BYTES {
                    break;
                }
                cmds.extend(group);
                end += 1;
            }
            let (stdout, outcome) = self.run_partial(cmds, input);
            let out = String::from_utf8_lossy(&stdout);
            let done: Vec<usize> = out
                .lines()
                .filter_map(|l| l.strip_prefix(nonce.as_str())?.trim().parse().ok())
                .filter(|i| (start..end).contains(i))
                .collect();
            for &i in &done {
                results[i] = Some(Ok(()));
            }
            match outcome {
                Ok(()) => next = end,
                // The first step without its marker is the one that failed; the ones
                // after it did not run: they go in the next process.
                Err(TmuxError::Failed { command, message }) => {
                    let failed = (start..end).find(|i| results[*i].is_none()).unwrap_or(end);
                    if failed < end {
                        results[failed] = Some(Err(TmuxError::Failed { command, message }));
                    }
                    next = failed + 1;
                }
                Err(e) => {
                    // No server, or tmux would not run: nothing more can be done.
                    let message = e.to_string();
                    for r in results.iter_mut().skip(start).filter(|r| r.is_none()) {
                        *r = Some(Err(TmuxError::Failed {
                            command: "tmux".into(),
                            message: message.clone(),
                        }));
                    }
                    break;
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(TmuxError::Failed {
                        command: "tmux".into(),
                        message: "not run".into(),
                    })
                })
            })
            .collect()
    }
}
