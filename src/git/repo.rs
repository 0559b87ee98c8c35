//! What the quality gate needs from git, in git's own terms: branch tips, commits and
//! their files, in-memory reverts and file restores that become commits without touching
//! any checkout, compare-and-swap ref updates with reflog messages, uncommitted work saved
//! as a stash-like commit without touching the user's index, and bringing a checkout of a
//! moved branch up to date path by path.
//!
//! Commit ids cross this door as full hex strings; nothing outside `git` sees git2.
//!
//! Invariants: a branch only ever moves through [`Repo::move_ref`], which fails with
//! [`RefMoved`] rather than overwrite a commit made since the caller read the branch; a
//! checkout is only ever written at the paths the caller names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use git2::{
    BranchType, Commit, ErrorCode, FileMode, ObjectType, Oid, Repository, Signature, Status,
    StatusOptions, Tree,
    build::{CheckoutBuilder, TreeUpdateBuilder},
};

/// `path` is not inside a git repository.
#[derive(Debug, thiserror::Error)]
#[error("{} is not inside a git repository; point quality.repo at one (or run `git init` there)", path.display())]
pub struct NotARepository {
    pub path: PathBuf,
}

/// A revision that does not name a commit.
#[derive(Debug, thiserror::Error)]
#[error("{rev:?} does not name a commit in {}; give a branch, a tag or a commit id", repo.display())]
pub struct UnknownRevision {
    pub rev: String,
    pub repo: PathBuf,
}

/// A compare-and-swap ref update found the ref elsewhere than expected.
#[derive(Debug, thiserror::Error)]
#[error("{name} moved to {now} (expected {expected}); nothing was overwritten")]
pub struct RefMoved {
    pub name: String,
    pub expected: String,
    pub now: String,
}

/// One commit, as the gate needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: String,
    pub tree: String,
    pub parents: Vec<String>,
    pub subject: String,
    pub message: String,
    pub author: String,
    /// `(key, value)` of every trailer in the message (`Orch-Agent: worker2`).
    pub trailers: Vec<(String, String)>,
}

impl CommitInfo {
    pub fn first_parent(&self) -> Option<&str> {
        self.parents.first().map(String::as_str)
    }

    pub fn short(&self) -> &str {
        short(&self.id)
    }
}

/// The first 7 characters of a commit id, as git abbreviates it.
pub fn short(id: &str) -> &str {
    id.get(..7).unwrap_or(id)
}

/// One file changed between two trees, with its line counts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileChange {
    pub path: String,
    pub added: usize,
    pub deleted: usize,
}

/// Uncommitted work saved as a stash-like commit (`git stash apply REF` takes it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedWork {
    /// `refs/orch/saved/<id>`: the work-tree commit W, parents HEAD, I (the index) and,
    /// when there were untracked files, U (them alone).
    pub reference: String,
    pub commit: String,
    /// The commit holding the index as it was (W's second parent).
    pub index: String,
    /// The commit holding the untracked files, if there were any (W's third parent).
    pub untracked: Option<String>,
    /// Every path with a change: staged, unstaged or untracked.
    pub paths: Vec<String>,
    /// Of those, the untracked ones (they are in U, not in W).
    #[serde(default)]
    pub untracked_paths: Vec<String>,
}

/// Whether `name` is a branch name git accepts (`main`, `orch/worker1`).
pub fn valid_branch_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with("refs/")
        && git2::Reference::is_valid_name(&format!("refs/heads/{name}"))
}

/// A repository, opened for the gate.
pub struct Repo {
    repo: Repository,
    /// Where `quality.repo` points inside the work tree (`.` usually), so the check runs
    /// in the same place of the scratch worktree.
    subdir: PathBuf,
}

fn oid(id: &str) -> Result<Oid> {
    Oid::from_str(id).with_context(|| format!("{id:?} is not a commit id"))
}

fn signature() -> Result<Signature<'static>> {
    Signature::now("orch", "orch@localhost").context("making orch's commit signature")
}

impl Repo {
    /// Opens the repository that holds `path` (its main repository, when `path` is in a
    /// linked worktree, so every checkout of it is seen).
    pub fn open(path: &Path) -> Result<Repo> {
        let found = Repository::discover(path).map_err(|_| NotARepository {
            path: path.to_path_buf(),
        })?;
        let subdir = found
            .workdir()
            .map(|w| relative_to(path, w))
            .unwrap_or_default();
        let main = if found.is_worktree() {
            Repository::open(found.commondir()).unwrap_or(found)
        } else {
            found
        };
        Ok(Repo { repo: main, subdir })
    }

    /// The folder holding refs, `packed-refs` and `HEAD` shared by every worktree.
    pub fn common_dir(&self) -> PathBuf {
        self.repo.commondir().to_path_buf()
    }

    /// The repository's work tree, or its git folder when it is bare.
    pub fn display_path(&self) -> PathBuf {
        self.repo
            .workdir()
            .unwrap_or_else(|| self.repo.path())
            .to_path_buf()
    }

    pub fn subdir(&self) -> &Path {
        &self.subdir
    }

    /// The commit a local branch points at; `None` when there is no such branch.
    pub fn branch_tip(&self, branch: &str) -> Result<Option<String>> {
        match self.repo.find_branch(branch, BranchType::Local) {
            Ok(b) => Ok(b.get().target().map(|o| o.to_string())),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading branch {branch}")),
        }
    }

    /// The commit `rev` names (a branch, tag, `HEAD~2`, an id or a unique prefix).
    pub fn resolve(&self, rev: &str) -> Result<String> {
        let unknown = || UnknownRevision {
            rev: rev.to_owned(),
            repo: self.display_path(),
        };
        let obj = self.repo.revparse_single(rev).map_err(|_| unknown())?;
        let commit = obj.peel_to_commit().map_err(|_| unknown())?;
        Ok(commit.id().to_string())
    }

    fn commit(&self, id: &str) -> Result<Commit<'_>> {
        self.repo
            .find_commit(oid(id)?)
            .with_context(|| format!("reading commit {}", short(id)))
    }

    fn tree(&self, commit: &str) -> Result<Tree<'_>> {
        Ok(self.commit(commit)?.tree()?)
    }

    pub fn commit_info(&self, id: &str) -> Result<CommitInfo> {
        let c = self.commit(id)?;
        let message = String::from_utf8_lossy(c.message_bytes()).into_owned();
        let trailers = git2::message_trailers_strs(&message)
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(CommitInfo {
            id: c.id().to_string(),
            tree: c.tree_id().to_string(),
            parents: c.parent_ids().map(|p| p.to_string()).collect(),
            subject: String::from_utf8_lossy(c.summary_bytes().unwrap_or_default()).into_owned(),
            author: String::from_utf8_lossy(c.author().name_bytes()).into_owned(),
            message,
            trailers,
        })
    }

    pub fn tree_of(&self, id: &str) -> Result<String> {
        Ok(self.commit(id)?.tree_id().to_string())
    }

    /// The first-parent history of `tip`, newest first, up to and including the first
    /// commit for which `stop` says yes, and at most `limit` commits. The bool says
    /// whether `stop` said yes.
    pub fn first_parents(
        &self,
        tip: &str,
        limit: usize,
        mut stop: impl FnMut(&CommitInfo) -> bool,
    ) -> Result<(Vec<CommitInfo>, bool)> {
        let mut out = Vec::new();
        let mut next = Some(tip.to_owned());
        while let Some(id) = next {
            if out.len() >= limit {
                return Ok((out, false));
            }
            let info = self.commit_info(&id)?;
            let done = stop(&info);
            next = info.first_parent().map(str::to_owned);
            out.push(info);
            if done {
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }

    /// The files `id` changed against its first parent (against nothing for a root
    /// commit), with line counts.
    pub fn changed_files(&self, id: &str) -> Result<Vec<FileChange>> {
        let c = self.commit(id)?;
        let new = c.tree()?;
        let old = match c.parent_ids().next() {
            Some(p) => Some(self.repo.find_commit(p)?.tree()?),
            None => None,
        };
        self.diff_files(old.as_ref(), Some(&new))
    }

    /// The files that differ between the trees of two commits.
    pub fn diff_commits(&self, from: &str, to: &str) -> Result<Vec<FileChange>> {
        let (a, b) = (self.tree(from)?, self.tree(to)?);
        self.diff_files(Some(&a), Some(&b))
    }

    fn diff_files(
        &self,
        old: Option<&Tree<'_>>,
        new: Option<&Tree<'_>>,
    ) -> Result<Vec<FileChange>> {
        let diff = self.repo.diff_tree_to_tree(old, new, None)?;
        let mut out = Vec::new();
        for i in 0..diff.deltas().len() {
            let Some(delta) = diff.get_delta(i) else {
                continue;
            };
            let path = delta
                .new_file()
                .path()
                .or_else(|| delta.old_file().path())
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (added, deleted) = match git2::Patch::from_diff(&diff, i)? {
                Some(p) => {
                    let (_, a, d) = p.line_stats()?;
                    (a, d)
                }
                None => (0, 0),
            };
            out.push(FileChange {
                path,
                added,
                deleted,
            });
        }
        Ok(out)
    }

    /// The unified diff between the trees of two commits, as `git diff` prints it.
    pub fn patch(&self, from: &str, to: &str) -> Result<String> {
        let (a, b) = (self.tree(from)?, self.tree(to)?);
        let diff = self.repo.diff_tree_to_tree(Some(&a), Some(&b), None)?;
        let mut text = Vec::new();
        diff.print(git2::DiffFormat::Patch, |_, _, line| {
            if matches!(line.origin(), '+' | '-' | ' ') {
                text.push(line.origin() as u8);
            }
            text.extend_from_slice(line.content());
            true
        })?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// Whether `commit` is `tip` or one of its ancestors.
    pub fn contains(&self, tip: &str, commit: &str) -> Result<bool> {
        if tip == commit {
            return Ok(true);
        }
        Ok(self.repo.graph_descendant_of(oid(tip)?, oid(commit)?)?)
    }

    /// Local branches whose names start with `prefix`, with their tips.
    pub fn branches_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for b in self.repo.branches(Some(BranchType::Local))? {
            let (b, _) = b?;
            let (Some(name), Some(tip)) = (b.name()?.map(str::to_owned), b.get().target()) else {
                continue;
            };
            if name.starts_with(prefix) {
                out.push((name, tip.to_string()));
            }
        }
        Ok(out)
    }

    /// Whether some remote-tracking ref (`refs/remotes/…`) already holds `commit`.
    pub fn published(&self, commit: &str) -> Result<bool> {
        for r in self.repo.references_glob("refs/remotes/*")? {
            let r = r?;
            if let Some(tip) = r.resolve().ok().and_then(|r| r.target())
                && self.contains(&tip.to_string(), commit)?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reverts `commits` (newest first, as they are undone) onto `onto`, one new commit
    /// each, in memory: no checkout and no ref changes. `None` when a revert conflicts.
    /// A merge commit is reverted against its first parent.
    pub fn revert_onto(
        &self,
        commits: &[String],
        onto: &str,
        trailer: &str,
    ) -> Result<Option<String>> {
        let sig = signature()?;
        let mut tip = self.commit(onto)?;
        for id in commits {
            let culprit = self.commit(id)?;
            let mainline = if culprit.parent_count() > 1 { 1 } else { 0 };
            let mut index = self.repo.revert_commit(&culprit, &tip, mainline, None)?;
            if index.has_conflicts() {
                return Ok(None);
            }
            let tree = self.repo.find_tree(index.write_tree_to(&self.repo)?)?;
            let subject =
                String::from_utf8_lossy(culprit.summary_bytes().unwrap_or_default()).into_owned();
            let message =
                format!("Revert \"{subject}\"\n\nThis reverts commit {id}.\n\n{trailer}\n");
            let new = self
                .repo
                .commit(None, &sig, &sig, &message, &tree, &[&tip])?;
            tip = self.repo.find_commit(new)?;
        }
        Ok(Some(tip.id().to_string()))
    }

    /// Applies `commits` (oldest first) again on top of `onto`, in memory, each keeping its
    /// author and message: a reset that must keep commits that landed meanwhile. `None`
    /// when one does not apply cleanly.
    pub fn cherry_pick_onto(&self, commits: &[String], onto: &str) -> Result<Option<String>> {
        let mut tip = self.commit(onto)?;
        for id in commits {
            let c = self.commit(id)?;
            let mainline = if c.parent_count() > 1 { 1 } else { 0 };
            let mut index = self.repo.cherrypick_commit(&c, &tip, mainline, None)?;
            if index.has_conflicts() {
                return Ok(None);
            }
            let tree = self.repo.find_tree(index.write_tree_to(&self.repo)?)?;
            let message = String::from_utf8_lossy(c.message_bytes()).into_owned();
            let new =
                self.repo
                    .commit(None, &c.author(), &c.committer(), &message, &tree, &[&tip])?;
            tip = self.repo.find_commit(new)?;
        }
        Ok(Some(tip.id().to_string()))
    }

    /// A new commit on `onto` whose tree has `paths` as they are in `from` (removed where
    /// `from` lacks them), in memory. `None` when that changes nothing.
    pub fn restore_files_onto(
        &self,
        onto: &str,
        from: &str,
        paths: &[String],
        message: &str,
    ) -> Result<Option<String>> {
        let base = self.commit(onto)?;
        let base_tree = base.tree()?;
        let source = self.tree(from)?;
        let mut update = TreeUpdateBuilder::new();
        for p in paths {
            match source.get_path(Path::new(p)) {
                Ok(entry) if entry.kind() == Some(ObjectType::Blob) => {
                    update.upsert(p.as_str(), entry.id(), file_mode(entry.filemode()));
                }
                _ => {
                    if base_tree.get_path(Path::new(p)).is_ok() {
                        update.remove(p.as_str());
                    }
                }
            }
        }
        let tree_id = update.create_updated(&self.repo, &base_tree)?;
        if tree_id == base_tree.id() {
            return Ok(None);
        }
        let tree = self.repo.find_tree(tree_id)?;
        let sig = signature()?;
        let new = self
            .repo
            .commit(None, &sig, &sig, message, &tree, &[&base])?;
        Ok(Some(new.to_string()))
    }

    /// Moves `name` (a full ref name) from `expected` to `new`, atomically: if the ref
    /// holds anything else by then, nothing changes and the error is [`RefMoved`].
    pub fn move_ref(&self, name: &str, new: &str, expected: &str, log: &str) -> Result<()> {
        match self
            .repo
            .reference_matching(name, oid(new)?, true, oid(expected)?, log)
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Locked) => {
                let now = self
                    .repo
                    .refname_to_id(name)
                    .map(|o| o.to_string())
                    .unwrap_or_else(|_| "nothing".into());
                Err(RefMoved {
                    name: name.to_owned(),
                    expected: expected.to_owned(),
                    now,
                }
                .into())
            }
            Err(e) => Err(e).with_context(|| format!("moving {name}")),
        }
    }

    /// What a full ref name points at, if it exists.
    pub fn ref_target(&self, name: &str) -> Option<String> {
        self.repo.refname_to_id(name).ok().map(|o| o.to_string())
    }

    /// Creates (or replaces) `name` at `id` with a reflog entry saying `log`, so the ref's
    /// history shows why it exists even outside `refs/heads`.
    pub fn keep_ref(&self, name: &str, id: &str, log: &str) -> Result<()> {
        self.repo
            .reference_ensure_log(name)
            .with_context(|| format!("creating the reflog of {name}"))?;
        self.repo
            .reference(name, oid(id)?, true, log)
            .with_context(|| format!("creating {name}"))?;
        Ok(())
    }

    /// The work trees (the main one and linked ones) that have `branch` checked out.
    pub fn checkouts_of(&self, branch: &str) -> Result<Vec<PathBuf>> {
        let full = format!("refs/heads/{branch}");
        let mut out = Vec::new();
        let head_of = |r: &Repository| {
            r.find_reference("HEAD")
                .ok()
                .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_owned))
        };
        if let Some(w) = self.repo.workdir()
            && head_of(&self.repo).as_deref() == Some(full.as_str())
        {
            out.push(w.to_path_buf());
        }
        for name in self.repo.worktrees()?.iter().flatten().flatten() {
            let Ok(wt) = self.repo.find_worktree(name) else {
                continue;
            };
            if wt.validate().is_err() {
                continue;
            }
            if let Ok(r) = Repository::open_from_worktree(&wt)
                && head_of(&r).as_deref() == Some(full.as_str())
                && let Some(w) = r.workdir()
            {
                out.push(w.to_path_buf());
            }
        }
        Ok(out)
    }

    /// Saves the uncommitted work of the checkout at `workdir` (staged, unstaged and
    /// untracked, not ignored) as a stash-like commit under `reference`, without touching
    /// its index or files. `None` when there is nothing to save.
    pub fn save_uncommitted(
        &self,
        workdir: &Path,
        reference: &str,
        what: &str,
    ) -> Result<Option<SavedWork>> {
        let repo = Repository::open(workdir)
            .with_context(|| format!("opening the checkout at {}", workdir.display()))?;
        let mut opts = StatusOptions::new();
        opts.include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false)
            .exclude_submodules(true)
            .renames_head_to_index(false);
        let statuses = repo.statuses(Some(&mut opts))?;
        if statuses.is_empty() {
            return Ok(None);
        }
        let head = repo.head()?.peel_to_commit()?;
        let mut index = repo.index()?;
        if index.has_conflicts() {
            return Err(anyhow!(
                "{} has unmerged files; finish or abort that merge first",
                workdir.display()
            ));
        }
        let sig = signature()?;
        let branch = repo
            .head()
            .ok()
            .and_then(|h| h.shorthand().ok().map(str::to_owned))
            .unwrap_or_else(|| "HEAD".into());
        let headline = format!(
            "{} {}",
            short(&head.id().to_string()),
            head.summary().ok().flatten().unwrap_or("")
        );
        // I: the index as it is (written as objects; the index file is not changed).
        let index_tree = repo.find_tree(index.write_tree()?)?;
        let i = repo.commit(
            None,
            &sig,
            &sig,
            &format!("index on {branch}: {headline}"),
            &index_tree,
            &[&head],
        )?;
        let i = repo.find_commit(i)?;
        // W: the tracked files as they are on disk; U: the untracked ones alone.
        let mut tracked = TreeUpdateBuilder::new();
        let mut untracked = TreeUpdateBuilder::new();
        let (mut untracked_paths, mut paths) = (Vec::new(), Vec::new());
        for entry in statuses.iter() {
            let Some(path) = entry.path().ok().map(str::to_owned) else {
                continue;
            };
            let s = entry.status();
            paths.push(path.clone());
            let on_disk = workdir.join(&path);
            if s.contains(Status::WT_NEW) {
                let (id, mode) = blob_from_disk(&repo, &on_disk)?;
                untracked.upsert(path.as_str(), id, mode);
                untracked_paths.push(path.clone());
            } else if s.contains(Status::WT_DELETED) {
                if index_tree.get_path(Path::new(&path)).is_ok() {
                    tracked.remove(path.as_str());
                }
            } else if s.intersects(Status::WT_MODIFIED | Status::WT_TYPECHANGE | Status::WT_RENAMED)
            {
                let (id, mode) = blob_from_disk(&repo, &on_disk)?;
                tracked.upsert(path.as_str(), id, mode);
            }
        }
        let w_tree = repo.find_tree(tracked.create_updated(&repo, &index_tree)?)?;
        let u = if !untracked_paths.is_empty() {
            let empty = repo.find_tree(repo.treebuilder(None)?.write()?)?;
            let u_tree = repo.find_tree(untracked.create_updated(&repo, &empty)?)?;
            let u = repo.commit(
                None,
                &sig,
                &sig,
                &format!("untracked files on {branch}: {headline}"),
                &u_tree,
                &[],
            )?;
            Some(repo.find_commit(u)?)
        } else {
            None
        };
        let mut parents = vec![&head, &i];
        if let Some(u) = &u {
            parents.push(u);
        }
        let w = repo.commit(
            None,
            &sig,
            &sig,
            &format!("WIP on {branch}: {headline}\n\n{what}\n"),
            &w_tree,
            &parents,
        )?;
        let w = w.to_string();
        self.keep_ref(reference, &w, what)?;
        Ok(Some(SavedWork {
            reference: reference.to_owned(),
            commit: w,
            index: i.id().to_string(),
            untracked: u.map(|u| u.id().to_string()),
            paths,
            untracked_paths,
        }))
    }

    /// Makes `paths` of the checkout at `workdir` (files and index entries) what they are
    /// in `commit`, removing those it lacks; every other path is left exactly as it is.
    pub fn write_paths(&self, workdir: &Path, commit: &str, paths: &[String]) -> Result<()> {
        self.write_paths_from(workdir, commit, commit, paths)
    }

    /// [`Repo::write_paths`] with the files taken from `files_from` and the index entries
    /// from `index_from` (undo puts back a saved tree and a saved index).
    pub fn write_paths_from(
        &self,
        workdir: &Path,
        files_from: &str,
        index_from: &str,
        paths: &[String],
    ) -> Result<()> {
        // An empty path list means "everything" to libgit2.
        if paths.is_empty() {
            return Ok(());
        }
        let repo = Repository::open(workdir)
            .with_context(|| format!("opening the checkout at {}", workdir.display()))?;
        let files = repo.find_commit(oid(files_from)?)?;
        let mut co = CheckoutBuilder::new();
        co.force()
            .remove_untracked(true)
            .update_index(false)
            .disable_pathspec_match(true);
        for p in paths {
            co.path(p.as_str());
        }
        repo.checkout_tree(files.as_object(), Some(&mut co))
            .with_context(|| format!("updating files in {}", workdir.display()))?;
        let index = repo.find_commit(oid(index_from)?)?;
        repo.reset_default(Some(index.as_object()), paths.iter().map(String::as_str))
            .with_context(|| format!("updating the index of {}", workdir.display()))?;
        Ok(())
    }

    /// Of `paths`, those whose file in the checkout at `workdir` is exactly as in `commit`
    /// (absent where `commit` lacks it): nobody changed them since `commit` was put there.
    pub fn paths_as_in(
        &self,
        workdir: &Path,
        commit: &str,
        paths: &[String],
    ) -> Result<Vec<String>> {
        let tree = self.tree(commit)?;
        let mut out = Vec::new();
        for p in paths {
            let on_disk = workdir.join(p);
            let want = tree.get_path(Path::new(p)).ok().map(|e| e.id());
            let have = match std::fs::symlink_metadata(&on_disk) {
                Ok(m) if m.is_file() || m.file_type().is_symlink() => {
                    Some(blob_id_on_disk(&on_disk)?)
                }
                Ok(_) => None,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("reading {}", on_disk.display())),
            };
            if want == have {
                out.push(p.clone());
            }
        }
        Ok(out)
    }

    /// A tree holding `base`'s tree with the files of `extra`'s tree added: the saved work
    /// tree W with its untracked files U, as one commit to write paths from.
    pub fn combine(&self, base: &str, extra: &str) -> Result<String> {
        let base_c = self.commit(base)?;
        let base_tree = base_c.tree()?;
        let extra_tree = self.tree(extra)?;
        let mut update = TreeUpdateBuilder::new();
        extra_tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(ObjectType::Blob)
                && let Ok(name) = entry.name()
            {
                update.upsert(
                    format!("{dir}{name}").as_str(),
                    entry.id(),
                    file_mode(entry.filemode()),
                );
            }
            git2::TreeWalkResult::Ok
        })?;
        let tree = self
            .repo
            .find_tree(update.create_updated(&self.repo, &base_tree)?)?;
        let sig = signature()?;
        let c = self.repo.commit(
            None,
            &sig,
            &sig,
            "saved work with its untracked files",
            &tree,
            &[&base_c],
        )?;
        Ok(c.to_string())
    }
}

fn file_mode(mode: i32) -> FileMode {
    match mode {
        0o100755 => FileMode::BlobExecutable,
        0o120000 => FileMode::Link,
        _ => FileMode::Blob,
    }
}

fn blob_from_disk(repo: &Repository, path: &Path) -> Result<(Oid, FileMode)> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mode = if meta.file_type().is_symlink() {
        FileMode::Link
    } else if meta.permissions().mode() & 0o111 != 0 {
        FileMode::BlobExecutable
    } else {
        FileMode::Blob
    };
    let id = if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path)?;
        repo.blob(target.as_os_str().as_encoded_bytes())?
    } else {
        repo.blob_path(path)
            .with_context(|| format!("saving {}", path.display()))?
    };
    Ok((id, mode))
}

fn blob_id_on_disk(path: &Path) -> Result<Oid> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path)?;
        return Ok(Oid::hash_object(
            ObjectType::Blob,
            target.as_os_str().as_encoded_bytes(),
        )?);
    }
    Ok(Oid::hash_file(ObjectType::Blob, path)?)
}

/// `path` relative to `workdir` (comparing canonical forms: either may be a symlink).
fn relative_to(path: &Path, workdir: &Path) -> PathBuf {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(path)
        .strip_prefix(canon(workdir))
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The gate's own checkout of the repository: a detached linked worktree at `path`,
/// reused from run to run so ignored build output (`target/`) stays warm.
pub struct Scratch {
    path: PathBuf,
    repo: Repository,
}

impl Scratch {
    /// Opens the scratch worktree `name` at `path`, making it (detached at `at`) when
    /// missing.
    pub fn ensure(main: &Repo, name: &str, path: &Path, at: &str) -> Result<Scratch> {
        let repo = &main.repo;
        if let Ok(wt) = repo.find_worktree(name) {
            if wt.validate().is_ok() && same_path(wt.path(), path) {
                let r = Repository::open_from_worktree(&wt)?;
                return Ok(Scratch {
                    path: path.to_path_buf(),
                    repo: r,
                });
            }
            let mut opts = git2::WorktreePruneOptions::new();
            opts.valid(true).working_tree(true);
            wt.prune(Some(&mut opts))
                .with_context(|| format!("pruning the stale gate worktree {name}"))?;
        }
        if path.exists() {
            std::fs::remove_dir_all(path)
                .with_context(|| format!("clearing {}", path.display()))?;
        }
        // libgit2 wants a branch to check out; the worktree is then detached from it and
        // the branch removed, so no branch of the user's appears or moves.
        let start = repo.find_commit(oid(at)?)?;
        let temp = format!("orch-gate-tmp/{name}");
        let mut branch = repo.branch(&temp, &start, true)?;
        let mut opts = git2::WorktreeAddOptions::new();
        let reference = branch.get().name().map(str::to_owned).unwrap_or_default();
        let reference = repo.find_reference(&reference)?;
        opts.reference(Some(&reference));
        let added = repo.worktree(name, path, Some(&opts));
        let wt = match added {
            Ok(wt) => wt,
            Err(e) => {
                let _ = branch.delete();
                return Err(e)
                    .with_context(|| format!("adding the gate worktree at {}", path.display()));
            }
        };
        let r = Repository::open_from_worktree(&wt)?;
        r.set_head_detached(start.id())?;
        drop(reference);
        branch
            .delete()
            .context("removing the gate's temporary branch")?;
        Ok(Scratch {
            path: path.to_path_buf(),
            repo: r,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts exactly `commit`'s tree in the worktree: changed files rewritten, untracked
    /// leftovers of earlier runs removed, ignored files (build caches) kept.
    pub fn checkout(&self, commit: &str) -> Result<()> {
        let c = self.repo.find_commit(oid(commit)?)?;
        let mut co = CheckoutBuilder::new();
        co.force().remove_untracked(true);
        self.repo
            .checkout_tree(c.as_object(), Some(&mut co))
            .with_context(|| format!("checking out {} in the gate worktree", short(commit)))?;
        self.repo.set_head_detached(c.id())?;
        Ok(())
    }
}

fn same_path(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(a) == canon(b)
}

/// Every path in either list, once, sorted.
pub fn union(a: &[String], b: &[String]) -> Vec<String> {
    a.iter()
        .chain(b)
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
