//! The server-sent event streams (docs/api.md "Events"): the tailer that
//! feeds [`Feed`](crate::feed::Feed), and the streams that follow it, the
//! whole log or one operation's build.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use cairn_app::dto::events::EventLine;
use cairn_app::events::EventFilter;
use cairn_engine::record::Event;
use futures_util::Stream;

use crate::feed::BATCH;
use crate::ops::Shared;

/// How often the tailer looks at the catalog file.
const TICK: Duration = Duration::from_millis(100);

/// The tailer: runs until the server stops.
pub async fn tail(shared: Arc<Shared>) {
    let mut closed = shared.feed.closed.subscribe();
    loop {
        let poked = tokio::select! {
            _ = shared.feed.poke.notified() => true,
            _ = tokio::time::sleep(TICK) => false,
            _ = closed.changed() => return,
        };
        let reading = Arc::clone(&shared);
        let _ = tokio::task::spawn_blocking(move || {
            if reading
                .feed
                .read_new(&reading.workspace, &reading.registry, poked)
            {
                reading.touch();
            }
        })
        .await;
    }
}

/// Events after `cursor` up to `head` (blocking when they are read from
/// the log).
async fn after(shared: &Arc<Shared>, cursor: u64, head: u64) -> Vec<Arc<Event>> {
    if let Some(events) = shared.feed.kept_after(cursor, head) {
        return events;
    }
    let reading = Arc::clone(shared);
    tokio::task::spawn_blocking(move || {
        let mut events = Vec::new();
        let Ok(Some(store)) = reading.workspace.open_reader() else {
            return events;
        };
        let _ =
            cairn_engine::ports::EventLog::scan_events(store.catalog(), cursor + 1, &mut |event| {
                if event.seq > head {
                    return false;
                }
                events.push(Arc::new(event));
                events.len() < BATCH
            });
        events
    })
    .await
    .unwrap_or_default()
}

/// What a stream follows.
pub struct Follow {
    pub shared: Arc<Shared>,
    /// The last seq sent (or skipped).
    pub cursor: u64,
    pub filter: EventFilter,
    /// An operation's stream: its id.
    pub operation: Option<String>,
}

struct Following {
    follow: Follow,
    pending: VecDeque<Arc<Event>>,
    /// The operation's build, once known.
    build: Option<u64>,
    heads: tokio::sync::watch::Receiver<u64>,
    changes: tokio::sync::watch::Receiver<u64>,
    closed: tokio::sync::watch::Receiver<bool>,
    ended: bool,
}

/// What an operation's stream knows of it now.
struct OpNow {
    build: Option<u64>,
    /// `Some(end_seq)` when it is done.
    done: Option<u64>,
    json: serde_json::Value,
}

fn op_now(shared: &Shared, id: &str) -> Option<OpNow> {
    let registry = shared.registry();
    let op = registry.get(id)?;
    Some(OpNow {
        build: op.build,
        done: op.state.done().then(|| op.end_seq.unwrap_or(op.start_seq)),
        json: op.json(),
    })
}

impl Following {
    /// The next SSE event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if self.ended {
                return None;
            }
            while let Some(event) = self.pending.pop_front() {
                self.follow.cursor = event.seq;
                let ours = match &self.follow.operation {
                    Some(_) => self.build == Some(event.build),
                    None => true,
                };
                if ours && self.follow.filter.matches(&event) {
                    let data = serde_json::to_string(&EventLine(&event)).unwrap_or_default();
                    return Some(
                        SseEvent::default()
                            .event("cairn")
                            .id(event.seq.to_string())
                            .data(data),
                    );
                }
            }
            let head = *self.heads.borrow_and_update();
            let _ = self.changes.borrow_and_update();
            if let Some(id) = &self.follow.operation {
                let now = op_now(&self.follow.shared, id)?;
                self.build = now.build;
                if let Some(end) = now.done
                    && self.follow.cursor >= end.min(head)
                    && head >= end
                {
                    self.ended = true;
                    return Some(SseEvent::default().event("done").data(now.json.to_string()));
                }
            }
            if self.follow.cursor < head {
                let events = after(&self.follow.shared, self.follow.cursor, head).await;
                if events.is_empty() {
                    // The log holds nothing more up to head (it cannot be
                    // read now): go on from head rather than spin.
                    self.follow.cursor = head;
                }
                self.pending.extend(events);
                continue;
            }
            if *self.closed.borrow() {
                return None;
            }
            tokio::select! {
                _ = self.heads.changed() => {}
                _ = self.changes.changed(), if self.follow.operation.is_some() => {}
                _ = self.closed.changed() => {}
            }
        }
    }
}

/// The SSE response following `follow`, with a `: keep-alive` comment
/// every 15 s.
pub fn stream(follow: Follow) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let following = Following {
        heads: follow.shared.feed.head.subscribe(),
        changes: follow.shared.changed.subscribe(),
        closed: follow.shared.feed.closed.subscribe(),
        follow,
        pending: VecDeque::new(),
        build: None,
        ended: false,
    };
    let events = futures_util::stream::unfold(following, |mut following| async move {
        let event = following.next().await?;
        Some((Ok(event), following))
    });
    Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    )
}
