//! Where the broker's two sockets live, and the files that `ipc://` endpoints leave behind.
//!
//! An `ipc://path` endpoint is a Unix domain socket: binding it creates a socket file at `path`
//! (relative paths are relative to the current directory, as in the gist). libzmq 4.3 does not
//! delete that file when the socket closes, so the Ruby gist leaves `frontend.ipc` and
//! `backend.ipc` behind; the broker here removes the files it created (see `SocketFile`). Binding
//! also replaces a file left at the same path by an earlier run, which is why two brokers must
//! not share a directory: the second would silently take the path from the first. Give each its
//! own directory ([`Endpoints::in_dir`]) or its own `tcp://` port.

use std::io;
use std::path::{Path, PathBuf};

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

/// The file an `ipc://` endpoint creates when bound, or `None` for endpoints that create no file
/// this crate should remove: other transports, Linux abstract sockets (`ipc://@name`), and
/// `ipc://*`, whose temporary file libzmq removes itself.
pub(crate) fn ipc_socket_file(endpoint: &str) -> Option<PathBuf> {
    let path = endpoint.strip_prefix("ipc://")?;
    if path.is_empty() || path == "*" || path.starts_with('@') {
        return None;
    }
    Some(PathBuf::from(path))
}

/// The socket file of an ipc endpoint this process bound; removed when this value is dropped.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: Option<PathBuf>,
}

impl SocketFile {
    /// Remembers the file `endpoint` created. Call it only after a successful bind, so a file
    /// that belongs to someone else is never removed. A relative path is made absolute now, in
    /// case the current directory changes before the drop.
    pub(crate) fn created_by(endpoint: &str) -> Self {
        let path = ipc_socket_file(endpoint).map(|path| {
            if path.is_relative() {
                std::env::current_dir()
                    .map(|dir| dir.join(&path))
                    .unwrap_or(path)
            } else {
                path
            }
        });
        SocketFile { path }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else {
            return;
        };
        match std::fs::remove_file(&path) {
            Ok(()) => log::debug!("removed {}", path.display()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => log::warn!("cannot remove {}: {error}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_ipc_endpoints_have_a_file_to_remove() {
        assert_eq!(
            ipc_socket_file("ipc://frontend.ipc"),
            Some(PathBuf::from("frontend.ipc"))
        );
        assert_eq!(
            ipc_socket_file("ipc:///tmp/x/backend.ipc"),
            Some(PathBuf::from("/tmp/x/backend.ipc"))
        );
        assert_eq!(ipc_socket_file("ipc://@abstract"), None);
        assert_eq!(ipc_socket_file("ipc://*"), None);
        assert_eq!(ipc_socket_file("tcp://127.0.0.1:5555"), None);
        assert_eq!(ipc_socket_file("inproc://backend"), None);
    }

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
