//! The projection rules: how each event changes the `actions`,
//! `partitions`, `datasets`, `checkpoints` and `defs` projections and the
//! `partition_events` index.
//!
//! Invariant: [`apply`] is the only place these rules live. The redb catalog
//! (`cairn-store`) runs it inside the transaction that appends the events,
//! its `replay_check` runs it over the whole log into [`MemoryProjections`],
//! and the in-memory catalog (`MemoryCatalog`, memory.rs) runs it on
//! every append, so "the projections can always be rebuilt from the log" is
//! true by construction and checkable. [`apply`] depends on nothing but the
//! event and the current projections (no clock, no file system), so a
//! replay is deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Debug, Display, Write as _};

use crate::digest::ActionKey;
use crate::ports::StoreError;
use crate::record::{
    CheckpointRecord, DefsRecord, Event, EventKind, Invalidation, Manifest, Materialization,
    PartitionState,
};
use crate::refs::PartitionRef;

/// Storage the projection rules write to: the live redb tables, or the
/// in-memory model of a replay. (What they read back is the
/// [`crate::ports::Projections`] port.)
pub trait ProjectionTables {
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
    /// Records that event `seq` is about `partition` (the `partition_events`
    /// index that `cairn history`, `cairn logs` and `cairn log --partition
    /// REF` read instead of scanning the log).
    fn index_partition_event(
        &mut self,
        partition: &PartitionRef,
        seq: u64,
    ) -> Result<(), StoreError>;
    /// Records (or, with `None`, clears) the last checkpoint of an action key.
    fn set_checkpoint(
        &mut self,
        key: &ActionKey,
        checkpoint: Option<&CheckpointRecord>,
    ) -> Result<(), StoreError>;
    /// The latest record of a definitions source (the `defs` table).
    fn defs(&mut self, source: &str) -> Result<Option<DefsRecord>, StoreError>;
    fn set_defs(&mut self, source: &str, record: &DefsRecord) -> Result<(), StoreError>;
}

/// The partitions an event is about: the outputs of an action event, the
/// partition of a partition event; none for the others. This is what the
/// `partition_events` index holds, and what `cairn log --partition` filters on.
pub fn partitions_of(kind: &EventKind) -> Vec<&PartitionRef> {
    let mut partitions: Vec<&PartitionRef> = match kind {
        EventKind::ActionStarted { outputs, .. }
        | EventKind::ActionFailed { outputs, .. }
        | EventKind::ActionCached { outputs, .. }
        | EventKind::ActionSkipped { outputs, .. }
        | EventKind::ActionRetrying { outputs, .. }
        | EventKind::ActionJoined { outputs, .. }
        | EventKind::RemoteRefused { outputs, .. }
        | EventKind::ActionUploaded { outputs, .. }
        | EventKind::ActionDispatched { outputs, .. } => outputs.iter().collect(),
        EventKind::ActionSucceeded { manifest } => {
            manifest.outputs.iter().map(|o| &o.partition).collect()
        }
        EventKind::PartitionMaterialized { partition, .. }
        | EventKind::PartitionInvalidated { partition, .. }
        | EventKind::PartitionPruned { partition, .. } => vec![partition],
        EventKind::BuildRequested { .. }
        | EventKind::Planned { .. }
        | EventKind::DatasetVersionChanged { .. }
        | EventKind::ActionCheckpointed { .. }
        | EventKind::BuildFinished { .. }
        | EventKind::DefsRefreshed { .. } => Vec::new(),
    };
    partitions.sort_unstable();
    partitions.dedup();
    partitions
}

/// Applies the projection of one stored event.
pub fn apply(event: &Event, projections: &mut dyn ProjectionTables) -> Result<(), StoreError> {
    for partition in partitions_of(&event.kind) {
        projections.index_partition_event(partition, event.seq)?;
    }
    match &event.kind {
        EventKind::ActionSucceeded { manifest } => {
            // Success clears the key's checkpoints from consideration (they
            // stay in the log).
            projections.set_checkpoint(&manifest.key, None)?;
            projections.set_action(manifest)
        }
        // A result restored from the remote cache brings its manifest.
        EventKind::ActionCached {
            remote: Some(origin),
            ..
        } => {
            projections.set_checkpoint(&origin.manifest.key, None)?;
            projections.set_action(&origin.manifest)
        }
        EventKind::ActionCheckpointed {
            key,
            sequence,
            digest,
            ..
        } => projections.set_checkpoint(
            key,
            Some(&CheckpointRecord {
                sequence: *sequence,
                digest: *digest,
                build: event.build,
            }),
        ),
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
        // Pruned: no longer built, and nothing of its past state applies.
        EventKind::PartitionPruned { partition, .. } => {
            projections.set_partition(partition, &PartitionState::default())
        }
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
        EventKind::DefsRefreshed {
            source,
            digest,
            values,
        } => {
            let previous = projections.defs(source)?.map(|record| record.seq);
            projections.set_defs(
                source,
                &DefsRecord {
                    seq: event.seq,
                    build: event.build,
                    time_ms: event.time_ms,
                    digest: *digest,
                    values: *values,
                    previous,
                },
            )
        }
        // Listed one by one so that a new kind forces a decision here.
        EventKind::BuildRequested { .. }
        | EventKind::Planned { .. }
        | EventKind::ActionStarted { .. }
        | EventKind::ActionCached { .. }
        | EventKind::ActionSkipped { .. }
        | EventKind::ActionRetrying { .. }
        | EventKind::ActionJoined { .. }
        | EventKind::RemoteRefused { .. }
        | EventKind::ActionUploaded { .. }
        | EventKind::ActionDispatched { .. }
        | EventKind::BuildFinished { .. } => Ok(()),
    }
}

/// Changes the state of `partition`, starting from an empty one if it has none.
fn update(
    projections: &mut dyn ProjectionTables,
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
pub struct MemoryProjections {
    pub actions: BTreeMap<ActionKey, Manifest>,
    pub partitions: BTreeMap<PartitionRef, PartitionState>,
    pub datasets: BTreeMap<String, String>,
    pub partition_events: BTreeSet<(PartitionRef, u64)>,
    pub checkpoints: BTreeMap<ActionKey, CheckpointRecord>,
    pub defs: BTreeMap<String, DefsRecord>,
}

impl ProjectionTables for MemoryProjections {
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

    fn index_partition_event(
        &mut self,
        partition: &PartitionRef,
        seq: u64,
    ) -> Result<(), StoreError> {
        self.partition_events.insert((partition.clone(), seq));
        Ok(())
    }

    fn set_checkpoint(
        &mut self,
        key: &ActionKey,
        checkpoint: Option<&CheckpointRecord>,
    ) -> Result<(), StoreError> {
        match checkpoint {
            Some(checkpoint) => self.checkpoints.insert(*key, *checkpoint),
            None => self.checkpoints.remove(key),
        };
        Ok(())
    }

    fn defs(&mut self, source: &str) -> Result<Option<DefsRecord>, StoreError> {
        Ok(self.defs.get(source).copied())
    }

    fn set_defs(&mut self, source: &str, record: &DefsRecord) -> Result<(), StoreError> {
        self.defs.insert(source.to_owned(), *record);
        Ok(())
    }
}

/// Human-readable differences between the projections rebuilt from the log
/// and the live ones; empty when they are equal.
pub fn differences(replayed: &MemoryProjections, live: &MemoryProjections) -> Vec<String> {
    let mut out = Vec::new();
    compare("action", &replayed.actions, &live.actions, &mut out);
    compare(
        "partition",
        &replayed.partitions,
        &live.partitions,
        &mut out,
    );
    compare("dataset", &replayed.datasets, &live.datasets, &mut out);
    compare(
        "checkpoint of action",
        &replayed.checkpoints,
        &live.checkpoints,
        &mut out,
    );
    compare("defs of source", &replayed.defs, &live.defs, &mut out);
    compare_index(&replayed.partition_events, &live.partition_events, &mut out);
    out
}

/// Differences of the `partition_events` index, one line per partition.
fn compare_index(
    replayed: &BTreeSet<(PartitionRef, u64)>,
    live: &BTreeSet<(PartitionRef, u64)>,
    out: &mut Vec<String>,
) {
    let mut by_partition: BTreeMap<&PartitionRef, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    for (partition, seq) in replayed.difference(live) {
        by_partition.entry(partition).or_default().0.push(*seq);
    }
    for (partition, seq) in live.difference(replayed) {
        by_partition.entry(partition).or_default().1.push(*seq);
    }
    for (partition, (missing, extra)) in by_partition {
        let mut line = format!("partition index {partition}:");
        if !missing.is_empty() {
            let _ = write!(
                line,
                " the live index lacks events {} that the log has about it",
                seq_list(&missing)
            );
        }
        if !extra.is_empty() {
            if !missing.is_empty() {
                line.push(';');
            }
            let _ = write!(
                line,
                " the live index lists events {} that are not about it",
                seq_list(&extra)
            );
        }
        out.push(line);
    }
}

/// `1, 2, 3` or `1, 2, 3, 4, 5 and 12 more`.
fn seq_list(seqs: &[u64]) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<String> = seqs.iter().take(SHOWN).map(u64::to_string).collect();
    let mut text = shown.join(", ");
    if seqs.len() > SHOWN {
        let _ = write!(text, " and {} more", seqs.len() - SHOWN);
    }
    text
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
    use crate::digest::ContentDigest;

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
    fn a_pruned_partition_is_no_longer_built_and_its_events_stay_indexed() {
        let mut model = MemoryProjections::default();
        let materialized = EventKind::PartitionMaterialized {
            partition: partition(),
            digest: ContentDigest::of(b"x"),
            key: ActionKey([1; 32]),
        };
        apply(&event(1, 1, materialized), &mut model).unwrap();
        let pruned = EventKind::PartitionPruned {
            partition: partition(),
            reason: "station retired".into(),
            by: None,
        };
        assert_eq!(partitions_of(&pruned), [&partition()]);
        apply(&event(2, 2, pruned), &mut model).unwrap();
        assert_eq!(model.partitions[&partition()], PartitionState::default());
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
                    key: Some(key),
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
    fn defs_records_link_to_the_previous_record_of_their_source() {
        let mut model = MemoryProjections::default();
        let refreshed = |source: &str, content: &[u8]| EventKind::DefsRefreshed {
            source: source.into(),
            digest: ContentDigest::of(content),
            values: 2,
        };
        apply(&event(1, 1, refreshed("stations", b"a")), &mut model).unwrap();
        apply(&event(2, 2, refreshed("regions", b"b")), &mut model).unwrap();
        apply(&event(3, 3, refreshed("stations", b"c")), &mut model).unwrap();
        let stations = model.defs["stations"];
        assert_eq!(
            (stations.seq, stations.build, stations.previous),
            (3, 3, Some(1))
        );
        assert_eq!(stations.digest, ContentDigest::of(b"c"));
        assert_eq!(model.defs["regions"].previous, None);
        assert!(model.partition_events.is_empty());

        let mut live = model.clone();
        live.defs.remove("regions");
        assert_eq!(
            differences(&model, &live),
            ["defs of source regions: the log produces it but the live table does not have it"]
        );
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
                invalidated: Some(crate::record::Invalidation {
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

    #[test]
    fn events_about_partitions_are_indexed_and_compared() {
        let mut model = MemoryProjections::default();
        let key = ActionKey([1; 32]);
        let other = PartitionRef::parse("clean/date=2024-01-02").unwrap();
        let events = [
            EventKind::Planned {
                actions: 1,
                sources: 0,
            },
            EventKind::ActionStarted {
                key,
                job: "clean".into(),
                // A partition listed twice is indexed once.
                outputs: vec![partition(), other.clone(), partition()],
                reason: "never built".into(),
                attempt: 1,
                resumed_from: None,
            },
            EventKind::PartitionMaterialized {
                partition: partition(),
                digest: ContentDigest::of(b"x"),
                key,
            },
        ];
        for (index, kind) in events.into_iter().enumerate() {
            apply(&event(index as u64 + 1, 1, kind), &mut model).unwrap();
        }
        let expected: BTreeSet<(PartitionRef, u64)> =
            [(partition(), 2), (other.clone(), 2), (partition(), 3)]
                .into_iter()
                .collect();
        assert_eq!(model.partition_events, expected);

        let mut live = model.clone();
        live.partition_events.remove(&(partition(), 3));
        for seq in 10..20 {
            live.partition_events.insert((other.clone(), seq));
        }
        assert_eq!(
            differences(&model, &live),
            [
                "partition index clean/date=2024-01-01: the live index lacks events 3 that the \
                 log has about it",
                "partition index clean/date=2024-01-02: the live index lists events 10, 11, 12, \
                 13, 14 and 5 more that are not about it",
            ]
        );
    }
}
