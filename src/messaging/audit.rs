//! The audit log, `<session-dir>/audit.jsonl`: one JSON object a line for every send,
//! delivery, refusal and failure, hash-chained: each line's `prev` is the SHA-256 (hex) of
//! the previous record's bytes (without its newline), the first line's is 64 zeros.
//! Changing, removing or inserting any line but the last breaks the chain at the line
//! after it. Appends hold an flock on the file, so concurrent senders keep the chain
//! intact.
//!
//! Two things the chain alone cannot see are covered by the head, `audit.head` beside the
//! file: the newest record's hash and the file's length after it, replaced atomically
//! after every append. An emptied or truncated file, or an edited last line, no longer
//! matches its head.
//!
//! A torn last line (a crash or a full disk cut a write short) is closed off by the next
//! append, whose record says so (`torn_bytes`, the fragment's length) and chains to the
//! last whole record; `verify` reports the fragment as torn, not as tampering.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::digest::sha256_hex;
use anyhow::{Context, Result};
use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The field of a record written right after a torn fragment: the fragment's length.
const TORN_FIELD: &str = "torn_bytes";

/// What `audit.head` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// SHA-256 of the newest record (its bytes without the newline).
    pub sha256: String,
    /// The file's length in bytes right after that record was appended.
    pub bytes: u64,
}

/// `audit.head` next to the log at `path`.
pub fn head_path(path: &Path) -> PathBuf {
    path.with_extension("head")
}

/// Appends one record (`kind` plus `fields`) to the chain at `path`, synced to disk,
/// and returns the line.
pub fn append(
    path: &Path,
    kind: &str,
    fields: Map<String, Value>,
    at: SystemTime,
) -> Result<String> {
    let mut lines = append_records(path, vec![(kind.to_owned(), fields)], at, true)?;
    lines.pop().context("one record appended")
}

/// Appends records to the chain in one write under one lock, each chained to the one
/// before, and returns their lines. `sync`: fsync before returning (the one record that
/// may skip it is an intent written right before its outcome, which syncs both).
pub fn append_records(
    path: &Path,
    records: Vec<(String, Map<String, Value>)>,
    at: SystemTime,
    sync: bool,
) -> Result<Vec<String>> {
    let mut file = crate::state::open_append(path)?;
    flock(&file, FlockOperation::LockExclusive)
        .with_context(|| format!("locking {}", path.display()))?;
    let tail = read_tail(&mut file).with_context(|| format!("reading {}", path.display()))?;
    let mut prev = match &tail.last_record {
        Some(line) => sha256_hex(line),
        None => GENESIS.to_owned(),
    };
    let ts = humantime::format_rfc3339_millis(at).to_string();
    let mut lines = Vec::with_capacity(records.len());
    for (i, (kind, fields)) in records.into_iter().enumerate() {
        let mut obj = Map::new();
        obj.insert("prev".into(), Value::String(prev));
        obj.insert("ts".into(), Value::String(ts.clone()));
        obj.insert("kind".into(), Value::String(kind));
        if i == 0
            && let Some(torn) = tail.torn
        {
            obj.insert(TORN_FIELD.into(), Value::from(torn));
        }
        obj.extend(fields);
        let line = Value::Object(obj).to_string();
        prev = sha256_hex(line.as_bytes());
        lines.push(line);
    }
    if lines.is_empty() {
        return Ok(lines);
    }
    crate::state::append_record(&mut file, lines.join("\n").as_bytes())
        .and_then(|()| if sync { file.sync_data() } else { Ok(()) })
        .with_context(|| format!("appending to {}", path.display()))?;
    let head = Head {
        sha256: prev,
        bytes: file.metadata().map(|m| m.len()).unwrap_or(0),
    };
    // Not synced: after a crash an older head only leaves the newest records uncovered,
    // which `verify` says; it never makes good records look tampered with.
    if let Err(e) = write_head(path, &head) {
        tracing::warn!("could not update {}: {e:#}", head_path(path).display());
    }
    Ok(lines)
}

fn write_head(path: &Path, head: &Head) -> Result<()> {
    let head_file = head_path(path);
    let tmp = head_file.with_extension(format!("head.tmp-{}", std::process::id()));
    crate::state::write_private(&tmp, &serde_json::to_vec(head)?)?;
    std::fs::rename(&tmp, &head_file).with_context(|| format!("replacing {}", head_file.display()))
}

/// The end of the log, as an append needs it.
struct Tail {
    /// The last whole record (without its newline).
    last_record: Option<Vec<u8>>,
    /// The length of a torn fragment after it (no newline at the end of the file), unless
    /// that fragment is itself a whole record that only lost its newline.
    torn: Option<usize>,
}

/// Reads backwards from the end (more each time) until it holds the last whole record
/// and any torn fragment after it.
fn read_tail(file: &mut File) -> std::io::Result<Tail> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut chunk = 4096u64;
    loop {
        let start = len.saturating_sub(chunk);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let from_start = start == 0;
        // What follows the last newline is a fragment (empty when the file ends with one).
        let (rest, fragment) = match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => (&buf[..i], &buf[i + 1..]),
            None if from_start => (&buf[..0], &buf[..]),
            None => {
                chunk *= 4;
                continue;
            }
        };
        let last = match rest.iter().rposition(|&b| b == b'\n') {
            Some(j) => Some(&rest[j + 1..]),
            None if from_start => (!rest.is_empty() || buf.first() == Some(&b'\n')).then_some(rest),
            None => {
                chunk *= 4;
                continue;
            }
        };
        if fragment.is_empty() {
            return Ok(Tail {
                last_record: last.map(<[u8]>::to_vec),
                torn: None,
            });
        }
        // A fragment that is a whole record chained to the one before only lost its
        // newline: it is the last record.
        let expected = last.map_or_else(|| GENESIS.to_owned(), sha256_hex);
        if record_prev(fragment).as_deref() == Some(expected.as_str()) {
            return Ok(Tail {
                last_record: Some(fragment.to_vec()),
                torn: None,
            });
        }
        return Ok(Tail {
            last_record: last.map(<[u8]>::to_vec),
            torn: Some(fragment.len()),
        });
    }
}

/// The `prev` of a line that is a JSON object, if it is one.
fn record_prev(line: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(line).ok()?;
    value.get("prev")?.as_str().map(str::to_owned)
}

/// Where and why a chain is broken. `line` counts from 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct BrokenAt {
    pub line: usize,
    pub reason: String,
}

/// The newest audit line of `kind` about message `id`, looked for in the last part of
/// the log only (a message just delivered is at its end).
pub fn recent(path: &Path, kind: &str, id: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 256 * 1024;
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    String::from_utf8_lossy(&bytes)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["kind"] == kind && v["id"] == id)
}

/// What a chain that verifies holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Whole records.
    pub records: usize,
    /// Lines (1-based) that a crash or a full disk tore, closed off by the next append
    /// (or the unterminated last line).
    pub torn: Vec<usize>,
    /// Records after the one the head names, written while the head could not be
    /// updated (a crash or a full disk between the two writes).
    pub past_head: usize,
    /// No head file (a log written before heads existed): the last line is not covered.
    pub no_head: bool,
}

/// Checks the whole chain and its head. A missing file is an empty chain, unless a head
/// says records were written.
pub fn verify(path: &Path) -> Result<Verified, BrokenAt> {
    // Under the log's lock, shared: an append writes its records and then the head under
    // it, exclusive, and the two read between would look like records the head missed.
    let _lock = std::fs::File::open(path)
        .ok()
        .filter(|f| flock(f, FlockOperation::LockShared).is_ok());
    let head = match std::fs::read(head_path(path)) {
        Ok(b) => Some(serde_json::from_slice::<Head>(&b).map_err(|e| BrokenAt {
            line: 0,
            reason: format!("{} is not a valid head ({e})", head_path(path).display()),
        })?),
        Err(_) => None,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(BrokenAt {
                line: 0,
                reason: format!("cannot read {}: {e}", path.display()),
            });
        }
    };
    verify_with_head(&bytes, head.as_ref())
}

/// [`verify`] on the file's contents and its head (`None`: no head file). Pure.
pub fn verify_with_head(bytes: &[u8], head: Option<&Head>) -> Result<Verified, BrokenAt> {
    let mut out = verify_bytes(bytes)?;
    let Some(head) = head else {
        out.no_head = !bytes.is_empty();
        return Ok(out);
    };
    let len = bytes.len() as u64;
    if len < head.bytes {
        return Err(BrokenAt {
            line: out.records + out.torn.len() + 1,
            reason: format!(
                "the log is {len} bytes but its head says {} were written: records were removed from the end{}",
                head.bytes,
                if len == 0 {
                    " (the file was emptied)"
                } else {
                    ""
                }
            ),
        });
    }
    // The record the head names ends exactly at head.bytes (with its newline).
    let Ok(at) = usize::try_from(head.bytes) else {
        return Err(BrokenAt {
            line: 0,
            reason: "the head names an impossible length".into(),
        });
    };
    let before = &bytes[..at];
    let named = before
        .strip_suffix(b"\n")
        .map(|b| b.rsplit(|&c| c == b'\n').next().unwrap_or(b));
    if named.map(sha256_hex).as_deref() != Some(head.sha256.as_str()) {
        let line = before.iter().filter(|&&b| b == b'\n').count().max(1);
        return Err(BrokenAt {
            line,
            reason: "this line does not match the hash kept in the head (the last record was changed, or the log replaced)".into(),
        });
    }
    out.past_head = bytes[at..]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    Ok(out)
}

/// The chain alone (no head): every whole record chains to the one before; a line that
/// is not a record must be a torn fragment, followed by a record that says so, or be
/// the unterminated last line. Pure.
pub fn verify_bytes(bytes: &[u8]) -> Result<Verified, BrokenAt> {
    let mut out = Verified::default();
    if bytes.is_empty() {
        return Ok(out);
    }
    let terminated = bytes.ends_with(b"\n");
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let mut expected = GENESIS.to_owned();
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let broken = |reason: String| BrokenAt { line: n, reason };
        let value = serde_json::from_slice::<Value>(line)
            .ok()
            .filter(|v| v.get("prev").and_then(Value::as_str).is_some());
        let Some(value) = value else {
            let last = i + 1 == lines.len();
            let closed_off = lines.get(i + 1).is_some_and(|next| {
                serde_json::from_slice::<Value>(next)
                    .ok()
                    .and_then(|v| v.get(TORN_FIELD).and_then(Value::as_u64))
                    == Some(line.len() as u64)
            });
            if (last && !terminated) || closed_off {
                out.torn.push(n);
                continue;
            }
            return Err(broken(
                "not a record of the chain (not a JSON object with a \"prev\" hash), and no torn write explains it".into(),
            ));
        };
        let prev = value
            .get("prev")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if prev != expected {
            let what = if n == 1 {
                "the first line's prev is not the genesis hash (lines were removed before it?)"
                    .to_owned()
            } else {
                format!(
                    "prev does not match the SHA-256 of the record before (line {} or this line was changed, or lines were inserted or removed)",
                    n - 1
                )
            };
            return Err(broken(what));
        }
        expected = sha256_hex(line);
        out.records += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(n: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("n".into(), Value::from(n));
        m
    }

    fn records(v: Result<Verified, BrokenAt>) -> usize {
        v.expect("verifies").records
    }

    #[test]
    fn a_verify_beside_a_writer_never_sees_records_past_the_head() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("audit.jsonl");
        append(&path, "send", fields(0), SystemTime::UNIX_EPOCH).expect("append");
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                for n in 1..=100 {
                    append(&path, "send", fields(n), SystemTime::UNIX_EPOCH).expect("append");
                }
            })
        };
        let mut looks = 0;
        while !writer.is_finished() {
            let v = verify(&path).expect("verifies");
            assert_eq!(v.past_head, 0, "after {} records", v.records);
            assert!(!v.no_head);
            looks += 1;
        }
        writer.join().expect("writer");
        assert!(looks > 0);
        assert_eq!(records(verify(&path)), 101);
    }

    #[test]
    fn chain_verifies_and_any_changed_byte_breaks_it() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("audit.jsonl");
        assert_eq!(verify(&path), Ok(Verified::default()));
        for n in 0..5 {
            append(&path, "send", fields(n), SystemTime::UNIX_EPOCH).expect("append");
        }
        assert_eq!(records(verify(&path)), 5);
        let good = std::fs::read(&path).expect("read");
        let first: Value =
            serde_json::from_slice(good.split(|&b| b == b'\n').next().expect("line"))
                .expect("json");
        assert_eq!(first["prev"], GENESIS);
        assert_eq!(first["kind"], "send");
        let head: Head =
            serde_json::from_slice(&std::fs::read(head_path(&path)).expect("head")).expect("h");
        // With the head, every byte of every line is covered, the last one included.
        for i in 0..good.len() - 1 {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            let err = verify_with_head(&bad, Some(&head)).expect_err("tampering detected");
            assert!(err.line >= 1, "{err}");
        }
        // A changed field in line 2 is named at line 3.
        let text = String::from_utf8(good.clone()).expect("utf8");
        let bad = text.replacen("\"n\":1", "\"n\":7", 1);
        assert_eq!(verify_bytes(bad.as_bytes()).expect_err("broken").line, 3);
    }

    #[test]
    fn an_emptied_truncated_or_last_line_edited_log_no_longer_matches_its_head() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("audit.jsonl");
        for n in 0..3 {
            append(&path, "send", fields(n), SystemTime::UNIX_EPOCH).expect("append");
        }
        let good = std::fs::read(&path).expect("read");
        std::fs::write(&path, b"").expect("empty");
        let err = verify(&path).expect_err("emptied");
        assert!(err.reason.contains("emptied"), "{err}");
        std::fs::remove_file(&path).expect("rm");
        assert!(verify(&path).is_err(), "a removed log with a head");
        let two = &good[..good[..good.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .expect("lines")
            + 1];
        std::fs::write(&path, two).expect("truncate");
        assert!(
            verify(&path)
                .expect_err("truncated")
                .reason
                .contains("removed")
        );
        let edited = String::from_utf8(good.clone())
            .expect("utf8")
            .replace("\"n\":2", "\"n\":9");
        std::fs::write(&path, edited).expect("edit");
        let err = verify(&path).expect_err("edited last line");
        assert_eq!(err.line, 3, "{err}");
        assert!(err.reason.contains("head"), "{err}");
        std::fs::write(&path, &good).expect("restore");
        assert_eq!(records(verify(&path)), 3);
    }

    #[test]
    fn a_torn_tail_is_closed_off_and_named_as_torn_not_tampering() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("audit.jsonl");
        append(&path, "send", fields(0), SystemTime::UNIX_EPOCH).expect("append");
        append(&path, "send", fields(1), SystemTime::UNIX_EPOCH).expect("append");
        // A crash mid-write: half a record, no newline.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(b"{\"prev\":\"abc\",\"ts\":\"20");
        std::fs::write(&path, &bytes).expect("tear");
        let v = verify(&path).expect("a torn tail is not tampering");
        assert_eq!((v.records, v.torn.clone()), (2, vec![3]));
        // The next append closes it off and chains to the last whole record.
        append(&path, "send", fields(2), SystemTime::UNIX_EPOCH).expect("append");
        append(&path, "send", fields(3), SystemTime::UNIX_EPOCH).expect("append");
        let v = verify(&path).expect("still verifies");
        assert_eq!((v.records, v.torn, v.past_head), (4, vec![3], 0));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.lines()
                .nth(3)
                .is_some_and(|l| l.contains("\"torn_bytes\":22"))
        );
        // Garbage inserted in the middle is still tampering.
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(1, "garbage");
        let bad = format!("{}\n", lines.join("\n"));
        assert_eq!(verify_bytes(bad.as_bytes()).expect_err("inserted").line, 2);
    }

    #[test]
    fn a_record_that_only_lost_its_newline_is_kept() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("audit.jsonl");
        append(&path, "send", fields(0), SystemTime::UNIX_EPOCH).expect("append");
        append(&path, "send", fields(1), SystemTime::UNIX_EPOCH).expect("append");
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 1]).expect("drop newline");
        append(&path, "send", fields(2), SystemTime::UNIX_EPOCH).expect("append");
        let v = verify(&path).expect("verifies");
        assert_eq!((v.records, v.torn.len()), (3, 0));
    }

    #[test]
    fn records_appended_together_chain_like_one_by_one() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("audit.jsonl");
        append(&path, "send", fields(0), SystemTime::UNIX_EPOCH).expect("append");
        let many = (1..=50).map(|n| ("send".to_owned(), fields(n))).collect();
        let lines = append_records(&path, many, SystemTime::UNIX_EPOCH, false).expect("many");
        assert_eq!(lines.len(), 50);
        append(&path, "delivered", fields(51), SystemTime::UNIX_EPOCH).expect("append");
        assert_eq!(records(verify(&path)), 52);
    }

    proptest::proptest! {
        /// Arbitrary bytes as an audit log (and after a good one): verify answers, never
        /// panics, and an append afterwards still works.
        #[test]
        fn arbitrary_audit_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..500)
        ) {
            let _ = verify_bytes(&bytes);
            let d = tempfile::tempdir().expect("tmp");
            let path = d.path().join("audit.jsonl");
            append(&path, "send", fields(0), SystemTime::UNIX_EPOCH).expect("append");
            let mut all = std::fs::read(&path).expect("read");
            all.extend_from_slice(&bytes);
            std::fs::write(&path, &all).expect("write");
            let _ = verify(&path);
            append(&path, "send", fields(1), SystemTime::UNIX_EPOCH).expect("append after");
        }
    }

    #[test]
    fn long_lines_chain_through_the_backwards_reader() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("audit.jsonl");
        for n in 0..3 {
            let mut f = fields(n);
            f.insert("pad".into(), Value::String("x".repeat(20_000)));
            append(&path, "send", f, SystemTime::now()).expect("append");
        }
        assert_eq!(records(verify(&path)), 3);
    }
}
