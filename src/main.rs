//! Thin binary: parse arguments, run, map the outcome to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    quiet_on_closed_pipe();
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

/// `iterdeploy verify | head` should stop quietly when `head` closes the
/// pipe, as every Unix tool does. Rust ignores SIGPIPE, so the next
/// `println!` would panic instead; restoring the default action ends the
/// process on the signal. Files are written atomically (a temporary file
/// renamed into place), so stopping there leaves no partial output.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    {
        unsafe extern "C" {
            fn signal(signum: i32, handler: usize) -> usize;
        }
        const SIGPIPE: i32 = 13;
        const SIG_DFL: usize = 0;
        // SAFETY: `signal` is the C library's; setting SIGPIPE to its
        // default action before any thread is spawned has no other effect.
        unsafe {
            signal(SIGPIPE, SIG_DFL);
        }
    }
}
