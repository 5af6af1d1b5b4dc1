//! The HTTP side: one thread that answers from the latest snapshot on the [`Board`].
//!
//! | path | answer |
//! |---|---|
//! | `/` | the live page (HTML; its CSS and JavaScript at `/page.css`, `/page.js`) |
//! | `/metrics` | the Prometheus text format ([`crate::render::prometheus`]) |
//! | `/status` | JSON, paged ([`crate::render::status_json`]) |
//!
//! The server is `tiny_http`: synchronous, small, no async runtime. A page that asks a few
//! times a second and a scraper every few seconds need nothing more. The page's files are in
//! the binary (`include_str!`), so there is no build step and nothing to install beside it.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use log::{debug, warn};
use tiny_http::{Header, Method, Request, Response};
use zsocket::limit::LogLimit;

use crate::board::Board;
use crate::render::{self, StatusQuery};

const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_CSS: &str = include_str!("page/page.css");
const PAGE_JS: &str = include_str!("page/page.js");

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound (in use, not this machine's, a port that needs root).
    #[error("cannot serve the dashboard on {addr}")]
    Bind {
        /// The address as given.
        addr: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
    /// The HTTP server or its thread could not be started.
    #[error("cannot start the dashboard's HTTP server")]
    Start(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The dashboard's HTTP thread, serving until this is dropped.
pub struct Server {
    local_addr: SocketAddr,
    http: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    // By hand: `tiny_http::Server` has no `Debug`. The address says which server this is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `addr` (port 0 picks a free one: see [`Server::local_addr`]) and starts the thread
    /// that answers from `board`. The bind happens here, so a bad address is an error before the
    /// broker starts serving.
    pub fn start(addr: SocketAddr, board: Arc<Board>) -> Result<Server, ServeError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let http =
            Arc::new(tiny_http::Server::from_listener(listener, None).map_err(ServeError::Start)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let http = Arc::clone(&http);
            let stopping = Arc::clone(&stopping);
            thread::Builder::new()
                .name("dashboard".to_owned())
                .spawn(move || serve(&http, &board, &stopping))
                .map_err(|error| ServeError::Start(Box::new(error)))?
        };
        Ok(Server {
            local_addr,
            http,
            stopping,
            thread: Some(thread),
        })
    }

    /// The address it listens on, with the port the system picked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for Server {
    /// Stops the thread and waits for it. (tiny_http closes the listening socket from its own
    /// accept thread, a moment later.)
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.http.unblock();
        if let Some(thread) = self.thread.take() {
            // A panic on the HTTP thread is a bug here; the broker goes on ending cleanly.
            if thread.join().is_err() {
                warn!("the dashboard thread panicked");
            }
        }
    }
}

/// The thread's loop: one request at a time, until unblocked.
fn serve(http: &tiny_http::Server, board: &Board, stopping: &AtomicBool) {
    let mut warnings = LogLimit::default();
    loop {
        match http.recv() {
            Ok(request) => answer(request, board, &mut warnings),
            Err(_) if stopping.load(Ordering::SeqCst) => break,
            Err(error) => match warnings.allow(Instant::now()) {
                Some(0) => warn!("dashboard: cannot accept a connection: {error}"),
                Some(held_back) => warn!(
                    "dashboard: cannot accept a connection: {error} (and {held_back} more since)"
                ),
                None => debug!("dashboard: cannot accept a connection: {error}"),
            },
        }
    }
    debug!("dashboard stopped");
}

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

/// Answers one request from the latest snapshot.
fn answer(request: Request, board: &Board, warnings: &mut LogLimit) {
    let url = request.url().to_owned();
    let path = url.split('?').next().unwrap_or("");
    let (status, content_type, body) = if *request.method() != Method::Get {
        (405, "text/plain; charset=utf-8", "only GET\n".to_owned())
    } else {
        match path {
            "/" | "/index.html" => (200, "text/html; charset=utf-8", PAGE_HTML.to_owned()),
            "/page.css" => (200, "text/css; charset=utf-8", PAGE_CSS.to_owned()),
            "/page.js" => (200, "text/javascript; charset=utf-8", PAGE_JS.to_owned()),
            "/metrics" => (
                200,
                render::PROMETHEUS_CONTENT_TYPE,
                render::prometheus(&board.latest()),
            ),
            "/status" => (
                200,
                "application/json",
                render::status_json(&board.latest(), &StatusQuery::from_url(&url)),
            ),
            _ => (
                404,
                "text/plain; charset=utf-8",
                "not found: try /, /metrics or /status\n".to_owned(),
            ),
        }
    };
    let mut response = Response::from_string(body).with_status_code(status);
    for (name, value) in [
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
    ] {
        if let Some(header) = header(name, value) {
            response.add_header(header);
        }
    }
    // A client that went away before its answer was written is its own business.
    if let Err(error) = request.respond(response) {
        if warnings.allow(Instant::now()).is_some() {
            debug!("dashboard: cannot answer {path}: {error}");
        }
    }
}
