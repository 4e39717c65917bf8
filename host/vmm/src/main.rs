//! `pvkit`, the reference hypervisor: boots PVH guest kernels on Linux KVM
//! and serves the pvkit interface through `pvkit-host`.
// The whole binary faces a guest (its exits, its memory, its devices) or an
// operator (command lines, files): no panic may be reachable from either.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

mod api;
mod bench;
mod cli;
mod config;
mod conformance;
mod console;
mod control;
mod cpuid;
mod ctl;
mod devices;
mod elf;
mod error;
mod events;
mod exit;
mod layout;
mod limits;
mod loader;
mod machine;
mod metrics;
mod operator;
mod output;
mod sched;
mod time;
mod vcpu;
mod vm;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).format_timestamp(None).init();
    match cli.command {
        Command::Run(args) => match run(&args) {
            Ok(status) => ExitCode::from(status),
            Err(e) => {
                eprintln!("pvkit: error: {e}");
                ExitCode::from(exit::SETUP_FAILED)
            }
        },
        Command::Conformance(args) => match conformance::run(&args) {
            Ok(status) => ExitCode::from(status),
            Err(e) => {
                eprintln!("pvkit: error: {e}");
                ExitCode::from(exit::SETUP_FAILED)
            }
        },
        Command::Ctl(args) => match ctl::run(&args) {
            Ok(status) => ExitCode::from(status),
            Err(e) => {
                eprintln!("pvkit ctl: error: {e}");
                ExitCode::from(exit::SETUP_FAILED)
            }
        },
        Command::Bench(args) => match bench::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pvkit: error: {e}");
                ExitCode::from(exit::SETUP_FAILED)
            }
        },
    }
}

/// `pvkit run`: the machine the options or the file describe, printed or booted.
fn run(args: &cli::RunArgs) -> Result<u8, error::VmmError> {
    let machine = args.machine().map_err(|e| error::VmmError::Config(e.to_string()))?;
    if args.print_config {
        let machine = machine
            .absolute()
            .map_err(|source| error::VmmError::Host { what: "finding the current folder", source })?;
        print!("{}", machine.to_toml());
        return Ok(0);
    }
    vm::run(&machine, args.hooks())
}
