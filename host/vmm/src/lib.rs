//! `pvkit`, the reference hypervisor: boots PVH guest kernels on Linux KVM
//! and serves the pvkit interface through `pvkit-host`.
//!
//! The crate is a library with one public entry point, [`main`], which the
//! `pvkit` binary calls; the library form exists so that the fuzz targets
//! (`fuzz/`) reach the parsers of what an operator or an API client sends,
//! through [`fuzzing`].
// The whole binary faces a guest (its exits, its memory, its devices) or an
// operator (command lines, files): no panic may be reachable from either.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

mod accounting;
mod acpi;
mod api;
mod bench;
mod bzimage;
mod cli;
mod config;
mod confine;
mod conformance;
mod console;
mod control;
mod cpuid;
mod ctl;
mod devices;
mod drill;
mod elf;
mod error;
mod events;
mod exit;
mod files;
mod layout;
mod limits;
mod loader;
mod machine;
mod metrics;
mod net;
mod operator;
mod output;
mod saver;
mod sched;
mod snapshot;
mod standby;
mod teardown;
mod time;
mod vcpu;
mod vm;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// The `pvkit` command: parses the command line and runs it.
pub fn main() -> ExitCode {
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
        Command::Drill(args) => match drill::run(&args) {
            Ok(status) => ExitCode::from(status),
            Err(e) => {
                eprintln!("pvkit drill: error: {e}");
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
    if args.standby {
        // Checked writable before the standby waits.
        let accounting =
            args.accounting.as_deref().map(output::Output::open).transpose().map_err(error::VmmError::Config)?;
        let sock =
            args.api_sock.as_deref().ok_or_else(|| error::VmmError::Config("--standby needs --api-sock".into()))?;
        let mut chosen = standby::wait(sock).map_err(error::VmmError::Config)?;
        args.restore_overrides(&mut chosen.config);
        return vm::run(&chosen.config, args.hooks(), accounting, Some((chosen.api, chosen.restore)));
    }
    let machine = args.machine().map_err(|e| error::VmmError::Config(e.to_string()))?;
    if args.print_config {
        let machine = machine
            .absolute()
            .map_err(|source| error::VmmError::Host { what: "finding the current folder", source })?;
        print!("{}", machine.to_toml());
        return Ok(0);
    }
    // Checked writable before the machine runs.
    let accounting =
        args.accounting.as_deref().map(output::Output::open).transpose().map_err(error::VmmError::Config)?;
    vm::run(&machine, args.hooks(), accounting, None)
}

/// The parsers of operator and API-client input, for the fuzz targets:
/// each takes raw bytes and must never panic.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses an API request as the server reads it off its socket, and
    /// routes it to nothing; the status it would be refused with, if any.
    pub fn http_request(bytes: &[u8]) -> Result<(), u16> {
        let mut reader = std::io::BufReader::new(bytes);
        crate::api::http::read_request(&mut reader).map(drop).map_err(|r| r.status)
    }

    /// Parses a VM description file, as TOML and as JSON.
    pub fn config(text: &str) -> (bool, bool) {
        (crate::config::VmConfig::parse(text).is_ok(), crate::config::VmConfig::parse_json(text).is_ok())
    }
}
