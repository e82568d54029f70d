//! The `multiproc` command: benchmarks and a generic remote manager server.

mod bench;
mod logging;
mod serve;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Python's multiprocessing, rebuilt in Rust: benchmarks and a manager server.
#[derive(Debug, Parser)]
#[command(name = "multiproc", version, propagate_version = true)]
#[command(arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure every operation; print median, p99 and CPython's figure.
    Bench(bench::Args),
    /// Run a manager server over TCP until SIGINT or SIGTERM.
    Serve(serve::Args),
}

fn main() -> ExitCode {
    // Before `init`: a spawned child runs its target inside `init` and
    // exits there, so this is the one place a subscriber reaches children
    // too. Only when RUST_LOG asks for logs; otherwise the command installs
    // its own once the arguments are read (see logging.rs).
    let logs = logging::Logs::from_env();
    multiproc::init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print to stdout and exit 0; a usage error
        // is one line naming what was wrong, the usage line, and exit 2.
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Bench(args) => {
            logs.init(None, "warn");
            bench::command(args)
        }
        Command::Serve(args) => {
            logs.init(args.log_level.as_deref(), "info");
            serve::command(args)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
