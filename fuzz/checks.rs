//! The properties the fuzz targets check, shared with the normal test suite
//! (tests/reliability_fuzz.rs runs them over every regression input in
//! `fuzz/regressions/` and over a few thousand mutated seeds), so that a
//! crash found by `cargo fuzz` stays fixed without cargo-fuzz in CI.
//!
//! Each function takes arbitrary bytes and panics only if cairn misbehaves:
//! a panic inside cairn, or an answer that breaks the stated property.

use std::path::{Component, Path};
use std::sync::LazyLock;

use cairn_engine::backfill::Backfill;
use cairn_engine::config::parse_configure_output;
use cairn_engine::graph::Graph;
use cairn_engine::refs::quoted;
use cairn_engine::{PartitionRef, Pattern};
use cairn_store::{decode_event, encode_event};

/// `PartitionRef::parse`: whatever it accepts is canonical and names a path
/// strictly inside any root; every refusal names the text (its first 64
/// characters when longer).
pub fn ref_parser(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match PartitionRef::parse(text) {
        Ok(partition) => {
            assert_eq!(partition.as_str(), text);
            let path = partition.relative_path();
            assert!(path.is_relative(), "{text:?}");
            assert!(
                path.components().all(|c| matches!(c, Component::Normal(_))),
                "{text:?} has a component that is not a plain name"
            );
            assert!(!text.contains(['\0', '%', '\\']), "{text:?}");
            let dims: Vec<(&str, &str)> = partition.dimensions().collect();
            assert_eq!(dims.len(), text.split('/').count() - 1);
            let rebuilt = PartitionRef::from_parts(partition.dataset(), dims).expect("from_parts");
            assert_eq!(rebuilt, partition);
        }
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("invalid partition ref {}: ", quoted(text))),
                "{message}"
            );
        }
    }
}

/// `Pattern::parse` and `Pattern::matches` (first line: a pattern; second: a
/// ref): a match substitutes back to the same ref.
pub fn pattern_matcher(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern_text, ref_text) = text.split_once('\n').unwrap_or((text, ""));
    let pattern = match Pattern::parse(pattern_text) {
        Ok(pattern) => pattern,
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("invalid pattern {}: ", quoted(pattern_text))),
                "{message}"
            );
            return;
        }
    };
    assert_eq!(pattern.as_str(), pattern_text);
    if pattern.is_concrete() {
        let concrete = PartitionRef::parse(pattern_text).expect("a concrete pattern is a ref");
        assert!(pattern.matches(&concrete).is_some());
    }
    let Ok(partition) = PartitionRef::parse(ref_text) else {
        return;
    };
    if let Some(bindings) = pattern.matches(&partition) {
        let substituted = pattern.substitute(&bindings).expect("substitute a match");
        assert_eq!(substituted, partition);
    }
}

/// `Graph::parse`: every error names the graph file.
pub fn graph_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Graph::parse(text, Path::new("cairn.toml"), Path::new("/nonexistent")) {
        let message = error.to_string();
        assert!(message.starts_with("cairn.toml"), "{message}");
    }
}

/// `parse_configure_output` (a configure step's stdout): errors name the
/// job; accepted refs are valid and no env name is reserved.
pub fn job_config(data: &[u8]) {
    match parse_configure_output("fuzzed", data) {
        Ok(configs) => {
            for config in configs {
                assert!(!config.outputs.is_empty());
                for output in &config.outputs {
                    assert_eq!(PartitionRef::parse(output.as_str()).as_ref(), Ok(output));
                }
                for name in config.env.keys() {
                    assert!(!name.starts_with("CAIRN_"), "{name}");
                }
            }
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.starts_with("job fuzzed: "), "{message}");
        }
    }
}

const BACKFILL_GRAPH: &str = r#"
[datasets.inputs]
source = "inputs/{date}/{station}.txt"
[datasets.clean]
version = "1.0.0"
[datasets.daily]
[dimensions.date]
start = "2024-01-01"
end = "2024-01-31"
[dimensions.station]
values = ["S001", "S002", "S003"]
[jobs.clean]
outputs = ["clean/date={date}/station={station}"]
inputs = ["inputs/date={date}/station={station}"]
run = ["true"]
[jobs.daily]
outputs = ["daily/date={date}"]
configure = ["true"]
run = ["true"]
"#;

static GRAPH: LazyLock<Graph> = LazyLock::new(|| {
    Graph::parse(
        BACKFILL_GRAPH,
        Path::new("cairn.toml"),
        Path::new("/nonexistent"),
    )
    .expect("the backfill fuzz graph")
});

/// `Backfill::parse` against a fixed graph: every error names the config
/// file; every ref it expands to matches its target.
pub fn backfill_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Backfill::parse(text, Path::new("backfill.toml"), &GRAPH) {
        Ok(backfill) => {
            for entry in &backfill.entries {
                for partition in &entry.refs {
                    assert!(entry.target.matches(partition).is_some(), "{partition}");
                }
            }
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.starts_with("backfill.toml"), "{message}");
        }
    }
}

/// `decode_event` (a torn or bit-flipped catalog record): whatever decodes
/// re-encodes to a record that decodes to the same event.
pub fn event_decoder(data: &[u8]) {
    if let Ok(event) = decode_event(data) {
        let again = decode_event(&encode_event(&event)).expect("re-decode");
        assert_eq!(again, event);
    }
}
