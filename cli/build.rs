//! Build script: records the commit `cairn --version` names.
//!
//! The commit comes from `CAIRN_COMMIT` if set (a packager's or CI's
//! choice), else from `git rev-parse HEAD` when building inside a git
//! checkout, else it is `unknown` (a source tarball). No network.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo::rerun-if-env-changed=CAIRN_COMMIT");
    let commit = std::env::var("CAIRN_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
        .or_else(|| {
            let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
            // Rebuilt when HEAD moves: HEAD itself (a branch switch) and the
            // branch it points to (a commit). Only paths that exist are
            // named: cargo reruns a build script for a missing one every
            // time, which relinked cairn on every build in a checkout
            // without packed-refs (a fresh `git worktree`).
            let watch = |path: &Path| {
                if path.exists() {
                    println!("cargo::rerun-if-changed={}", path.display());
                }
            };
            for name in ["HEAD", "packed-refs"] {
                if let Some(path) = git(&["rev-parse", "--git-path", name]) {
                    watch(Path::new(&path));
                }
            }
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
                && let Some(path) = git(&["rev-parse", "--git-path", &branch])
            {
                let path = Path::new(&path);
                if path.exists() {
                    watch(path);
                } else if let Some(folder) = path.parent() {
                    // A packed branch: its loose file appears at the next
                    // commit, in this folder (cargo scans a folder's files).
                    watch(folder);
                }
            }
            Some(commit)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=CAIRN_COMMIT={commit}");
}
