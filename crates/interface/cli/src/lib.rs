//! The `slipway` command line. The binary (`bin/slipway`) only calls [`main`].
//!
//! Commands that read only the project file (`init`, `validate`, `schema`, `plan`) work without
//! a control plane; the others talk to the project's daemon through [`client`], found through
//! the state directory. Every read command takes `--json`; people get tables.

mod args;
mod client;
mod commands;
mod error;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use slipway_api::state_dir::StateDir;

pub use args::Cli;

/// What every command knows: the global options, resolved.
pub(crate) struct Context {
    pub(crate) file: PathBuf,
    pub(crate) state: StateDir,
    pub(crate) env: Option<String>,
    pub(crate) json: bool,
}

/// Runs the command line and returns the exit status.
pub fn main() -> ExitCode {
    // The instance shim (see `slipway_runtime::local::shim`) is this binary too; it needs
    // neither argument parsing nor an async runtime.
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(3).collect();
    if args.len() == 3 && args[1] == "__shim" {
        let code = slipway_runtime::local::shim::main(std::path::Path::new(&args[2]));
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    let global = &cli.global;
    let state = match &global.state_dir {
        Some(dir) => StateDir::new(dir),
        None => StateDir::beside(&global.file),
    };
    let ctx = Context {
        file: global.file.clone(),
        state,
        env: global.env.clone(),
        json: global.json,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(&ctx, cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            e.print();
            ExitCode::from(e.code)
        }
    }
}

/// `slipway status | head` closes the pipe early: printing then fails, and Rust's `println!`
/// panics. Exit quietly instead, as a Unix tool killed by SIGPIPE would.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
