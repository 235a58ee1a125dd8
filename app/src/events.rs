//! `log`: the event log, filtered and streamed (docs/audit.md, "`cairn
//! log`: streaming, whatever the size").
//!
//! The log is read with one read transaction and handed to the caller one
//! event at a time, so memory does not grow with the log; the caller
//! renders each event ([`crate::dto::events`] for the JSON form).

use cairn_engine::date::Date;
use cairn_engine::record::{Event, EventKind};
use cairn_engine::refs::{PartitionRef, Pattern};

use crate::{AppError, Workspace};

/// Every event kind, as `cairn log --kind` accepts and prints them.
pub const EVENT_KINDS: [&str; 19] = [
    "BuildRequested",
    "Planned",
    "DatasetVersionChanged",
    "ActionStarted",
    "ActionCheckpointed",
    "ActionSucceeded",
    "ActionFailed",
    "ActionCached",
    "ActionSkipped",
    "PartitionMaterialized",
    "PartitionInvalidated",
    "BuildFinished",
    "DefsRefreshed",
    "PartitionPruned",
    "ActionRetrying",
    "ActionJoined",
    "RemoteRefused",
    "ActionUploaded",
    "ActionDispatched",
];

/// The entry of [`EVENT_KINDS`] for `kind`. The match lists every kind, so
/// adding one does not compile until it is added to the list (and so can be
/// selected with `--kind`).
pub fn listed_kind(kind: &EventKind) -> &'static str {
    let index = match kind {
        EventKind::BuildRequested { .. } => 0,
        EventKind::Planned { .. } => 1,
        EventKind::DatasetVersionChanged { .. } => 2,
        EventKind::ActionStarted { .. } => 3,
        EventKind::ActionCheckpointed { .. } => 4,
        EventKind::ActionSucceeded { .. } => 5,
        EventKind::ActionFailed { .. } => 6,
        EventKind::ActionCached { .. } => 7,
        EventKind::ActionSkipped { .. } => 8,
        EventKind::PartitionMaterialized { .. } => 9,
        EventKind::PartitionInvalidated { .. } => 10,
        EventKind::BuildFinished { .. } => 11,
        EventKind::DefsRefreshed { .. } => 12,
        EventKind::PartitionPruned { .. } => 13,
        EventKind::ActionRetrying { .. } => 14,
        EventKind::ActionJoined { .. } => 15,
        EventKind::RemoteRefused { .. } => 16,
        EventKind::ActionUploaded { .. } => 17,
        EventKind::ActionDispatched { .. } => 18,
    };
    debug_assert_eq!(EVENT_KINDS[index], kind.name());
    EVENT_KINDS[index]
}

/// What `log` selects, as given (`--since`, `--until`, ...): every filter
/// that is set must pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// A seq, a date `YYYY-MM-DD` (UTC) or an RFC 3339 time.
    pub since: Option<String>,
    /// Like `since`, inclusive.
    pub until: Option<String>,
    pub build: Option<u64>,
    /// A ref (read through the partition index) or a pattern.
    pub partition: Option<String>,
    pub job: Option<String>,
    /// Event kinds, case-insensitive; empty: every kind.
    pub kinds: Vec<String>,
    /// `NAME=VALUE`: only events about a partition whose dimension NAME
    /// has VALUE (`station=S07`).
    pub dimension: Option<String>,
}

/// How a scan of the log ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned {
    /// Nothing was built here yet: the log is empty.
    NothingBuilt,
    /// Every selected event was visited (or the visitor stopped).
    Done,
}

/// One end of a `--since`/`--until` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Seq(u64),
    /// Milliseconds since the Unix epoch.
    Time(u64),
}

const MS_PER_DAY: i64 = 86_400_000;

/// Parses `SEQ`, a date `YYYY-MM-DD` (midnight UTC: a bare date is never
/// local time, so a command line means the same on every machine), or an
/// RFC 3339 time with `Z` or an offset (`2024-06-01T10:00:00+02:00`, read by
/// `jiff::Timestamp`). As the end of a range (`until`), a date means the end
/// of that day and a time without fractional seconds the end of that second,
/// so both are inclusive. `flag` names the bound in the error.
pub fn parse_bound(flag: &str, text: &str, until: bool) -> Result<Bound, AppError> {
    if let Ok(seq) = text.parse::<u64>() {
        return Ok(Bound::Seq(seq));
    }
    let bad = |detail: String| {
        AppError::Usage(format!(
            "{flag} {text:?}: expected a sequence number, a date YYYY-MM-DD (UTC) or an \
             RFC 3339 time such as 2024-06-01T10:00:00Z or 2024-06-01T10:00:00+02:00: {detail}"
        ))
    };
    // Before 1970 nothing was recorded: such a bound is the epoch.
    let at = |ms: i64| Bound::Time(u64::try_from(ms).unwrap_or(0));
    if text.len() <= 10 {
        let date = Date::parse(text).map_err(bad)?;
        let day_start = date.unix_day() * MS_PER_DAY;
        return Ok(at(if until {
            day_start + MS_PER_DAY - 1
        } else {
            day_start
        }));
    }
    // The RFC 3339 shape, checked first: jiff also reads ISO 8601 forms
    // cairn has always refused (`12:34Z`, a space for the `T`).
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[10] != b'T' || bytes[13] != b':' || bytes[16] != b':' {
        return Err(bad(
            "a time is YYYY-MM-DDTHH:MM:SS, then Z or an offset like +02:00".to_owned(),
        ));
    }
    let time: jiff::Timestamp = text
        .parse()
        .map_err(|error: jiff::Error| bad(error.to_string()))?;
    let ms = time.as_millisecond();
    Ok(at(if until && time.subsec_nanosecond() == 0 {
        ms + 999
    } else {
        ms
    }))
}

/// The canonical names of `--kind` values (case-insensitive), or a usage
/// error listing the kinds.
fn parse_kinds(kinds: &[String]) -> Result<Vec<&'static str>, AppError> {
    kinds
        .iter()
        .map(|wanted| {
            EVENT_KINDS
                .iter()
                .find(|kind| kind.eq_ignore_ascii_case(wanted))
                .copied()
                .ok_or_else(|| {
                    AppError::Usage(format!(
                        "--kind {wanted:?} is not an event kind; the kinds are: {}",
                        EVENT_KINDS.join(", ")
                    ))
                })
        })
        .collect()
}

/// The partitions and job an event is about.
pub fn subjects(kind: &EventKind) -> (Vec<&PartitionRef>, Option<&str>) {
    match kind {
        EventKind::ActionStarted { job, outputs, .. }
        | EventKind::ActionFailed { job, outputs, .. }
        | EventKind::ActionCached { job, outputs, .. }
        | EventKind::ActionSkipped { job, outputs, .. }
        | EventKind::ActionRetrying { job, outputs, .. }
        | EventKind::ActionJoined { job, outputs, .. }
        | EventKind::RemoteRefused { job, outputs, .. }
        | EventKind::ActionUploaded { job, outputs, .. }
        | EventKind::ActionDispatched { job, outputs, .. } => (outputs.iter().collect(), Some(job)),
        EventKind::ActionSucceeded { manifest } => (
            manifest.outputs.iter().map(|o| &o.partition).collect(),
            Some(&manifest.job),
        ),
        EventKind::PartitionMaterialized { partition, .. }
        | EventKind::PartitionInvalidated { partition, .. }
        | EventKind::PartitionPruned { partition, .. } => (vec![partition], None),
        EventKind::ActionCheckpointed { job, .. } => (Vec::new(), Some(job)),
        _ => (Vec::new(), None),
    }
}

/// How an `ActionDispatched` names its executor in text: `Slurm` for
/// `slurm`, any other name as recorded.
pub fn executor_title(executor: &str) -> &str {
    match executor {
        "slurm" => "Slurm",
        other => other,
    }
}

/// What the log scan does with one event.
enum Step {
    Visit,
    Skip,
    /// Past `--until SEQ`: nothing after it can match.
    Stop,
}

/// The parsed filters of an [`EventQuery`].
#[derive(Debug, Clone)]
struct Selection {
    since: Option<Bound>,
    until: Option<Bound>,
    build: Option<u64>,
    kinds: Vec<&'static str>,
    job: Option<String>,
    partition: Option<Pattern>,
    /// `(NAME, VALUE)` of `--dimension NAME=VALUE`.
    dimension: Option<(String, String)>,
}

/// Parses `--dimension NAME=VALUE`.
fn parse_dimension(text: &str) -> Result<(String, String), AppError> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() && !value.contains('=') => {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err(AppError::Usage(format!(
            "--dimension {text:?}: expected NAME=VALUE, such as station=S07"
        ))),
    }
}

impl Selection {
    /// The filters of `query`, parsed: usage errors name the flag.
    fn parse(query: &EventQuery) -> Result<Selection, AppError> {
        let partition: Option<Pattern> = match &query.partition {
            Some(text) => {
                Some(Pattern::parse(text).map_err(|error| AppError::Usage(error.to_string()))?)
            }
            None => None,
        };
        let since = match &query.since {
            Some(text) => Some(parse_bound("--since", text, false)?),
            None => None,
        };
        let until = match &query.until {
            Some(text) => Some(parse_bound("--until", text, true)?),
            None => None,
        };
        let dimension = match &query.dimension {
            Some(text) => Some(parse_dimension(text)?),
            None => None,
        };
        Ok(Selection {
            since,
            until,
            build: query.build,
            kinds: parse_kinds(&query.kinds)?,
            job: query.job.clone(),
            partition,
            dimension,
        })
    }

    fn step(&self, event: &Event) -> Step {
        match self.until {
            // Seqs only grow along the scan: past the end, stop.
            Some(Bound::Seq(last)) if event.seq > last => return Step::Stop,
            Some(Bound::Time(last)) if event.time_ms > last => return Step::Skip,
            _ => {}
        }
        if let Some(Bound::Time(first)) = self.since
            && event.time_ms < first
        {
            return Step::Skip;
        }
        if self.build.is_some_and(|build| build != event.build) {
            return Step::Skip;
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&listed_kind(&event.kind)) {
            return Step::Skip;
        }
        let (partitions, job) = subjects(&event.kind);
        if self
            .job
            .as_deref()
            .is_some_and(|wanted| job != Some(wanted))
        {
            return Step::Skip;
        }
        if let Some((name, value)) = &self.dimension
            && !partitions.iter().any(|partition| {
                partition
                    .dimensions()
                    .any(|(key, found)| key == name && found == value)
            })
        {
            return Step::Skip;
        }
        if let Some(pattern) = &self.partition
            && !partitions
                .iter()
                .any(|partition| pattern.matches(partition).is_some())
        {
            return Step::Skip;
        }
        Step::Visit
    }
}

/// The filters of an [`EventQuery`], parsed once, for a front end that
/// tests events one at a time as they are recorded (`cairn serve`'s event
/// streams) instead of scanning the log with [`scan`].
#[derive(Debug, Clone)]
pub struct EventFilter(Selection);

impl EventFilter {
    /// Parses `query`'s filters; errors are those of `cairn log`'s flags.
    pub fn new(query: &EventQuery) -> Result<EventFilter, AppError> {
        Selection::parse(query).map(EventFilter)
    }

    /// Whether `event` passes every filter that is set.
    pub fn matches(&self, event: &Event) -> bool {
        matches!(self.0.step(event), Step::Visit)
    }
}

/// Streams the events `query` selects, in order, to `visit` (which returns
/// `false` to stop). Usage errors (a bad bound, kind or pattern) come
/// before the store is opened.
pub fn scan(
    workspace: &Workspace,
    query: &EventQuery,
    visit: &mut dyn FnMut(Event) -> bool,
) -> Result<Scanned, AppError> {
    let selection = Selection::parse(query)?;
    let since = selection.since;
    let Some(store) = workspace.open_reader()? else {
        return Ok(Scanned::NothingBuilt);
    };
    // `--since DATE` starts the scan at the first event recorded at or
    // after DATE, found by binary search over seq: recorded times grow
    // with seq (one writer appends, each group stamped when it commits)
    // unless the system clock is stepped back, so the log needs no time
    // index (docs/audit.md says what a clock stepped back means for it).
    let from = match since {
        Some(Bound::Seq(seq)) => seq.max(1),
        Some(Bound::Time(first)) => {
            let from = store
                .catalog()
                .first_seq_reaching(&|event| event.time_ms >= first)?;
            tracing::debug!("log: --since starts the scan at seq {from} (binary search over seq)");
            from
        }
        None => 1,
    };
    // One partition: read its events through the partition index instead of
    // the whole log. Otherwise stream the log from `from` on.
    let concrete = selection
        .partition
        .as_ref()
        .filter(|pattern| pattern.is_concrete())
        .and_then(|pattern| PartitionRef::parse(pattern.as_str()).ok());
    let mut filtered = |event: Event| match selection.step(&event) {
        Step::Stop => false,
        Step::Skip => true,
        Step::Visit => visit(event),
    };
    match concrete {
        Some(partition) => store
            .catalog()
            .partition_events(&partition, from, &mut filtered)?,
        None => {
            use cairn_engine::ports::EventLog;
            store.catalog().scan_events(from, &mut filtered)?;
        }
    }
    Ok(Scanned::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_bounds_are_seqs_dates_or_rfc3339_times() {
        let day = 19_753 * 86_400_000; // 2024-01-31
        assert_eq!(parse_bound("--since", "42", false).unwrap(), Bound::Seq(42));
        assert_eq!(parse_bound("--until", "42", true).unwrap(), Bound::Seq(42));
        assert_eq!(
            parse_bound("--since", "2024-01-31", false).unwrap(),
            Bound::Time(day)
        );
        assert_eq!(
            parse_bound("--until", "2024-01-31", true).unwrap(),
            Bound::Time(day + 86_400_000 - 1)
        );
        let time = day + (12 * 3600 + 34 * 60 + 56) * 1000;
        assert_eq!(
            parse_bound("--since", "2024-01-31T12:34:56Z", false).unwrap(),
            Bound::Time(time)
        );
        assert_eq!(
            parse_bound("--until", "2024-01-31T12:34:56Z", true).unwrap(),
            Bound::Time(time + 999)
        );
        assert_eq!(
            parse_bound("--since", "1960-01-01", false).unwrap(),
            Bound::Time(0)
        );
        // RFC 3339 offsets: 14:34:56+02:00 is 12:34:56Z.
        for same in [
            "2024-01-31T14:34:56+02:00",
            "2024-01-31T07:04:56-05:30",
            "2024-01-31T12:34:56+00:00",
        ] {
            assert_eq!(
                parse_bound("--since", same, false).unwrap(),
                Bound::Time(time),
                "{same}"
            );
            assert_eq!(
                parse_bound("--until", same, true).unwrap(),
                Bound::Time(time + 999),
                "{same}"
            );
        }
        // Across midnight: the UTC day is the one before.
        assert_eq!(
            parse_bound("--since", "2024-02-01T01:00:00+02:00", false).unwrap(),
            Bound::Time(day + 23 * 3_600_000)
        );
        // Fractional seconds are exact, also as the end of a range.
        assert_eq!(
            parse_bound("--until", "2024-01-31T12:34:56.250Z", true).unwrap(),
            Bound::Time(time + 250)
        );
        assert_eq!(
            parse_bound("--since", "2024-02-29", false).unwrap(),
            Bound::Time(day + 29 * 86_400_000)
        );
        for bad in [
            "",
            "-1",
            "2024-1-31",
            "2024-02-30",
            "2024-01-31T12:34:56",
            "2024-01-31T24:00:00Z",
            "2024-01-31T12:34Z",
            "2024-01-31T12:34:5Z",
            "2024-01-31 12:34:56Z",
            "2023-02-29",
            "2024-02-30T10:00:00Z",
            "2024-01-31t12:34:56Z",
            "yesterday",
        ] {
            let error = parse_bound("--since", bad, false).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad}");
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("--since {bad:?}: ")),
                "{message}"
            );
        }
    }

    fn started(seq: u64, outputs: &[&str]) -> Event {
        Event {
            seq,
            time_ms: 0,
            build: 1,
            kind: EventKind::ActionSkipped {
                job: "clean".into(),
                outputs: outputs
                    .iter()
                    .map(|text| PartitionRef::parse(text).unwrap())
                    .collect(),
                reason: "test".into(),
            },
        }
    }

    #[test]
    fn the_dimension_filter_selects_events_about_one_value() {
        let query = EventQuery {
            dimension: Some("station=S07".into()),
            ..EventQuery::default()
        };
        let filter = EventFilter::new(&query).unwrap();
        assert!(filter.matches(&started(1, &["clean/date=2024-01-01/station=S07"])));
        assert!(filter.matches(&started(
            2,
            &[
                "clean/date=2024-01-01/station=S01",
                "clean/date=2024-01-01/station=S07"
            ]
        )));
        assert!(!filter.matches(&started(3, &["clean/date=2024-01-01/station=S070"])));
        assert!(!filter.matches(&started(4, &["daily/date=2024-01-01"])));
        // An event about no partition has no dimension value.
        let finished = Event {
            seq: 5,
            time_ms: 0,
            build: 1,
            kind: EventKind::Planned {
                actions: 1,
                sources: 0,
            },
        };
        assert!(!filter.matches(&finished));
        for bad in ["station", "=S07", "station=", "a=b=c"] {
            let error = EventFilter::new(&EventQuery {
                dimension: Some(bad.into()),
                ..EventQuery::default()
            })
            .unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad}");
            assert!(error.to_string().starts_with("--dimension "), "{error}");
        }
    }

    #[test]
    fn kinds_are_case_insensitive_and_an_unknown_one_lists_them() {
        assert_eq!(
            parse_kinds(&["actionfailed".into(), "BuildFinished".into()]).unwrap(),
            vec!["ActionFailed", "BuildFinished"]
        );
        let error = parse_kinds(&["Nope".into()]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("PartitionPruned"), "{error}");
    }
}
