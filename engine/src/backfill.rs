//! Backfill configs (design.md §8): a checked-in TOML file naming a target
//! pattern, a reason, and a domain for each placeholder, validated against
//! the graph and expanded (cartesian product) into the refs to build.
//!
//! ```toml
//! target = "daily/date={date}/station={station}"
//! reason = "#1234 recompute after the calibration fix"
//! [dimensions.date]
//! start = "2024-01-01"   # inclusive, step_days optional
//! end   = "2024-01-31"
//! [dimensions.station]
//! from = "stations"      # or: values = ["NL01497", "NL01912"]
//! ```
//!
//! or several `[[backfill]]` tables with the same keys (a top-level `reason`
//! then applies to the tables without one).
//!
//! Everything is checked before anything runs, and every error names the
//! file, line and field, like graph errors ([`GraphError`]). Parsing is pure:
//! `from` dimensions read the source values the caller put in the graph
//! ([`Graph::set_source_values`]).

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::date::Date;
use crate::defs::check_value;
use crate::digest::ContentDigest;
use crate::graph::{Graph, GraphError, Producer};
use crate::refs::{Bindings, PartitionRef, Pattern, PatternValue};

/// A validated backfill config.
#[derive(Debug, Clone)]
pub struct Backfill {
    /// The config file, as given.
    pub file: PathBuf,
    /// blake3 of the config file's bytes.
    pub digest: ContentDigest,
    pub entries: Vec<Entry>,
}

/// One target of a config, expanded.
#[derive(Debug, Clone)]
pub struct Entry {
    pub target: Pattern,
    pub reason: String,
    /// `(placeholder, number of values)` in the target's order.
    pub dimensions: Vec<(String, usize)>,
    /// The cartesian product, last placeholder fastest.
    pub refs: Vec<PartitionRef>,
}

impl Backfill {
    /// Reads and validates the config at `file` against `graph`.
    pub fn load(file: &Path, graph: &Graph) -> Result<Backfill, GraphError> {
        // Bounded, and never a FIFO or a device such as /dev/zero, without
        // blocking on one (docs/reliability.md, "Limits").
        let bytes = crate::limits::read_regular_file(
            file,
            "the backfill config",
            &crate::limits::BACKFILL_CONFIG_BYTES,
        )
        .map_err(|message| GraphError {
            file: file.to_owned(),
            line: None,
            field: String::new(),
            message,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| GraphError {
            file: file.to_owned(),
            line: None,
            field: String::new(),
            message: "the backfill config is not UTF-8".into(),
        })?;
        Backfill::parse(&text, file, graph)
    }

    /// Parses config `text` (named `file` in errors) against `graph`.
    pub fn parse(text: &str, file: &Path, graph: &Graph) -> Result<Backfill, GraphError> {
        let context = Context { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|error| context.toml(&error))?;
        let top_reason = raw.reason.as_ref();
        let mut entries = Vec::new();
        match &raw.backfill {
            Some(tables) => {
                if let Some(target) = &raw.target {
                    return Err(context.error(
                        target.span(),
                        "target".into(),
                        "use either a top-level `target` or `[[backfill]]` tables, not both".into(),
                    ));
                }
                if let Some((_, dimension)) =
                    raw.dimensions.as_ref().and_then(|dims| dims.iter().next())
                {
                    return Err(context.error(
                        dimension.span(),
                        "dimensions".into(),
                        "with `[[backfill]]` tables, dimensions go in each table \
                         (`[backfill.dimensions.NAME]`)"
                            .into(),
                    ));
                }
                if tables.get_ref().is_empty() {
                    return Err(context.error(
                        tables.span(),
                        "backfill".into(),
                        "no `[[backfill]]` table".into(),
                    ));
                }
                for (index, table) in tables.get_ref().iter().enumerate() {
                    let raw_entry = table.get_ref();
                    entries.push(parse_entry(
                        &context,
                        graph,
                        &RawTarget {
                            prefix: format!("backfill[{}].", index + 1),
                            header: "backfill.dimensions",
                            span: table.span(),
                            target: raw_entry.target.as_ref(),
                            reason: raw_entry.reason.as_ref().or(top_reason),
                            dimensions: raw_entry.dimensions.as_ref(),
                        },
                    )?);
                }
            }
            None => entries.push(parse_entry(
                &context,
                graph,
                &RawTarget {
                    prefix: String::new(),
                    header: "dimensions",
                    span: 0..0,
                    target: raw.target.as_ref(),
                    reason: top_reason,
                    dimensions: raw.dimensions.as_ref(),
                },
            )?),
        }
        Ok(Backfill {
            file: file.to_owned(),
            digest: ContentDigest::of(text.as_bytes()),
            entries,
        })
    }

    /// Every ref of every entry, sorted, without duplicates.
    pub fn refs(&self) -> Vec<PartitionRef> {
        let mut refs: Vec<PartitionRef> = self
            .entries
            .iter()
            .flat_map(|entry| entry.refs.iter().cloned())
            .collect();
        refs.sort();
        refs.dedup();
        refs
    }

    /// The target patterns (what `BuildRequested.requested` records).
    pub fn targets(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|entry| entry.target.as_str().to_owned())
            .collect()
    }

    /// The reason recorded with the build: the config's reasons, then the
    /// config file and the first 12 hex digits of its content digest, e.g.
    /// `#1234 recompute (backfill backfills/jan.toml 3f2a9c0b1d4e)`.
    pub fn reason(&self) -> String {
        let mut reasons: Vec<&str> = Vec::new();
        for entry in &self.entries {
            if !reasons.contains(&entry.reason.as_str()) {
                reasons.push(&entry.reason);
            }
        }
        format!(
            "{} (backfill {} {})",
            reasons.join("; "),
            self.file.display(),
            self.digest.short()
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    target: Option<Spanned<String>>,
    reason: Option<Spanned<String>>,
    dimensions: Option<BTreeMap<String, Spanned<RawDimension>>>,
    backfill: Option<Spanned<Vec<Spanned<RawEntry>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    target: Option<Spanned<String>>,
    reason: Option<Spanned<String>>,
    dimensions: Option<BTreeMap<String, Spanned<RawDimension>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDimension {
    values: Option<Spanned<Vec<Spanned<String>>>>,
    /// A string or a TOML date (`start = 2024-01-01` works too).
    start: Option<Spanned<toml::Value>>,
    end: Option<Spanned<toml::Value>>,
    step_days: Option<Spanned<i64>>,
    from: Option<Spanned<String>>,
}

/// One target to validate: a `[[backfill]]` table or the top level.
struct RawTarget<'a> {
    /// `""` or `backfill[2].`, prefixed to field names.
    prefix: String,
    /// How the dimension tables are spelled in this form.
    header: &'static str,
    /// Where the table starts (for errors about missing keys).
    span: Range<usize>,
    target: Option<&'a Spanned<String>>,
    reason: Option<&'a Spanned<String>>,
    dimensions: Option<&'a BTreeMap<String, Spanned<RawDimension>>>,
}

struct Context<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Context<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn error(&self, span: Range<usize>, field: String, message: String) -> GraphError {
        GraphError {
            file: self.file.to_owned(),
            line: Some(self.line(span.start)),
            field,
            message,
        }
    }

    /// A TOML or schema error, with the dotted path of the offending key
    /// as the field (`dimensions.date.stepdays`).
    fn toml(&self, error: &toml::de::Error) -> GraphError {
        let line = error.span().map(|span| self.line(span.start));
        // The error's keys are only shown when it has no input attached.
        let mut bare = error.clone();
        bare.set_input(None);
        let shown = bare.to_string();
        let path = shown
            .lines()
            .find_map(|line| line.strip_prefix("in `")?.strip_suffix('`'))
            .unwrap_or("");
        let message = error.message().trim();
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path, unknown) {
            ("", Some(key)) => key.to_owned(),
            (path, Some(key)) if !path.ends_with(key) => format!("{path}.{key}"),
            (path, _) => path.to_owned(),
        };
        GraphError {
            file: self.file.to_owned(),
            line,
            field,
            message: format!("{message}{}", crate::graph::suggest_field(message)),
        }
    }
}

fn parse_entry(
    context: &Context<'_>,
    graph: &Graph,
    raw: &RawTarget<'_>,
) -> Result<Entry, GraphError> {
    let field = |suffix: &str| format!("{}{suffix}", raw.prefix);
    let Some(target_text) = raw.target else {
        return Err(context.error(
            raw.span.clone(),
            field("target"),
            "missing: the pattern of the partitions to build, e.g. \
             target = \"daily/date={date}\""
                .into(),
        ));
    };
    let reason = match raw.reason {
        Some(reason) if !reason.get_ref().trim().is_empty() => reason.get_ref().trim().to_owned(),
        Some(reason) => {
            return Err(context.error(
                reason.span(),
                field("reason"),
                "empty: say why this backfill runs".into(),
            ));
        }
        None => {
            return Err(context.error(
                raw.span.clone(),
                field("reason"),
                "missing: say why this backfill runs (e.g. reason = \"#1234 recompute\"); \
                 it is recorded with the build"
                    .into(),
            ));
        }
    };
    let target_error =
        |message: String| context.error(target_text.span(), field("target"), message);
    let target =
        Pattern::parse(target_text.get_ref()).map_err(|error| target_error(error.to_string()))?;
    check_produced(graph, &target).map_err(target_error)?;

    let placeholders = target.placeholders();
    let no_dimensions = BTreeMap::new();
    let dimensions = raw.dimensions.unwrap_or(&no_dimensions);
    for placeholder in &placeholders {
        if !dimensions.contains_key(*placeholder) {
            return Err(target_error(format!(
                "placeholder {{{placeholder}}} has no [{}.{placeholder}]",
                raw.header
            )));
        }
    }
    for (name, dimension) in dimensions {
        if !placeholders.contains(&name.as_str()) {
            return Err(context.error(
                dimension.span(),
                field(&format!("dimensions.{name}")),
                format!("{{{name}}} is not a placeholder of the target {target}"),
            ));
        }
    }
    let mut domains: Vec<(&str, Vec<String>)> = Vec::with_capacity(placeholders.len());
    for placeholder in &placeholders {
        let values = parse_dimension(
            context,
            graph,
            &field(&format!("dimensions.{placeholder}")),
            &dimensions[*placeholder],
        )?;
        domains.push((placeholder, values));
    }

    let refs = expand(&target, &domains).map_err(target_error)?;
    for partition in &refs {
        match graph.lookup(partition) {
            Ok(Producer::Job { .. }) => {}
            Ok(Producer::Source { dataset, .. }) => {
                return Err(target_error(format!(
                    "{partition} is a partition of source dataset {dataset}: no job produces it"
                )));
            }
            Err(message) => return Err(target_error(message)),
        }
    }
    Ok(Entry {
        dimensions: domains
            .iter()
            .map(|(name, values)| ((*name).to_owned(), values.len()))
            .collect(),
        target,
        reason,
        refs,
    })
}

/// Whether some job can produce partitions of `target` at all.
fn check_produced(graph: &Graph, target: &Pattern) -> Result<(), String> {
    let dataset = target.dataset();
    let Some(declared) = graph.datasets.get(dataset) else {
        return Err(format!(
            "no job produces {target}: dataset {dataset:?} is not declared in {}",
            graph.file.display()
        ));
    };
    if declared.source.is_some() {
        return Err(format!(
            "no job produces {target}: {dataset} is a source dataset (its files are observed, \
             not built)"
        ));
    }
    let patterns: Vec<&Pattern> = graph
        .jobs
        .values()
        .flat_map(|job| job.outputs.iter())
        .filter(|pattern| pattern.dataset() == dataset)
        .collect();
    let compatible = |pattern: &Pattern| {
        pattern.dimensions().len() == target.dimensions().len()
            && pattern.dimensions().iter().zip(target.dimensions()).all(
                |((key, value), (target_key, target_value))| {
                    key == target_key
                        && match (value, target_value) {
                            (PatternValue::Literal(a), PatternValue::Literal(b)) => a == b,
                            _ => true,
                        }
                },
            )
    };
    if patterns.iter().any(|pattern| compatible(pattern)) {
        return Ok(());
    }
    let known: Vec<&str> = patterns.iter().map(|pattern| pattern.as_str()).collect();
    Err(format!(
        "no job produces {target} (the jobs of dataset {dataset} produce {})",
        if known.is_empty() {
            "nothing".to_owned()
        } else {
            known.join(", ")
        }
    ))
}

/// The values of one `[dimensions.NAME]` table.
fn parse_dimension(
    context: &Context<'_>,
    graph: &Graph,
    field: &str,
    raw: &Spanned<RawDimension>,
) -> Result<Vec<String>, GraphError> {
    let span = raw.span();
    let raw = raw.get_ref();
    let error = |span: Range<usize>, key: &str, message: String| {
        context.error(span, format!("{field}.{key}"), message)
    };
    let kinds = usize::from(raw.values.is_some())
        + usize::from(raw.from.is_some())
        + usize::from(raw.start.is_some() || raw.end.is_some());
    if kinds != 1 {
        return Err(context.error(
            span,
            field.to_owned(),
            if kinds == 0 {
                "give `values = [...]`, `start` and `end` (dates), or `from = \"SOURCE\"`"
            } else {
                "give only one of `values = [...]`, `start`/`end`, or `from = \"SOURCE\"`"
            }
            .into(),
        ));
    }
    if let Some(step) = &raw.step_days
        && raw.start.is_none()
    {
        return Err(error(
            step.span(),
            "step_days",
            "step_days only applies to a date range (`start` and `end`)".into(),
        ));
    }
    if let Some(from) = &raw.from {
        let name = from.get_ref();
        if !graph.sources.contains_key(name) {
            let declared: Vec<&str> = graph.sources.keys().map(String::as_str).collect();
            return Err(error(
                from.span(),
                "from",
                format!(
                    "no [sources.{name}] is declared in {} (sources: {})",
                    graph.file.display(),
                    if declared.is_empty() {
                        "none".to_owned()
                    } else {
                        declared.join(", ")
                    }
                ),
            ));
        }
        return graph
            .source_values(name)
            .map(<[String]>::to_vec)
            .map_err(|message| error(from.span(), "from", message));
    }
    if let Some(values) = &raw.values {
        if values.get_ref().is_empty() {
            return Err(error(values.span(), "values", "the list is empty".into()));
        }
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(values.get_ref().len());
        for value in values.get_ref() {
            check_value(value.get_ref())
                .map_err(|message| error(value.span(), "values", message))?;
            if !seen.insert(value.get_ref()) {
                return Err(error(
                    value.span(),
                    "values",
                    format!("{:?} appears twice", value.get_ref()),
                ));
            }
            out.push(value.get_ref().clone());
        }
        return Ok(out);
    }
    let date = |value: Option<&Spanned<toml::Value>>, key: &str| -> Result<Date, GraphError> {
        let Some(value) = value else {
            return Err(context.error(
                span.clone(),
                format!("{field}.{key}"),
                "missing: a date range needs both `start` and `end` (YYYY-MM-DD)".to_owned(),
            ));
        };
        let text = match value.get_ref() {
            toml::Value::String(text) => text.clone(),
            toml::Value::Datetime(datetime) if datetime.time.is_none() => datetime.to_string(),
            other => {
                return Err(error(
                    value.span(),
                    key,
                    format!("{other} is not a date of the form YYYY-MM-DD"),
                ));
            }
        };
        Date::parse(&text).map_err(|message| error(value.span(), key, message))
    };
    let start = date(raw.start.as_ref(), "start")?;
    let end = date(raw.end.as_ref(), "end")?;
    if end < start {
        let span = raw.end.as_ref().map_or(span.clone(), Spanned::span);
        return Err(error(
            span,
            "end",
            format!("end {end} is before start {start}"),
        ));
    }
    let step = match &raw.step_days {
        Some(step) if *step.get_ref() < 1 || *step.get_ref() > i64::from(u32::MAX) => {
            return Err(error(
                step.span(),
                "step_days",
                format!(
                    "must be a whole number of days, at least 1 (got {})",
                    step.get_ref()
                ),
            ));
        }
        Some(step) => *step.get_ref(),
        None => 1,
    };
    let max = max_refs().map_err(|message| error(span.clone(), "end", message))?;
    let mut out = Vec::new();
    let mut next = Some(start);
    while let Some(day) = next.filter(|day| *day <= end) {
        if out.len() >= max {
            let span = raw.end.as_ref().map_or(span.clone(), Spanned::span);
            return Err(error(
                span,
                "end",
                format!(
                    "the range {start}..{end} has more than {max} dates; split the backfill, or set {}=N to raise the limit",
                    crate::limits::PARTITIONS.variable
                ),
            ));
        }
        out.push(day.to_string());
        next = day.add_days(step);
    }
    Ok(out)
}

/// The most partitions one backfill target may expand to: a bound on the
/// memory a config file can make cairn allocate (found by fuzzing), the
/// limit of any request (`CAIRN_MAX_PARTITIONS`, docs/reliability.md).
pub fn max_refs() -> Result<usize, String> {
    crate::limits::PARTITIONS
        .value()
        .map(|max| usize::try_from(max).unwrap_or(usize::MAX))
}

/// The cartesian product of `domains` (in the target's placeholder order,
/// the last one fastest), substituted into `target`.
fn expand(target: &Pattern, domains: &[(&str, Vec<String>)]) -> Result<Vec<PartitionRef>, String> {
    let max = max_refs()?;
    let total = domains
        .iter()
        .try_fold(1usize, |total, (_, values)| total.checked_mul(values.len()))
        .filter(|total| *total <= max);
    let Some(total) = total else {
        let sizes: Vec<String> = domains
            .iter()
            .map(|(name, values)| format!("{} {name}", values.len()))
            .collect();
        return Err(format!(
            "{target} expands to more than {max} partitions ({}); split the backfill, or set {}=N to raise the limit",
            sizes.join(" x "),
            crate::limits::PARTITIONS.variable
        ));
    };
    if let Some((name, _)) = domains.iter().find(|(_, values)| values.is_empty()) {
        return Err(format!(
            "{target} expands to no partition: {{{name}}} has no values"
        ));
    }
    let mut out = Vec::with_capacity(total);
    let mut indices = vec![0usize; domains.len()];
    loop {
        let bindings: Bindings = domains
            .iter()
            .zip(&indices)
            .map(|((name, values), index)| ((*name).to_owned(), values[*index].clone()))
            .collect();
        out.push(
            target
                .substitute(&bindings)
                .map_err(|error| error.to_string())?,
        );
        let mut position = domains.len();
        loop {
            if position == 0 {
                return Ok(out);
            }
            position -= 1;
            indices[position] += 1;
            if indices[position] < domains[position].1.len() {
                break;
            }
            indices[position] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRAPH: &str = r#"
[datasets.readings]
source = "inputs/{date}/{station}.csv"
[datasets.clean]
[datasets.daily]

[sources.stations]
command = ["sh", "api.sh"]

[dimensions.date]
start = "2024-01-01"
end = "2024-01-02"
[dimensions.station]
from = "stations"

[jobs.clean]
outputs = ["clean/date={date}/station={station}"]
inputs = ["readings/date={date}/station={station}"]
run = ["true"]

[jobs.daily]
outputs = ["daily/date={date}/station={station}"]
inputs = ["clean/date={date}/station={station}"]
run = ["true"]
"#;

    fn graph(refreshed: bool) -> Graph {
        let mut graph = Graph::parse(GRAPH, Path::new("cairn.toml"), Path::new("/p")).unwrap();
        if refreshed {
            graph.set_source_values("stations", vec!["A".into(), "B".into()]);
        }
        graph
    }

    fn parse(text: &str) -> Result<Backfill, GraphError> {
        Backfill::parse(text, Path::new("bf.toml"), &graph(true))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const GOOD: &str = r##"target = "daily/date={date}/station={station}"
reason = "#12 recompute"
[dimensions.date]
start = "2024-01-30"
end = "2024-02-02"
[dimensions.station]
from = "stations"
"##;

    #[test]
    fn expands_the_cartesian_product() {
        let backfill = parse(GOOD).unwrap();
        let refs = backfill.refs();
        assert_eq!(refs.len(), 4 * 2);
        assert_eq!(refs[0].as_str(), "daily/date=2024-01-30/station=A");
        assert_eq!(refs[7].as_str(), "daily/date=2024-02-02/station=B");
        assert_eq!(
            backfill.entries[0].dimensions,
            [("date".to_owned(), 4), ("station".to_owned(), 2)]
        );
        assert!(
            backfill
                .reason()
                .starts_with("#12 recompute (backfill bf.toml ")
        );
        let stepped = GOOD.replace("end = \"2024-02-02\"", "end = 2024-02-05\nstep_days = 3");
        let dates: Vec<String> = parse(&stepped).unwrap().entries[0]
            .refs
            .iter()
            .map(|r| r.as_str().to_owned())
            .filter(|r| r.ends_with("=A"))
            .collect();
        assert_eq!(
            dates,
            [
                "daily/date=2024-01-30/station=A",
                "daily/date=2024-02-02/station=A",
                "daily/date=2024-02-05/station=A"
            ]
        );
    }

    #[test]
    fn a_backfill_past_a_million_partitions_is_refused_before_allocating_it() {
        // Found by fuzzing (fuzz/regressions/backfill_config): a wide date
        // range times many values could make cairn allocate without bound.
        let wide = GOOD
            .replace("start = \"2024-01-30\"", "start = \"0001-01-01\"")
            .replace("end = \"2024-02-02\"", "end = \"9999-12-31\"");
        let message = error(&wide);
        assert!(
            message.starts_with("bf.toml:5: dimensions.date.end: the range 0001-01-01..9999-12-31 has more than 2000000 dates"),
            "{message}"
        );
        let product = GOOD
            .replace("start = \"2024-01-30\"", "start = \"0001-01-01\"")
            .replace("end = \"2024-02-02\"", "end = \"3000-01-01\"");
        let message = error(&product);
        assert!(
            message.starts_with("bf.toml:1: target: daily/date={date}/station={station} expands to more than 2000000 partitions (1095363 date x 2 station)"),
            "{message}"
        );
        let mut graph = graph(false);
        graph.set_source_values("stations", Vec::new());
        let message = Backfill::parse(GOOD, Path::new("bf.toml"), &graph)
            .unwrap_err()
            .to_string();
        assert!(
            message.ends_with("expands to no partition: {station} has no values"),
            "{message}"
        );
    }

    #[test]
    fn several_tables_share_a_reason() {
        let text = r#"reason = "shared"
[[backfill]]
target = "daily/date=2024-01-01/station={station}"
[backfill.dimensions.station]
values = ["A"]
[[backfill]]
target = "clean/date={date}/station=B"
reason = "own"
[backfill.dimensions.date]
values = ["2024-01-01", "2024-01-02"]
"#;
        let backfill = parse(text).unwrap();
        assert_eq!(backfill.refs().len(), 3);
        assert!(backfill.reason().starts_with("shared; own (backfill"));
    }

    #[test]
    fn every_error_names_line_and_field() {
        let cases = [
            (
                GOOD.replace("end = ", "ned = "),
                "bf.toml:5: dimensions.date.ned: unknown field `ned`",
            ),
            (
                GOOD.replace("[dimensions.station]\nfrom = \"stations\"\n", ""),
                "bf.toml:1: target: placeholder {station} has no [dimensions.station]",
            ),
            (
                format!("{GOOD}[dimensions.region]\nvalues = [\"x\"]\n"),
                "bf.toml:8: dimensions.region: {region} is not a placeholder of the target",
            ),
            (
                GOOD.replace("end = \"2024-02-02\"", "end = \"2024-01-01\""),
                "bf.toml:5: dimensions.date.end: end 2024-01-01 is before start 2024-01-30",
            ),
            (
                GOOD.replace("start = \"2024-01-30\"", "start = \"2024-01-32\""),
                "bf.toml:4: dimensions.date.start: \"2024-01-32\" is not a valid calendar date",
            ),
            (
                GOOD.replace("daily/", "weekly/"),
                "bf.toml:1: target: no job produces weekly/date={date}/station={station}: dataset \"weekly\" is not declared",
            ),
            (
                GOOD.replace(
                    "daily/date={date}/station={station}",
                    "daily/station={station}/date={date}",
                ),
                "bf.toml:1: target: no job produces daily/station={station}/date={date} (the jobs of dataset daily produce daily/date={date}/station={station})",
            ),
            (
                GOOD.replace("daily/", "readings/"),
                "bf.toml:1: target: no job produces readings/date={date}/station={station}: readings is a source dataset",
            ),
            (
                GOOD.replace("from = \"stations\"", "from = \"sensors\""),
                "bf.toml:7: dimensions.station.from: no [sources.sensors] is declared",
            ),
            (
                GOOD.replace("reason = \"#12 recompute\"\n", ""),
                "bf.toml:1: reason: missing",
            ),
            (
                GOOD.replace("from = \"stations\"", "values = [\"A\", \"A\"]"),
                "bf.toml:7: dimensions.station.values: \"A\" appears twice",
            ),
        ];
        for (text, expected) in cases {
            let message = error(&text);
            assert!(
                message.starts_with(expected),
                "{message}\nexpected: {expected}"
            );
        }
    }

    #[test]
    fn a_source_without_a_record_says_how_to_refresh_it() {
        let message = Backfill::parse(GOOD, Path::new("bf.toml"), &graph(false))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "bf.toml:7: dimensions.station.from: source \"stations\" has no record yet: run `cairn defs refresh stations`"
        );
    }
}
