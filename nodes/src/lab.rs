//! `playground sim` and `playground bench`: the lab is not part of this binary. Each command runs its own
//! binary (`playground-sim`, `playground-bench`), the one a build puts next to this one, in place of this
//! process, with the arguments as given and `--binary` naming this binary, so that the product it runs is
//! the one the user invoked.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

/// Everything after `sim` or `bench`, passed through as it is, flags and `--help` included.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct LabArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    pub args: Vec<OsString>,
}

/// A lab binary: the subcommand that runs it, its name, and the package that builds it.
pub struct Lab {
    subcommand: &'static str,
    binary: &'static str,
    package: &'static str,
}

pub const SIM: Lab = Lab { subcommand: "sim", binary: "playground-sim", package: "simulations" };

/// Replaces this process with `lab`'s binary; returns only if that cannot be done.
pub fn run(lab: Lab, args: LabArgs) -> Result<()> {
    let Lab { subcommand, binary, package } = lab;
    let this = std::env::current_exe().context("the path of this binary")?;
    let binary = this.with_file_name(binary);
    if !binary.is_file() {
        bail!(
            "`playground {subcommand}` runs {}, which is missing: build it with `cargo build -p {package}`",
            binary.display()
        );
    }
    let mut cmd = Command::new(&binary);
    if !args.args.iter().any(|a| a == "--binary" || a.to_string_lossy().starts_with("--binary=")) {
        cmd.arg("--binary").arg(&this);
    }
    cmd.args(&args.args);
    // On success exec does not return: the exit code and the output are the lab binary's own.
    let error = cmd.exec();
    Err(error).with_context(|| format!("run {}", binary.display()))
}
