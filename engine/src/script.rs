//! A plan compiled to a standalone POSIX shell script (`cairn plan
//! --format sh`, docs/cli.md): it runs the planned actions in dependency
//! order, at most `-j N` at a time, each with the argv, environment and
//! staging cairn gives it (docs/job-protocol.md), on a machine without
//! cairn and without a store.
//!
//! Everything the plan holds is written single-quoted; the only expansions
//! are the script's own variables (`$ROOT`, `$STAGE`, ...) and the
//! allow-listed and secret variables, which are read from the environment
//! the script runs in, as cairn reads them from its own: a secret's value
//! is never written into the script.

use std::fmt::Write as _;
use std::path::Path;

use crate::graph::{DEFAULT_ENV_ALLOW, Graph};
use crate::plan::{InputSource, Plan};

/// `text` as one shell word: single-quoted, each `'` written `'\''`.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Why a plan cannot be written as a script.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error("source {partition}: its file {path} is not under the project directory {root}")]
    SourceOutsideRoot {
        partition: String,
        path: String,
        root: String,
    },
}

/// The script that runs `plan` (every action of it) for `graph`.
pub fn shell_script(graph: &Graph, plan: &Plan) -> Result<String, ScriptError> {
    let mut out = String::new();
    let sources = source_paths(graph, plan)?;
    let (allowed, secret) = environment_names(graph);
    let levels = levels(plan);
    let level_count = levels.iter().copied().max().map_or(0, |top| top + 1);
    let requested: Vec<&str> = plan.requested.iter().map(|r| r.as_str()).collect();

    out.push_str("#!/bin/sh\n");
    let _ = writeln!(
        out,
        "# Written by `cairn plan --format sh` for {} requested ref(s): {} action(s)\n\
         # in {level_count} level(s). It runs without cairn or its store:",
        requested.len(),
        plan.actions.len()
    );
    out.push_str(HEADER);
    let _ = writeln!(
        out,
        "# Jobs get only these variables of the environment this script runs in:\n\
         #   {}",
        if allowed.is_empty() {
            "(none)".to_owned()
        } else {
            allowed.join(" ")
        }
    );
    if !secret.is_empty() {
        let _ = writeln!(
            out,
            "# and these secrets, read from that environment when a job starts (their\n\
             # values are not in this script: set them before running it):\n\
             #   {}",
            secret.join(" ")
        );
    }
    out.push_str(PRELUDE);

    for (index, action) in plan.actions.iter().enumerate() {
        let _ = writeln!(out, "\na_{index}() {{");
        let _ = writeln!(out, "    d=\"$STAGE\"/{index}");
        let mut dirs = String::new();
        for output in 0..action.config.outputs.len() {
            let _ = write!(dirs, " \"$d\"/out/{output}");
        }
        let _ = writeln!(out, "    rm -rf \"$d\" && mkdir -p{dirs} || return 1");
        for input in &action.inputs {
            if let InputSource::Source { source } = *input {
                let node = &plan.sources[source];
                let _ = writeln!(
                    out,
                    "    [ -e \"$ROOT\"/{path} ] || {{ say {message}; return 1; }}",
                    path = quote(&sources[source]),
                    message = quote(&format!(
                        "failed: source {} is missing: {} does not exist",
                        node.partition, sources[source]
                    )),
                );
            }
        }
        out.push_str("    env -i");
        for name in allowed.iter().chain(&secret) {
            let _ = write!(out, " ${{{name}+\"{name}=${name}\"}}");
        }
        out.push_str(" \\\n");
        for (name, value) in &action.config.env {
            let _ = writeln!(out, "        {} \\", quote(&format!("{name}={value}")));
        }
        for (output, partition) in action.config.outputs.iter().enumerate() {
            let _ = writeln!(
                out,
                "        \"CAIRN_OUTPUT_{output}=$d/out/{output}\" {} \\",
                quote(&format!("CAIRN_OUTPUT_REF_{output}={partition}"))
            );
        }
        let _ = writeln!(
            out,
            "        \"CAIRN_OUT=$d/out/0\" {} \\",
            quote(&format!(
                "CAIRN_OUTPUT_COUNT={}",
                action.config.outputs.len()
            ))
        );
        for (position, (input, dep)) in action.inputs.iter().zip(&action.config.inputs).enumerate()
        {
            let path = input_path(plan, &sources, *input);
            let _ = writeln!(
                out,
                "        \"CAIRN_INPUT_{position}=$ROOT\"/{} {} \\",
                quote(&path),
                quote(&format!("CAIRN_INPUT_REF_{position}={}", dep.partition))
            );
            if position == 0 {
                let _ = writeln!(out, "        \"CAIRN_IN=$ROOT\"/{} \\", quote(&path));
            }
        }
        let _ = writeln!(
            out,
            "        {} \"CAIRN_CHECKPOINT=$d/checkpoint.json\" \"CAIRN_RUN_ID=sh-$$-{index}\" \\",
            quote(&format!("CAIRN_INPUT_COUNT={}", action.inputs.len()))
        );
        let job = &graph.jobs[&*action.job];
        let argv: Vec<String> = job
            .run
            .iter()
            .chain(&action.config.args)
            .map(|arg| quote(arg))
            .collect();
        let _ = writeln!(
            out,
            "        {} </dev/null >\"$d\"/stdout 2>\"$d\"/stderr",
            argv.join(" ")
        );
        let outputs: Vec<&str> = action.config.outputs.iter().map(|p| p.as_str()).collect();
        let what = format!("job {} ({})", action.job, outputs.join(", "));
        let mut place = String::new();
        for (output, partition) in action.config.outputs.iter().enumerate() {
            let _ = write!(place, " {output} {}", quote(partition.as_str()));
        }
        let _ = writeln!(
            out,
            "    finish $? {}{place} && place {index}{place}",
            quote(&what)
        );
        out.push_str("}\n");
    }

    out.push_str(
        "\n# The actions, level by level: an action's inputs are built in earlier levels.\n",
    );
    let mut by_level: Vec<Vec<usize>> = vec![Vec::new(); level_count];
    for &index in &plan.order {
        by_level[levels[index]].push(index);
    }
    let upstreams = upstreams(plan);
    for (level, actions) in by_level.iter().enumerate() {
        let _ = writeln!(out, "# level {level}");
        for &index in actions {
            let outputs: Vec<&str> = plan.actions[index]
                .config
                .outputs
                .iter()
                .map(|p| p.as_str())
                .collect();
            let mut line = format!(
                "start {index} {}",
                quote(&format!(
                    "job {} ({})",
                    plan.actions[index].job,
                    outputs.join(", ")
                ))
            );
            for upstream in &upstreams[index] {
                let _ = write!(line, " {upstream}");
            }
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str("drain\n");
    }
    out.push_str(EPILOGUE);
    Ok(out)
}

const HEADER: &str = r#"#
#   sh SCRIPT [-j N] [-C DIR]
#
# DIR (default: the current directory) is the project directory, the one
# that holds cairn.toml; jobs run there. -j N runs at most N jobs at once
# (default 1). Every planned action runs: the script keeps no state and
# records nothing. Each job stages its outputs in DIR/data/.cairn-tmp/sh/
# ACTION/out/I (CAIRN_OUTPUT_I), as cairn does under .cairn-tmp/run/KEY; a
# job that exits 0 with at least one file in every output directory has
# them moved to DIR/data/REF (replacing what was there). A job that fails
# keeps its stdout and stderr in its staging directory; what depends on it
# is skipped; the script exits 1.
"#;

const PRELUDE: &str = r#"
set -u
jobs=1
root=.
while getopts 'j:C:' opt; do
    case $opt in
        j) jobs=$OPTARG ;;
        C) root=$OPTARG ;;
        *) echo "usage: $0 [-j N] [-C DIR]" >&2; exit 2 ;;
    esac
done
case $jobs in
    '' | *[!0-9]* | 0) echo "$0: -j needs a positive number, got '$jobs'" >&2; exit 2 ;;
esac
ROOT=$(cd "$root" && pwd -P) || exit 2
cd "$ROOT" || exit 2
STAGE=$ROOT/data/.cairn-tmp/sh
executed=0 failed=0 skipped=0 running=0 pids=

say() { printf '%s\n' "$1" >&2; }

# finish STATUS WHAT [OUTPUT REF]...: the job's exit status, then each
# output's index and ref. On success (status 0 and a file in every output
# directory) moves the outputs into place.
finish() {
    status=$1 what=$2
    shift 2
    if [ "$status" -ne 0 ]; then
        say "failed: $what exited with status $status (stderr: $d/stderr)"
        tail -n 5 "$d"/stderr >&2
        return 1
    fi
    while [ $# -gt 0 ]; do
        if [ -z "$(find "$d/out/$1" -type f | head -n 1)" ]; then
            say "failed: $what wrote no file to output $1 ($2)"
            return 1
        fi
        shift 2
    done
    return 0
}

# place ACTION [OUTPUT REF]...: moves staged outputs to data/REF.
place() {
    a=$1
    shift
    while [ $# -gt 0 ]; do
        dest=$ROOT/data/$2
        rm -rf "$dest" && mkdir -p "${dest%/*}" && mv "$STAGE/$a/out/$1" "$dest" || return 1
        shift 2
    done
    rm -rf "${STAGE:?}/$a"
}

# start ACTION WHAT [UPSTREAM]...: runs action ACTION in the background
# unless an upstream failed; at most $jobs at once.
start() {
    n=$1 what=$2
    shift 2
    for u in "$@"; do
        if eval "[ -n \"\${bad_$u:-}\" ]"; then
            eval "bad_$n=1"
            skipped=$((skipped + 1))
            say "skipped: $what (an input failed)"
            return 0
        fi
    done
    "a_$n" &
    pids="$pids $!:$n"
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then drain; fi
}

# drain: waits for every running action.
drain() {
    for p in $pids; do
        if wait "${p%%:*}"; then
            executed=$((executed + 1))
        else
            eval "bad_${p#*:}=1"
            failed=$((failed + 1))
        fi
    done
    pids= running=0
}
"#;

const EPILOGUE: &str = r#"
rmdir "$STAGE" "$ROOT/data/.cairn-tmp" 2>/dev/null
say "$executed executed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$skipped" -eq 0 ]
"#;

/// Each action's level: 0 without an upstream action, else one more than
/// its deepest upstream's.
fn levels(plan: &Plan) -> Vec<usize> {
    let mut levels = vec![0usize; plan.actions.len()];
    for &index in &plan.order {
        let level = plan.actions[index]
            .inputs
            .iter()
            .filter_map(|input| match *input {
                InputSource::Action { action, .. } => Some(levels[action] + 1),
                InputSource::Source { .. } => None,
            })
            .max()
            .unwrap_or(0);
        levels[index] = level;
    }
    levels
}

/// Each action's distinct upstream actions, in index order.
fn upstreams(plan: &Plan) -> Vec<Vec<usize>> {
    plan.actions
        .iter()
        .map(|action| {
            let mut upstream: Vec<usize> = action
                .inputs
                .iter()
                .filter_map(|input| match *input {
                    InputSource::Action { action, .. } => Some(action),
                    InputSource::Source { .. } => None,
                })
                .collect();
            upstream.sort_unstable();
            upstream.dedup();
            upstream
        })
        .collect()
}

/// Each source's file, relative to the project directory.
fn source_paths(graph: &Graph, plan: &Plan) -> Result<Vec<String>, ScriptError> {
    plan.sources
        .iter()
        .map(|source| {
            let relative = source
                .path
                .strip_prefix(&graph.root)
                .ok()
                .filter(|relative| {
                    relative
                        .components()
                        .all(|component| matches!(component, std::path::Component::Normal(_)))
                });
            match relative {
                Some(relative) => Ok(relative.to_string_lossy().into_owned()),
                None => Err(ScriptError::SourceOutsideRoot {
                    partition: source.partition.to_string(),
                    path: source.path.display().to_string(),
                    root: graph.root.display().to_string(),
                }),
            }
        })
        .collect()
}

/// An input's path relative to the project directory.
fn input_path(plan: &Plan, sources: &[String], input: InputSource) -> String {
    match input {
        InputSource::Source { source } => sources[source].clone(),
        InputSource::Action { action, output } => Path::new("data")
            .join(plan.actions[action].config.outputs[output].relative_path())
            .to_string_lossy()
            .into_owned(),
    }
}

/// The allow-listed and the secret variable names, as
/// [`crate::job::JobEnvironment`] picks them.
fn environment_names(graph: &Graph) -> (Vec<String>, Vec<String>) {
    let policy = &graph.env;
    let mut allowed: Vec<String> = Vec::new();
    for name in DEFAULT_ENV_ALLOW
        .iter()
        .copied()
        .chain(policy.allow.iter().map(String::as_str))
    {
        if policy.secret.iter().any(|secret| secret == name)
            || allowed.iter().any(|known| known == name)
        {
            continue;
        }
        allowed.push(name.to_owned());
    }
    allowed.sort();
    let mut secret = policy.secret.clone();
    secret.sort();
    secret.dedup();
    (allowed, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        for text in [
            "plain",
            "a b",
            "it's",
            "$HOME `id` \"q\" \\ *",
            "",
            "'",
            "\n",
        ] {
            let output = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(text)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(output.stdout).unwrap(), text);
        }
    }
}
