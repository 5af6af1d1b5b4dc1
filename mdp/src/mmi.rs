//! The Majordomo Management Interface (spec 8): services in the `mmi.` namespace that the broker
//! answers itself.
//!
//! * `mmi.service`, body = a service name: `"200"` if at least one worker is registered for that
//!   service (busy or idle), `"404"` if none is.
//! * any other `mmi.*` name: `"501"`.

/// The one MMI service spec 8 requires.
pub const SERVICE: &[u8] = b"mmi.service";

/// An MMI status code, sent as the reply body's single frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200: the service has at least one registered worker.
    Found,
    /// 404: no worker is registered for the service.
    NotFound,
    /// 501: the `mmi.*` service asked for does not exist.
    NotImplemented,
}

impl Status {
    /// The status as its reply frame reads: `"200"`, `"404"` or `"501"`.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Status::Found => b"200",
            Status::NotFound => b"404",
            Status::NotImplemented => b"501",
        }
    }
}
