//! What every program of this workspace (`broker`, `client`, `worker`, `lbbroker`) does the same
//! way, written once so that it is the same: the `-v` flag and what it does to the log, the
//! exit-status contract, how an error is printed, and what a closed stdout means; and the
//! credential flags of the programs that log in to a broker ([`CredentialFlags`]).
//!
//! # Exit statuses
//!
//! | status | meaning |
//! |---|---|
//! | 0 ([`exit::DONE`]) | the program did what was asked |
//! | 1 ([`exit::FAILED`]) | it ran but failed (a request unanswered, a socket that cannot bind) |
//! | 2 ([`exit::USAGE`]) | usage or configuration error: a bad flag, value or endpoint (clap's own status) |
//! | 130 ([`exit::INTERRUPTED`]) | stopped by Ctrl-C (SIGINT) or SIGTERM before it was done |
//! | 141 ([`exit::STDOUT_CLOSED`]) | its standard output was closed (`program | head -2`): it stopped quietly |
//!
//! A server (the broker, a worker) has nothing "to be done": stopping it by a signal is how it
//! ends normally, so it exits 0 then; a program with a job to finish (a client, the demo) exits
//! 130 when interrupted. [`EXIT_STATUS_HELP`] says it in `--help`.

use std::io::Write;
use std::process::ExitCode;

/// The exit statuses of the [contract](crate#exit-statuses).
pub mod exit {
    /// Done.
    pub const DONE: u8 = 0;
    /// Ran, but failed.
    pub const FAILED: u8 = 1;
    /// A usage or configuration error.
    pub const USAGE: u8 = 2;
    /// Interrupted by SIGINT or SIGTERM before the job was done (128 + SIGINT, as shells report).
    pub const INTERRUPTED: u8 = 130;
    /// Standard output was closed by its reader (128 + SIGPIPE, as shells report).
    pub const STDOUT_CLOSED: u8 = 141;
}

/// The exit-status lines for `--help`, the same in every program.
pub const EXIT_STATUS_HELP: &str = "\
Exit status: 0 done; 1 failed; 2 usage or configuration error; 130 interrupted (SIGINT/SIGTERM)
before the job was done; 141 standard output closed by its reader (e.g. `| head`).";

/// `-v` / `-vv`, the same flag in every program, accepted before or after a subcommand.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Verbosity {
    /// Log more: -v every message in and out (one line each), -vv everything. RUST_LOG, if set,
    /// overrides this.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

impl Verbosity {
    /// The log level for this many `-v`s, over the program's `quiet` default.
    pub fn level(self, quiet: log::LevelFilter) -> log::LevelFilter {
        match self.verbose {
            0 => quiet,
            1 => log::LevelFilter::Debug.max(quiet),
            _ => log::LevelFilter::Trace,
        }
    }

    /// Starts the logger on stderr at [`Verbosity::level`]; `RUST_LOG` overrides it.
    pub fn init_logging(self, quiet: log::LevelFilter) {
        env_logger::Builder::new()
            .filter_level(self.level(quiet))
            .parse_default_env()
            .init();
    }
}

/// The credential flags of every program that logs in to brokers with `--auth` (`client`,
/// `worker`, `titanic`), flattened into its command line with `#[command(flatten)]`, so that they
/// read and behave the same in each: PLAIN (`--user NAME --password-file F`) or CURVE
/// (`--curve-key-file F --curve-server-key KEY`, the key once for every broker or once per `-c`
/// in the same order). See [`zsocket::credentials`] for the files.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CredentialFlags {
    /// PLAIN: the principal's name in the broker's --auth file (needs --password-file).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// PLAIN: a file whose first line is the password; others may not read it (chmod 600 or
    /// 640). PLAIN sends it, and every message, in clear: for trusted networks only.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<std::path::PathBuf>,
    /// CURVE: our secret key file, as `broker keygen` writes it (mode 600); its public key is
    /// the principal in the broker's --auth file. Needs the CURVE build (build/curve.toml).
    #[arg(long, value_name = "FILE")]
    pub curve_key_file: Option<std::path::PathBuf>,
    /// CURVE: the broker's public key, 40 Z85 characters or a .pub file. Once for every broker,
    /// or once per -c, in the same order, when each broker has its own key.
    #[arg(long, value_name = "KEY")]
    pub curve_server_key: Vec<String>,
}

impl CredentialFlags {
    /// One [`Credentials`](zsocket::credentials::Credentials) per broker, for `brokers`
    /// endpoints: the files read and every combination checked (see
    /// [`zsocket::credentials::CredentialArgs::load`]).
    pub fn load(
        &self,
        brokers: usize,
    ) -> Result<Vec<zsocket::credentials::Credentials>, zsocket::credentials::Error> {
        zsocket::credentials::CredentialArgs {
            user: self.user.clone(),
            password_file: self.password_file.clone(),
            curve_key_file: self.curve_key_file.clone(),
            curve_server_keys: self.curve_server_key.clone(),
        }
        .load(brokers)
    }
}

/// A clap value parser for a count or a duration that must be 1 or more, which says so in words
/// ("must be 1 or more") rather than clap's "0 is not in 1..18446744073709551615".
pub fn at_least_one_u64(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be 1 or more".to_owned()),
        Ok(value) => Ok(value),
        Err(_) => Err(format!("{text:?} is not a whole number of 1 or more")),
    }
}

/// [`at_least_one_u64`] for `u32` settings.
pub fn at_least_one_u32(text: &str) -> Result<u32, String> {
    let value = at_least_one_u64(text)?;
    u32::try_from(value).map_err(|_| format!("must be at most {}", u32::MAX))
}

/// An error and its causes on one line: `outer: cause: root cause`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Prints `program: error: causes` on stderr and returns `status`, for `main`'s last line.
pub fn fail(program: &str, error: &dyn std::error::Error, status: u8) -> ExitCode {
    eprintln!("{program}: {}", error_chain(error));
    ExitCode::from(status)
}

/// True for the error a write to a closed pipe gets (Rust ignores SIGPIPE, so the write fails).
pub fn is_closed_pipe(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::BrokenPipe
}

/// Writes `bytes` to stdout and flushes. `Err(ExitCode)` with [`exit::STDOUT_CLOSED`] when the
/// reader has gone, so that the program stops quietly, as Unix tools do; any other write error is
/// reported and becomes [`exit::FAILED`].
pub fn write_stdout(program: &str, bytes: &[u8]) -> Result<(), ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(error) if is_closed_pipe(&error) => Err(ExitCode::from(exit::STDOUT_CLOSED)),
        Err(error) => Err(fail(program, &error, exit::FAILED)),
    }
}

#[doc(hidden)]
pub mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot bind tcp://*:5555")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_chain_is_one_line_outer_first() {
        let error = Outer(std::io::Error::other("Address already in use"));
        assert_eq!(
            error_chain(&error),
            "cannot bind tcp://*:5555: Address already in use"
        );
    }

    #[test]
    fn counts_of_at_least_one_say_what_is_wrong_in_words() {
        assert_eq!(at_least_one_u64("3"), Ok(3));
        assert_eq!(at_least_one_u64("0"), Err("must be 1 or more".to_owned()));
        assert_eq!(
            at_least_one_u64("-1"),
            Err("\"-1\" is not a whole number of 1 or more".to_owned())
        );
        assert_eq!(
            at_least_one_u32("4294967296"),
            Err("must be at most 4294967295".to_owned())
        );
    }

    #[test]
    fn each_v_raises_the_level_and_never_lowers_it() {
        use log::LevelFilter::*;
        let v = |verbose| Verbosity { verbose };
        assert_eq!(v(0).level(Info), Info);
        assert_eq!(v(1).level(Warn), Debug);
        assert_eq!(v(2).level(Warn), Trace);
        assert_eq!(v(9).level(Info), Trace);
        assert_eq!(v(1).level(Trace), Trace);
    }

    #[test]
    fn the_flag_is_accepted_before_and_after_a_subcommand() {
        use clap::{Parser, Subcommand};
        #[derive(Parser)]
        struct Args {
            #[command(flatten)]
            verbosity: Verbosity,
            #[command(subcommand)]
            command: Option<Command>,
        }
        #[derive(Subcommand)]
        enum Command {
            Run,
        }
        // (clap does not add up -v given on both sides: the subcommand's count wins.)
        for argv in [&["p", "-vv", "run"][..], &["p", "run", "-vv"]] {
            let args = Args::try_parse_from(argv).unwrap();
            assert_eq!(args.verbosity.verbose, 2, "{argv:?}");
            assert!(matches!(args.command, Some(Command::Run)));
        }
    }
}
