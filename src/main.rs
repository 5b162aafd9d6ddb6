//! The `batchscore` binary: parse the command line, set up logging, run, and turn the outcome into an exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = batchscore::cli::Cli::parse();
    batchscore::init_logging(&cli.global);
    match batchscore::run_cli(cli) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: what we were doing, then why it failed.
            eprintln!("error: {err:#}");
            batchscore::exit_code(&err)
        }
    }
}
