//! `/metrics`: Prometheus text exposition format 0.0.4, written by hand.
//!
//! A handful of counters, gauges and one histogram do not need a metrics
//! library: the format is a few lines per series
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>), and
//! writing it here keeps the server's dependencies to the HTTP stack. The
//! series are listed in docs/api.md.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_engine::exec::Outcome;

use crate::registry::{Registry, State, lock};

/// Upper bounds (seconds) of the request-duration histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    executed: AtomicU64,
    cached: AtomicU64,
    failed: AtomicU64,
    joined: AtomicU64,
    /// Requests by (route, status).
    requests: Mutex<BTreeMap<(String, u16), Histogram>>,
    /// Events startup read to rebuild earlier operations
    /// (server/src/restore.rs).
    pub restored_events_read: u64,
}

impl Metrics {
    /// An action of an operation finished.
    pub fn action(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Executed { .. } => &self.executed,
            Outcome::Cached { .. } => &self.cached,
            Outcome::Failed { .. } => &self.failed,
            Outcome::Joined { .. } => &self.joined,
            Outcome::Skipped { .. } => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A build found `count` actions current from its up-to-date snapshot.
    pub fn cached(&self, count: u64) {
        self.cached.fetch_add(count, Ordering::Relaxed);
    }

    /// A request to `route` answered `status` after `seconds`.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        let mut requests = lock(&self.requests);
        let histogram = requests.entry((route.to_owned(), status)).or_default();
        for (bucket, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                histogram.counts[bucket] += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// The exposition text.
    pub fn render(&self, registry: &Registry) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP cairn_queue_depth Operations submitted and not started.\n\
             # TYPE cairn_queue_depth gauge\n\
             cairn_queue_depth {}",
            registry.count(State::Queued)
        );
        let _ = writeln!(
            out,
            "# HELP cairn_restored_events_read Events of the log read at startup to rebuild earlier operations.\n\
             # TYPE cairn_restored_events_read gauge\n\
             cairn_restored_events_read {}",
            self.restored_events_read
        );
        let _ = writeln!(
            out,
            "# HELP cairn_actions_running Actions whose jobs run now.\n\
             # TYPE cairn_actions_running gauge\n\
             cairn_actions_running {}",
            registry.actions_running()
        );
        let executed = self.executed.load(Ordering::Relaxed);
        let cached = self.cached.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let joined = self.joined.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP cairn_actions_total Actions finished by the server's operations, by outcome.\n\
             # TYPE cairn_actions_total counter\n\
             cairn_actions_total{{outcome=\"executed\"}} {executed}\n\
             cairn_actions_total{{outcome=\"cached\"}} {cached}\n\
             cairn_actions_total{{outcome=\"joined\"}} {joined}\n\
             cairn_actions_total{{outcome=\"failed\"}} {failed}"
        );
        let _ = writeln!(
            out,
            "# HELP cairn_cache_hits_total Actions satisfied from the store without running.\n\
             # TYPE cairn_cache_hits_total counter\n\
             cairn_cache_hits_total {cached}"
        );
        let _ = writeln!(
            out,
            "# HELP cairn_operations Operations of this server's life, by state.\n\
             # TYPE cairn_operations gauge"
        );
        for state in State::ALL {
            let _ = writeln!(
                out,
                "cairn_operations{{state=\"{}\"}} {}",
                state.word(),
                registry.count(state)
            );
        }
        let _ = writeln!(
            out,
            "# HELP cairn_http_request_duration_seconds Time to answer a request (to the headers of a stream), by route and status.\n\
             # TYPE cairn_http_request_duration_seconds histogram"
        );
        for ((route, status), histogram) in lock(&self.requests).iter() {
            let labels = format!("route=\"{}\",status=\"{status}\"", escape(route));
            for (bucket, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "cairn_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    histogram.counts[bucket]
                );
            }
            let _ = writeln!(
                out,
                "cairn_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                 cairn_http_request_duration_seconds_sum{{{labels}}} {}\n\
                 cairn_http_request_duration_seconds_count{{{labels}}} {}",
                histogram.count, histogram.sum, histogram.count
            );
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_counts_cumulatively_and_labels_are_escaped() {
        let metrics = Metrics::default();
        metrics.request("/v1/builds", 202, 0.003);
        metrics.request("/v1/builds", 202, 0.3);
        metrics.request("/a\"b", 404, 20.0);
        let text = metrics.render(&Registry::default());
        assert!(text.contains(
            "cairn_http_request_duration_seconds_bucket{route=\"/v1/builds\",status=\"202\",le=\"0.005\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "cairn_http_request_duration_seconds_bucket{route=\"/v1/builds\",status=\"202\",le=\"0.5\"} 2\n"
        ), "{text}");
        assert!(
            text.contains(
                "cairn_http_request_duration_seconds_count{route=\"/v1/builds\",status=\"202\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "cairn_http_request_duration_seconds_bucket{route=\"/a\\\"b\",status=\"404\",le=\"+Inf\"} 1\n"
        ), "{text}");
        assert!(text.contains("cairn_queue_depth 0\n"), "{text}");
        assert!(
            text.contains("cairn_operations{state=\"running\"} 0\n"),
            "{text}"
        );
    }
}
