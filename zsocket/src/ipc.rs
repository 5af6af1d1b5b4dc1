//! Owning an `ipc://` path for as long as a socket is bound to it.
//!
//! An `ipc://path` endpoint is a Unix domain socket file. libzmq's bind unlinks whatever file is
//! at the path and creates its own, so a second program bound to the same path silently takes it
//! from the first: the first keeps running but nobody can reach it any more, and when the second
//! stops and removes the file, nobody can reach either. Over tcp the same clash is an error
//! (`Address already in use`); this module makes it one for ipc too.
//!
//! Asking the path whether someone listens (connecting to it) cannot be the whole answer: two
//! programs could both see "nobody" and both bind. So each binder first takes an exclusive lock
//! (`flock`) on a lock file beside the socket file, `PATH.lock`, and holds it for the life of the
//! bind; the lock goes when the process does, however it ends, so a crash leaves no stale lock.
//! With the lock held:
//!
//! * a socket file that accepts a connection belongs to a program that does not take our lock
//!   (another ZeroMQ program): refused;
//! * a socket file that refuses connections is stale (left by a program that crashed): removed,
//!   so libzmq can bind afresh;
//! * no file: nothing to do.
//!
//! When the claim is dropped (after the socket is closed) the socket file and the lock file are
//! removed, the lock file while still locked. A program that was waiting to lock that same file
//! would then hold a lock on a file no longer at the path; so taking the lock checks that the
//! locked file is still the one at the path, and tries again if not.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use log::{debug, warn};

/// Why an `ipc://` path cannot be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another program of this workspace holds the path's lock file.
    #[error("{path} is in use: another program is bound to it (it holds {lock})", path = .path.display(), lock = .lock.display())]
    Locked { path: PathBuf, lock: PathBuf },
    /// Something that does not take the lock (another ZeroMQ program) is listening on the path.
    #[error("{path} is in use: a program is listening on it", path = .path.display())]
    Listening { path: PathBuf },
    /// The lock file or the stale socket file could not be handled.
    #[error("cannot {action} {path}", path = .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The right to bind one `ipc://` path, held until dropped; see the [module docs](self).
#[derive(Debug)]
pub struct IpcClaim {
    socket_path: PathBuf,
    lock_path: PathBuf,
    /// Holds the `flock`; closing it releases the lock.
    _lock: File,
}

/// The lock file beside `socket_path`: the same name with `.lock` added.
pub fn lock_path(socket_path: &Path) -> PathBuf {
    let mut name = socket_path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl IpcClaim {
    /// Takes the lock beside `socket_path`, refuses if someone is bound there, and removes a
    /// stale socket file; see the [module docs](self).
    pub fn claim(socket_path: &Path) -> Result<IpcClaim, ClaimError> {
        // Absolute now, so the files are found again at the drop if the current directory
        // has changed meanwhile.
        let socket_path = &std::path::absolute(socket_path).map_err(|source| ClaimError::Io {
            action: "find",
            path: socket_path.to_owned(),
            source,
        })?;
        let lock_path = lock_path(socket_path);
        let io_error = |action, path: &Path| {
            let path = path.to_owned();
            move |source| ClaimError::Io {
                action,
                path,
                source,
            }
        };
        let lock = loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(io_error("create the lock file", &lock_path))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(ClaimError::Locked {
                        path: socket_path.to_owned(),
                        lock: lock_path,
                    })
                }
                Err(TryLockError::Error(source)) => {
                    return Err(ClaimError::Io {
                        action: "lock",
                        path: lock_path,
                        source,
                    })
                }
            }
            // The previous holder may have removed the file between our open and our lock.
            if is_same_file(&file, &lock_path) {
                break file;
            }
        };
        match UnixStream::connect(socket_path) {
            Ok(_) => {
                return Err(ClaimError::Listening {
                    path: socket_path.to_owned(),
                })
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(_) => {
                // Refused (a socket file nobody listens on) or not a socket at all: we hold the
                // lock, so no program of ours is bound here. libzmq would unlink it anyway.
                debug!("removing the stale socket file {}", socket_path.display());
                match std::fs::remove_file(socket_path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(ClaimError::Io {
                            action: "remove the stale socket file",
                            path: socket_path.to_owned(),
                            source,
                        })
                    }
                }
            }
        }
        Ok(IpcClaim {
            socket_path: socket_path.to_owned(),
            lock_path,
            _lock: lock,
        })
    }

    /// The socket file's path.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }
}

/// True when `file` (open) is the file now at `path`.
fn is_same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

impl Drop for IpcClaim {
    fn drop(&mut self) {
        for path in [&self.socket_path, &self.lock_path] {
            match std::fs::remove_file(path) {
                Ok(()) => debug!("removed {}", path.display()),
                // libzmq may already have removed the socket file when the socket closed.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => warn!("could not remove {}: {error}", path.display()),
            }
        }
        // The lock itself goes when `_lock` is closed, right after this.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_second_claim_on_the_same_path_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.ipc");
        let first = IpcClaim::claim(&path).unwrap();
        let error = IpcClaim::claim(&path).unwrap_err();
        assert!(matches!(error, ClaimError::Locked { .. }), "{error}");
        assert!(error.to_string().contains("is in use"), "{error}");
        drop(first);
        assert!(
            !lock_path(&path).exists(),
            "the lock file goes with the claim"
        );
        IpcClaim::claim(&path).unwrap();
    }

    #[test]
    fn a_foreign_listener_is_refused_and_a_stale_file_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.ipc");
        let listener = UnixListener::bind(&path).unwrap();
        let error = IpcClaim::claim(&path).unwrap_err();
        assert!(matches!(error, ClaimError::Listening { .. }), "{error}");
        // Closing a listener leaves its file behind: what a crashed program leaves.
        drop(listener);
        assert!(path.exists());
        let claim = IpcClaim::claim(&path).unwrap();
        assert!(!path.exists(), "the stale socket file was removed");
        drop(claim);
    }
}
