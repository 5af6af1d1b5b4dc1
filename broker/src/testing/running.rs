//! A broker running in a thread of the test, on a free loopback port: the one that the broker's
//! socket tests, Titanic's tests and the auth tests ([`super::auth`]) start, stopped when it is
//! dropped.
//!
//! Test code: it panics, with a message that says what went wrong, where a test would fail.

use std::thread::JoinHandle;

use crate::core::{Config, Stats};
use crate::server::{Auth, ReloadHandle, Server, SocketOptions};

/// A broker in a thread; dropping it stops it and waits for the thread.
#[derive(Debug)]
pub struct TestBroker {
    /// Where it is bound, e.g. `tcp://127.0.0.1:<port>`.
    pub endpoint: String,
    stopper: Option<zsocket::StopHandle>,
    reload: ReloadHandle,
    thread: Option<JoinHandle<Stats>>,
}

impl TestBroker {
    /// Without `--auth`, on `tcp://127.0.0.1:*`.
    pub fn start(config: Config) -> TestBroker {
        TestBroker::bind("tcp://127.0.0.1:*", config, None)
    }

    /// Bound to `bind` (a wildcard port is resolved in [`TestBroker::endpoint`]), with `auth`
    /// if given.
    pub fn bind(bind: &str, config: Config, auth: Option<Auth>) -> TestBroker {
        let mut server =
            Server::bind_with_auth(&[bind.to_owned()], config, &SocketOptions::default(), auth)
                .unwrap_or_else(|error| panic!("bind a broker to {bind}: {error}"));
        TestBroker {
            endpoint: server.endpoints()[0].clone(),
            stopper: Some(server.stop_handle()),
            reload: server.reload_handle(),
            thread: Some(std::thread::spawn(move || {
                server
                    .run()
                    .unwrap_or_else(|error| panic!("the broker failed: {error}"))
            })),
        }
    }

    /// Reads the auth file again (as SIGHUP does), when the broker's loop next wakes.
    pub fn reload(&self) {
        self.reload.reload();
    }

    /// Stops the broker and returns its counters.
    pub fn stop(mut self) -> Stats {
        let (Some(stopper), Some(thread)) = (self.stopper.take(), self.thread.take()) else {
            unreachable!("only stop and drop take them, and both take self");
        };
        stopper.stop();
        thread.join().expect("the broker thread panicked")
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let (Some(stopper), Some(thread)) = (self.stopper.take(), self.thread.take()) {
            stopper.stop();
            let _ = thread.join();
        }
    }
}
