//! key_completeness (docs/reliability.md, promises 2 and 6): property tests
//! of the action key. Changing any field that enters it (job, command,
//! arguments, the program run resolves to (path and content), config
//! environment, allow-listed environment, output refs,
//! output dataset identity, input refs and contents, and the order and
//! repeats of inputs and outputs, which the job sees by position) changes
//! the key, and so does moving a value from one field to the next; what must not enter it
//! (file mtimes, the host name, variables that are not allow-listed, secret
//! values) does not. Then the same end to end: touching every input, and a
//! different host name, secret and stray environment, rebuild nothing.
//!
//! The golden keys that pin the recipe across releases are in
//! engine/src/key.rs (`golden_key_is_stable`, ...).

mod common;

use std::time::{Duration, SystemTime};

use cairn_engine::PartitionRef;
use cairn_engine::config::JobConfig;
use cairn_engine::digest::{ActionKey, ContentDigest};
use cairn_engine::graph::EnvPolicy;
use cairn_engine::key::{KeyInputs, OutputIdentity, action_key};
use cairn_engine::observe::Observer;
use cairn_engine::ports::MemoryStatCache;
use cairn_engine::record::ProgramRecord;
use cairn_engine::runner::JobEnvironment;
use proptest::prelude::*;

/// Everything that enters a key, owned.
#[derive(Debug, Clone)]
struct Fields {
    job: String,
    run: Vec<String>,
    program: ProgramRecord,
    config: JobConfig,
    passed_env: Vec<(String, String)>,
    datasets: Vec<(String, OutputIdentity)>,
    inputs: Vec<(PartitionRef, ContentDigest)>,
}

impl Fields {
    fn key(&self) -> ActionKey {
        action_key(&KeyInputs {
            job: &self.job,
            run: &self.run,
            program: &self.program,
            config: &self.config,
            passed_env: &self.passed_env,
            output_datasets: &self.datasets,
            inputs: &self.inputs,
        })
    }
}

fn value() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}"
}

fn partition(dataset: &'static str) -> impl Strategy<Value = PartitionRef> {
    (value(), value()).prop_map(move |(date, station)| {
        PartitionRef::parse(&format!("{dataset}/date={date}/station={station}")).expect("ref")
    })
}

fn identity() -> impl Strategy<Value = OutputIdentity> {
    prop_oneof![
        (0u64..5).prop_map(OutputIdentity::Major),
        any::<[u8; 32]>().prop_map(|bytes| OutputIdentity::Code(Some(ContentDigest(bytes)))),
        Just(OutputIdentity::Code(None)),
    ]
}

fn fields() -> impl Strategy<Value = Fields> {
    (
        value(),
        prop::collection::vec(value(), 1..4),
        prop::collection::vec(value(), 0..4),
        prop::collection::btree_map("[A-Z]{1,4}", value(), 0..3),
        prop::collection::btree_map("[A-Z]{1,4}", value(), 0..3),
        prop::collection::vec(partition("out"), 1..3),
        identity(),
        (
            prop::collection::btree_map(partition("in"), any::<[u8; 32]>(), 0..4),
            value(),
            prop::option::of(any::<[u8; 32]>()),
        ),
    )
        .prop_map(
            |(job, run, args, env, passed, outputs, identity, (inputs, program, content))| {
                let mut outputs = outputs;
                outputs.sort();
                outputs.dedup();
                Fields {
                    job,
                    run,
                    program: ProgramRecord {
                        path: format!("/usr/bin/{program}"),
                        digest: content.map(ContentDigest),
                    },
                    config: JobConfig {
                        outputs: outputs.into(),
                        inputs: Default::default(),
                        args,
                        env,
                    },
                    passed_env: passed.into_iter().collect(),
                    datasets: vec![("out".to_owned(), identity)],
                    inputs: inputs
                        .into_iter()
                        .map(|(partition, bytes)| (partition, ContentDigest(bytes)))
                        .collect(),
                }
            },
        )
}

/// One change to one field of the key (`salt` makes it a real change).
fn mutate(fields: &mut Fields, which: u8, salt: &str) {
    let changed = |text: &str| format!("{text}{salt}");
    match which % 16 {
        0 => fields.job = changed(&fields.job),
        1 => fields.run[0] = changed(&fields.run[0]),
        2 => fields.run.push(salt.to_owned()),
        3 => fields.config.args.push(salt.to_owned()),
        4 => {
            let name = format!("Z{}", fields.config.env.len());
            fields.config.env.insert(name, salt.to_owned());
        }
        5 => {
            let name = format!("Z{}", fields.passed_env.len());
            fields.passed_env.push((name, salt.to_owned()));
        }
        6 => {
            let first = fields.config.outputs[0].clone();
            let text = format!("{}{salt}", first.as_str());
            fields.config.outputs[0] = PartitionRef::parse(&text).expect("ref");
        }
        7 => {
            fields.datasets[0].1 = match fields.datasets[0].1 {
                OutputIdentity::Major(major) => OutputIdentity::Major(major + 1),
                OutputIdentity::Code(Some(_)) => OutputIdentity::Code(None),
                OutputIdentity::Code(None) => {
                    OutputIdentity::Code(Some(ContentDigest::of(salt.as_bytes())))
                }
            };
        }
        8 => fields.inputs.push((
            PartitionRef::parse(&format!("zz/x={salt}")).expect("ref"),
            ContentDigest::of(salt.as_bytes()),
        )),
        9 => match fields.inputs.first_mut() {
            Some(input) => input.1 = ContentDigest::of(format!("{:?}{salt}", input.1).as_bytes()),
            None => fields.inputs.push((
                PartitionRef::parse("in/x=1").expect("ref"),
                ContentDigest::of(b""),
            )),
        },
        10 => match fields.inputs.first_mut() {
            Some(input) => {
                input.0 = PartitionRef::parse(&format!("{}{salt}", input.0.as_str())).expect("ref");
            }
            None => fields.inputs.push((
                PartitionRef::parse("in/x=2").expect("ref"),
                ContentDigest::of(b""),
            )),
        },
        // The job sees inputs and outputs by position: reordering or
        // repeating one is a change (issue 26).
        11 => {
            if fields.inputs.len() >= 2 {
                fields.inputs.swap(0, 1);
            } else if fields.config.outputs.len() >= 2 {
                fields.config.outputs.swap(0, 1);
            } else if let Some(first) = fields.inputs.first().cloned() {
                fields.inputs.push(first);
            } else {
                let mut outputs = fields.config.outputs.to_vec();
                outputs.push(outputs[0].clone());
                fields.config.outputs = outputs.into();
            }
        }
        // The program found: another path, or other content.
        13 => fields.program.path = changed(&fields.program.path),
        14 => {
            fields.program.digest = match fields.program.digest {
                Some(digest) => Some(ContentDigest::of(format!("{digest:?}{salt}").as_bytes())),
                None => Some(ContentDigest::of(salt.as_bytes())),
            };
        }
        // Moving a value across a field boundary is a change too.
        12 => match fields.config.args.first().cloned() {
            Some(first) => {
                fields.config.args.remove(0);
                fields.run.push(first);
            }
            None => fields.config.args.push(String::new()),
        },
        _ => {
            let name = "MOVED".to_owned();
            match fields.config.env.remove(&name) {
                Some(value) => fields.passed_env.push((name, value)),
                None => {
                    fields.config.env.insert(name, salt.to_owned());
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn key_completeness_every_field_changes_the_key(
        base in fields(),
        which in any::<u8>(),
        salt in "[a-z]{1,3}",
    ) {
        let mut changed = base.clone();
        mutate(&mut changed, which, &salt);
        prop_assert_ne!(base.key(), changed.key(), "change {} left the key as it was", which % 16);
        // The key is a function of its fields.
        prop_assert_eq!(base.key(), base.key());
    }

    #[test]
    fn key_completeness_hostname_and_stray_environment_do_not_enter_the_key(
        base in fields(),
        host in "[a-z]{1,12}",
        stray in prop::collection::btree_map("[A-Z_]{3,10}", value(), 0..6),
        secret in value(),
    ) {
        let policy = EnvPolicy {
            allow: vec!["TZ".to_owned()],
            secret: vec!["API_TOKEN".to_owned()],
        };
        let fixed = |name: &str| match name {
            "PATH" => Some("/usr/bin:/bin".to_owned()),
            "TZ" => Some("UTC".to_owned()),
            _ => None,
        };
        let clean = JobEnvironment::from_lookup(&policy, fixed);
        let noisy = JobEnvironment::from_lookup(&policy, |name| {
            fixed(name)
                .or_else(|| (name == "HOSTNAME").then(|| host.clone()))
                .or_else(|| (name == "API_TOKEN").then(|| secret.clone()))
                .or_else(|| {
                    stray
                        .get(name)
                        .filter(|_| !["PATH", "HOME", "LANG", "TZ"].contains(&name))
                        .cloned()
                })
        });
        prop_assert_eq!(&clean.passed, &noisy.passed);
        let mut with_clean = base.clone();
        with_clean.passed_env = clean.passed;
        let mut with_noisy = base;
        with_noisy.passed_env = noisy.passed;
        prop_assert_eq!(with_clean.key(), with_noisy.key());
    }

    #[test]
    fn key_completeness_mtimes_do_not_change_a_partition_digest(
        files in prop::collection::btree_map("[a-z]{1,8}", prop::collection::vec(any::<u8>(), 0..64), 1..5),
        ages in prop::collection::vec(0u64..100_000_000, 5),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, bytes) in &files {
            std::fs::write(dir.path().join(name), bytes).expect("write");
        }
        // An empty stat cache that records nothing: every file is hashed.
        let cache = MemoryStatCache::default();
        let observer = Observer::new(&cache);
        let digest = |updates: &mut Vec<_>| {
            observer.partition(dir.path(), updates).expect("observe").expect("exists").0
        };
        let before = digest(&mut Vec::new());
        for ((name, _), age) in files.iter().zip(&ages) {
            let file = std::fs::File::options().write(true).open(dir.path().join(name)).expect("open");
            file.set_modified(SystemTime::now() - Duration::from_secs(*age)).expect("set mtime");
        }
        prop_assert_eq!(before, digest(&mut Vec::new()));
    }
}

#[test]
fn key_completeness_touched_inputs_host_and_stray_environment_rebuild_nothing() {
    let p = common::Project::podcast(2, 2);
    let first = p.build(&[]);
    first.assert_code(0);
    first.assert_counts(10, 10, 0, 0, 0);
    // New mtimes on every input, job script and config file.
    let later = SystemTime::now() + Duration::from_secs(3600);
    for relative in [
        "inputs/2024-01-01/S001.txt",
        "inputs/2024-01-01/S002.txt",
        "inputs/2024-01-02/S001.txt",
        "inputs/2024-01-02/S002.txt",
        "jobs/clean.sh",
        "jobs/daily.sh",
    ] {
        std::fs::File::options()
            .write(true)
            .open(p.file(relative))
            .and_then(|file| file.set_modified(later))
            .expect("touch");
    }
    let output = std::process::Command::new(common::CAIRN)
        .args(["build", "--json"])
        .current_dir(p.path())
        .env("HOSTNAME", "another-machine.example")
        .env("CAIRN_STRAY_VARIABLE", "stray")
        .env("USER", "someone-else")
        .output()
        .expect("spawn cairn");
    let again = common::Build::new(common::Run {
        args: vec!["build".into(), "--json".into()],
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    });
    again.assert_code(0);
    again.assert_counts(10, 0, 10, 0, 0);
}
