//! The command's log output: `tracing` events on stderr, filtered by
//! `--log-level` or `RUST_LOG` (in that order), or the command's default.

use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::reload;

type Handle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// The subscriber of this process, once installed.
pub struct Logs {
    /// Set when RUST_LOG installed the subscriber before `init`.
    handle: Option<Handle>,
}

impl Logs {
    /// Installs the subscriber now if `RUST_LOG` is set, so that spawned
    /// children (which inherit the variable and run their target inside
    /// `multiproc::init`) log through one too.
    pub fn from_env() -> Logs {
        let handle = match std::env::var("RUST_LOG") {
            Ok(directives) if !directives.trim().is_empty() => {
                // A bad RUST_LOG keeps what parsed; the filter says what it dropped.
                install(EnvFilter::builder().parse_lossy(directives))
            }
            _ => None,
        };
        Logs { handle }
    }

    /// Settles the filter: `level` (the command's `--log-level`) wins over
    /// RUST_LOG, which wins over `default`.
    pub fn init(self, level: Option<&str>, default: &str) {
        let filter = level.map(EnvFilter::new);
        match (self.handle, filter) {
            (Some(handle), Some(filter)) => {
                let _ = handle.reload(filter);
            }
            (Some(_), None) => {}
            (None, filter) => {
                install(filter.unwrap_or_else(|| EnvFilter::new(default)));
            }
        }
    }
}

fn install(filter: EnvFilter) -> Option<Handle> {
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .ok()
        .map(|()| handle)
}

/// Checks a `--log-level` value: a level (`error`, `warn`, `info`, `debug`,
/// `trace`, `off`) or `RUST_LOG`-style directives (`multiproc_runtime=debug`).
pub fn parse_level(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let expected = "expected a level (off, error, warn, info, debug, trace) \
                    or directives such as multiproc_runtime=debug";
    // A bare word is a level: EnvFilter would take `loud` for a target.
    let bare = !s.contains(['=', ',', '[', ':']);
    if bare && !LEVELS.contains(&s.trim().to_ascii_lowercase().as_str()) {
        return Err(expected.into());
    }
    EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("{e}; {expected}"))
}
