//! `cairn --remote URL log`: the server's event log, rendered and
//! filtered by the code of `cairn log`.

use cairn_app::dto::events::EventLine;
use cairn_app::events::EventQuery;
use serde::Deserialize;

use super::http::Remote;
use crate::Failure;
use crate::report::note;

#[derive(Debug, Deserialize)]
struct StatsAnswer {
    events: u64,
}

/// `cairn --remote URL log [filters]`: the events recorded when it starts,
/// as `cairn log` prints them. The event stream (`GET /v1/events`) never
/// ends by itself, so the command reads the log's length first (`GET
/// /v1/store/stats`), follows the stream from `--since` (or the start)
/// unfiltered, and stops at that event; the filters are applied here, by
/// the code `cairn log` filters with (so `--until` and dates work as
/// locally).
pub fn log(remote: &Remote, query: &EventQuery, json: bool) -> Result<u8, Failure> {
    use std::io::{BufReader, Write};
    let filter = cairn_app::events::EventFilter::new(query)?;
    let stats: StatsAnswer = remote.get_json("/v1/store/stats", &[])?;
    let last = stats.events;
    if last == 0 {
        note("nothing was built here yet: the event log is empty");
        return Ok(0);
    }
    let since = query
        .since
        .as_deref()
        .and_then(|text| text.parse::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    if since > last {
        return Ok(0);
    }
    let since_text = since.to_string();
    let path = format!("/v1/events?since={since_text}");
    let mut stdout = std::io::stdout().lock();
    let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut last_id: Option<String> = None;
    let mut seen = since - 1;
    let mut reconnects = 0;
    while seen < last {
        let reader = remote.open_stream(&path, last_id.as_deref())?;
        let mut events = super::sse::Events::new(BufReader::new(reader));
        let mut progressed = false;
        while let Ok(Some(message)) = events.next_event() {
            if message.event != "cairn" {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(&message.data).map_err(|error| {
                    Failure::store(format!(
                        "{}/v1/events: an event that is not JSON ({error})",
                        remote.base()
                    ))
                })?;
            let event = super::events::event_from_line(&value).map_err(|error| {
                Failure::store(format!(
                    "{}/v1/events: an event this cairn does not understand ({error}); \
                     is the server of the same version?",
                    remote.base()
                ))
            })?;
            progressed = true;
            seen = event.seq;
            last_id = Some(event.seq.to_string());
            if event.seq > last {
                break;
            }
            if filter.matches(&event) {
                if json {
                    EventLine(&event).write(&mut buffer);
                } else {
                    buffer.extend_from_slice(crate::inspect::event_text(&event).as_bytes());
                    buffer.push(b'\n');
                }
            }
            if buffer.len() >= 60 * 1024 {
                if stdout.write_all(&buffer).is_err() {
                    // A closed pipe (`| head`) ends the listing.
                    return Ok(0);
                }
                buffer.clear();
            }
            if event.seq >= last {
                break;
            }
        }
        // The stream dropped before the end: go on from the last event,
        // a few times.
        if seen < last {
            reconnects = if progressed { 0 } else { reconnects + 1 };
            if reconnects > 5 {
                return Err(Failure::store(format!(
                    "{}/v1/events: the stream keeps ending before event {last}",
                    remote.base()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let _ = stdout.write_all(&buffer);
    let _ = stdout.flush();
    Ok(0)
}
