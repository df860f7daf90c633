//! The `switchboard` binary: parse the command line and run it.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchboard::cli::{self, Cli};

/// At exit, how long blocking work still running (a script step whose request
/// was cut off by shutdown) may hold the process.
const BLOCKING_AT_EXIT: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.log_format, cli.log_contacts);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match cli::run(cli).await {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        }
    });
    runtime.shutdown_timeout(BLOCKING_AT_EXIT);
    code
}
