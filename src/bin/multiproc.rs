//! The `multiproc` command: benchmarks and a generic manager server.

use std::process::ExitCode;

const HELP: &str = "\
multiproc: Python's multiprocessing, rebuilt in Rust

USAGE:
    multiproc <COMMAND> [OPTIONS]

COMMANDS:
    help        Print this help
";

fn main() -> ExitCode {
    multiproc::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("multiproc: unknown command {other:?}\n\n{HELP}");
            ExitCode::from(2)
        }
    }
}
