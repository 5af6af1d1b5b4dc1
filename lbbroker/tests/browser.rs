//! The dashboard's live page in a real browser: headless Chromium loads `/` from a running
//! `lbbroker broker --http` with two processors, before and after a client run, and the DOM its
//! JavaScript built must show the queue, the processors, and an answered count that changed and
//! agrees with `/status` read at the same moment. A screenshot is written where the test says.
//!
//! The browser is Debian's `chromium` (or `$CHROMIUM`). Without one the test says so and
//! passes, except under `CI=true`, where a missing browser fails it: CI must install it
//! (`apt-get install -y chromium`).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{
    run_within, start_broker_with_dashboard, status, wait_for_status, Background, PATIENCE,
};
use tempfile::TempDir;

/// The browser to run: `$CHROMIUM`, or `chromium` / `chromium-browser` on the `PATH`.
fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Loads `url` in headless Chromium, lets its scripts run for a while of virtual time, and gives
/// back the DOM they left; writes a screenshot to `screenshot` if given.
fn rendered_dom(chromium: &Path, url: &str, profile: &Path, screenshot: Option<&Path>) -> String {
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
    let output = command.arg(url).output().unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {:?}",
        output.status
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The text of the element with `attribute` inside the section of `service`.
fn dom_value(dom: &str, service: &str, attribute: &str) -> String {
    let section = dom
        .split(&format!("data-service=\"{service}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no service {service} in the page:\n{dom}"));
    let after = section
        .split(&format!("{attribute}\">"))
        .nth(1)
        .unwrap_or_else(|| panic!("no {attribute} in {service}'s section:\n{section}"));
    after.split('<').next().unwrap().to_owned()
}

fn answered_in_status(addr: SocketAddr) -> String {
    status(addr)["services"][0]["counters"]["answered"].to_string()
}

#[test]
fn the_live_page_shows_the_queue_its_processors_and_the_same_count_as_status() {
    let Some(chromium) = find_chromium() else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true and no chromium: install Debian's chromium (apt-get install -y chromium) \
             or set CHROMIUM to a browser"
        );
        eprintln!("SKIPPED: no chromium on the PATH (set CHROMIUM, or apt-get install chromium)");
        return;
    };
    let dir = TempDir::new().unwrap();
    let profile = TempDir::new().unwrap();
    let (_broker, addr) = start_broker_with_dashboard(dir.path());
    let url = format!("http://{addr}/");
    let _processors = Background::start(
        dir.path(),
        &["processor", "--processors", "2", "--unit-ms", "5"],
    );
    wait_for_status(addr, "two processors ready", |status| {
        status["services"][0]["workers_idle"] == 2
    });

    let before = rendered_dom(&chromium, &url, profile.path(), None);
    assert!(
        before.contains("<span id=\"program\">lbbroker</span>"),
        "{before}"
    );
    for processor in ["PROCESSOR-0", "PROCESSOR-1"] {
        assert!(
            before.contains(&format!(
                "class=\"worker idle\" data-worker=\"{processor}\""
            )),
            "{processor} idle in:\n{before}"
        );
    }
    assert_eq!(
        dom_value(&before, "processors", "data-count=\"answered"),
        "0"
    );

    let clients = run_within(dir.path(), &["client", "--clients", "8"], PATIENCE);
    assert_eq!(clients.code(), Some(0), "{}", clients.stderr);
    // Every answer is out and published: from here on the state stays as it is.
    wait_for_status(addr, "eight answers", |status| {
        status["services"][0]["counters"]["answered"] == 8
    });

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lbbroker-dashboard.png");
    let status_before = answered_in_status(addr);
    let after = rendered_dom(&chromium, &url, profile.path(), Some(&screenshot));
    let status_after = answered_in_status(addr);
    let shown = dom_value(&after, "processors", "data-count=\"answered");
    assert_eq!(
        status_before, status_after,
        "/status moved while the page was read"
    );
    assert_eq!(
        shown, status_after,
        "the page and /status disagree:\n{after}"
    );
    assert_eq!(shown, "8", "the count changed from 0 with the clients' run");
    assert_eq!(
        dom_value(&after, "processors", "data-count=\"workers_idle"),
        "2"
    );
    assert!(after.contains("data-worker=\"PROCESSOR-0\""), "{after}");
    let sequence: u64 = after
        .split("data-sequence=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|number| number.parse().ok())
        .unwrap();
    assert!(
        sequence > 1,
        "the page shows a published snapshot, not the empty first one"
    );

    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|file| file.len() > 0),
        "no screenshot at {}",
        screenshot.display()
    );
    println!("screenshot of the live page: {}", screenshot.display());
    eprintln!("screenshot of the live page: {}", screenshot.display());
}
