//! One way to stop a waiting loop from another thread (a signal handler, a test, a launcher), with
//! the wake-up each kind of wait needs.
//!
//! A [`StopHandle`] raises a shared flag and then wakes whoever is waiting; the waiting side holds
//! the [`StopSignal`] and looks at the flag whenever it wakes. The flag alone is not enough,
//! because a thread asleep in `zmq_poll` or in `recv` only looks at it when something wakes it,
//! and the right wake-up depends on how the loop waits:
//!
//! * [`stop_pair`], for loops that wait in [`crate::wait`] (`zmq_poll`): a Unix socket pair. The
//!   signal's end sits in the poll set beside the ZeroMQ sockets; stopping writes one byte to the
//!   other end, which is never read, so the signal stays readable and every thread polling a clone
//!   of it wakes, now and on every later poll: a broadcast that no thread can miss.
//! * [`stop_router`], for a loop that waits in `recv` on one ROUTER socket ([`crate::recv_until`]),
//!   where a second poll item would cost about twice the system calls per message (see
//!   [`crate::recv_until`]). The ROUTER itself binds a private `inproc://` endpoint, and stopping
//!   sends it one empty message from a DEALER made for the purpose: the loop wakes because a
//!   message arrived, and looks at the flag before it treats the message as traffic.
//!
//! The router trick works only for a ROUTER. A DEALER would round-robin its own outgoing messages
//! onto the waker's connection as onto any other peer, and a REQ could not receive at all while it
//! waits for a reply; those loops use [`stop_pair`].

use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::warn;

use crate::{Error, ResultExt};

/// Raises the stop flag and wakes the loop that waits on the matching [`StopSignal`]. Cloneable,
/// `Send` and `Sync`; calling [`StopHandle::stop`] more than once is harmless.
#[derive(Clone)]
pub struct StopHandle {
    raised: Arc<AtomicBool>,
    wake: Wake,
}

#[derive(Clone)]
enum Wake {
    /// The writing end of the pair whose other end the waiting loop polls.
    Pipe(Arc<UnixStream>),
    /// The waiting ROUTER's context and the `inproc://` endpoint it also binds.
    RouterPeer {
        context: zmq::Context,
        endpoint: String,
    },
}

impl std::fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopHandle")
            .field("raised", &self.is_raised())
            .finish_non_exhaustive()
    }
}

/// The waiting side of a stop: a flag to look at, and for [`stop_pair`] a file descriptor that
/// [`crate::wait`] puts in its poll set. Cloneable: every clone sees the same stop.
#[derive(Clone)]
pub struct StopSignal {
    raised: Arc<AtomicBool>,
    /// The reading end of the pair; `None` for [`stop_router`], whose wake-up is a message.
    readable: Option<Arc<UnixStream>>,
}

impl std::fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopSignal")
            .field("raised", &self.is_raised())
            .finish_non_exhaustive()
    }
}

/// A stop for loops that wait in [`crate::wait`]; see the [module docs](self).
pub fn stop_pair() -> std::io::Result<(StopHandle, StopSignal)> {
    let (writer, reader) = UnixStream::pair()?;
    writer.set_nonblocking(true)?;
    let raised = Arc::new(AtomicBool::new(false));
    Ok((
        StopHandle {
            raised: Arc::clone(&raised),
            wake: Wake::Pipe(Arc::new(writer)),
        },
        StopSignal {
            raised,
            readable: Some(Arc::new(reader)),
        },
    ))
}

/// A stop for a loop that waits in `recv` on `router` alone; see the [module docs](self). Binds
/// `router` to a private `inproc://` endpoint of `context` (the context the router was made by).
/// The loop must look at [`StopSignal::is_raised`] after every receive, before it treats the
/// message as traffic.
pub fn stop_router(
    context: &zmq::Context,
    router: &zmq::Socket,
) -> Result<(StopHandle, StopSignal), Error> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let endpoint = format!(
        "inproc://zsocket-stop-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    router.bind(&endpoint).doing("bind the stop endpoint")?;
    let raised = Arc::new(AtomicBool::new(false));
    Ok((
        StopHandle {
            raised: Arc::clone(&raised),
            wake: Wake::RouterPeer {
                context: context.clone(),
                endpoint,
            },
        },
        StopSignal {
            raised,
            readable: None,
        },
    ))
}

/// How long the router waker's one message may wait to be read once its socket is closed.
const WAKE_LINGER_MS: i32 = 100;

impl StopHandle {
    /// Raises the flag, then wakes the waiting loop. Safe from any thread, and more than once.
    pub fn stop(&self) {
        // The flag first: the loop must see it when the wake-up arrives.
        if self.raised.swap(true, Ordering::SeqCst) {
            return;
        }
        match &self.wake {
            // Non-blocking, and only once: one byte keeps the signal readable for good.
            Wake::Pipe(writer) => {
                let _ = (&**writer).write(&[1]);
            }
            Wake::RouterPeer { context, endpoint } => {
                if let Err(error) = wake_router(context, endpoint) {
                    warn!("could not wake the loop to stop it: {error}");
                }
            }
        }
    }

    /// True once [`StopHandle::stop`] has been called on this handle or a clone.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }
}

/// Sends one empty message to the router from a DEALER made for the purpose. The DEALER exists
/// only while it sends: a socket connected to the router would have to take part in closing it,
/// which happens only when its owner calls into libzmq, so a waker kept open beside a router being
/// closed would stall that close.
fn wake_router(context: &zmq::Context, endpoint: &str) -> Result<(), Error> {
    let socket = context.socket(zmq::DEALER).doing("create the waker")?;
    socket
        .set_linger(WAKE_LINGER_MS)
        .doing("set the waker's linger")?;
    socket.connect(endpoint).doing("connect the waker")?;
    socket
        .send(zmq::Message::new(), zmq::DONTWAIT)
        .doing("send the wake-up")
}

impl StopSignal {
    /// True once the stop has been raised.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// The item [`crate::wait`] puts in its poll set; `None` for a [`stop_router`] signal.
    pub fn poll_item(&self) -> Option<zmq::PollItem<'static>> {
        self.readable
            .as_ref()
            .map(|reader| zmq::PollItem::from_fd(reader.as_raw_fd(), zmq::POLLIN))
    }

    /// Sleeps for `duration` unless the stop is raised first; true if it was. For a loop that
    /// has nothing but time to wait for (a backoff, pretend work).
    pub fn sleep(&self, duration: Duration) -> Result<bool, Error> {
        let deadline = std::time::Instant::now() + duration;
        loop {
            if self.is_raised() {
                return Ok(true);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            match self.poll_item() {
                Some(item) => {
                    let mut items = [item];
                    match zmq::poll(&mut items, crate::millis_until(Some(deadline), now)) {
                        Ok(_) | Err(zmq::Error::EINTR) => {}
                        Err(source) => return Err(Error::new("wait", source)),
                    }
                }
                // A router signal has no descriptor: sleep in slices and look at the flag.
                None => std::thread::sleep((deadline - now).min(Duration::from_millis(10))),
            }
        }
    }
}
