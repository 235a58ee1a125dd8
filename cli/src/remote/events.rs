//! The events of `cairn log --json` read back: a line of the documented
//! JSON (docs/cli.md, "`cairn log`") into the [`Event`] it was printed
//! from, so that `cairn --remote URL log` renders and filters the server's
//! events with the local code.
//!
//! The line is flat (`seq`, `time_ms`, `build`, `kind`, then the fields of
//! its kind); the fields of each kind carry the names of `EventKind`'s
//! variant, so the kind's object goes through `EventKind`'s own serde (with
//! digests as hex, as every human-readable format has them).

use cairn_engine::record::{Event, EventKind};
use serde_json::{Map, Value};

/// The event a `cairn log --json` line describes.
pub fn event_from_line(line: &Value) -> Result<Event, String> {
    let object = line.as_object().ok_or("not a JSON object")?;
    let number = |name: &str| {
        object
            .get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no number {name:?}"))
    };
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("no \"kind\"")?;
    let mut fields: Map<String, Value> = object
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "seq" | "time_ms" | "build" | "kind"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    // Where the line differs from `EventKind`'s serde: a submission's body
    // digest is hex (a byte array in the struct), and a build's counts
    // leave out `joined` when it is 0.
    if let Some(Value::Object(submission)) = fields.get_mut("submission")
        && let Some(Value::String(hex)) = submission.get("body_digest")
    {
        let digest: cairn_engine::digest::ContentDigest = hex
            .parse()
            .map_err(|error| format!("submission.body_digest: {error}"))?;
        let bytes: Vec<Value> = digest.0.iter().map(|byte| Value::from(*byte)).collect();
        submission.insert("body_digest".to_owned(), Value::Array(bytes));
    }
    if let Some(Value::Object(counts)) = fields.get_mut("counts") {
        counts.entry("joined").or_insert(Value::from(0));
    }
    let mut tagged = Map::new();
    tagged.insert(kind.to_owned(), Value::Object(fields));
    let kind: EventKind = serde_json::from_value(Value::Object(tagged))
        .map_err(|error| format!("kind {kind:?}: {error}"))?;
    Ok(Event {
        seq: number("seq")?,
        time_ms: number("time_ms")?,
        build: number("build")?,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_app::dto::events::EventLine;
    use cairn_engine::digest::ActionKey;
    use cairn_engine::record::{BuildCounts, Submission};
    use cairn_engine::refs::PartitionRef;

    /// Events of many kinds, printed as `cairn log --json` prints them and
    /// read back, are the events they were.
    #[test]
    fn a_printed_line_reads_back_as_its_event() {
        let partition = PartitionRef::parse("clean/date=2024-01-01/station=S001").unwrap();
        let key = ActionKey([7; 32]);
        // One of every kind, and the variants whose JSON differs from
        // `EventKind`'s serde (see `event_from_line`).
        let mut kinds = cairn_core::contract::every_event_kind();
        kinds.extend([
            EventKind::BuildRequested {
                requested: vec![],
                command: "backfill".into(),
                reason: None,
                submission: Some(Submission {
                    operation: "op-7f3a9c2e01b4".into(),
                    idempotency_key: Some("ci-1".into()),
                    body_digest: [3; 32],
                    submitted_by: Some("ana".into()),
                    submitted_ms: 1_765_000_000_000,
                    expected: Some(cairn_engine::record::Announced {
                        partitions: 1,
                        actions: 2,
                        current: 1,
                        to_run: 1,
                    }),
                }),
            },
            EventKind::BuildFinished {
                counts: BuildCounts {
                    joined: 5,
                    ..BuildCounts::default()
                },
                interrupted: true,
            },
        ]);
        // A restore from the remote cache carries the manifest it brought.
        let manifest = kinds
            .iter()
            .find_map(|kind| match kind {
                EventKind::ActionSucceeded { manifest } => Some(manifest.clone()),
                _ => None,
            })
            .unwrap();
        kinds.push(EventKind::ActionCached {
            key,
            job: "clean".into(),
            outputs: vec![partition],
            built_by: 5,
            restored: true,
            remote: Some(Box::new(cairn_engine::record::RemoteOrigin {
                url: "s3://bucket/team".into(),
                producer: "host ci-1, cairn 0.1.0, build 9".into(),
                manifest,
            })),
        });
        for (seq, kind) in kinds.into_iter().enumerate() {
            let event = Event {
                seq: seq as u64 + 1,
                time_ms: 1_700_000_000_000,
                build: 5,
                kind,
            };
            let mut line = Vec::new();
            EventLine(&event).write(&mut line);
            let value: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(event_from_line(&value).unwrap(), event);
        }
        assert!(event_from_line(&serde_json::json!({"seq": 1})).is_err());
    }
}
