//! Output for humans and for programs.
//!
//! Humans read stderr: a live progress bar on a terminal (indicatif), plain
//! lines otherwise. Colours go through anstream, which writes them only to
//! a terminal and honours `NO_COLOR` (and `CLICOLOR_FORCE`), so a pipe
//! (`cairn -vv build 2>&1 | cat -v`) never sees an escape code. Programs
//! read stdout: JSON lines with `--json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anstyle::{AnsiColor, Style};
use cairn_app::build::BuildObserver;
use cairn_app::dto::Refs;
use cairn_app::dto::build::ActionLine;
use cairn_engine::action::Outcome;
use cairn_engine::digest::ActionKey;
use cairn_engine::exec::{Progress, Reporter};
use cairn_engine::plan::PlannedAction;
use cairn_engine::record::BuildCounts;
use cairn_engine::uptodate::Snapshot;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// `error:` and `failed:`.
const ALARM: Style = AnsiColor::Red.on_default().bold();
/// `warning:`.
const WARNING: Style = AnsiColor::Yellow.on_default().bold();
/// The failure count of the progress bar.
const FAILED: Style = AnsiColor::Red.on_default();

/// Whether stderr gets colours: a terminal, without `NO_COLOR` (anstream's
/// choice, which the tracing subscriber follows too).
pub fn stderr_colours() -> bool {
    anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never
}

/// `error: ...` on stderr.
pub fn error_line(message: &str) {
    let mut stderr = anstream::stderr().lock();
    let message = crate::escape::escape_lines(message);
    let _ = writeln!(stderr, "{ALARM}error:{ALARM:#} {message}");
}

/// `warning: ...` on stderr.
pub fn warning_line(message: &str) {
    let mut stderr = anstream::stderr().lock();
    let message = crate::escape::escape_lines(message);
    let _ = writeln!(stderr, "{WARNING}warning:{WARNING:#} {message}");
}

/// A note for humans on stderr.
pub fn note(message: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{}", crate::escape::escape_lines(message));
}

/// Prints one JSON value as a line on stdout.
pub fn json_line<T: serde::Serialize + ?Sized>(value: &T) {
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    let _ = std::io::stdout().lock().write_all(&line);
}

/// `build 3: 77 actions: 2 executed, 75 cached, 0 failed, 0 skipped in 1.2s`
/// (`elapsed`: the command's wall time so far).
pub fn build_summary_text(built: &cairn_app::build::Built, elapsed: Duration) -> String {
    let text = summary_text(
        built.build(),
        built.total,
        &built.counts(),
        built.interrupted(),
        elapsed,
    );
    match &built.remote {
        Some(remote) => format!("{text}\n{}", remote_text(remote)),
        None => text,
    }
}

/// The summary's line about the shared remote cache (docs/remote-cache.md).
pub fn remote_text(remote: &cairn_engine::remote::RemoteSummary) -> String {
    let mut text = format!(
        "remote cache {}: {} restored, {} missed, {} refused, {} uploaded, {}",
        remote.url,
        remote.hits,
        remote.misses,
        remote.refused,
        remote.uploaded,
        count(remote.errors, "error")
    );
    if remote.tripped {
        text.push_str(" (stopped asking after repeated errors)");
    }
    if remote.abandoned > 0 {
        text.push_str(&format!(
            ", {} not uploaded (--no-upload-wait)",
            remote.abandoned
        ));
    }
    text
}

/// The summary line of build `build` of `total` actions (a local build's
/// or a server's: `cairn --remote build` prints the same line).
pub fn summary_text(
    build: u64,
    total: u64,
    counts: &BuildCounts,
    interrupted: bool,
    elapsed: Duration,
) -> String {
    format!(
        "build {build}: {}: {} executed, {} cached, {}{} failed, {} skipped in {}{}",
        count(total, "action"),
        counts.executed,
        counts.cached,
        // Only a server's builds join another's run.
        if counts.joined > 0 {
            format!("{} joined, ", counts.joined)
        } else {
            String::new()
        },
        counts.failed,
        counts.skipped,
        duration_text(elapsed),
        if interrupted { " (interrupted)" } else { "" }
    )
}

/// `1 partition`, `2 partitions`, `0 partitions`: `noun` is the singular,
/// made plural with an `s` (see [`count_as`] for the others).
pub fn count<N: TryInto<u64>>(n: N, noun: &str) -> String {
    count_as(n, noun, &format!("{noun}s"))
}

/// `1 index entry`, `2 index entries`.
pub fn count_as<N: TryInto<u64>>(n: N, one: &str, many: &str) -> String {
    match n.try_into() {
        Ok(1) => format!("1 {one}"),
        Ok(n) => format!("{n} {many}"),
        Err(_) => format!("? {many}"),
    }
}

/// A wall-clock duration for humans: `85ms`, `1.2s`, `2m 5s`, `1h 3m 12s`
/// (jiff's friendly format); the same text `status` gives a running job.
pub use cairn_app::running::duration_text;

pub fn outputs_text(action: &PlannedAction) -> String {
    action
        .config
        .outputs
        .iter()
        .map(|output| output.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A failed action for humans, as cargo and Bazel show one: the error,
/// the last lines of the job's stderr (redacted when captured, escaped
/// here), and the command that prints all of its output.
///
/// ```text
/// failed: job clean (clean/x=1) exited with status 1
///   last 2 lines of stderr:
///     Traceback (most recent call last):
///     ValueError: bad rating
///   all output: cairn logs clean/x=1
/// ```
pub fn failure_text(
    label: &str,
    error: &str,
    stderr_tail: &[String],
    partition: Option<&str>,
) -> String {
    let mut text = format!("{label} {}", crate::escape::escape_lines(error));
    if stderr_tail.is_empty() {
        return text;
    }
    let count = stderr_tail.len();
    text.push_str(&format!(
        "\n  last {count} line{} of stderr:",
        if count == 1 { "" } else { "s" }
    ));
    for line in stderr_tail {
        text.push_str("\n    ");
        text.push_str(&crate::escape::escape(line));
    }
    if let Some(partition) = partition {
        text.push_str(&format!("\n  all output: cairn logs {partition}"));
    }
    text
}

/// An action the progress bar shows while it runs.
struct Running {
    job: String,
    outputs: String,
    since: Instant,
    /// The sequence of its last checkpoint, if it recorded one.
    checkpoint: Option<u64>,
    /// Started first among those running (ties broken by arrival).
    order: u64,
}

/// What the progress bar's `{running}` and `{failed}` keys show, shared
/// with indicatif's ticker thread, which redraws the bar (and so the
/// elapsed times) even while nothing finishes.
#[derive(Default)]
struct Live {
    /// Keyed by the action's address in the plan (stable for the build).
    running: BTreeMap<usize, Running>,
    started: u64,
    failed: u64,
}

impl Live {
    /// `running 2: clean clean/date=…/station=S007 for 1m 5s, checkpoint 4`:
    /// the count, then the action running longest, with its elapsed time
    /// and last checkpoint.
    fn running_text(&self) -> String {
        let Some(oldest) = self.running.values().min_by_key(|running| running.order) else {
            return "running 0".to_owned();
        };
        let checkpoint = oldest
            .checkpoint
            .map(|sequence| format!(", checkpoint {sequence}"))
            .unwrap_or_default();
        format!(
            "running {}: {} {} for {}{checkpoint}",
            self.running.len(),
            oldest.job,
            oldest.outputs,
            duration_text(oldest.since.elapsed())
        )
    }
}

fn address(action: &PlannedAction) -> usize {
    std::ptr::from_ref(action) as usize
}

/// The build's reporter: JSON lines and/or human progress.
pub struct BuildReporter {
    json: bool,
    /// A progress bar on a terminal; hidden otherwise (plain lines instead).
    bar: ProgressBar,
    live: Arc<Mutex<Live>>,
}

impl BuildReporter {
    pub fn new(json: bool) -> Self {
        let live = Arc::new(Mutex::new(Live::default()));
        // indicatif draws only on a terminal: elsewhere the target is
        // hidden and the plain lines of `human_line` are all there is.
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let (running, failed) = (Arc::clone(&live), Arc::clone(&live));
        let colours = stderr_colours();
        let style =
            ProgressStyle::with_template("[{bar:30}] {pos}/{len} {elapsed} {running}{failed}")
                .expect("a valid template")
                .progress_chars("= ")
                .with_key(
                    "running",
                    move |_: &ProgressState, out: &mut dyn std::fmt::Write| {
                        let live = running.lock().unwrap_or_else(PoisonError::into_inner);
                        let _ = out.write_str(&live.running_text());
                    },
                )
                .with_key(
                    "failed",
                    move |_: &ProgressState, out: &mut dyn std::fmt::Write| {
                        let live = failed.lock().unwrap_or_else(PoisonError::into_inner);
                        if live.failed > 0 {
                            let text = format!(" failed {}", live.failed);
                            let _ = if colours {
                                write!(out, "{FAILED}{text}{FAILED:#}")
                            } else {
                                out.write_str(&text)
                            };
                        }
                    },
                );
        bar.set_style(style);
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        BuildReporter { json, bar, live }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, progress: Progress) {
        self.bar.set_length(progress.total as u64);
        self.bar.set_position(progress.done as u64);
    }

    /// Runs `f` with the progress bar out of the way (a prompt, a note).
    pub fn suspended<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// A line above the progress bar (or alone, without one).
    fn human_line(&self, line: &str) {
        self.bar.suspend(|| {
            let mut stderr = anstream::stderr().lock();
            let _ = writeln!(stderr, "{line}");
        });
    }
}

impl BuildReporter {
    /// Action `id` (any number that stays the same while it runs) started:
    /// a local build's or one a server reports.
    pub fn action_started(&self, id: usize, job: &str, outputs: &str, progress: Progress) {
        {
            let mut live = self.live();
            live.started += 1;
            let order = live.started;
            live.running.insert(
                id,
                Running {
                    // Escaped once here: the bar redraws them often.
                    job: crate::escape::escape(job).into_owned(),
                    outputs: crate::escape::escape(outputs).into_owned(),
                    since: Instant::now(),
                    checkpoint: None,
                    order,
                },
            );
        }
        self.update(progress);
    }

    /// Action `id` recorded checkpoint `sequence`.
    pub fn action_checkpointed(&self, id: usize, sequence: u64) {
        if let Some(running) = self.live().running.get_mut(&id) {
            running.checkpoint = Some(sequence);
        }
        self.bar.tick();
    }

    /// Action `id` of `job`, which makes `outputs`, ended with `outcome`:
    /// its JSON line (with `--json`) and what humans see of it.
    pub fn action_finished(
        &self,
        id: usize,
        job: &str,
        outputs: Refs<'_>,
        outcome: &Outcome,
        key: Option<&ActionKey>,
        progress: Progress,
    ) {
        {
            let mut live = self.live();
            live.running.remove(&id);
            live.failed = progress.counts.failed;
        }
        if self.json {
            json_line(&ActionLine::new(job, outputs, outcome, key));
        }
        match outcome {
            Outcome::Failed { error, stderr_tail } => {
                let first = match outputs {
                    Refs::Refs(refs) => refs.first().map(cairn_engine::PartitionRef::as_str),
                    Refs::Strings(refs) => refs.first().map(String::as_str),
                };
                self.human_line(&failure_text(
                    &format!("{ALARM}failed:{ALARM:#}"),
                    error,
                    stderr_tail,
                    first,
                ));
            }
            Outcome::Executed { duration_ms } if self.bar.is_hidden() => {
                self.human_line(&format!(
                    "built {} ({job}, {duration_ms} ms)",
                    refs_text(outputs),
                ));
            }
            _ => {}
        }
        self.update(progress);
    }
}

/// `a, b`: the outputs of an action.
fn refs_text(outputs: Refs<'_>) -> String {
    match outputs {
        Refs::Refs(refs) => refs
            .iter()
            .map(cairn_engine::PartitionRef::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        Refs::Strings(refs) => refs.join(", "),
    }
}

impl Reporter for BuildReporter {
    fn started(&self, action: &PlannedAction, _key: &ActionKey, progress: Progress) {
        self.action_started(
            address(action),
            &action.job,
            &outputs_text(action),
            progress,
        );
    }

    fn checkpointed(&self, action: &PlannedAction, sequence: u64) {
        self.action_checkpointed(address(action), sequence);
    }

    fn finished(
        &self,
        action: &PlannedAction,
        key: Option<&ActionKey>,
        outcome: &Outcome,
        progress: Progress,
    ) {
        self.action_finished(
            address(action),
            &action.job,
            Refs::from(&action.config.outputs[..]),
            outcome,
            key,
            progress,
        );
    }
}

impl BuildObserver for BuildReporter {
    /// Clears the progress bar before the warnings and the summary.
    fn actions_done(&self) {
        self.bar.finish_and_clear();
    }

    /// With `--json`, a `cached` line per action (one buffered write for
    /// them all).
    fn found_current(&self, snapshot: &Snapshot) {
        if !self.json {
            return;
        }
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        let cached = Outcome::Cached { restored: false };
        for action in &snapshot.actions {
            let job = &snapshot.jobs[action.job as usize];
            let line = ActionLine::new(
                job,
                Refs::from(&action.outputs[..]),
                &cached,
                Some(&action.key),
            );
            if serde_json::to_writer(&mut out, &line).is_err() || writeln!(out).is_err() {
                break;
            }
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_singular_for_one() {
        assert_eq!(count(1u64, "partition"), "1 partition");
        assert_eq!(count(0u64, "partition"), "0 partitions");
        assert_eq!(count(2usize, "action"), "2 actions");
        assert_eq!(
            count_as(1u64, "index entry", "index entries"),
            "1 index entry"
        );
        assert_eq!(
            count_as(3u64, "index entry", "index entries"),
            "3 index entries"
        );
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(duration_text(Duration::from_millis(85)), "85ms");
        assert_eq!(duration_text(Duration::from_millis(1_234)), "1.2s");
        assert_eq!(duration_text(Duration::from_millis(125_900)), "2m 5s");
        assert_eq!(duration_text(Duration::from_secs(3_792)), "1h 3m 12s");
    }

    #[test]
    fn the_bar_names_the_longest_running_action_and_its_checkpoint() {
        let mut live = Live::default();
        assert_eq!(live.running_text(), "running 0");
        live.running.insert(
            7,
            Running {
                job: "page".into(),
                outputs: "pages/site=a".into(),
                since: Instant::now()
                    .checked_sub(Duration::from_secs(65))
                    .expect("the clock is past a minute"),
                checkpoint: Some(4),
                order: 1,
            },
        );
        live.running.insert(
            3,
            Running {
                job: "clean".into(),
                outputs: "clean/x=1".into(),
                since: Instant::now(),
                checkpoint: None,
                order: 2,
            },
        );
        assert_eq!(
            live.running_text(),
            "running 2: page pages/site=a for 1m 5s, checkpoint 4"
        );
    }
}
