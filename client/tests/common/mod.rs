//! What the client's program tests share: the sibling programs (`broker`, `worker`, `titanic`,
//! built into the same `target/<profile>/` directory as `client`), run in the background and
//! killed when a test ends, and the wait until a broker says a service has a worker.

// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The program `name` of this workspace, beside the `client` binary in `target/<profile>/`.
/// Panics, naming the command that builds them, if it is not there.
pub fn binary(name: &str) -> PathBuf {
    let client = PathBuf::from(env!("CARGO_BIN_EXE_client"));
    if name == "client" {
        return client;
    }
    let path = client.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test -p client` builds only the client; run \
         `cargo build -p broker -p worker -p titanic` (or `cargo test --workspace`) first",
        path.display()
    );
    path
}

/// A program in the background, killed when the test ends.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the program `name` with `args`, its output discarded and `RUST_LOG` cleared.
pub fn server(name: &str, args: &[&str]) -> Server {
    Server(
        Command::new(binary(name))
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asks the broker at `endpoint` with `client -s mmi.service` until it says `service` has a
/// worker (200), or fails the test after `patience`.
pub fn wait_for_service(endpoint: &str, service: &str, patience: Duration) {
    let started = Instant::now();
    loop {
        let asked = Command::new(binary("client"))
            .args(["-c", endpoint, "-s", "mmi.service", "-t", "200", "-r", "1"])
            .arg(service)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if text(&asked.stdout) == "200\n" {
            return;
        }
        assert!(started.elapsed() < patience, "{service} did not register");
        thread::sleep(Duration::from_millis(20));
    }
}
