//! A job's code: the files its `code` entries name (paths or globs,
//! relative to the graph file), which enter its code digest
//! (`exec::code_digests`) and its configure cache key.

use crate::graph::{Graph, Job};

/// Expands `job`'s `code` entries (paths or globs, relative to the graph
/// file, never leaving it: checked at parse) to relative file paths. An
/// entry that matches nothing is an error naming its line
/// (`cairn.toml:31: jobs.clean.code: "jobs/clean.py" is not a file`).
pub fn code_files(graph: &Graph, job: &Job) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (index, pattern) in job.code.iter().enumerate() {
        let at = job
            .code_at
            .get(index)
            .map_or_else(|| graph.file.display().to_string(), Clone::clone);
        let name = &job.name;
        if !pattern.contains(['*', '?', '[', '{']) {
            let path = graph.root.join(pattern);
            if !path.is_file() {
                let why = match std::fs::metadata(&path) {
                    Ok(metadata) => format!("is {}", crate::limits::file_kind(&metadata)),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        "does not exist".to_owned()
                    }
                    Err(error) => format!("cannot be read ({error})"),
                };
                return Err(format!(
                    "{at}: jobs.{name}.code: {pattern:?} is not a file: {} {why}",
                    path.display()
                ));
            }
            out.push(pattern.clone());
            continue;
        }
        let matcher = globset::Glob::new(pattern)
            .map_err(|error| format!("{at}: jobs.{name}.code: {pattern:?}: {error}"))?
            .compile_matcher();
        // Walk only below the literal prefix of the glob, never the data.
        let prefix: Vec<&str> = pattern
            .split('/')
            .take_while(|part| !part.contains(['*', '?', '[', '{']))
            .collect();
        let base = prefix.join("/");
        let mut found = Vec::new();
        collect_matches(&graph.root, &base, &matcher, &mut found);
        if found.is_empty() {
            return Err(format!(
                "{at}: jobs.{name}.code: {pattern:?} matches no file"
            ));
        }
        out.extend(found);
    }
    Ok(out)
}

fn collect_matches(
    root: &std::path::Path,
    relative: &str,
    matcher: &globset::GlobMatcher,
    out: &mut Vec<String>,
) {
    let directory = if relative.is_empty() {
        root.to_owned()
    } else {
        root.join(relative)
    };
    let Ok(entries) = std::fs::read_dir(&directory) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if relative.is_empty() && (name == "data" || name == ".cairn" || name == ".git") {
            continue;
        }
        let path = if relative.is_empty() {
            name
        } else {
            format!("{relative}/{name}")
        };
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => collect_matches(root, &path, matcher, out),
            Ok(kind) if kind.is_file() && matcher.is_match(&path) => out.push(path),
            _ => {}
        }
    }
}
