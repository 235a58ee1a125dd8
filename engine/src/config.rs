//! Job configs: what a job's configure step returns for requested outputs
//! (design.md §4), parsed from JSON for executable jobs or templated in-process
//! for declarative ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::graph::Job;
use crate::refs::{Bindings, PartitionRef, substitute_text};

/// How a job uses an input. Both kinds enter the action key by content;
/// `query` documents that the job reads the input without needing it
/// materialized (cairn materializes it anyway today).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DepKind {
    #[default]
    Materialize,
    Query,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DataDep {
    #[serde(rename = "ref")]
    pub partition: PartitionRef,
    pub dep: DepKind,
}

/// One parameterization of a job: the unit that becomes an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobConfig {
    pub outputs: Vec<PartitionRef>,
    pub inputs: Vec<DataDep>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// Why a configure step's answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {job}: configure {problem}")]
pub struct ConfigureError {
    pub job: String,
    pub problem: String,
}

/// Templates a declarative job's config for one output ref. `bindings` come
/// from matching the ref against one of the job's output patterns.
pub fn declarative_config(job: &Job, bindings: &Bindings) -> Result<JobConfig, ConfigureError> {
    let fail = |problem: String| ConfigureError {
        job: job.name.clone(),
        problem,
    };
    let substitute_all =
        |patterns: &[crate::refs::Pattern]| -> Result<Vec<PartitionRef>, ConfigureError> {
            patterns
                .iter()
                .map(|pattern| {
                    pattern
                        .substitute(bindings)
                        .map_err(|error| fail(error.to_string()))
                })
                .collect()
        };
    let outputs = substitute_all(&job.outputs)?;
    let inputs = substitute_all(&job.inputs)?
        .into_iter()
        .map(|partition| DataDep {
            partition,
            dep: DepKind::Materialize,
        })
        .collect();
    let args = job
        .args
        .iter()
        .map(|arg| substitute_text(arg, bindings).map_err(&fail))
        .collect::<Result<_, _>>()?;
    let env = job
        .env
        .iter()
        .map(|(name, value)| {
            Ok((
                name.clone(),
                substitute_text(value, bindings).map_err(&fail)?,
            ))
        })
        .collect::<Result<_, ConfigureError>>()?;
    Ok(JobConfig {
        outputs,
        inputs,
        args,
        env,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    configs: Vec<RawConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    outputs: Vec<String>,
    #[serde(default)]
    inputs: Vec<RawDep>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDep {
    Ref(String),
    Full {
        #[serde(rename = "ref")]
        partition: String,
        #[serde(default)]
        dep: DepKind,
    },
}

/// Environment variable names a config may set: not cairn's own protocol
/// variables, and shell-safe names.
fn check_env_name(name: &str) -> Result<(), String> {
    if name.starts_with("CAIRN_") {
        return Err(format!("env {name:?}: CAIRN_ variables are reserved"));
    }
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!("env {name:?} is not a valid variable name"))
    }
}

/// Parses what an executable job's configure printed on stdout.
pub fn parse_configure_output(job: &str, stdout: &[u8]) -> Result<Vec<JobConfig>, ConfigureError> {
    let fail = |problem: String| ConfigureError {
        job: job.to_owned(),
        problem,
    };
    let response: RawResponse = serde_json::from_slice(stdout).map_err(|error| {
        fail(format!(
            "printed invalid JSON (line {}, column {}): {error}; expected {{\"configs\":[{{\"outputs\":[...],\"inputs\":[...],\"args\":[...],\"env\":{{}}}}]}}",
            error.line(),
            error.column()
        ))
    })?;
    let mut configs = Vec::with_capacity(response.configs.len());
    for (index, raw) in response.configs.into_iter().enumerate() {
        let parse = |text: &str, field: &str| {
            PartitionRef::parse(text)
                .map_err(|error| fail(format!("configs[{index}].{field}: {error}")))
        };
        if raw.outputs.is_empty() {
            return Err(fail(format!("configs[{index}].outputs is empty")));
        }
        let outputs = raw
            .outputs
            .iter()
            .map(|text| parse(text, "outputs"))
            .collect::<Result<Vec<_>, _>>()?;
        let inputs = raw
            .inputs
            .iter()
            .map(|dep| match dep {
                RawDep::Ref(text) => Ok(DataDep {
                    partition: parse(text, "inputs")?,
                    dep: DepKind::Materialize,
                }),
                RawDep::Full { partition, dep } => Ok(DataDep {
                    partition: parse(partition, "inputs")?,
                    dep: *dep,
                }),
            })
            .collect::<Result<Vec<_>, ConfigureError>>()?;
        for name in raw.env.keys() {
            check_env_name(name).map_err(|problem| fail(format!("configs[{index}].{problem}")))?;
        }
        configs.push(JobConfig {
            outputs,
            inputs,
            args: raw.args,
            env: raw.env,
        });
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strings_and_objects_as_inputs() {
        let json = br#"{"configs":[{"outputs":["daily/date=1"],"inputs":["clean/date=1/s=a",{"ref":"clean/date=1/s=b","dep":"query"}],"args":["1"],"env":{"MODE":"fast"}}]}"#;
        let configs = parse_configure_output("daily", json).unwrap();
        assert_eq!(configs.len(), 1);
        assert_eq!(configs[0].inputs[1].dep, DepKind::Query);
        assert_eq!(configs[0].env["MODE"], "fast");
    }

    #[test]
    fn bad_output_names_job_field_and_ref() {
        let json = br#"{"configs":[{"outputs":["../../etc"]}]}"#;
        let error = parse_configure_output("daily", json)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            r#"job daily: configure configs[0].outputs: invalid partition ref "../../etc": segment ".." is not allowed"#
        );
    }

    #[test]
    fn invalid_json_names_position() {
        let error = parse_configure_output("daily", b"{\"configs\": [")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("job daily: configure printed invalid JSON (line 1"),
            "{error}"
        );
        let error =
            parse_configure_output("daily", br#"{"configs":[{"outputs":["a"],"extra":1}]}"#)
                .unwrap_err()
                .to_string();
        assert!(error.contains("extra"), "{error}");
    }

    #[test]
    fn reserved_env_is_refused() {
        let json = br#"{"configs":[{"outputs":["a"],"env":{"CAIRN_OUT":"/etc"}}]}"#;
        let error = parse_configure_output("j", json).unwrap_err().to_string();
        assert!(error.contains("reserved"), "{error}");
    }
}
