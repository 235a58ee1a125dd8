//! The JSON of `cairn log --json` (docs/cli.md, "`cairn log`"): one object
//! per event, `seq`, `time_ms`, `build`, `kind`, then the fields of its
//! kind in the documented order.
//!
//! This is the promised format, written out field by field, not the serde
//! output of the internal [`EventKind`] (which is also what the store
//! persists, with postcard): the internal enum may change without changing
//! what `cairn log --json` prints. Serialized straight from a borrowed
//! event, with no intermediate value (a log of millions of events is
//! printed through one reused buffer). The lines carry no `"schema"`
//! field (millions of lines, no summary): their format is the one
//! docs/cli.md documents, and changes only by adding fields.

use serde::ser::{SerializeSeq, SerializeStruct, SerializeTuple};
use serde::{Serialize, Serializer};

use cairn_engine::record::{
    BuildCounts, CommandRecord, Event, EventKind, FileEntry, InputRecord, Manifest, OutputRecord,
    ProgramRecord,
};
use cairn_engine::refs::PartitionRef;

use crate::events::listed_kind;

/// One line of `cairn log --json`: an event as its stable JSON object.
#[derive(Debug, Clone, Copy)]
pub struct EventLine<'a>(pub &'a Event);

impl EventLine<'_> {
    /// Appends the line's JSON and a newline to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail, and every value serializes.
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
    }
}

/// A digest or key: 64 lowercase hex characters.
struct Hex<'a>(&'a [u8; 32]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 64];
        for (i, byte) in self.0.iter().enumerate() {
            hex[2 * i] = DIGITS[usize::from(byte >> 4)];
            hex[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
        }
        serializer.serialize_str(std::str::from_utf8(&hex).unwrap_or_default())
    }
}

fn hex(bytes: &[u8; 32]) -> Hex<'_> {
    Hex(bytes)
}

fn opt_hex(bytes: Option<&[u8; 32]>) -> Option<Hex<'_>> {
    bytes.map(Hex)
}

/// Refs, as strings.
struct Refs<'a>(&'a [PartitionRef]);

impl Serialize for Refs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(PartitionRef::as_str))
    }
}

/// `[[name, value], ...]` pairs.
struct Pairs<'a>(&'a [(String, String)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (name, value) in self.0 {
            seq.serialize_element(&Pair(name, value))?;
        }
        seq.end()
    }
}

struct Pair<'a>(&'a str, &'a str);

impl Serialize for Pair<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(self.0)?;
        tuple.serialize_element(self.1)?;
        tuple.end()
    }
}

/// A sequence of borrowed items, each serialized through `F`.
struct Each<'a, T, F>(&'a [T], F);

impl<'a, T, F, L> Serialize for Each<'a, T, F>
where
    F: Fn(&'a T) -> L,
    L: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(&self.1))
    }
}

impl Serialize for EventLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let mut o = serializer.serialize_struct("Event", 11)?;
        o.serialize_field("seq", &event.seq)?;
        o.serialize_field("time_ms", &event.time_ms)?;
        o.serialize_field("build", &event.build)?;
        o.serialize_field("kind", listed_kind(&event.kind))?;
        match &event.kind {
            EventKind::BuildRequested {
                requested,
                command,
                reason,
                submission,
            } => {
                o.serialize_field("requested", requested)?;
                o.serialize_field("command", command)?;
                o.serialize_field("reason", reason)?;
                // Only a server's builds carry one (store format 9).
                if let Some(submission) = submission {
                    o.serialize_field("submission", &SubmissionLine(submission))?;
                }
            }
            EventKind::Planned { actions, sources } => {
                o.serialize_field("actions", actions)?;
                o.serialize_field("sources", sources)?;
            }
            EventKind::DatasetVersionChanged { dataset, from, to } => {
                o.serialize_field("dataset", dataset)?;
                o.serialize_field("from", from)?;
                o.serialize_field("to", to)?;
            }
            EventKind::ActionStarted {
                key,
                job,
                outputs,
                reason,
                attempt,
                resumed_from,
            } => {
                o.serialize_field("key", &hex(&key.0))?;
                o.serialize_field("job", job)?;
                o.serialize_field("outputs", &Refs(outputs))?;
                o.serialize_field("reason", reason)?;
                o.serialize_field("attempt", attempt)?;
                o.serialize_field("resumed_from", resumed_from)?;
            }
            EventKind::ActionCheckpointed {
                key,
                job,
                sequence,
                digest,
                size,
            } => {
                o.serialize_field("key", &hex(&key.0))?;
                o.serialize_field("job", job)?;
                o.serialize_field("sequence", sequence)?;
                o.serialize_field("digest", &hex(&digest.0))?;
                o.serialize_field("size", size)?;
            }
            EventKind::ActionSucceeded { manifest } => {
                o.serialize_field("manifest", &ManifestLine(manifest))?;
            }
            EventKind::ActionFailed {
                key,
                job,
                outputs,
                error,
                exit_code,
                stdout,
                stderr,
            } => {
                o.serialize_field("key", &opt_hex(key.as_ref().map(|key| &key.0)))?;
                o.serialize_field("job", job)?;
                o.serialize_field("outputs", &Refs(outputs))?;
                o.serialize_field("error", error)?;
                o.serialize_field("exit_code", exit_code)?;
                o.serialize_field("stdout", &opt_hex(stdout.as_ref().map(|d| &d.0)))?;
                o.serialize_field("stderr", &opt_hex(stderr.as_ref().map(|d| &d.0)))?;
            }
            EventKind::ActionCached {
                key,
                job,
                outputs,
                built_by,
                restored,
                remote,
            } => {
                o.serialize_field("key", &hex(&key.0))?;
                o.serialize_field("job", job)?;
                o.serialize_field("outputs", &Refs(outputs))?;
                o.serialize_field("built_by", built_by)?;
                o.serialize_field("restored", restored)?;
                // Only on a restore from the shared remote cache.
                if let Some(origin) = remote {
                    o.serialize_field("remote", &OriginLine(origin))?;
                }
            }
            EventKind::RemoteRefused {
                key,
                job,
                outputs,
                url,
                reason,
            } => {
                o.serialize_field("key", &hex(&key.0))?;
                o.serialize_field("job", job)?;
                o.serialize_field("outputs", &Refs(outputs))?;
                o.serialize_field("url", url)?;
                o.serialize_field("reason", reason)?;
            }
            EventKind::ActionUploaded {
                key,
                job,
                outputs,
                url,
                blobs,
                bytes,
                created,
            } => {
                o.serialize_field("key", &hex(&key.0))?;
                o.serialize_field("job", job)?;
                o.serialize_field("outputs", &Refs(outputs))?;
                o.serialize_field("url", url)?;
                o.serialize_field("blobs", blobs)?;
                o.serialize_field("bytes", bytes)?;
                o.serialize_field("created", created)?;
            }
            EventKind::ActionDispatched {
                key,
                job,
                outputs,
                attempt,
                executor,
                id,
            } => {
                o.serialize_field("key", &hex(&key.0))?;
                o.serialize_field("job", job)?;
                o.serialize_field("outputs", &Refs(outputs))?;
                o.serialize_field("attempt", attempt)?;
                o.serialize_field("executor", executor)?;
                o.serialize_field("id", id)?;
            }
            EventKind::ActionSkipped {
                job,
                outputs,
                reason,
            } => {
                o.serialize_field("job", job)?;
                o.serialize_field("outputs", &Refs(outputs))?;
                o.serialize_field("reason", reason)?;
            }
            EventKind::ActionRetrying {
                key,
                job,
                outputs,
                attempt,
                delay_ms,
            } => {
                o.serialize_field("key", &hex(&key.0))?;
                o.serialize_field("job", job)?;
                o.serialize_field("outputs", &Refs(outputs))?;
                o.serialize_field("attempt", attempt)?;
                o.serialize_field("delay_ms", delay_ms)?;
            }
            EventKind::ActionJoined {
                key,
                job,
                outputs,
                joined_build,
            } => {
                o.serialize_field("key", &hex(&key.0))?;
                o.serialize_field("job", job)?;
                o.serialize_field("outputs", &Refs(outputs))?;
                o.serialize_field("joined_build", joined_build)?;
            }
            EventKind::PartitionMaterialized {
                partition,
                digest,
                key,
            } => {
                o.serialize_field("partition", partition.as_str())?;
                o.serialize_field("digest", &hex(&digest.0))?;
                o.serialize_field("key", &hex(&key.0))?;
            }
            EventKind::PartitionInvalidated {
                partition,
                reason,
                by,
            }
            | EventKind::PartitionPruned {
                partition,
                reason,
                by,
            } => {
                o.serialize_field("partition", partition.as_str())?;
                o.serialize_field("reason", reason)?;
                o.serialize_field("by", by)?;
            }
            EventKind::BuildFinished {
                counts,
                interrupted,
            } => {
                o.serialize_field("counts", &CountsLine(counts))?;
                o.serialize_field("interrupted", interrupted)?;
            }
            EventKind::DefsRefreshed {
                source,
                digest,
                values,
            } => {
                o.serialize_field("source", source)?;
                o.serialize_field("digest", &hex(&digest.0))?;
                o.serialize_field("values", values)?;
            }
        }
        o.end()
    }
}

/// `BuildRequested.submission`: `{"operation","idempotency_key","body_digest",
/// "submitted_by","submitted_ms","expected"}` (the digest in hex; the last
/// three `null`, 0 and `null` in records before store format 12).
struct SubmissionLine<'a>(&'a cairn_engine::record::Submission);

impl Serialize for SubmissionLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let submission = self.0;
        let mut o = serializer.serialize_struct("Submission", 6)?;
        o.serialize_field("operation", &submission.operation)?;
        o.serialize_field("idempotency_key", &submission.idempotency_key)?;
        o.serialize_field("body_digest", &hex(&submission.body_digest))?;
        o.serialize_field("submitted_by", &submission.submitted_by)?;
        o.serialize_field("submitted_ms", &submission.submitted_ms)?;
        o.serialize_field("expected", &submission.expected)?;
        o.end()
    }
}

/// `BuildFinished.counts`: `{"executed","cached","failed","skipped","joined"}`.
struct CountsLine<'a>(&'a BuildCounts);

impl Serialize for CountsLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let counts = self.0;
        let mut o = serializer.serialize_struct("Counts", 4)?;
        o.serialize_field("executed", &counts.executed)?;
        o.serialize_field("cached", &counts.cached)?;
        o.serialize_field("failed", &counts.failed)?;
        o.serialize_field("skipped", &counts.skipped)?;
        // Only builds of a server join another build's run.
        if counts.joined > 0 {
            o.serialize_field("joined", &counts.joined)?;
        }
        o.end()
    }
}

/// `ActionCached.remote` (a restore from the shared remote cache).
struct OriginLine<'a>(&'a cairn_engine::record::RemoteOrigin);

impl Serialize for OriginLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut o = serializer.serialize_struct("RemoteOrigin", 3)?;
        o.serialize_field("url", &self.0.url)?;
        o.serialize_field("producer", &self.0.producer)?;
        o.serialize_field("manifest", &ManifestLine(&self.0.manifest))?;
        o.end()
    }
}

/// `ActionSucceeded.manifest`.
struct ManifestLine<'a>(&'a Manifest);

impl Serialize for ManifestLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut o = serializer.serialize_struct("Manifest", 12)?;
        o.serialize_field("key", &hex(&m.key.0))?;
        o.serialize_field("job", &m.job)?;
        o.serialize_field("outputs", &Each(&m.outputs, OutputLine))?;
        o.serialize_field("inputs", &Each(&m.inputs, InputLine))?;
        o.serialize_field(
            "code_digest",
            &opt_hex(m.code_digest.as_ref().map(|d| &d.0)),
        )?;
        o.serialize_field("versions", &Pairs(&m.versions))?;
        o.serialize_field("build", &m.build)?;
        o.serialize_field("started_ms", &m.started_ms)?;
        o.serialize_field("finished_ms", &m.finished_ms)?;
        o.serialize_field("stdout", &opt_hex(m.stdout.as_ref().map(|d| &d.0)))?;
        o.serialize_field("stderr", &opt_hex(m.stderr.as_ref().map(|d| &d.0)))?;
        o.serialize_field("command", &m.command.as_deref().map(CommandLine))?;
        o.end()
    }
}

/// An output of a manifest: `{"partition","digest","files"}`.
struct OutputLine<'a>(&'a OutputRecord);

impl Serialize for OutputLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let output = self.0;
        let mut o = serializer.serialize_struct("Output", 3)?;
        o.serialize_field("partition", output.partition.as_str())?;
        o.serialize_field("digest", &hex(&output.digest.0))?;
        o.serialize_field("files", &Each(&output.files, FileLine))?;
        o.end()
    }
}

/// A file of an output: `{"path","executable","size","digest","mode"}`.
struct FileLine<'a>(&'a FileEntry);

impl Serialize for FileLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let file = self.0;
        let mut o = serializer.serialize_struct("File", 5)?;
        o.serialize_field("path", &file.path)?;
        o.serialize_field("executable", &file.executable)?;
        o.serialize_field("size", &file.size)?;
        o.serialize_field("digest", &hex(&file.digest.0))?;
        o.serialize_field("mode", &file.mode)?;
        o.end()
    }
}

/// An input of a manifest: `{"partition","digest"}`.
struct InputLine<'a>(&'a InputRecord);

impl Serialize for InputLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let input = self.0;
        let mut o = serializer.serialize_struct("Input", 2)?;
        o.serialize_field("partition", input.partition.as_str())?;
        o.serialize_field("digest", &hex(&input.digest.0))?;
        o.end()
    }
}

/// A manifest's command: `{"run","args","env","passed_env","program"}`.
struct CommandLine<'a>(&'a CommandRecord);

impl Serialize for CommandLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let command = self.0;
        let mut o = serializer.serialize_struct("Command", 5)?;
        o.serialize_field("run", &command.run)?;
        o.serialize_field("args", &command.args)?;
        o.serialize_field("env", &Pairs(&command.env))?;
        o.serialize_field("passed_env", &Pairs(&command.passed_env))?;
        o.serialize_field("program", &ProgramLine(&command.program))?;
        o.end()
    }
}

/// The program of a command: `{"path","digest"}`.
struct ProgramLine<'a>(&'a ProgramRecord);

impl Serialize for ProgramLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let program = self.0;
        let mut o = serializer.serialize_struct("Program", 2)?;
        o.serialize_field("path", &program.path)?;
        o.serialize_field("digest", &opt_hex(program.digest.as_ref().map(|d| &d.0)))?;
        o.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event of every kind, with text that needs escaping.
    fn every_kind() -> Vec<EventKind> {
        let kinds = cairn_core::contract::every_event_kind();
        assert_eq!(
            kinds.len(),
            crate::events::EVENT_KINDS.len(),
            "one event of every kind"
        );
        kinds
    }

    fn lines() -> Vec<String> {
        every_kind()
            .into_iter()
            .enumerate()
            .map(|(seq, kind)| {
                let event = Event {
                    seq: seq as u64 + 1,
                    time_ms: 1_700_000_000_000,
                    build: 5,
                    kind,
                };
                let mut out = Vec::new();
                EventLine(&event).write(&mut out);
                String::from_utf8(out).unwrap()
            })
            .collect()
    }

    /// One line of every kind, as `cairn log --json` has always printed it
    /// (docs/cli.md): the promise, pinned. A change to the internal
    /// `EventKind` must leave these lines as they are.
    const EVERY_KIND: &str = r#"{"seq":1,"time_ms":1700000000000,"build":5,"kind":"BuildRequested","requested":["quote \" backslash \\ newline \n tab \t é"],"command":"build","reason":"quote \" backslash \\ newline \n tab \t é"}
{"seq":2,"time_ms":1700000000000,"build":5,"kind":"Planned","actions":3,"sources":2}
{"seq":3,"time_ms":1700000000000,"build":5,"kind":"DatasetVersionChanged","dataset":"clean","from":null,"to":"1.2.0"}
{"seq":4,"time_ms":1700000000000,"build":5,"kind":"ActionStarted","key":"0707070707070707070707070707070707070707070707070707070707070707","job":"clean","outputs":["clean/date=2024-01-01/station=S001"],"reason":"quote \" backslash \\ newline \n tab \t é","attempt":2,"resumed_from":4}
{"seq":5,"time_ms":1700000000000,"build":5,"kind":"ActionCheckpointed","key":"0707070707070707070707070707070707070707070707070707070707070707","job":"clean","sequence":3,"digest":"0909090909090909090909090909090909090909090909090909090909090909","size":10}
{"seq":6,"time_ms":1700000000000,"build":5,"kind":"ActionSucceeded","manifest":{"key":"0707070707070707070707070707070707070707070707070707070707070707","job":"clean","outputs":[{"partition":"clean/date=2024-01-01/station=S001","digest":"0909090909090909090909090909090909090909090909090909090909090909","files":[{"path":"part 1.csv","executable":false,"size":12,"digest":"0909090909090909090909090909090909090909090909090909090909090909","mode":416}]}],"inputs":[{"partition":"clean/date=2024-01-01/station=S001","digest":"0909090909090909090909090909090909090909090909090909090909090909"}],"code_digest":null,"versions":[["clean","1.0.0"]],"build":5,"started_ms":1,"finished_ms":2,"stdout":"0909090909090909090909090909090909090909090909090909090909090909","stderr":null,"command":{"run":["sh","jobs/clean.sh"],"args":["2024-01-01"],"env":[["MODE","fast"]],"passed_env":[["LANG","C"]],"program":{"path":"/bin/sh","digest":"0909090909090909090909090909090909090909090909090909090909090909"}}}}
{"seq":7,"time_ms":1700000000000,"build":5,"kind":"ActionFailed","key":"0707070707070707070707070707070707070707070707070707070707070707","job":"clean","outputs":["clean/date=2024-01-01/station=S001"],"error":"quote \" backslash \\ newline \n tab \t é","exit_code":-1,"stdout":null,"stderr":"0909090909090909090909090909090909090909090909090909090909090909"}
{"seq":8,"time_ms":1700000000000,"build":5,"kind":"ActionCached","key":"0707070707070707070707070707070707070707070707070707070707070707","job":"clean","outputs":["clean/date=2024-01-01/station=S001"],"built_by":1,"restored":true}
{"seq":9,"time_ms":1700000000000,"build":5,"kind":"ActionSkipped","job":"clean","outputs":["clean/date=2024-01-01/station=S001"],"reason":"quote \" backslash \\ newline \n tab \t é"}
{"seq":10,"time_ms":1700000000000,"build":5,"kind":"PartitionMaterialized","partition":"clean/date=2024-01-01/station=S001","digest":"0909090909090909090909090909090909090909090909090909090909090909","key":"0707070707070707070707070707070707070707070707070707070707070707"}
{"seq":11,"time_ms":1700000000000,"build":5,"kind":"PartitionInvalidated","partition":"clean/date=2024-01-01/station=S001","reason":"quote \" backslash \\ newline \n tab \t é","by":null}
{"seq":12,"time_ms":1700000000000,"build":5,"kind":"BuildFinished","counts":{"executed":1,"cached":2,"failed":3,"skipped":4},"interrupted":false}
{"seq":13,"time_ms":1700000000000,"build":5,"kind":"DefsRefreshed","source":"stations","digest":"0909090909090909090909090909090909090909090909090909090909090909","values":8}
{"seq":14,"time_ms":1700000000000,"build":5,"kind":"PartitionPruned","partition":"raw/date=1/station=gone","reason":"station retired","by":"ana"}
{"seq":15,"time_ms":1700000000000,"build":5,"kind":"ActionRetrying","key":"0707070707070707070707070707070707070707070707070707070707070707","job":"clean","outputs":["clean/date=2024-01-01/station=S001"],"attempt":2,"delay_ms":1500}
{"seq":16,"time_ms":1700000000000,"build":5,"kind":"ActionJoined","key":"0707070707070707070707070707070707070707070707070707070707070707","job":"clean","outputs":["clean/date=2024-01-01/station=S001"],"joined_build":4}
{"seq":17,"time_ms":1700000000000,"build":5,"kind":"RemoteRefused","key":"0707070707070707070707070707070707070707070707070707070707070707","job":"clean","outputs":["clean/date=2024-01-01/station=S001"],"url":"s3://bucket/team","reason":"blob 0909 failed verification"}
{"seq":18,"time_ms":1700000000000,"build":5,"kind":"ActionUploaded","key":"0707070707070707070707070707070707070707070707070707070707070707","job":"clean","outputs":["clean/date=2024-01-01/station=S001"],"url":"http://127.0.0.1:8080/team","blobs":2,"bytes":4096,"created":true}
{"seq":19,"time_ms":1700000000000,"build":5,"kind":"ActionDispatched","key":"0707070707070707070707070707070707070707070707070707070707070707","job":"clean","outputs":["clean/date=2024-01-01/station=S001"],"attempt":2,"executor":"slurm","id":"4242"}
"#;

    #[test]
    fn one_line_of_every_kind_is_the_documented_object() {
        let lines = lines();
        let expected: Vec<&str> = EVERY_KIND.split_inclusive('\n').collect();
        assert_eq!(lines.len(), expected.len());
        for (line, expected) in lines.iter().zip(expected) {
            assert_eq!(line, expected);
            // Each line is one JSON object on its own.
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(value.is_object());
        }
    }
}
