//! How threads are told to stop: a crossbeam channel that never carries a message.
//!
//! Every role spends its life waiting, in `zmq::poll` for a frame or in its pretend work. A
//! waiting thread cannot be interrupted from outside in safe Rust, so it must look for itself.
//! The [`StopSignal`] it looks at is the receiving end of a channel whose only sender is the
//! [`StopHandle`]. Nobody ever sends on it: dropping the handle *disconnects* the channel, and
//! every clone of the receiver sees the disconnection at once. So the signal is a broadcast that
//! no thread can miss or take away from the others, and it fires even when the owner of the handle
//! returns early with an error or panics.
//!
//! `zmq::poll` takes only ZeroMQ sockets and raw file descriptors, not a channel, so a thread
//! waiting for a frame polls in slices of [`STOP_CHECK_INTERVAL`] and looks at the signal between
//! slices: an idle thread wakes ten times a second, which costs microseconds, and stopping takes
//! at most one slice. A thread that is working waits on the channel itself
//! ([`StopSignal::wait`]) and stops at once.

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

/// Longest time a thread blocked in `zmq::poll` goes without looking at its [`StopSignal`].
pub const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// [`STOP_CHECK_INTERVAL`] in the unit `zmq::poll` wants.
pub(crate) const STOP_CHECK_INTERVAL_MS: i64 = 100;

/// Raises the stop signal when dropped (or given to [`StopHandle::stop`]).
#[derive(Debug)]
pub struct StopHandle {
    _sender: Sender<()>,
}

impl StopHandle {
    /// Tells every holder of the matching [`StopSignal`] to stop. Same as dropping the handle.
    pub fn stop(self) {}
}

/// The receiving side: cheap to clone, one clone per thread.
#[derive(Debug, Clone)]
pub struct StopSignal {
    receiver: Receiver<()>,
}

/// A new handle and its signal.
pub fn stop_pair() -> (StopHandle, StopSignal) {
    let (sender, receiver) = crossbeam_channel::bounded(0);
    (StopHandle { _sender: sender }, StopSignal { receiver })
}

impl StopSignal {
    /// A signal that is never raised: for callers with nothing that could interrupt them.
    pub fn never() -> Self {
        StopSignal {
            receiver: crossbeam_channel::never(),
        }
    }

    /// Whether the handle has been dropped.
    pub fn is_raised(&self) -> bool {
        matches!(self.receiver.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Waits up to `timeout`, returning early with `true` as soon as the signal is raised;
    /// `false` means the whole time passed.
    pub fn wait(&self, timeout: Duration) -> bool {
        !matches!(
            self.receiver.recv_timeout(timeout),
            Err(RecvTimeoutError::Timeout)
        )
    }

    /// The channel itself, for `crossbeam_channel::select!`: a `recv` on it completes (with an
    /// error) when the signal is raised.
    pub(crate) fn receiver(&self) -> &Receiver<()> {
        &self.receiver
    }
}

/// What woke a thread that was waiting for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A message can be received without blocking.
    Readable,
    /// The stop signal was raised.
    Stopped,
}

/// Waits until `socket` has a message to read or `stop` is raised, whichever comes first.
pub(crate) fn wait_for_message(socket: &zmq::Socket, stop: &StopSignal) -> zmq::Result<Wake> {
    loop {
        if stop.is_raised() {
            return Ok(Wake::Stopped);
        }
        match socket.poll(zmq::POLLIN, STOP_CHECK_INTERVAL_MS) {
            Ok(0) => {}
            Ok(_) => return Ok(Wake::Readable),
            // A signal (Ctrl-C) arrived during the poll; the loop looks at `stop` again.
            Err(zmq::Error::EINTR) => {}
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_handle_raises_every_clone_of_the_signal() {
        let (handle, signal) = stop_pair();
        let other = signal.clone();
        assert!(!signal.is_raised());
        handle.stop();
        assert!(signal.is_raised());
        assert!(other.is_raised());
        // And it stays raised: looking does not consume it.
        assert!(signal.is_raised());
    }

    #[test]
    fn wait_returns_early_once_raised() {
        let (handle, signal) = stop_pair();
        assert!(!signal.wait(Duration::from_millis(1)));
        let waiter = std::thread::spawn(move || signal.wait(Duration::from_secs(60)));
        drop(handle);
        assert!(matches!(waiter.join(), Ok(true)));
    }

    #[test]
    fn never_is_never_raised() {
        let signal = StopSignal::never();
        assert!(!signal.is_raised());
        assert!(!signal.wait(Duration::from_millis(1)));
    }

    #[test]
    fn interval_constants_agree() {
        assert_eq!(
            STOP_CHECK_INTERVAL.as_millis(),
            u128::from(STOP_CHECK_INTERVAL_MS.unsigned_abs())
        );
    }
}
