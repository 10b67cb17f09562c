//! `--format json`: one JSON document on stdout with every event, the recap
//! per host and the exit code. Events are written as they happen (the
//! document is complete only at the end of the run), so a fleet's events
//! are never all held in memory; the bytes are those of serde_json's pretty
//! printer over the whole [`Summary`].

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::{Counts, Event, Sink, Summary};

pub struct Json {
    pub out: Box<dyn Write + Send>,
    /// Check mode: the document's first field, written before any event.
    pub check: bool,
    /// Events written so far.
    written: usize,
    /// The first write error: reported at the end, nothing more is written.
    error: Option<std::io::Error>,
}

/// The fields of [`Summary`] after `events`, in its order.
#[derive(Serialize)]
struct Tail<'a> {
    recap: &'a BTreeMap<String, Counts>,
    channels: &'a BTreeMap<String, usize>,
    exit_code: i32,
    duration_ms: u128,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    audits: &'a [crate::audit::NodeAudit],
}

impl Json {
    pub fn new(out: Box<dyn Write + Send>, check: bool) -> Json {
        Json {
            out,
            check,
            written: 0,
            error: None,
        }
    }

    fn write(&mut self, text: &str) {
        if self.error.is_none()
            && let Err(e) = self.out.write_all(text.as_bytes())
        {
            self.error = Some(e);
        }
    }

    /// The document's head, once: `{`, `check`, and the opening of `events`.
    fn head(&mut self) {
        let check = self.check;
        self.write(&format!("{{\n  \"check\": {check},\n  \"events\": ["));
    }

    /// `value` pretty-printed, each line indented by `depth` levels, as it
    /// appears nested in the whole document (JSON strings hold no raw line
    /// break, so indenting by lines is exact).
    fn nested(value: &impl Serialize, depth: usize) -> String {
        let text = serde_json::to_string_pretty(value).expect("serializable");
        let pad = "  ".repeat(depth);
        let mut out = String::with_capacity(text.len() + text.len() / 4);
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
                out.push_str(&pad);
            }
            out.push_str(line);
        }
        out
    }
}

impl Sink for Json {
    fn event(&mut self, e: &Event) {
        if self.written == 0 {
            self.head();
        }
        let sep = if self.written == 0 {
            "\n    "
        } else {
            ",\n    "
        };
        let text = format!("{sep}{}", Json::nested(e, 2));
        self.write(&text);
        self.written += 1;
    }

    fn finish(&mut self, s: &Summary) -> Result<(), String> {
        // A document read back (khard merge) or built after the run carries
        // its events itself.
        let replay: Vec<&Event> = s.events.iter().skip(self.written).collect();
        for e in replay {
            self.event(e);
        }
        if self.written == 0 {
            self.head();
            self.write("]");
        } else {
            self.write("\n  ]");
        }
        let tail = Tail {
            recap: &s.recap,
            channels: &s.channels,
            exit_code: s.exit_code,
            duration_ms: s.duration_ms,
            audits: &s.audits,
        };
        let tail = Json::nested(&tail, 0);
        // `{` + newline dropped: the tail's fields continue the document.
        let fields = tail.strip_prefix("{\n").unwrap_or(&tail);
        self.write(&format!(",\n{fields}\n"));
        if self.error.is_none()
            && let Err(e) = self.out.flush()
        {
            self.error = Some(e);
        }
        match self.error.take() {
            None => Ok(()),
            Some(e) => Err(format!(
                "the JSON report could not be written to stdout: {e}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    fn event(host: &str, task: &str) -> Event {
        Event {
            host: host.into(),
            play: "p".into(),
            task: task.into(),
            handler: false,
            guard: false,
            status: Status::Changed,
            check: true,
            cis: vec!["1.2.3".into()],
            benchmark: Some("k3s-cis-1.10".into()),
            tags: vec!["a".into(), "b".into()],
            details: vec!["line\nwith \"quotes\"".into()],
            diff: Some("--- a\n+++ b\n".into()),
            output: None,
            message: None,
            duration_ms: 7,
        }
    }

    /// A shared buffer standing for stdout.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn streamed(events: &[Event], summary: &Summary) -> String {
        let buffer = Buffer::default();
        let mut sink = Json::new(Box::new(buffer.clone()), summary.check);
        for e in events {
            sink.event(e);
        }
        sink.finish(summary).unwrap();
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    /// Streamed, the document is byte for byte serde_json's pretty print of
    /// the whole summary: with events, without, and replayed from a summary.
    #[test]
    fn streaming_writes_the_same_document_as_the_whole_summary() {
        let events = vec![event("h1", "t1"), event("h2", "t2")];
        let mut summary = Summary {
            check: true,
            events: events.clone(),
            recap: [("h1".into(), Counts::default())].into(),
            channels: [("h1".into(), 2)].into(),
            exit_code: 2,
            duration_ms: 1234,
            audits: Vec::new(),
        };
        let whole = serde_json::to_string_pretty(&summary).unwrap() + "\n";
        let live = Summary {
            events: Vec::new(),
            ..summary.clone()
        };
        assert_eq!(streamed(&events, &live), whole);
        assert_eq!(streamed(&[], &summary), whole, "replayed from the summary");
        summary.events.clear();
        let whole = serde_json::to_string_pretty(&summary).unwrap() + "\n";
        assert_eq!(streamed(&[], &summary), whole, "no event");
    }
}
