//! The projection rules: how each event changes the `actions` and
//! `partitions` tables.
//!
//! Invariant: [`apply`] is the only place these rules live. The catalog runs
//! it inside the transaction that appends the events, and `replay_check` runs
//! it over the whole log into an in-memory model, so "the projections can
//! always be rebuilt from the log" is true by construction and checkable.
//! [`apply`] depends on nothing but the event and the current projections (no
//! clock, no file system), so a replay is deterministic.

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};

use cairn_engine::ports::StoreError;
use cairn_engine::record::{
    Event, EventKind, Invalidation, Manifest, Materialization, PartitionState,
};
use cairn_engine::{ActionKey, PartitionRef};

/// Storage the projection rules write to: the live redb tables, or the
/// in-memory model of a replay.
pub(crate) trait Projections {
    fn set_action(&mut self, manifest: &Manifest) -> Result<(), StoreError>;
    fn partition(&mut self, partition: &PartitionRef)
    -> Result<Option<PartitionState>, StoreError>;
    fn set_partition(
        &mut self,
        partition: &PartitionRef,
        state: &PartitionState,
    ) -> Result<(), StoreError>;
    /// Records `dataset`'s version (`None`: no longer versioned).
    fn set_dataset_version(
        &mut self,
        dataset: &str,
        version: Option<&str>,
    ) -> Result<(), StoreError>;
}

/// Applies the projection of one stored event.
pub(crate) fn apply(event: &Event, projections: &mut dyn Projections) -> Result<(), StoreError> {
    match &event.kind {
        EventKind::ActionSucceeded { manifest } => projections.set_action(manifest),
        EventKind::PartitionMaterialized {
            partition,
            digest,
            key,
        } => {
            // A materialization supersedes any earlier invalidation or failure.
            let state = PartitionState {
                current: Some(Materialization {
                    key: *key,
                    digest: *digest,
                    build: event.build,
                    seq: event.seq,
                }),
                invalidated: None,
                failed: None,
            };
            projections.set_partition(partition, &state)
        }
        EventKind::PartitionInvalidated {
            partition,
            reason,
            by,
        } => update(projections, partition, |state| {
            state.invalidated = Some(Invalidation {
                reason: reason.clone(),
                by: by.clone(),
                time_ms: event.time_ms,
                seq: event.seq,
            });
        }),
        EventKind::DatasetVersionChanged { dataset, to, .. } => {
            projections.set_dataset_version(dataset, to.as_deref())
        }
        EventKind::ActionFailed { outputs, error, .. } => {
            for output in outputs {
                update(projections, output, |state| {
                    state.failed = Some((event.build, error.clone()));
                })?;
            }
            Ok(())
        }
        // Listed one by one so that a new kind forces a decision here.
        EventKind::BuildRequested { .. }
        | EventKind::Planned { .. }
        | EventKind::ActionStarted { .. }
        | EventKind::ActionCached { .. }
        | EventKind::ActionSkipped { .. }
        | EventKind::BuildFinished { .. } => Ok(()),
    }
}

/// Changes the state of `partition`, starting from an empty one if it has none.
fn update(
    projections: &mut dyn Projections,
    partition: &PartitionRef,
    change: impl FnOnce(&mut PartitionState),
) -> Result<(), StoreError> {
    let mut state = projections.partition(partition)?.unwrap_or(PartitionState {
        current: None,
        invalidated: None,
        failed: None,
    });
    change(&mut state);
    projections.set_partition(partition, &state)
}

/// The projections held in memory: what a replay of the log produces, and
/// what the live tables are read into for comparison.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct MemoryProjections {
    pub actions: BTreeMap<ActionKey, Manifest>,
    pub partitions: BTreeMap<PartitionRef, PartitionState>,
    pub datasets: BTreeMap<String, String>,
}

impl Projections for MemoryProjections {
    fn set_action(&mut self, manifest: &Manifest) -> Result<(), StoreError> {
        self.actions.insert(manifest.key, manifest.clone());
        Ok(())
    }

    fn partition(
        &mut self,
        partition: &PartitionRef,
    ) -> Result<Option<PartitionState>, StoreError> {
        Ok(self.partitions.get(partition).cloned())
    }

    fn set_partition(
        &mut self,
        partition: &PartitionRef,
        state: &PartitionState,
    ) -> Result<(), StoreError> {
        self.partitions.insert(partition.clone(), state.clone());
        Ok(())
    }

    fn set_dataset_version(
        &mut self,
        dataset: &str,
        version: Option<&str>,
    ) -> Result<(), StoreError> {
        match version {
            Some(version) => self.datasets.insert(dataset.to_owned(), version.to_owned()),
            None => self.datasets.remove(dataset),
        };
        Ok(())
    }
}

/// Human-readable differences between the projections rebuilt from the log
/// and the live ones; empty when they are equal.
pub(crate) fn differences(replayed: &MemoryProjections, live: &MemoryProjections) -> Vec<String> {
    let mut out = Vec::new();
    compare("action", &replayed.actions, &live.actions, &mut out);
    compare(
        "partition",
        &replayed.partitions,
        &live.partitions,
        &mut out,
    );
    compare("dataset", &replayed.datasets, &live.datasets, &mut out);
    out
}

fn compare<K: Ord + Display, V: PartialEq + Debug>(
    what: &str,
    replayed: &BTreeMap<K, V>,
    live: &BTreeMap<K, V>,
    out: &mut Vec<String>,
) {
    for (key, replayed_value) in replayed {
        match live.get(key) {
            None => out.push(format!(
                "{what} {key}: the log produces it but the live table does not have it"
            )),
            Some(live_value) if live_value != replayed_value => out.push(format!(
                "{what} {key}: the live table has {live_value:?}, replaying the log gives \
                 {replayed_value:?}"
            )),
            Some(_) => {}
        }
    }
    for key in live.keys().filter(|key| !replayed.contains_key(key)) {
        out.push(format!(
            "{what} {key}: the live table has it but no event produces it"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_engine::ContentDigest;

    fn event(seq: u64, build: u64, kind: EventKind) -> Event {
        Event {
            seq,
            time_ms: 0,
            build,
            kind,
        }
    }

    fn partition() -> PartitionRef {
        PartitionRef::parse("clean/date=2024-01-01").unwrap()
    }

    #[test]
    fn materialize_invalidate_fail_then_materialize_again() {
        let mut model = MemoryProjections::default();
        let key = ActionKey([1; 32]);
        let digest = ContentDigest::of(b"x");
        let materialized = EventKind::PartitionMaterialized {
            partition: partition(),
            digest,
            key,
        };
        apply(&event(1, 1, materialized.clone()), &mut model).unwrap();
        apply(
            &event(
                2,
                2,
                EventKind::PartitionInvalidated {
                    partition: partition(),
                    reason: "bad".into(),
                    by: None,
                },
            ),
            &mut model,
        )
        .unwrap();
        apply(
            &event(
                3,
                3,
                EventKind::ActionFailed {
                    key,
                    job: "clean".into(),
                    outputs: vec![partition()],
                    error: "boom".into(),
                    exit_code: Some(1),
                    stdout: None,
                    stderr: None,
                },
            ),
            &mut model,
        )
        .unwrap();
        let state = &model.partitions[&partition()];
        assert_eq!(state.current.as_ref().unwrap().seq, 1);
        assert_eq!(
            state.invalidated.as_ref().map(|i| i.reason.as_str()),
            Some("bad")
        );
        assert_eq!(state.failed, Some((3, "boom".into())));

        apply(&event(4, 4, materialized), &mut model).unwrap();
        let state = &model.partitions[&partition()];
        assert_eq!(state.current.as_ref().unwrap().build, 4);
        assert_eq!(state.invalidated, None);
        assert_eq!(state.failed, None);
    }

    #[test]
    fn differences_name_the_object() {
        let mut replayed = MemoryProjections::default();
        let live = MemoryProjections::default();
        assert!(differences(&replayed, &live).is_empty());
        replayed.partitions.insert(
            partition(),
            PartitionState {
                current: None,
                invalidated: Some(cairn_engine::record::Invalidation {
                    reason: "x".into(),
                    by: None,
                    time_ms: 0,
                    seq: 0,
                }),
                failed: None,
            },
        );
        let found = differences(&replayed, &live);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("partition clean/date=2024-01-01: "),
            "{}",
            found[0]
        );
        assert!(differences(&live, &replayed)[0].contains("no event produces it"));
    }
}
