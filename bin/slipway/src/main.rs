//! `slipway`: all of it is in the `slipway-cli` crate; this binary only starts it.

fn main() -> std::process::ExitCode {
    slipway_cli::main()
}
