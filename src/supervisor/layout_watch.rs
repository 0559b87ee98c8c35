//! The layout file as an event source: a notify watch on its folder (editors replace a
//! file by renaming another onto it, which a watch on the file itself would miss) that
//! reports only what can change its content. Opening or reading the file — every `orch`
//! command run in that folder reads it — and changes of its attributes are not reported:
//! each report makes the supervisor read the file once more, and the read itself is an
//! open. The supervisor then compares the content's hash, so a touch without a change
//! reloads nothing either.

use std::path::Path;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};

/// Starts watching `file`; `changed` runs (on notify's thread) for every event that may
/// have changed its content. `None` if it cannot be watched (the supervisor carries on
/// without hot reload). Keep the watcher alive while supervising.
pub fn watch(
    file: &Path,
    changed: impl Fn() + Send + 'static,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = file.parent()?.to_path_buf();
    let name = file.file_name()?.to_owned();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && may_change_content(&ev.kind)
            && ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        {
            changed();
        }
    })
    .map_err(|e| tracing::warn!("cannot watch the layout file: {e}"))
    .ok()?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!("cannot watch {}: {e}", dir.display()))
        .ok()?;
    Some(watcher)
}

/// Whether an event of this kind can have changed a file's content: written, closed
/// after writing, created, removed, renamed. Opens, reads and attribute changes cannot.
fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Any | EventKind::Other => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};

    #[test]
    fn only_what_can_change_the_content_counts() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        ] {
            assert!(!may_change_content(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
        ] {
            assert!(may_change_content(&kind), "{kind:?}");
        }
    }
}
