//! Output for humans (stderr: a live progress line on a TTY, plain lines
//! otherwise; NO_COLOR honoured) and for programs (JSON lines on stdout).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use cairn_engine::action::Outcome;
use cairn_engine::digest::ActionKey;
use cairn_engine::exec::{Progress, Reporter};
use cairn_engine::plan::PlannedAction;
use serde_json::json;

fn color(code: &str, text: &str) -> String {
    if std::env::var_os("NO_COLOR").is_some() || !std::io::stderr().is_terminal() {
        text.to_owned()
    } else {
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// `error: ...` on stderr.
pub fn error_line(message: &str) {
    let mut stderr = std::io::stderr().lock();
    let message = crate::escape::escape_lines(message);
    let _ = writeln!(stderr, "{} {message}", color("31;1", "error:"));
}

/// A note for humans on stderr.
pub fn note(message: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{}", crate::escape::escape_lines(message));
}

/// Prints one JSON value as a line on stdout.
pub fn json_line(value: &serde_json::Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{value}");
}

pub fn outcome_word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Executed { .. } => "executed",
        Outcome::Cached { restored: false } => "cached",
        Outcome::Cached { restored: true } => "restored",
        Outcome::Failed { .. } => "failed",
        Outcome::Skipped { .. } => "skipped",
    }
}

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
    partition: Option<&cairn_engine::PartitionRef>,
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

/// The build's reporter: JSON lines and/or human progress.
pub struct BuildReporter {
    json: bool,
    tty: bool,
    start: Instant,
    last_draw: Mutex<Option<Instant>>,
}

impl BuildReporter {
    pub fn new(json: bool) -> Self {
        BuildReporter {
            json,
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            last_draw: Mutex::new(None),
        }
    }

    fn draw(&self, progress: Progress, force: bool) {
        if !self.tty {
            return;
        }
        let Ok(mut last) = self.last_draw.lock() else {
            return;
        };
        if !force && last.is_some_and(|at| at.elapsed().as_millis() < 80) {
            return;
        }
        *last = Some(Instant::now());
        let width = 30usize;
        let filled = (progress.done * width)
            .checked_div(progress.total)
            .unwrap_or(width);
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = if progress.done > 0 && progress.done < progress.total {
            let remaining =
                elapsed / progress.done as f64 * (progress.total - progress.done) as f64;
            format!(" ETA {remaining:.0}s")
        } else {
            String::new()
        };
        let failed = if progress.counts.failed > 0 {
            color("31", &format!(" failed {}", progress.counts.failed))
        } else {
            String::new()
        };
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r\x1b[2K[{}{}] {}/{} running {}{failed}{eta}",
            "=".repeat(filled),
            " ".repeat(width - filled),
            progress.done,
            progress.total,
            progress.running
        );
        let _ = stderr.flush();
    }

    /// Clears the progress line before the summary.
    pub fn finish(&self) {
        if self.tty {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }

    fn human_line(&self, line: &str) {
        let mut stderr = std::io::stderr().lock();
        if self.tty {
            let _ = write!(stderr, "\r\x1b[2K");
        }
        let _ = writeln!(stderr, "{line}");
    }
}

/// The `--json` line of an action: `{"type":"action","job":…,"outputs":…,"outcome":…,"key":…}`
/// (the key when known), as the full path and the up-to-date snapshot
/// both report it.
pub fn action_line(
    job: &str,
    outputs: &impl serde::Serialize,
    outcome: &Outcome,
    key: Option<&ActionKey>,
) -> serde_json::Value {
    let mut line = json!({
        "type": "action",
        "job": job,
        "outputs": outputs,
        "outcome": outcome_word(outcome),
    });
    if let Some(key) = key {
        line["key"] = json!(key.to_hex());
    }
    line
}

impl Reporter for BuildReporter {
    fn started(&self, _action: &PlannedAction, progress: Progress) {
        self.draw(progress, false);
    }

    fn finished(
        &self,
        action: &PlannedAction,
        key: Option<&ActionKey>,
        outcome: &Outcome,
        progress: Progress,
    ) {
        if self.json {
            let mut line = action_line(&action.job, &action.config.outputs, outcome, key);
            match outcome {
                Outcome::Executed { duration_ms } => line["duration_ms"] = json!(duration_ms),
                Outcome::Failed { error, stderr_tail } => {
                    line["error"] = json!(error);
                    line["stderr_tail"] = json!(stderr_tail);
                }
                Outcome::Skipped { reason } => line["reason"] = json!(reason),
                Outcome::Cached { .. } => {}
            }
            json_line(&line);
        }
        match outcome {
            Outcome::Failed { error, stderr_tail } => {
                self.human_line(&failure_text(
                    &color("31;1", "failed:"),
                    error,
                    stderr_tail,
                    action.config.outputs.first(),
                ));
            }
            Outcome::Executed { duration_ms } if !self.tty => {
                self.human_line(&format!(
                    "built {} ({}, {duration_ms} ms)",
                    outputs_text(action),
                    action.job
                ));
            }
            _ => {}
        }
        self.draw(
            progress,
            matches!(outcome, Outcome::Failed { .. }) || progress.done == progress.total,
        );
    }
}
