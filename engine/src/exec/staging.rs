//! The staging root (`<data>/.cairn-tmp/`): what actions leave in it to be
//! removed, and the run directories of their jobs' attempts
//! (`run/<key>/<id>/`, with the `current` marker of the attempt a
//! checkpoint describes: see exec/run.rs).

use std::fs;
use std::path::{Path, PathBuf};

/// Something an action left in the staging root to be removed.
#[derive(Debug)]
pub enum Leftover {
    /// A partition's earlier content, moved aside when it was replaced.
    MovedAside(PathBuf),
    /// A run directory whose outputs were moved out of it.
    EmptiedRunDir(PathBuf),
}

impl Leftover {
    pub fn remove(self) {
        match self {
            Leftover::MovedAside(path) => {
                // A symlink moved aside is removed, never followed.
                let _ = if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
            Leftover::EmptiedRunDir(run_dir) => remove_emptied_run_dir(&run_dir),
        }
    }
}

/// Removes the run directory of a job whose outputs were moved out of it:
/// what is normally left (its logs and an empty `out`) by name, four
/// calls where a walk makes about twenty; anything else by the walk. Then
/// the key's directory, if nothing else is left in it.
pub(crate) fn remove_emptied_run_dir(run_dir: &Path) {
    let _ = fs::remove_file(run_dir.join("stdout"));
    let _ = fs::remove_file(run_dir.join("stderr"));
    let _ = fs::remove_dir(run_dir.join("out"));
    if fs::remove_dir(run_dir).is_err() {
        let _ = fs::remove_dir_all(run_dir);
    }
    remove_key_dir_if_done(run_dir);
}

/// Removes an attempt's directory, and the key's if it is left empty.
pub(crate) fn remove_attempt(run_dir: &Path) {
    let _ = fs::remove_dir_all(run_dir);
    remove_key_dir_if_done(run_dir);
}

/// Removes the key directory above `run_dir` once no attempt is left in
/// it (and with it the `current` marker, which names a removed attempt).
fn remove_key_dir_if_done(run_dir: &Path) {
    let Some(key_dir) = run_dir.parent() else {
        return;
    };
    if fs::remove_dir(key_dir).is_ok() {
        return;
    }
    let current = key_dir.join(CURRENT);
    let attempts = fs::read_dir(key_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.file_name() != CURRENT)
                .count()
        })
        .unwrap_or(1);
    if attempts == 0 {
        let _ = fs::remove_file(current);
        let _ = fs::remove_dir(key_dir);
    }
}

/// The file in a key's directory naming the attempt whose partial output the
/// key's last checkpoint describes.
pub(crate) const CURRENT: &str = "current";

/// Removes what earlier builds left in the staging root, except `run/`:
/// the staging directories of actions that checkpointed, kept for resuming.
pub(crate) fn clear_staging(root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name() != "run" {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    // Empty directories go; a non-empty `run/` stays (remove_dir refuses).
    let _ = std::fs::remove_dir(root.join("run"));
    let _ = std::fs::remove_dir(root);
}

#[cfg(test)]
mod tests {
    use super::Leftover;
    use std::fs;

    #[test]
    fn a_leftover_is_removed_and_a_link_moved_aside_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A partition's earlier content, moved aside.
        let aside = root.join("trash-a");
        fs::create_dir_all(aside.join("sub")).unwrap();
        fs::write(aside.join("sub/file.csv"), "old").unwrap();
        Leftover::MovedAside(aside.clone()).remove();
        assert!(!aside.exists());
        // A link moved aside goes; what it pointed at stays.
        let kept = root.join("elsewhere");
        fs::create_dir(&kept).unwrap();
        fs::write(kept.join("file.csv"), "keep").unwrap();
        let link = root.join("trash-b");
        std::os::unix::fs::symlink(&kept, &link).unwrap();
        Leftover::MovedAside(link.clone()).remove();
        assert!(fs::symlink_metadata(&link).is_err());
        assert_eq!(fs::read_to_string(kept.join("file.csv")).unwrap(), "keep");
        // A run directory: its logs, an empty `out`, and anything else.
        let run = root.join("run/key");
        fs::create_dir_all(run.join("out")).unwrap();
        fs::write(run.join("stdout"), "").unwrap();
        fs::write(run.join("stderr"), "").unwrap();
        fs::write(run.join("stray"), "").unwrap();
        Leftover::EmptiedRunDir(run.clone()).remove();
        assert!(!run.exists());
    }
}
