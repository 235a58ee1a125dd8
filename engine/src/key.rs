//! The action key (docs/internals.md, "Action keys"): a blake3 Merkle hash over everything that
//! determines an action's outputs, and nothing else (no mtimes, no host name,
//! no environment outside the allow-list, no secret, and no `PATH` unless
//! `[env] allow` lists it: the program it finds enters instead).

use crate::digest::{ActionKey, ContentDigest, KeyHasher};
use crate::plan::config::JobConfig;
use crate::record::ProgramRecord;
use crate::refs::PartitionRef;

/// Bump whenever the fields or their order below change: every key changes
/// with it, so no old result is reused under a new meaning.
///
/// - v1: output refs and inputs entered sorted by ref (and inputs deduped).
/// - v2: output refs and inputs enter in the order the job sees them
///   (`CAIRN_OUTPUT_<i>`, `CAIRN_INPUT_<i>`), a repeated one as many times as
///   it is passed: reordering them changes what the job observes, so it
///   changes the key (issue 26).
/// - v3: the program `run[0]` resolves to (its path and, outside the
///   project, its content digest) enters after the run argv; `PATH` enters
///   `passed_env` only when `[env] allow` lists it (issue 26, section 4).
pub const ACTION_RECIPE: &str = "cairn/action/v3";

/// What stands for an output dataset's "code" in the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputIdentity {
    /// A versioned dataset: only its semver major invalidates.
    Major(u64),
    /// An unversioned dataset: any change of the job's code digest invalidates.
    Code(Option<ContentDigest>),
}

/// Everything that enters an action key.
pub struct KeyInputs<'a> {
    pub job: &'a str,
    pub run: &'a [String],
    /// What `run[0]` resolves to (engine/src/program.rs).
    pub program: &'a ProgramRecord,
    pub config: &'a JobConfig,
    /// Allow-listed variables passed through from cairn's environment (no
    /// secrets; `PATH` only if `[env] allow` lists it), sorted by name.
    pub passed_env: &'a [(String, String)],
    /// One entry per distinct output dataset, sorted by dataset name.
    pub output_datasets: &'a [(String, OutputIdentity)],
    /// Input refs with their content digests, in the config's order (the
    /// job's `CAIRN_INPUT_<i>`), repeats kept.
    pub inputs: &'a [(PartitionRef, ContentDigest)],
}

pub fn action_key(inputs: &KeyInputs<'_>) -> ActionKey {
    let mut hasher = KeyHasher::new(ACTION_RECIPE);
    hasher.str("job", inputs.job);
    hasher.u64("run", inputs.run.len() as u64);
    for arg in inputs.run {
        hasher.str("run.arg", arg);
    }
    hasher.str("program.path", &inputs.program.path);
    match &inputs.program.digest {
        Some(digest) => hasher.digest("program.content", digest),
        None => hasher.str("program.content", "none"),
    };
    hasher.u64("args", inputs.config.args.len() as u64);
    for arg in &inputs.config.args {
        hasher.str("arg", arg);
    }
    // config.env is a BTreeMap: already sorted.
    hasher.u64("env", inputs.config.env.len() as u64);
    for (name, value) in &inputs.config.env {
        hasher.str("env.name", name).str("env.value", value);
    }
    hasher.u64("passed_env", inputs.passed_env.len() as u64);
    for (name, value) in inputs.passed_env {
        hasher
            .str("passed_env.name", name)
            .str("passed_env.value", value);
    }
    // Output refs, in the config's order (the job's `CAIRN_OUTPUT_<i>`): two
    // configs of one job that differ only in what they produce, or in which
    // output directory each partition is written from, must not share a key.
    hasher.u64("outputs", inputs.config.outputs.len() as u64);
    for output in &inputs.config.outputs {
        hasher.str("output", output.as_str());
    }
    hasher.u64("datasets", inputs.output_datasets.len() as u64);
    for (dataset, identity) in inputs.output_datasets {
        hasher.str("dataset", dataset);
        match identity {
            OutputIdentity::Major(major) => {
                hasher.u64("major", *major);
            }
            OutputIdentity::Code(Some(code)) => {
                hasher.digest("code", code);
            }
            OutputIdentity::Code(None) => {
                hasher.str("code", "none");
            }
        }
    }
    hasher.u64("inputs", inputs.inputs.len() as u64);
    for (partition, digest) in inputs.inputs {
        hasher
            .str("input", partition.as_str())
            .digest("input.content", digest);
    }
    ActionKey(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config() -> JobConfig {
        JobConfig {
            outputs: vec![PartitionRef::parse("clean/date=2024-01-01/station=A").unwrap()].into(),
            inputs: Default::default(),
            args: vec!["A".into()],
            env: BTreeMap::from([("MODE".into(), "fast".into())]),
        }
    }

    fn key_with(
        edit: impl FnOnce(
            &mut JobConfig,
            &mut Vec<(String, String)>,
            &mut Vec<(String, OutputIdentity)>,
            &mut Vec<(PartitionRef, ContentDigest)>,
            &mut Vec<String>,
        ),
    ) -> ActionKey {
        let mut config = config();
        let mut env = vec![("LANG".to_owned(), "C".to_owned())];
        let mut datasets = vec![("clean".to_owned(), OutputIdentity::Major(1))];
        let mut inputs = vec![(
            PartitionRef::parse("raw/date=2024-01-01/station=A").unwrap(),
            ContentDigest::of(b"raw"),
        )];
        let mut run = vec!["sh".to_owned(), "clean.sh".to_owned()];
        edit(&mut config, &mut env, &mut datasets, &mut inputs, &mut run);
        let program = ProgramRecord {
            path: format!("/usr/bin/{}", run[0]),
            digest: Some(ContentDigest::of(run[0].as_bytes())),
        };
        action_key(&KeyInputs {
            job: "clean",
            run: &run,
            program: &program,
            config: &config,
            passed_env: &env,
            output_datasets: &datasets,
            inputs: &inputs,
        })
    }

    #[test]
    fn golden_key_is_stable() {
        // If this fails, the recipe changed: bump ACTION_RECIPE on purpose and
        // update the golden value, never the other way round.
        assert_eq!(
            key_with(|_, _, _, _, _| {}).to_hex(),
            "538483def361be35805b87590c892ad1fef363e9ffffa47f83b61870b8978116"
        );
    }

    #[test]
    fn golden_keys_of_unversioned_and_input_less_actions() {
        let unversioned = key_with(|_, _, datasets, _, _| {
            datasets[0].1 = OutputIdentity::Code(Some(ContentDigest::of(b"clean.sh v1")));
        });
        let no_inputs = key_with(|config, env, _, inputs, _| {
            inputs.clear();
            env.clear();
            config.env.clear();
        });
        assert_eq!(
            unversioned.to_hex(),
            "ef8e88854559bf35eb1110a1243e732aebc37a29e3f502cdbb94644cc13e63aa"
        );
        assert_eq!(
            no_inputs.to_hex(),
            "d05c421583615cef3ccb519d21580e3b3684f8411e56963f323b22089d579fa2"
        );
    }

    #[test]
    fn every_field_changes_the_key() {
        let base = key_with(|_, _, _, _, _| {});
        assert_ne!(base, key_with(|c, _, _, _, _| c.args[0] = "B".into()));
        assert_ne!(
            base,
            key_with(|c, _, _, _, _| {
                c.env.insert("MODE".into(), "slow".into());
            })
        );
        assert_ne!(
            base,
            key_with(|c, _, _, _, _| c.outputs[0] =
                PartitionRef::parse("clean/date=2024-01-01/station=B").unwrap())
        );
        assert_ne!(base, key_with(|_, e, _, _, _| e[0].1 = "C.UTF-8".into()));
        // The program's path and content (the test's program is named by
        // run[0]: /usr/bin/<run[0]>, its content the name).
        assert_ne!(base, key_with(|_, _, _, _, r| r[0] = "bash".into()));
        assert_ne!(
            base,
            key_with(|_, _, d, _, _| d[0].1 = OutputIdentity::Major(2))
        );
        assert_ne!(
            base,
            key_with(|_, _, d, _, _| d[0].1 = OutputIdentity::Code(None))
        );
        assert_ne!(
            base,
            key_with(|_, _, _, i, _| i[0].1 = ContentDigest::of(b"other"))
        );
        assert_ne!(
            base,
            key_with(|_, _, _, i, _| i[0].0 =
                PartitionRef::parse("raw/date=2024-01-02/station=A").unwrap())
        );
        assert_ne!(base, key_with(|_, _, _, _, r| r[1] = "clean2.sh".into()));
        assert_eq!(base, key_with(|_, _, _, _, _| {}));
    }

    #[test]
    fn the_program_enters_by_path_and_content() {
        let config = config();
        let run = vec!["sh".to_owned()];
        let key = |program: &ProgramRecord| {
            action_key(&KeyInputs {
                job: "clean",
                run: &run,
                program,
                config: &config,
                passed_env: &[],
                output_datasets: &[],
                inputs: &[],
            })
        };
        let base = ProgramRecord {
            path: "/usr/bin/sh".into(),
            digest: Some(ContentDigest::of(b"dash")),
        };
        let moved = ProgramRecord {
            path: "/bin/sh".into(),
            digest: base.digest,
        };
        let replaced = ProgramRecord {
            path: base.path.clone(),
            digest: Some(ContentDigest::of(b"bash")),
        };
        let in_project = ProgramRecord {
            path: base.path.clone(),
            digest: None,
        };
        for other in [moved, replaced, in_project] {
            assert_ne!(key(&base), key(&other), "{other:?}");
        }
        assert_eq!(key(&base), key(&base.clone()));
    }

    /// The job sees inputs and outputs by position (`CAIRN_INPUT_<i>`,
    /// `CAIRN_OUTPUT_<i>`): their order and repeats are in the key (v2).
    #[test]
    fn the_order_and_repeats_of_inputs_and_outputs_change_the_key() {
        let second_input = |i: &mut Vec<(PartitionRef, ContentDigest)>| {
            i.push((
                PartitionRef::parse("raw/date=2024-01-02/station=A").unwrap(),
                ContentDigest::of(b"raw 2"),
            ));
        };
        let two_inputs = key_with(|_, _, _, i, _| second_input(i));
        let reversed = key_with(|_, _, _, i, _| {
            second_input(i);
            i.reverse();
        });
        assert_ne!(two_inputs, reversed);
        let repeated = key_with(|_, _, _, i, _| {
            let first = i[0].clone();
            i.push(first);
        });
        assert_ne!(key_with(|_, _, _, _, _| {}), repeated);
        let second_output = |c: &mut JobConfig| {
            let mut outputs = c.outputs.to_vec();
            outputs.push(PartitionRef::parse("flags/date=2024-01-01/station=A").unwrap());
            c.outputs = outputs.into();
        };
        let two_outputs = key_with(|c, _, _, _, _| second_output(c));
        let swapped = key_with(|c, _, _, _, _| {
            second_output(c);
            c.outputs.reverse();
        });
        assert_ne!(two_outputs, swapped);
    }
}
