//! What a layout file may be before it is parsed at all: a regular file of at most
//! [`MAX_LAYOUT_BYTES`] whose flow collections (`[…]`, `{…}`) nest at most
//! [`MAX_NESTING`] deep. serde_yaml's parser takes quadratic time in flow nesting (100,000
//! levels: 17 s), and a supervisor reloading a hostile file must not stall on it, so both
//! are checked on the raw text first, by a scan that is linear in its length.

use std::io::Read;
use std::path::Path;

use super::{LayoutError, LayoutErrors, unreadable};

/// 1 MiB: a layout of 10,000 agents is about 700 KB.
pub const MAX_LAYOUT_BYTES: u64 = 1 << 20;

/// Deeper than any layout needs (SPEC §3 nests 3 levels), shallow enough to parse at once
/// (serde_yaml itself gives up past 128).
pub const MAX_NESTING: usize = 64;

/// Reads a layout file: a regular file (a folder, FIFO or device gets its own message),
/// at most [`MAX_LAYOUT_BYTES`], valid UTF-8, without its byte order mark.
pub fn read_layout_file(path: &Path) -> Result<String, LayoutErrors> {
    use std::os::unix::fs::FileTypeExt;
    let display = path.display().to_string();
    let bad = |message: String| unreadable(&display, message);
    let meta =
        std::fs::metadata(path).map_err(|e| bad(format!("cannot read the layout file: {e}")))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(bad(format!(
            "is a directory, not a layout file; give the YAML file in it, e.g. {}",
            path.join("orch.yaml").display()
        )));
    }
    if !ft.is_file() {
        let what = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(bad(format!(
            "is {what}, not a regular file; orch reads layouts only from regular files"
        )));
    }
    let too_big = || {
        bad(format!(
            "the layout file is larger than {} KiB; a layout is a few KiB of YAML (is this the right file?)",
            MAX_LAYOUT_BYTES >> 10
        ))
    };
    if meta.len() > MAX_LAYOUT_BYTES {
        return Err(too_big());
    }
    let file =
        std::fs::File::open(path).map_err(|e| bad(format!("cannot read the layout file: {e}")))?;
    // The file may grow between the check and the read: never read more than the limit.
    let mut bytes = Vec::new();
    file.take(MAX_LAYOUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("cannot read the layout file: {e}")))?;
    if bytes.len() as u64 > MAX_LAYOUT_BYTES {
        return Err(too_big());
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        bad(format!(
            "the layout file is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok(without_bom(&text).to_owned())
}

/// The text without a leading UTF-8 byte order mark, which some editors write and YAML
/// would otherwise read as part of the first key.
pub fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Refuses text over the size limit or nested deeper than [`MAX_NESTING`], naming the
/// line and column where the limit is passed.
pub fn check(text: &str, file: &str) -> Result<(), LayoutErrors> {
    if text.len() as u64 > MAX_LAYOUT_BYTES {
        return Err(unreadable(
            file,
            format!("the layout is larger than {} KiB", MAX_LAYOUT_BYTES >> 10),
        ));
    }
    match too_deep(text) {
        None => Ok(()),
        Some((line, col)) => Err(LayoutErrors(vec![LayoutError {
            file: file.to_owned(),
            position: Some((line, col)),
            message: format!(
                "nested more than {MAX_NESTING} levels deep; a layout needs only a few levels"
            ),
        }])),
    }
}

/// Where (1-based line and column) the nesting first passes [`MAX_NESTING`], if it does.
///
/// Counts flow collections and compact block sequences (`- - - x`) on one line, the two
/// ways to nest deeply in little text; block nesting by indentation needs the square of
/// its depth in bytes, so the size limit bounds it. Quoted scalars and comments are
/// skipped; outside a flow collection a bracket opens one only where a value starts.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut flow = 0usize;
    for (n, line) in text.split('\n').enumerate() {
        let mut chars = line.char_indices().peekable();
        let mut col = 0;
        // Where a value may start: line start, after `- `, `: `, `? `.
        let mut value_start = true;
        let mut compact = 0usize;
        let mut prev_space = true;
        while let Some((_, c)) = chars.next() {
            col += 1;
            match c {
                '#' if prev_space => break,
                '"' | '\'' if flow > 0 || value_start => {
                    // Skip the quoted scalar (a double-quoted one may escape its quote).
                    let mut escaped = false;
                    for (_, q) in chars.by_ref() {
                        col += 1;
                        if c == '"' && q == '\\' && !escaped {
                            escaped = true;
                            continue;
                        }
                        if q == c && !escaped {
                            break;
                        }
                        escaped = false;
                    }
                    value_start = false;
                }
                '[' | '{' if flow > 0 || value_start => {
                    flow += 1;
                    if flow + compact > MAX_NESTING {
                        return Some((n + 1, col));
                    }
                    value_start = true;
                }
                ']' | '}' if flow > 0 => {
                    flow -= 1;
                    value_start = false;
                }
                ',' if flow > 0 => value_start = true,
                '-' | ':' | '?'
                    if (value_start || c == ':')
                        && chars.peek().is_none_or(|(_, next)| next.is_whitespace()) =>
                {
                    if c == '-' && flow == 0 {
                        compact += 1;
                        if flow + compact > MAX_NESTING {
                            return Some((n + 1, col));
                        }
                    }
                    value_start = true;
                }
                c if c.is_whitespace() => {}
                _ => value_start = false,
            }
            prev_space = c.is_whitespace();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_found_where_it_passes_the_limit() {
        let deep = format!(
            "session: s\nmonitor: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let started = std::time::Instant::now();
        assert_eq!(too_deep(&deep), Some((2, 10 + MAX_NESTING)));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let ok = format!(
            "monitor: {}{}\n",
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        assert_eq!(too_deep(&ok), None);
        assert!(too_deep(&format!("a:\n  {}x\n", "- ".repeat(MAX_NESTING + 1))).is_some());
        assert!(too_deep(&format!("a: {}\n", "{b: ".repeat(MAX_NESTING + 1))).is_some());
    }

    #[test]
    fn brackets_in_strings_comments_and_plain_text_do_not_count() {
        let many = "[".repeat(200);
        for text in [
            format!("command: \"{many}\"\n"),
            format!("command: '{many}'\n"),
            format!("command: echo {many}\n"),
            format!("# {many}\nsession: s\n"),
            format!("command: \"a\\\"{many}\"\n"),
            format!("agents: [{{ name: a, command: 'x {many}' }}]\n"),
        ] {
            assert_eq!(too_deep(&text), None, "{text}");
        }
    }

    #[test]
    fn a_bom_is_dropped() {
        assert_eq!(without_bom("\u{feff}session: s"), "session: s");
        assert_eq!(without_bom("session: s"), "session: s");
    }
}
