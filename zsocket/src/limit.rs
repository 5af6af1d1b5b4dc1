//! At most one log line a second for each kind of warning a peer can cause.
//!
//! A broken or hostile peer can send a malformed message, a taken-over identity or a refused
//! handshake as fast as the network carries them; a warning per message would flood the log (a
//! C worker that reconnects with no delay once made 15,772 lines in 3 s). So each kind of warning
//! goes through a [`LogLimit`]: the first is logged, those within the next second are only
//! counted (and may go to the debug log), and the next one logged says how many were held back.
//! It is given `now` like the sans-IO cores that use it, so it reads no clock and is tested in
//! virtual time.

use std::time::{Duration, Instant};

/// How often one kind of warning may be logged.
pub const LOG_EVERY: Duration = Duration::from_secs(1);

/// The rate limit of one kind of warning; see the [module docs](self).
#[derive(Debug, Default, Clone)]
pub struct LogLimit {
    /// When the last line was logged; `None` before the first.
    last_line_at: Option<Instant>,
    /// Warnings held back since the last line.
    held_back: u64,
}

impl LogLimit {
    /// One more warning at `now`: `Some(held back before it)` if a line is due (the line reports
    /// this one and those), `None` if it is only counted.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last_line_at {
            Some(at) if now < at + LOG_EVERY => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last_line_at = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }

    /// The count of warnings held back, if a second has passed since the last line and a line
    /// about them is due (for a periodic tick, so the last burst is reported too).
    pub fn overdue(&mut self, now: Instant) -> Option<u64> {
        let at = self.last_line_at?;
        if self.held_back == 0 || now < at + LOG_EVERY {
            return None;
        }
        self.last_line_at = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_and_the_next_line_counts_what_was_held_back() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut limit = LogLimit::default();
        assert_eq!(limit.overdue(at(0)), None, "nothing logged, nothing due");
        assert_eq!(limit.allow(at(0)), Some(0));
        assert_eq!(limit.allow(at(10)), None);
        assert_eq!(limit.allow(at(999)), None);
        assert_eq!(limit.overdue(at(999)), None, "not a second yet");
        assert_eq!(limit.allow(at(1000)), Some(2));
        assert_eq!(limit.allow(at(1500)), None);
        assert_eq!(
            limit.overdue(at(2000)),
            Some(1),
            "the rest is reported by a tick"
        );
        assert_eq!(
            limit.allow(at(2500)),
            None,
            "within a second of the tick's line"
        );
        assert_eq!(limit.overdue(at(3500)), Some(1));
        assert_eq!(limit.overdue(at(5000)), None, "nothing held back");
        assert_eq!(limit.allow(at(5000)), Some(0));
    }
}
