//! Where the event stream stands: between two events, or in the middle of one.

/// Tracks whether the bytes of an event stream seen so far end on an event boundary.
///
/// An event ends with a blank line: two line terminators in a row, where a terminator is
/// `\r\n`, `\n` or `\r` (HTML, "Parsing an event stream"). So `\n\n`, `\r\n\r\n` and `\r\r` end
/// an event, and so do the mixed forms (`\r\n\n`, `\n\r`). A comment written at such a point
/// cannot change what the browser dispatches: at worst an `\n` completing the upstream's `\r\n`
/// then reads as one more blank line, which dispatches nothing.
///
/// The start of the stream, before any byte, is a boundary too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventBoundary {
    /// Line terminators in a row at the end of what was seen, saturated at 2.
    terminators: u8,
    /// The last byte was `\r`, so an `\n` that follows belongs to the same terminator.
    pending_cr: bool,
}

impl EventBoundary {
    /// A tracker for a stream that has not sent any byte yet (which counts as a boundary).
    pub(crate) const fn new() -> Self {
        Self {
            terminators: 2,
            pending_cr: false,
        }
    }

    /// Whether the bytes seen so far end with a blank line (or there were none).
    pub(crate) const fn at_boundary(&self) -> bool {
        self.terminators >= 2
    }

    /// Feeds the next bytes of the stream.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        // Only the trailing run of CR/LF bytes matters: any other byte starts a line afresh.
        let tail = match bytes.iter().rposition(|&b| b != b'\r' && b != b'\n') {
            Some(last_text) => {
                self.terminators = 0;
                self.pending_cr = false;
                &bytes[last_text + 1..]
            }
            None => bytes,
        };
        for &b in tail {
            if b == b'\n' && self.pending_cr {
                // The LF of a CRLF: counted when the CR was seen.
                self.pending_cr = false;
                continue;
            }
            self.terminators = (self.terminators + 1).min(2);
            self.pending_cr = b == b'\r';
        }
    }
}

impl Default for EventBoundary {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::EventBoundary;

    fn after(chunks: &[&[u8]]) -> bool {
        let mut b = EventBoundary::new();
        for c in chunks {
            b.feed(c);
        }
        b.at_boundary()
    }

    #[test]
    fn start_of_stream_is_a_boundary() {
        assert!(EventBoundary::new().at_boundary());
        assert!(after(&[b""]));
    }

    #[test]
    fn blank_line_forms_end_an_event() {
        assert!(after(&[b"data: a\n\n"]));
        assert!(after(&[b"data: a\r\n\r\n"]));
        assert!(after(&[b"data: a\r\r"]));
        assert!(after(&[b"data: a\r\n\n"]));
        assert!(after(&[b"data: a\n\r\n"]));
        assert!(after(&[b"data: a\n\r"]));
        assert!(after(&[b"data: a\r\r\n"]));
        assert!(after(&[b":\n\n"]));
    }

    #[test]
    fn partial_events_are_not_boundaries() {
        assert!(!after(&[b"data: a"]));
        assert!(!after(&[b"data: a\n"]));
        assert!(!after(&[b"data: a\r"]));
        assert!(!after(&[b"data: a\r\n"]));
        assert!(!after(&[b"data: a\n\ndata: b\n"]));
        assert!(!after(&[b"data: a\n\nid"]));
    }

    #[test]
    fn terminators_split_across_chunks() {
        assert!(after(&[b"data: a\n", b"\n"]));
        assert!(after(&[b"data: a\r\n", b"\r\n"]));
        assert!(after(&[b"data: a\r\n\r", b"\n"]));
        assert!(after(&[b"data: a\r", b"\r"]));
        assert!(after(&[b"data: a", b"\n", b"\n"]));
        // CR then LF in separate chunks is one terminator, not two.
        assert!(!after(&[b"data: a\r", b"\n"]));
        assert!(!after(&[b"data: a\n\n", b"data: b"]));
        assert!(!after(&[b"data: a\n\n", b"data: b\r", b"\n"]));
    }

    #[test]
    fn empty_chunks_change_nothing() {
        assert!(!after(&[b"data: a\n", b"", b""]));
        assert!(after(&[b"data: a\n\n", b""]));
    }
}
