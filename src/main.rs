//! Thin binary: parse arguments, run, map the outcome to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    iterdeploy::policy::transformer::prepare_cpu_process();
    let args = iterdeploy::cli::Cli::parse();
    match iterdeploy::cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
