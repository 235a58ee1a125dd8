//! Build script: records the commit `cairn --version` names.
//!
//! The commit comes from `CAIRN_COMMIT` if set (a packager's or CI's
//! choice), else from `git rev-parse HEAD` when building inside a git
//! checkout, else it is `unknown` (a source tarball). No network.

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
            // branch it points to (a commit).
            for name in ["HEAD", "packed-refs"] {
                if let Some(path) = git(&["rev-parse", "--git-path", name]) {
                    println!("cargo::rerun-if-changed={path}");
                }
            }
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
                && let Some(path) = git(&["rev-parse", "--git-path", &branch])
            {
                println!("cargo::rerun-if-changed={path}");
            }
            Some(commit)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=CAIRN_COMMIT={commit}");
}
