//! Puts the git commit the binary was built from into `orch --version`
//! (`ORCH_VERSION`, e.g. `0.1.0 (ac1f54f)`). A build outside a git checkout (a source
//! tarball, a vendored crate) says just the package version; `ORCH_BUILD_COMMIT` set by a
//! packager takes the place of git.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ORCH_BUILD_COMMIT");
    let version = env!("CARGO_PKG_VERSION");
    let commit = std::env::var("ORCH_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]));
    // A new commit (or a checkout) changes HEAD or the branch it points to: build again.
    // Only files that exist are named: cargo takes a missing one as changed on every
    // build (a branch's ref lives in packed-refs or in its own file, rarely both).
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for path in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(p) = git(&["rev-parse", "--git-path", path])
            && std::path::Path::new(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let full = match commit {
        Some(c) => format!("{version} ({c})"),
        None => version.to_owned(),
    };
    println!("cargo:rustc-env=ORCH_VERSION={full}");
}
