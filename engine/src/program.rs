//! The program a job runs, as its action key sees it (docs/internals.md,
//! "Action keys"): where `run[0]` is found and what that file holds, instead
//! of the `PATH` string that found it. A virtualenv, direnv or `perf`
//! putting a directory in front of `PATH` changes no key as long as the same
//! program is found; replacing the program (an upgrade, another file found)
//! changes every key of its jobs.
//!
//! A program inside the project is the project's code: its path enters the
//! key relative to the project, and its content through the job's `code`
//! (the run program is counted there when it is a project file), so that a
//! versioned dataset keeps its semver policy. A program that is not found
//! enters by name; its job then fails to start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use crate::graph::Graph;
use crate::observe::{Observer, StatUpdate};
use crate::ports::Catalog;
use crate::record::ProgramRecord;

/// The programs resolved by one build (or one evaluation), by the name
/// `run[0]` gives them: each is located and hashed once; and the passed
/// environment as keys see it.
#[derive(Debug, Default)]
pub struct Programs {
    found: RwLock<HashMap<String, Arc<ProgramRecord>>>,
    keyed_env: OnceLock<Vec<(String, String)>>,
    /// Stat-cache entries of the programs hashed, for the next action that
    /// reports to take (see [`Programs::take_updates`]).
    updates: Mutex<Vec<StatUpdate>>,
    has_updates: AtomicBool,
}

impl Programs {
    /// The record of `program` run from `graph`'s directory with the
    /// search path `path` (the job's `PATH`; cairn's own when `None`).
    pub fn record(
        &self,
        graph: &Graph,
        program: &str,
        path: Option<&str>,
        catalog: &dyn Catalog,
    ) -> Arc<ProgramRecord> {
        if let Some(found) = self
            .found
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(program)
        {
            return Arc::clone(found);
        }
        let mut updates = Vec::new();
        let record = Arc::new(locate(graph, program, path, catalog, &mut updates));
        if !updates.is_empty() {
            self.updates
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .append(&mut updates);
            self.has_updates.store(true, Ordering::Release);
        }
        self.found
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(program.to_owned())
            .or_insert(record)
            .clone()
    }

    /// The allow-listed variables of `passed` that enter keys: all but
    /// `PATH`, which enters only when `[env] allow` lists it (the program
    /// it finds enters instead).
    pub fn keyed_env(&self, graph: &Graph, passed: &[(String, String)]) -> &[(String, String)] {
        self.keyed_env.get_or_init(|| {
            let path_listed = graph.env.allow.iter().any(|name| name == "PATH");
            passed
                .iter()
                .filter(|(name, _)| path_listed || name != "PATH")
                .cloned()
                .collect()
        })
    }

    /// The stat-cache entries of programs hashed since the last call, to
    /// be recorded with an action's results.
    pub fn take_updates(&self) -> Vec<StatUpdate> {
        if !self.has_updates.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.updates.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Where `program` is and, outside the project, its content digest.
fn locate(
    graph: &Graph,
    program: &str,
    path: Option<&str>,
    catalog: &dyn Catalog,
    updates: &mut Vec<StatUpdate>,
) -> ProgramRecord {
    let not_found = || ProgramRecord {
        path: program.to_owned(),
        digest: None,
    };
    let found: PathBuf = if program.contains('/') {
        graph.root.join(program)
    } else {
        match crate::local::spawn::resolve(program, path, &graph.root) {
            Ok(found) => found,
            Err(_) => return not_found(),
        }
    };
    // The file a link leads to is what runs: its content is observed at
    // its own path (the stat cache keys real files).
    let Ok(real) = std::fs::canonicalize(&found) else {
        return not_found();
    };
    let root = std::fs::canonicalize(&graph.root).unwrap_or_else(|_| graph.root.clone());
    if let Some(relative) = inside(&found, &graph.root).or_else(|| inside(&real, &root)) {
        return ProgramRecord {
            path: relative,
            digest: None,
        };
    }
    let Ok(metadata) = std::fs::metadata(&real) else {
        return not_found();
    };
    let digest = Observer::new(catalog).file(&real, &metadata, updates).ok();
    ProgramRecord {
        path: found.to_string_lossy().into_owned(),
        digest,
    }
}

/// `path` relative to `root` (as `./rel`) if it is under it (lexically:
/// no `..` on the way).
fn inside(path: &Path, root: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    if relative
        .components()
        .any(|component| !matches!(component, std::path::Component::Normal(_)))
    {
        return None;
    }
    Some(format!("./{}", relative.to_string_lossy()))
}
