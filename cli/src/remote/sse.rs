//! Server-sent events (the WHATWG `text/event-stream` format), read from
//! any `BufRead`: `event:`, `data:` (joined by newlines) and `id:` fields,
//! a blank line ends an event, a line starting with `:` is a comment (the
//! server's keep-alive).

use std::io::BufRead;

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `message` when the event names none.
    pub event: String,
    pub data: String,
    /// The last `id:` seen on the stream so far (ids carry over).
    pub id: Option<String>,
}

/// Reads events from `input` one at a time.
pub struct Events<R> {
    input: R,
    last_id: Option<String>,
    line: Vec<u8>,
}

impl<R: BufRead> Events<R> {
    pub fn new(input: R) -> Self {
        Events {
            input,
            last_id: None,
            line: Vec::new(),
        }
    }

    /// The next event; `Ok(None)` at the end of the stream (an event not
    /// ended by a blank line is dropped, as the format says).
    pub fn next_event(&mut self) -> std::io::Result<Option<Message>> {
        let mut event = String::new();
        let mut data: Option<String> = None;
        loop {
            self.line.clear();
            if self.input.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(None);
            }
            let mut line: &[u8] = &self.line;
            if let Some(rest) = line.strip_suffix(b"\n") {
                line = rest;
            }
            if let Some(rest) = line.strip_suffix(b"\r") {
                line = rest;
            }
            let line = String::from_utf8_lossy(line);
            if line.is_empty() {
                match data.take() {
                    Some(data) => {
                        return Ok(Some(Message {
                            event: if event.is_empty() {
                                "message".to_owned()
                            } else {
                                event
                            },
                            data,
                            id: self.last_id.clone(),
                        }));
                    }
                    None => {
                        event.clear();
                        continue;
                    }
                }
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => event = value.to_owned(),
                "data" => match &mut data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<Message> {
        let mut events = Events::new(text.as_bytes());
        let mut out = Vec::new();
        while let Some(message) = events.next_event().unwrap() {
            out.push(message);
        }
        out
    }

    #[test]
    fn events_ids_comments_and_multi_line_data() {
        let stream = ": keep-alive\n\nevent: cairn\nid: 7\ndata: {\"seq\":7}\n\n\
                      : keep-alive\r\nevent: cairn\r\nid: 8\r\ndata:{\"a\":\r\ndata: 1}\r\n\r\n\
                      data: plain\n\nevent: done\ndata: {\"done\":true}\n\ndata: cut off";
        let events = all(stream);
        assert_eq!(
            events,
            vec![
                Message {
                    event: "cairn".into(),
                    data: "{\"seq\":7}".into(),
                    id: Some("7".into())
                },
                Message {
                    event: "cairn".into(),
                    data: "{\"a\":\n1}".into(),
                    id: Some("8".into())
                },
                Message {
                    event: "message".into(),
                    data: "plain".into(),
                    id: Some("8".into())
                },
                Message {
                    event: "done".into(),
                    data: "{\"done\":true}".into(),
                    id: Some("8".into())
                },
            ]
        );
    }
}
