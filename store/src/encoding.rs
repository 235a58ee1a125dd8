//! How records are laid out on disk: every persisted value is one format byte
//! followed by the postcard encoding of the value.
//!
//! Invariants:
//! - The format byte is [`FORMAT_VERSION`] for everything this cairn writes.
//!   postcard is not self-describing, so any change to a persisted type in
//!   `cairn_engine::record` bumps [`FORMAT_VERSION`] and adds a decoding path
//!   for the old byte here.
//! - Decoding never panics, whatever the bytes (the event decoder is fuzzed):
//!   every failure is a [`DecodeError`]. A value followed by trailing bytes is
//!   refused rather than silently truncated, so a torn or spliced record
//!   cannot pass for a valid one.

use cairn_engine::record::{Event, Manifest, PartitionState, StatEntry};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version of the store format this cairn writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The format byte written in front of every value.
const FORMAT_BYTE: u8 = 1;
const _: () = assert!(FORMAT_BYTE as u32 == FORMAT_VERSION);

/// Why a persisted value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the record is empty")]
    Empty,
    #[error("the record has format {found}, newer than this cairn reads (up to {FORMAT_VERSION})")]
    NewerFormat { found: u8 },
    #[error("the record has unknown format byte {found}")]
    UnknownFormat { found: u8 },
    #[error("the record is malformed: {0}")]
    Malformed(String),
    #[error("the record has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
}

pub fn encode_event(event: &Event) -> Vec<u8> {
    encode(event)
}

pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    decode(bytes)
}

pub fn encode_manifest(manifest: &Manifest) -> Vec<u8> {
    encode(manifest)
}

pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest, DecodeError> {
    decode(bytes)
}

pub fn encode_partition_state(state: &PartitionState) -> Vec<u8> {
    encode(state)
}

pub fn decode_partition_state(bytes: &[u8]) -> Result<PartitionState, DecodeError> {
    decode(bytes)
}

pub fn encode_stat_entry(entry: &StatEntry) -> Vec<u8> {
    encode(entry)
}

pub fn decode_stat_entry(bytes: &[u8]) -> Result<StatEntry, DecodeError> {
    decode(bytes)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard only fails on serde features our record types do not use
    // (sequences of unknown length, `collect_str` errors), so a failure here is
    // a programming error in a record type, not bad data.
    postcard::to_extend(value, vec![FORMAT_BYTE])
        .expect("record types serialize with postcard (no unknown-length sequences)")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&format, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    match format {
        FORMAT_BYTE => {}
        found if u32::from(found) > FORMAT_VERSION => {
            return Err(DecodeError::NewerFormat { found });
        }
        found => return Err(DecodeError::UnknownFormat { found }),
    }
    let (value, rest) = postcard::take_from_bytes::<T>(body)
        .map_err(|error| DecodeError::Malformed(error.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_engine::record::{
        BuildCounts, EventKind, FileEntry, InputRecord, Materialization, OutputRecord,
    };
    use cairn_engine::{ActionKey, ContentDigest, PartitionRef};
    use proptest::prelude::*;

    fn partition(text: &str) -> PartitionRef {
        PartitionRef::parse(text).unwrap()
    }

    fn manifest() -> Manifest {
        Manifest {
            key: ActionKey([7; 32]),
            job: "clean".into(),
            outputs: vec![OutputRecord {
                partition: partition("clean/date=2024-01-01"),
                digest: ContentDigest::of(b"partition"),
                files: vec![FileEntry {
                    path: "part-0.csv".into(),
                    executable: false,
                    size: 4,
                    digest: ContentDigest::of(b"data"),
                }],
            }],
            inputs: vec![InputRecord {
                partition: partition("raw/date=2024-01-01"),
                digest: ContentDigest::of(b"raw"),
            }],
            code_digest: Some(ContentDigest::of(b"code")),
            versions: vec![("clean".into(), "1.2.0".into())],
            build: 3,
            started_ms: 1_700_000_000_000,
            finished_ms: 1_700_000_000_500,
            stdout: None,
            stderr: Some(ContentDigest::of(b"stderr")),
        }
    }

    fn events() -> Vec<Event> {
        let kinds = vec![
            EventKind::BuildRequested {
                requested: vec!["daily/date=2024-01-31".into()],
                command: "build".into(),
                reason: Some("#1234 recompute".into()),
            },
            EventKind::ActionSucceeded {
                manifest: manifest(),
            },
            EventKind::ActionFailed {
                key: ActionKey([9; 32]),
                job: "daily".into(),
                outputs: vec![partition("daily/date=2024-01-31")],
                error: "exited with status 1".into(),
                exit_code: Some(1),
                stdout: None,
                stderr: None,
            },
            EventKind::PartitionInvalidated {
                partition: partition("raw/date=2024-01-01"),
                reason: "bad upstream file".into(),
                by: None,
            },
            EventKind::BuildFinished {
                counts: BuildCounts {
                    executed: 2,
                    cached: 5,
                    failed: 1,
                    skipped: 0,
                },
                interrupted: false,
            },
        ];
        kinds
            .into_iter()
            .enumerate()
            .map(|(index, kind)| Event {
                seq: index as u64 + 1,
                time_ms: 1_700_000_000_000 + index as u64,
                build: 3,
                kind,
            })
            .collect()
    }

    #[test]
    fn events_round_trip() {
        for event in events() {
            let bytes = encode_event(&event);
            assert_eq!(bytes[0], FORMAT_BYTE);
            assert_eq!(decode_event(&bytes).unwrap(), event);
        }
    }

    #[test]
    fn other_records_round_trip() {
        let manifest = manifest();
        assert_eq!(
            decode_manifest(&encode_manifest(&manifest)).unwrap(),
            manifest
        );
        let state = PartitionState {
            current: Some(Materialization {
                key: ActionKey([1; 32]),
                digest: ContentDigest::of(b"x"),
                build: 2,
                seq: 40,
            }),
            invalidated: Some(cairn_engine::record::Invalidation {
                reason: "why".into(),
                by: None,
                time_ms: 0,
                seq: 0,
            }),
            failed: Some((3, "boom".into())),
        };
        assert_eq!(
            decode_partition_state(&encode_partition_state(&state)).unwrap(),
            state
        );
        let entry = StatEntry {
            size: 12,
            mtime_ns: -5,
            ctime_ns: 1_700_000_000_000_000_000,
            inode: 99,
            recorded_ns: 1_700_000_000_000_000_001,
            digest: ContentDigest::of(b"file"),
        };
        assert_eq!(
            decode_stat_entry(&encode_stat_entry(&entry)).unwrap(),
            entry
        );
    }

    #[test]
    fn format_byte_and_framing_are_checked() {
        let mut bytes = encode_event(&events()[0]);
        assert_eq!(decode_event(&[]), Err(DecodeError::Empty));

        bytes[0] = 2;
        assert_eq!(
            decode_event(&bytes),
            Err(DecodeError::NewerFormat { found: 2 })
        );
        bytes[0] = 0;
        assert_eq!(
            decode_event(&bytes),
            Err(DecodeError::UnknownFormat { found: 0 })
        );
        bytes[0] = FORMAT_BYTE;

        bytes.push(0);
        assert_eq!(decode_event(&bytes), Err(DecodeError::TrailingBytes(1)));
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(
            decode_event(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn an_invalid_partition_ref_is_refused() {
        let mut event = events()[3].clone();
        let EventKind::PartitionInvalidated { reason, .. } = &mut event.kind else {
            unreachable!()
        };
        reason.clear();
        let bytes = encode_event(&event);
        // Swap the ref text "raw/date=..." for "../date=..." of the same length.
        let start = bytes
            .windows(3)
            .position(|window| window == b"raw")
            .unwrap();
        let mut tampered = bytes;
        tampered[start..start + 3].copy_from_slice(b"../");
        assert!(matches!(
            decode_event(&tampered),
            Err(DecodeError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_event(&bytes);
            let _ = decode_manifest(&bytes);
            let _ = decode_partition_state(&bytes);
            let _ = decode_stat_entry(&bytes);
        }

        #[test]
        fn format_byte_then_random_bytes_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut bytes = vec![FORMAT_BYTE];
            bytes.extend_from_slice(&body);
            let _ = decode_event(&bytes);
            let _ = decode_manifest(&bytes);
            let _ = decode_partition_state(&bytes);
            let _ = decode_stat_entry(&bytes);
        }

        #[test]
        fn flipped_bytes_of_a_real_event_never_panic(
            index in 0usize..5,
            position in any::<prop::sample::Index>(),
            value in any::<u8>(),
        ) {
            let mut bytes = encode_event(&events()[index]);
            let position = position.index(bytes.len());
            bytes[position] = value;
            let _ = decode_event(&bytes);
        }
    }
}
