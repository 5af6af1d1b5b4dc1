//! Where the broker's two sockets live, and the files that `ipc://` endpoints leave behind.
//!
//! An `ipc://path` endpoint is a Unix domain socket: binding it creates a socket file at `path`
//! (relative paths are relative to the current directory, as in the gist). libzmq 4.3 does not
//! delete that file when the socket closes, so the Ruby gist leaves `frontend.ipc` and
//! `backend.ipc` behind; the broker here binds through `zsocket::bind`, whose `Binding` removes
//! the file when the broker is dropped, and which refuses a path another program is bound to
//! (libzmq alone would silently take it from that program). To run two brokers at once, give each
//! its own directory ([`Endpoints::in_dir`]) or its own `tcp://` port.

use std::path::Path;

/// The gist's frontend endpoint: clients connect here.
pub const DEFAULT_FRONTEND: &str = "ipc://frontend.ipc";
/// The gist's backend endpoint: processors connect here.
pub const DEFAULT_BACKEND: &str = "ipc://backend.ipc";

/// The broker's two endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Where the frontend ROUTER binds and clients connect.
    pub frontend: String,
    /// Where the backend ROUTER binds and processors connect.
    pub backend: String,
}

impl Default for Endpoints {
    /// `ipc://frontend.ipc` and `ipc://backend.ipc`, in the current directory.
    fn default() -> Self {
        Endpoints {
            frontend: DEFAULT_FRONTEND.to_owned(),
            backend: DEFAULT_BACKEND.to_owned(),
        }
    }
}

impl Endpoints {
    /// `frontend.ipc` and `backend.ipc` inside `dir`, so runs in different directories never meet.
    pub fn in_dir(dir: &Path) -> Self {
        Endpoints {
            frontend: format!("ipc://{}", dir.join("frontend.ipc").display()),
            backend: format!("ipc://{}", dir.join("backend.ipc").display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_dir_puts_both_files_in_the_directory() {
        let endpoints = Endpoints::in_dir(Path::new("/tmp/run-1"));
        assert_eq!(endpoints.frontend, "ipc:///tmp/run-1/frontend.ipc");
        assert_eq!(endpoints.backend, "ipc:///tmp/run-1/backend.ipc");
    }

    #[test]
    fn the_default_is_the_gists() {
        let endpoints = Endpoints::default();
        assert_eq!(endpoints.frontend, "ipc://frontend.ipc");
        assert_eq!(endpoints.backend, "ipc://backend.ipc");
    }
}
