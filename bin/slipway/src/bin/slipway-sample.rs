//! `slipway-sample`: see the `slipway-sample` crate.

fn main() -> std::process::ExitCode {
    slipway_sample::main()
}
