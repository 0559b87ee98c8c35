//! The snapshot store: `<state-dir>/<session>/snapshots/` (mode 0700) holding `<id>.json`
//! documents and `blobs/<sha256>` pane contents (files mode 0600).
//!
//! Invariants:
//! - A document is written (atomically: temp file, fsync, rename, fsync of the folder)
//!   only after every blob it names is on disk and synced, so a document that exists
//!   never points at a missing blob — unless something outside orch deletes files.
//! - Blobs are content-addressed: a blob already present with the right size is not
//!   written again, which is why 50 snapshots of an idle session cost about one.
//! - Writers (and retention) hold an flock on `snapshots/.lock`, so retention never deletes
//!   a blob that a concurrent writer is about to reference.
//! - A killed writer leaves only temp files (`.*.tmp-<pid>…`), removed by the next
//!   [`Store::open`] once their process is gone.
//! - `latest` is the newest document that verifies (checksum rule of `format.rs`, every
//!   blob present with the right hash); corrupt ones are skipped and reported.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::digest::sha256_hex;
use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::capture::{Captured, new_id};
use super::format::{FORMAT, Snapshot};
use crate::state::{atomic_write, create_private_dir};

pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const BLOBS_DIR: &str = "blobs";
const LOCK_FILE: &str = ".lock";

/// The snapshots of one session, open for writing.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

/// What [`Store::write`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Written {
    pub id: String,
    /// The document, `<state-dir>/<session>/snapshots/<id>.json`.
    pub path: PathBuf,
    /// Bytes of the document plus every blob it references.
    pub bytes: u64,
    /// Blobs this snapshot had to write (the others were already stored).
    pub new_blobs: usize,
    pub new_blob_bytes: u64,
    /// Snapshots deleted by retention.
    pub pruned: Vec<String>,
    pub duration: Duration,
    /// How the panes were read (filled in by `snapshot::take`).
    pub stats: super::CaptureStats,
}

/// One entry of [`list`]. As JSON: `{id, created, reason, ok: bool, error: why|null,
/// agents, bytes}`.
#[derive(Clone, Debug)]
pub struct Listed {
    pub id: String,
    /// Empty when the document cannot be read.
    pub created: String,
    pub reason: String,
    /// `Err(why)` for a corrupt snapshot.
    pub ok: Result<(), String>,
    pub agents: usize,
    /// Document plus referenced blobs.
    pub bytes: u64,
}

impl Serialize for Listed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = s.serialize_struct("Listed", 7)?;
        m.serialize_field("id", &self.id)?;
        m.serialize_field("created", &self.created)?;
        m.serialize_field("reason", &self.reason)?;
        m.serialize_field("ok", &self.ok.is_ok())?;
        m.serialize_field("error", &self.ok.as_ref().err())?;
        m.serialize_field("agents", &self.agents)?;
        m.serialize_field("bytes", &self.bytes)?;
        m.end()
    }
}

/// [`load`] of an id that is not in the store.
#[derive(Debug, thiserror::Error)]
#[error("no snapshot {id} in {}; see `orch snapshot list`", dir.display())]
pub struct NoSuchSnapshot {
    pub id: String,
    pub dir: PathBuf,
}

/// A verified snapshot and where its blobs are.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub path: PathBuf,
    /// sha256 → file, for every blob the snapshot references.
    pub blobs: BTreeMap<String, PathBuf>,
    /// Newer snapshots passed over because they are corrupt: `(id, why)`.
    pub skipped: Vec<(String, String)>,
}

/// `<session_dir>/snapshots`.
pub fn snapshots_dir(session_dir: &Path) -> PathBuf {
    session_dir.join(SNAPSHOTS_DIR)
}

/// Where the blob with this hash lives.
pub fn blob_path(session_dir: &Path, sha256: &str) -> PathBuf {
    snapshots_dir(session_dir).join(BLOBS_DIR).join(sha256)
}

/// `sha256:<hex>` of the document serialized compactly with `checksum` empty.
pub fn checksum(snapshot: &Snapshot) -> Result<String> {
    let mut s = snapshot.clone();
    s.checksum = String::new();
    let bytes = serde_json::to_vec(&s)?;
    Ok(format!("sha256:{}", sha256_hex(&bytes)))
}

impl Store {
    /// Opens (creating, mode 0700) `<session_dir>/snapshots/` and its `blobs/`, and removes
    /// temp files left by writers that were killed.
    pub fn open(session_dir: &Path) -> Result<Store> {
        let dir = snapshots_dir(session_dir);
        create_private_dir(&dir)?;
        create_private_dir(&dir.join(BLOBS_DIR))?;
        let store = Store { dir };
        store.clean_temp_files();
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores a captured snapshot: redacts the document, writes missing blobs, then the
    /// document, then applies retention (`keep` newest snapshots). Any write or fsync
    /// error fails this snapshot; nothing already stored is harmed.
    pub fn write(&self, captured: Captured, keep: u32) -> Result<Written> {
        let started = Instant::now();
        let _lock = self.lock()?;
        let Captured {
            mut snapshot,
            blobs,
            redactor,
            stats: captured_stats,
        } = captured;
        // Redact every string of the document (layout env values, commands, paths...).
        let mut value = serde_json::to_value(&snapshot)?;
        redactor.redact_json(&mut value);
        snapshot = serde_json::from_value(value)?;
        snapshot.format = FORMAT;
        // Normalize once through JSON so the checksum is computed on exactly what a reader
        // parses back (floats in the layout), then seal it.
        snapshot.checksum = String::new();
        snapshot = serde_json::from_slice(&serde_json::to_vec(&snapshot)?)?;
        while self.doc_path(&snapshot.id).exists() {
            snapshot.id = new_id(&snapshot.created);
        }
        snapshot.checksum = checksum(&snapshot)?;

        let blobs_dir = self.dir.join(BLOBS_DIR);
        let new: Vec<&super::capture::Blob> = blobs
            .iter()
            .filter(|b| {
                !fs::metadata(blobs_dir.join(&b.sha256))
                    .is_ok_and(|m| m.len() == b.bytes.len() as u64)
            })
            .collect();
        let new_blobs = new.len();
        let new_blob_bytes = new.iter().map(|b| b.bytes.len() as u64).sum();
        // One thread per blob: the file system commits their fsyncs together instead of
        // one after the other (a working session changes every pane's blob).
        std::thread::scope(|scope| {
            let writers: Vec<_> = new
                .iter()
                .map(|b| scope.spawn(|| write_synced(&blobs_dir, &b.sha256, &b.bytes)))
                .collect();
            writers.into_iter().try_for_each(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a blob writer panicked")))
            })
        })?;
        if new_blobs > 0 {
            crate::state::sync_dir(&blobs_dir)?;
        }
        let doc = serde_json::to_vec_pretty(&snapshot)?;
        let path = self.doc_path(&snapshot.id);
        atomic_write(&path, &doc)?;
        let referenced: HashSet<&str> = referenced(&snapshot).collect();
        let bytes = doc.len() as u64
            + blobs
                .iter()
                .filter(|b| referenced.contains(b.sha256.as_str()))
                .map(|b| b.bytes.len() as u64)
                .sum::<u64>();
        let pruned = self.retain(keep.max(1) as usize)?;
        Ok(Written {
            id: snapshot.id,
            path,
            bytes,
            new_blobs,
            new_blob_bytes,
            pruned,
            duration: started.elapsed(),
            stats: captured_stats,
        })
    }

    fn doc_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn lock(&self) -> Result<File> {
        crate::state::lock_exclusive(&self.dir.join(LOCK_FILE))
    }

    /// Deletes all but the `keep` newest documents, then every blob no remaining document
    /// references. A document that cannot be parsed protects no blob.
    fn retain(&self, keep: usize) -> Result<Vec<String>> {
        let ids = doc_ids(&self.dir)?;
        let mut pruned = Vec::new();
        if ids.len() > keep {
            for id in &ids[..ids.len() - keep] {
                let path = self.doc_path(id);
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                pruned.push(id.clone());
            }
        }
        let mut wanted: HashSet<String> = HashSet::new();
        for id in ids.iter().skip(pruned.len()) {
            if let Ok(refs) = read_blob_refs(&self.doc_path(id)) {
                wanted.extend(refs);
            }
        }
        let blobs_dir = self.dir.join(BLOBS_DIR);
        for entry in fs::read_dir(&blobs_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || wanted.contains(&name) {
                continue;
            }
            let _ = fs::remove_file(entry.path());
        }
        if !pruned.is_empty() {
            crate::state::sync_dir(&self.dir)?;
        }
        Ok(pruned)
    }

    /// Removes `.*.tmp-<pid>…` files and folders whose writer is no longer running.
    fn clean_temp_files(&self) {
        for dir in [self.dir.clone(), self.dir.join(BLOBS_DIR)] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(pid) = temp_owner(&name) else {
                    continue;
                };
                if pid != std::process::id() && crate::process::alive(pid) {
                    continue;
                }
                if pid == std::process::id() {
                    continue;
                }
                let path = entry.path();
                let _ = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
    }
}

/// The pid in a temp file name `.NAME.tmp-<pid>[-…]`, if it is one.
fn temp_owner(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    let (_, rest) = name.split_once(".tmp-")?;
    rest.split('-').next()?.parse().ok()
}

/// Every `<id>.json` in the folder, oldest first.
fn doc_ids(dir: &Path) -> Result<Vec<String>> {
    let mut ids: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".json")?;
            (!id.starts_with('.')).then(|| id.to_owned())
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// The blobs a document references, reading nothing else of it (retention reads every
/// document at every snapshot).
fn read_blob_refs(path: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Doc {
        agents: Vec<Agent>,
    }
    #[derive(serde::Deserialize)]
    struct Agent {
        scrollback: Option<Sha>,
        alternate: Option<Sha>,
    }
    #[derive(serde::Deserialize)]
    struct Sha {
        sha256: String,
    }
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: Doc = serde_json::from_slice(&bytes)?;
    Ok(doc
        .agents
        .into_iter()
        .flat_map(|a| [a.scrollback, a.alternate])
        .flatten()
        .map(|s| s.sha256)
        .collect())
}

fn referenced(s: &Snapshot) -> impl Iterator<Item = &str> {
    s.agents
        .iter()
        .flat_map(|a| [a.scrollback.as_ref(), a.alternate.as_ref()])
        .flatten()
        .map(|b| b.sha256.as_str())
}

/// Writes `dir/name` through a temp file, synced, renamed into place (mode 0600). The
/// caller syncs `dir` once after its last rename.
fn write_synced(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let path = dir.join(name);
    let result = crate::state::write_synced_temp(&tmp, bytes).and_then(|()| {
        fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Checks a document against the rules of `format.rs`; returns it and its total size.
/// `verified` caches blob hashes already checked in this pass.
fn verify(
    session_dir: &Path,
    path: &Path,
    verified: &mut HashMap<String, Result<u64, String>>,
) -> (Option<Snapshot>, Result<(), String>, u64) {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => return (None, Err(format!("cannot read: {e}")), 0),
    };
    let doc_len = bytes.len() as u64;
    let snapshot: Snapshot = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => return (None, Err(format!("not a snapshot document: {e}")), doc_len),
    };
    let check = (|| -> Result<u64, String> {
        if snapshot.format != FORMAT {
            return Err(format!(
                "format {} (this orch reads {FORMAT})",
                snapshot.format
            ));
        }
        let want = checksum(&snapshot).map_err(|e| e.to_string())?;
        if snapshot.checksum != want {
            return Err("checksum mismatch: the document was altered or torn".to_owned());
        }
        let mut total = 0;
        let mut seen = HashSet::new();
        for agent in &snapshot.agents {
            for b in [agent.scrollback.as_ref(), agent.alternate.as_ref()]
                .into_iter()
                .flatten()
            {
                let result = verified
                    .entry(b.sha256.clone())
                    .or_insert_with(|| verify_blob(session_dir, &b.sha256))
                    .clone();
                let len = result.map_err(|e| format!("agent {}: {e}", agent.name))?;
                if len != b.bytes {
                    return Err(format!(
                        "agent {}: blob {} has {len} bytes, the document says {}",
                        agent.name, b.sha256, b.bytes
                    ));
                }
                if seen.insert(b.sha256.clone()) {
                    total += len;
                }
            }
        }
        Ok(total)
    })();
    match check {
        Ok(blobs) => (Some(snapshot), Ok(()), doc_len + blobs),
        Err(e) => (Some(snapshot), Err(e), doc_len),
    }
}

fn verify_blob(session_dir: &Path, sha256: &str) -> Result<u64, String> {
    let path = blob_path(session_dir, sha256);
    let bytes = fs::read(&path).map_err(|e| format!("blob {sha256} missing: {e}"))?;
    if sha256_hex(&bytes) != sha256 {
        return Err(format!("blob {sha256} does not match its hash"));
    }
    Ok(bytes.len() as u64)
}

/// Every snapshot of the session (`session_dir` is `<state-dir>/<session>`), oldest
/// first, each verified. No snapshots folder means no snapshots.
pub fn list(session_dir: &Path) -> Result<Vec<Listed>> {
    let dir = snapshots_dir(session_dir);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut verified = HashMap::new();
    let mut out = Vec::new();
    for id in doc_ids(&dir)? {
        let path = dir.join(format!("{id}.json"));
        let (snapshot, ok, bytes) = verify(session_dir, &path, &mut verified);
        out.push(Listed {
            created: snapshot
                .as_ref()
                .map(|s| s.created.clone())
                .unwrap_or_default(),
            reason: snapshot
                .as_ref()
                .map(|s| s.reason.clone())
                .unwrap_or_default(),
            agents: snapshot.as_ref().map_or(0, |s| s.agents.len()),
            ok,
            bytes,
            id,
        });
    }
    Ok(out)
}

/// Loads snapshot `id`, or with `latest` the newest one that verifies. A named snapshot
/// that does not verify is an error that says why.
pub fn load(session_dir: &Path, id_or_latest: &str) -> Result<Loaded> {
    let dir = snapshots_dir(session_dir);
    let ids = if dir.exists() {
        doc_ids(&dir)?
    } else {
        Vec::new()
    };
    let candidates: Vec<String> = if id_or_latest == "latest" {
        ids.into_iter().rev().collect()
    } else {
        // Only ids as `list` prints them: never a path.
        if !ids.iter().any(|i| i == id_or_latest) {
            return Err(NoSuchSnapshot {
                id: id_or_latest.to_owned(),
                dir: dir.clone(),
            }
            .into());
        }
        vec![id_or_latest.to_owned()]
    };
    let mut verified = HashMap::new();
    let mut skipped = Vec::new();
    for id in candidates {
        let path = dir.join(format!("{id}.json"));
        match verify(session_dir, &path, &mut verified) {
            (Some(snapshot), Ok(()), _) => {
                let blobs = referenced(&snapshot)
                    .map(|sha| (sha.to_owned(), blob_path(session_dir, sha)))
                    .collect();
                return Ok(Loaded {
                    snapshot,
                    path,
                    blobs,
                    skipped,
                });
            }
            (_, Err(why), _) if id_or_latest == "latest" => skipped.push((id, why)),
            (_, Err(why), _) => bail!("snapshot {id} is corrupt: {why}"),
            (None, Ok(()), _) => skipped.push((id, "unreadable".to_owned())),
        }
    }
    if skipped.is_empty() {
        bail!(
            "no snapshots in {}; take one with `orch snapshot`",
            dir.display()
        );
    }
    let why: Vec<String> = skipped.iter().map(|(i, w)| format!("{i}: {w}")).collect();
    bail!(
        "no good snapshot in {}; corrupt: {}",
        dir.display(),
        why.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::format::{AgentSnapshot, BlobRef, FORMAT, WindowShape};
    use proptest::prelude::*;

    /// A good snapshot `id` of one agent whose scrollback is `blob`, written to disk.
    fn write_good(session_dir: &Path, id: &str, blob: &[u8]) -> PathBuf {
        let dir = snapshots_dir(session_dir);
        fs::create_dir_all(dir.join(BLOBS_DIR)).expect("mkdir");
        let sha = crate::digest::sha256_hex(blob);
        fs::write(dir.join(BLOBS_DIR).join(&sha), blob).expect("blob");
        let mut snap = Snapshot {
            format: FORMAT,
            id: id.to_owned(),
            session: "s".into(),
            created: "2026-12-01T00:00:00.000Z".into(),
            reason: "manual".into(),
            layout_file: None,
            layout: serde_json::json!({}),
            window: WindowShape {
                name: "agents".into(),
                width: 80,
                height: 24,
                layout: String::new(),
            },
            agents: vec![AgentSnapshot {
                name: "a".into(),
                role: "WORKER".into(),
                pane: Some("%1".into()),
                cwd: None,
                command: None,
                state: "running".into(),
                activity: "idle".into(),
                restarts: 0,
                exit_status: None,
                last_message: None,
                pending: Vec::new(),
                scrollback: Some(BlobRef {
                    sha256: sha,
                    bytes: blob.len() as u64,
                    lines: 1,
                }),
                history_bytes: None,
                history_mark: None,
                alternate: None,
            }],
            quality_gate: None,
            checksum: String::new(),
        };
        snap.checksum = checksum(&snap).expect("checksum");
        let path = dir.join(format!("{id}.json"));
        fs::write(&path, serde_json::to_vec(&snap).expect("json")).expect("doc");
        path
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Arbitrary bytes as the newest snapshot document: never a panic, never taken
        /// for good; `latest` falls back to the older good one and `list` marks it.
        #[test]
        fn arbitrary_bytes_as_a_snapshot_fall_back_to_the_good_one(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000)
        ) {
            let d = tempfile::tempdir().expect("tmp");
            write_good(d.path(), "20261201T000000.000Z-0001", b"good history\n");
            let bad = snapshots_dir(d.path()).join("20261201T000001.000Z-0002.json");
            fs::write(&bad, &bytes).expect("write");
            let loaded = load(d.path(), "latest").expect("the good one");
            prop_assert_eq!(loaded.snapshot.id.as_str(), "20261201T000000.000Z-0001");
            let listed = list(d.path()).expect("list");
            prop_assert_eq!(listed.len(), 2);
            prop_assert!(listed[1].ok.is_err());
            prop_assert!(load(d.path(), "20261201T000001.000Z-0002").is_err());
        }

        /// One flipped byte anywhere in a good document or its blob: the snapshot is
        /// refused, or what it says is exactly what was written (a byte serde ignores,
        /// such as the case of a key whose value is null anyway).
        #[test]
        fn any_changed_byte_of_a_snapshot_is_detected(at in any::<prop::sample::Index>(), doc in any::<bool>()) {
            let d = tempfile::tempdir().expect("tmp");
            let path = write_good(d.path(), "20261201T000000.000Z-0001", b"good history\n");
            let original = load(d.path(), "latest").expect("good").snapshot;
            let target = if doc {
                path
            } else {
                let sha = crate::digest::sha256_hex(b"good history\n");
                snapshots_dir(d.path()).join(BLOBS_DIR).join(sha)
            };
            let mut bytes = fs::read(&target).expect("read");
            let i = at.index(bytes.len());
            bytes[i] ^= 0x20;
            fs::write(&target, &bytes).expect("write");
            if let Ok(loaded) = load(d.path(), "latest") {
                prop_assert!(doc, "a changed blob byte went unnoticed");
                prop_assert_eq!(loaded.snapshot, original);
            }
        }
    }

    #[test]
    fn temp_names() {
        assert_eq!(temp_owner(".a.json.tmp-123"), Some(123));
        assert_eq!(temp_owner(".capture.tmp-77-1f2e"), Some(77));
        assert_eq!(temp_owner(".abc.tmp-"), None);
        assert_eq!(temp_owner("a.json"), None);
        assert_eq!(temp_owner(".lock"), None);
    }
}
