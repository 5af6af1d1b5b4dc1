//! Test support for the brokers' browser tests (`broker/tests/browser.rs`,
//! `lbbroker/tests/browser.rs`), behind the `testing` feature: finding a headless Chromium,
//! loading the live page in it and reading the DOM its JavaScript built, and reading `/status`
//! at the same moment to compare.
//!
//! Test code: these functions panic, with a message that says what went wrong, where a test
//! would fail.
//!
//! The browser is Debian's `chromium` (or `$CHROMIUM`). Without one, [`chromium_or_skip`] says so
//! and gives `None`, so the test passes having checked nothing; under `CI=true` a missing browser
//! fails the test instead: CI must install it (`.ci/run` does, `apt-get install -y chromium`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The browser to run: `$CHROMIUM`, or `chromium` / `chromium-browser` on the `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// The browser, or `None` after a "SKIPPED" line when there is none; panics when there is none
/// and `CI` is `true`, so that CI cannot pass a browser test without a browser.
pub fn chromium_or_skip() -> Option<PathBuf> {
    let found = find_chromium();
    if found.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true and no chromium: install Debian's chromium (apt-get install -y chromium) \
             or set CHROMIUM to a browser"
        );
        eprintln!("SKIPPED: no chromium on the PATH (set CHROMIUM, or apt-get install chromium)");
    }
    found
}

/// Loads `url` in headless Chromium with a fresh profile in `profile` (an empty directory of the
/// test's own), lets its scripts run for 1.5 s of virtual time, and gives back the DOM they left;
/// writes a PNG screenshot of 1000 x 620 pixels to `screenshot` if given.
pub fn rendered_dom(
    chromium: &Path,
    url: &str,
    profile: &Path,
    screenshot: Option<&Path>,
) -> String {
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            // CI runs as root, where Chromium's sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1000,620",
            // Time enough for the page to fetch /status and draw it a few times: the budget is
            // virtual time, so the run is no longer than the work it takes.
            "--virtual-time-budget=1500",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    if let Some(path) = screenshot {
        command.arg(format!("--screenshot={}", path.display()));
    }
    let output = command
        .arg(url)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", chromium.display()));
    assert!(
        output.status.success(),
        "chromium failed: {:?}",
        output.status
    );
    String::from_utf8(output.stdout).expect("chromium's DOM is UTF-8")
}

/// Renders the page between two reads of a count from `/status` (`in_status`), checks that
/// `/status` did not move meanwhile and that the page shows the same count for `service` under
/// `name`; returns the DOM and that count. The browser tests' one comparison of page and status.
pub fn rendered_agreeing_with_status(
    chromium: &Path,
    url: &str,
    profile: &Path,
    screenshot: Option<&Path>,
    (service, name): (&str, &str),
    in_status: impl Fn() -> String,
) -> (String, String) {
    let status_before = in_status();
    let dom = rendered_dom(chromium, url, profile, screenshot);
    let status_after = in_status();
    let shown = shown_count(&dom, service, name);
    assert_eq!(
        status_before, status_after,
        "/status moved while the page was read"
    );
    assert_eq!(shown, status_after, "the page and /status disagree:\n{dom}");
    (dom, shown)
}

/// The section the page drew for `service`, from its opening tag to the end of the DOM (the
/// values looked up in it come before the next section's).
fn service_section<'a>(dom: &'a str, service: &str) -> &'a str {
    dom.split(&format!("data-service=\"{service}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no service {service} in the page:\n{dom}"))
}

/// The count the page shows for `service` under `name` (`answered`, `workers_idle`,
/// `requests_waiting`, ...: the `data-count` attributes of `page.js`), as text.
pub fn shown_count(dom: &str, service: &str, name: &str) -> String {
    let section = service_section(dom, service);
    let after = section
        .split(&format!("data-count=\"{name}\">"))
        .nth(1)
        .unwrap_or_else(|| panic!("no count {name} in {service}'s section:\n{section}"));
    after.split('<').next().unwrap_or_default().to_owned()
}

/// Whether the page lists `worker` in `service`'s section as `kind` (`idle` or `busy`).
pub fn shows_worker(dom: &str, service: &str, worker: &str, kind: &str) -> bool {
    service_section(dom, service)
        .contains(&format!("class=\"worker {kind}\" data-worker=\"{worker}\""))
}

/// The snapshot sequence number the page drew last (`data-sequence`; 0 before the first
/// publish).
pub fn shown_sequence(dom: &str) -> u64 {
    dom.split("data-sequence=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no data-sequence in the page:\n{dom}"))
}

/// `GET path` from the dashboard at `addr`: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|error| panic!("connect to {addr}: {error}"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {head:?}"));
    (code, body.to_owned())
}

/// The dashboard's `/status`, parsed.
pub fn status(addr: SocketAddr) -> serde_json::Value {
    let (code, body) = http_get(addr, "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body)
        .unwrap_or_else(|error| panic!("/status is not JSON ({error}): {body}"))
}
