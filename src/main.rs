//! Thin binary: parse arguments, run, map the outcome to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = iterdeploy::cli::Cli::parse();
    iterdeploy::policy::transformer::keep_freed_memory();
    match iterdeploy::cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
