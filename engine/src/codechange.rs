//! A job's code changed under a versioned dataset whose partitions are kept
//! (the semver policy of docs/versions-and-invalidation.md: only MAJOR invalidates): cairn keeps
//! them, and says so (docs/versions-and-invalidation.md). A MINOR/PATCH
//! bump since the partition was built acknowledges the change;
//! `on_code_change` chooses between warning (the default), rebuilding and
//! failing while it is not acknowledged.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::digest::{ActionKey, ContentDigest};
use crate::graph::{Graph, OnCodeChange};
use crate::record::Manifest;
use crate::refs::PartitionRef;

/// An unacknowledged code change under a kept partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChange {
    pub job: String,
    /// The versioned output dataset whose partitions are kept.
    pub dataset: String,
    /// Its version, as the graph has it and as the partition was built.
    pub version: semver::Version,
    /// The job's code digest when the partition was built, and now.
    pub built: Option<ContentDigest>,
    pub now: Option<ContentDigest>,
    pub mode: OnCodeChange,
}

/// The unacknowledged code change behind `manifest`, reused for an action
/// of `job` producing `outputs` whose code digest is now `code`: the code
/// differs from the one that built it, an output dataset is versioned
/// (without a version the code is in the key, so the manifest would not
/// match), and its version is still the one it was built under (no
/// MINOR/PATCH bump acknowledged the change since).
pub fn unacknowledged(
    graph: &Graph,
    job: &str,
    outputs: &[PartitionRef],
    manifest: &Manifest,
    code: Option<ContentDigest>,
) -> Option<CodeChange> {
    if manifest.code_digest == code {
        return None;
    }
    outputs.iter().find_map(|output| {
        let dataset = output.dataset();
        let version = graph.datasets.get(dataset)?.version.as_ref()?;
        let (_, built) = manifest.versions.iter().find(|(name, _)| name == dataset)?;
        if *built != version.to_string() {
            return None;
        }
        Some(CodeChange {
            job: job.to_owned(),
            dataset: dataset.to_owned(),
            version: version.clone(),
            built: manifest.code_digest,
            now: code,
            mode: graph.on_code_change(dataset, job),
        })
    })
}

fn short(digest: Option<ContentDigest>) -> String {
    digest.map_or_else(|| "none".to_owned(), |digest| digest.short())
}

impl CodeChange {
    /// `code changed since built (digest 3f2a… -> 9b1c…)`.
    fn changed(&self) -> String {
        format!(
            "code changed since built (digest {} -> {})",
            short(self.built),
            short(self.now)
        )
    }

    /// What to do about it.
    fn advice(&self) -> &'static str {
        "Bump MAJOR to rebuild, or MINOR/PATCH to acknowledge"
    }

    /// Why a partition is kept in spite of it (`warn`).
    pub fn kept(&self) -> String {
        format!(
            "{}; kept because {} is still {}.x. {}",
            self.changed(),
            self.dataset,
            self.version.major,
            self.advice()
        )
    }

    /// Why the action runs (`rebuild`).
    pub fn rebuilt(&self) -> String {
        format!(
            "{} and on_code_change = \"rebuild\" (though {} is still {}.x)",
            self.changed(),
            self.dataset,
            self.version.major
        )
    }

    /// Why the action fails (`error`).
    pub fn refused(&self) -> String {
        format!(
            "{} and {} is still {}.x: on_code_change = \"error\" refuses to keep what it built. {}",
            self.changed(),
            self.dataset,
            self.version.major,
            self.advice()
        )
    }

    /// The sentence for this change's mode.
    pub fn describe(&self) -> String {
        match self.mode {
            OnCodeChange::Warn => self.kept(),
            OnCodeChange::Rebuild => self.rebuilt(),
            OnCodeChange::Error => self.refused(),
        }
    }
}

/// The code changes a build (or an evaluation) found, by action key.
#[derive(Debug, Default)]
pub struct CodeChanges(Mutex<HashMap<ActionKey, (CodeChange, usize)>>);

impl CodeChanges {
    /// Notes that the action `key`, with `outputs` partitions, is kept
    /// under `change`.
    pub fn note(&self, key: ActionKey, change: CodeChange, outputs: usize) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (change, outputs));
    }

    /// The change noted for `key`, if any.
    pub fn get(&self, key: &ActionKey) -> Option<CodeChange> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|(change, _)| change.clone())
    }

    /// One entry per (job, dataset, digests) with the number of partitions
    /// kept, sorted: what a build warns about.
    pub fn summary(&self) -> Vec<(CodeChange, usize)> {
        let mut groups: Vec<(CodeChange, usize)> = Vec::new();
        for (change, outputs) in self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            match groups.iter_mut().find(|(seen, _)| seen == change) {
                Some((_, count)) => *count += outputs,
                None => groups.push((change.clone(), *outputs)),
            }
        }
        groups.sort_by(|a, b| {
            (&a.0.job, &a.0.dataset, a.0.built, a.0.now).cmp(&(
                &b.0.job,
                &b.0.dataset,
                b.0.built,
                b.0.now,
            ))
        });
        groups
    }

    pub fn is_empty(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}
