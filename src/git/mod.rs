//! The one door to git (git2): worktrees for agents (`worktree: true`: each such agent
//! works in its own checkout on branch `orch/<agent>`, so agents never edit the same files
//! under each other's feet), and in [`repo`] what the quality gate needs: refs, commits,
//! in-memory reverts, diffs, its scratch worktree, compare-and-swap ref updates.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use git2::{BranchType, Repository, WorktreeAddOptions};

pub mod repo;

pub use repo::valid_branch_name;

/// The worktree an agent works in.
#[derive(Debug)]
pub struct AgentWorktree {
    /// Where the agent's pane starts: the worktree, at the same place within it as the
    /// layout root is within the main checkout.
    pub cwd: PathBuf,
    pub branch: String,
    pub created: bool,
    /// Files from the `copy` list that did not exist and so were not copied.
    pub missing_copies: Vec<PathBuf>,
}

/// Makes sure `agent` has a worktree at `dest` on branch `orch/<agent>`, creating the
/// branch from the current HEAD and the worktree when missing, reusing both otherwise.
/// `copy` lists untracked files, relative to `root`, to copy in when absent there.
pub fn ensure_worktree(
    root: &Path,
    session: &str,
    agent: &str,
    dest: &Path,
    copy: &[PathBuf],
) -> Result<AgentWorktree> {
    let repo = Repository::discover(root)
        .with_context(|| format!("{} is not inside a git repository", root.display()))?;
    let workdir = repo
        .workdir()
        .context("the repository is bare; worktree agents need a repository with a working tree")?
        .to_path_buf();
    let branch = format!("orch/{agent}");
    // Worktree names are per repository; two sessions may share a repo and agent names.
    let name = format!("orch-{session}-{agent}");

    let created = match repo.find_worktree(&name) {
        Ok(wt) if wt.validate().is_ok() && same_path(wt.path(), dest) => false,
        Ok(wt) => {
            if dest.exists() {
                bail!(
                    "git worktree {name} of {} is registered at {}, not {}; remove it with `git worktree remove {}`",
                    workdir.display(),
                    wt.path().display(),
                    dest.display(),
                    wt.path().display()
                );
            }
            // Its folder is gone: forget it so it can be added again.
            let mut opts = git2::WorktreePruneOptions::new();
            opts.valid(true).working_tree(true);
            wt.prune(Some(&mut opts))
                .with_context(|| format!("pruning the stale git worktree {name}"))?;
            add_worktree(&repo, &name, &branch, dest)?;
            true
        }
        Err(_) => {
            if dest.exists()
                && fs::read_dir(dest)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                bail!(
                    "{} exists but is not agent {agent}'s git worktree; move it away and run `orch layout up` again",
                    dest.display()
                );
            }
            add_worktree(&repo, &name, &branch, dest)?;
            true
        }
    };

    let rel = relative_to(root, &workdir);
    let cwd = dest.join(&rel);
    let mut missing_copies = Vec::new();
    for file in copy {
        let from = root.join(file);
        let to = cwd.join(file);
        if !from.exists() {
            missing_copies.push(file.clone());
            continue;
        }
        if to.exists() {
            continue; // the agent's own copy may have changed: never overwrite it
        }
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::copy(&from, &to)
            .with_context(|| format!("copying {} into {}", from.display(), to.display()))?;
    }
    Ok(AgentWorktree {
        cwd,
        branch,
        created,
        missing_copies,
    })
}

fn add_worktree(repo: &Repository, name: &str, branch: &str, dest: &Path) -> Result<()> {
    let reference = match repo.find_branch(branch, BranchType::Local) {
        Ok(b) => b.into_reference(),
        Err(_) => {
            let head = repo.head().and_then(|h| h.peel_to_commit()).context(
                "the repository has no commit yet; commit once before giving agents worktrees",
            )?;
            repo.branch(branch, &head, false)
                .with_context(|| format!("creating branch {branch}"))?
                .into_reference()
        }
    };
    if let Some(parent) = dest.parent() {
        crate::state::create_private_dir(parent)?;
    }
    let mut opts = WorktreeAddOptions::new();
    opts.reference(Some(&reference));
    repo.worktree(name, dest, Some(&opts)).with_context(|| {
        format!(
            "adding a git worktree for branch {branch} at {} (is {branch} checked out elsewhere?)",
            dest.display()
        )
    })?;
    Ok(())
}

fn same_path(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(a) == canon(b)
}

/// `root` relative to `workdir` (both may differ by symlinks, so compare canonical forms).
fn relative_to(root: &Path, workdir: &Path) -> PathBuf {
    let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(root)
        .strip_prefix(canon(workdir))
        .map(Path::to_path_buf)
        .unwrap_or_default()
}
