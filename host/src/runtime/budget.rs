//! Per-call caps on what a guest can make the host write: each output channel
//! (stdout, stderr, the `log` import) forwards at most [`MAX_LINES`] lines and
//! [`MAX_BYTES`] bytes per call to `tracing`; the rest is dropped and counted,
//! so a guest looping on output cannot flood the daemon's log or disk.

use std::fmt;

/// Lines one channel forwards per call.
pub const MAX_LINES: usize = 1000;
/// Bytes (of message and fields) one channel forwards per call.
pub const MAX_BYTES: usize = 1 << 20;

/// What one channel has forwarded in the current call, and what it dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Budget {
    lines: usize,
    bytes: usize,
    dropped: Dropped,
}

/// Output dropped by a channel over a call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub lines: u64,
    pub bytes: u64,
}

impl Budget {
    /// Takes room for one line of `len` bytes. `false`: over the cap, so the
    /// line is to be dropped (it is counted here). Only counters are touched:
    /// this runs for every line a guest writes.
    #[inline]
    pub fn admit(&mut self, len: usize) -> bool {
        if self.lines < MAX_LINES && len <= MAX_BYTES - self.bytes {
            self.lines += 1;
            self.bytes += len;
            true
        } else {
            self.dropped.lines += 1;
            self.dropped.bytes += len as u64;
            false
        }
    }

    /// Ends the call: returns what was dropped and starts afresh.
    pub fn finish(&mut self) -> Dropped {
        std::mem::take(self).dropped
    }
}

impl Dropped {
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }
}

/// Everything a call's channels dropped, by channel name; empty when nothing
/// was. Its `Display` is the note added to the call's failure and warning.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Capped(Vec<(&'static str, Dropped)>);

impl Capped {
    pub fn add(&mut self, channel: &'static str, dropped: Dropped) {
        if !dropped.is_empty() {
            self.0.push((channel, dropped));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Capped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin output capped at {MAX_LINES} lines / {} KiB per channel and call:",
            MAX_BYTES >> 10
        )?;
        for (i, (channel, d)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(
                f,
                "{sep} {channel} {} lines ({} bytes) dropped",
                d.lines, d.bytes
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_either_cap_are_dropped_and_counted() {
        let mut b = Budget::default();
        for _ in 0..MAX_LINES {
            assert!(b.admit(1));
        }
        assert!(!b.admit(1));
        assert_eq!(b.finish(), Dropped { lines: 1, bytes: 1 });
        // A fresh call: the byte cap, a line that no longer fits is dropped whole.
        assert!(b.admit(MAX_BYTES - 10));
        assert!(!b.admit(11));
        assert!(b.admit(10));
        let d = b.finish();
        assert_eq!(d.bytes, 11);
    }

    #[test]
    fn the_note_names_each_channel_that_dropped() {
        let mut c = Capped::default();
        c.add("stdout", Dropped::default());
        assert!(c.is_empty());
        c.add(
            "log",
            Dropped {
                lines: 512_345,
                bytes: 185_000_000,
            },
        );
        c.add("stderr", Dropped { lines: 2, bytes: 9 });
        let text = c.to_string();
        assert!(
            text.contains("log 512345 lines (185000000 bytes) dropped, stderr 2 lines"),
            "{text}"
        );
        assert!(!text.contains("stdout"), "{text}");
    }
}
