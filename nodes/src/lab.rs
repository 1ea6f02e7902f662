//! `playground sim` and `playground bench`: the lab is not part of this binary. Each command runs its own
//! binary (`playground-sim`, `playground-bench`), the one a build puts next to this one, in place of this
//! process, with the arguments as given and `--binary` naming this binary, so that the product it runs is
//! the one the user invoked.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
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
pub const BENCH: Lab = Lab { subcommand: "bench", binary: "playground-bench", package: "bench" };

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
    cmd.args(with_binary(args.args, &this));
    // On success exec does not return: the exit code and the output are the lab binary's own.
    let error = cmd.exec();
    Err(error).with_context(|| format!("run {}", binary.display()))
}

/// `args` with `--binary THIS` added, unless they name a binary already. It goes last (before a `--`,
/// after which everything is a value): after a subcommand, where a lab binary takes it, since its
/// subcommands refuse the top level's flags.
fn with_binary(mut args: Vec<OsString>, this: &Path) -> Vec<OsString> {
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let named = args[..end].iter().any(|a| a == "--binary" || a.to_string_lossy().starts_with("--binary="));
    if !named {
        args.splice(end..end, [OsString::from("--binary"), this.as_os_str().to_owned()]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_binary_goes_last_before_a_double_dash_and_only_once() {
        let this = Path::new("/bin/playground");
        let given = with_binary(args(&["failover", "--kills", "5"]), this);
        assert_eq!(given, args(&["failover", "--kills", "5", "--binary", "/bin/playground"]));
        assert_eq!(with_binary(args(&[]), this), args(&["--binary", "/bin/playground"]));
        let dashed = with_binary(args(&["summary", "--", "--odd-dir"]), this);
        assert_eq!(dashed, args(&["summary", "--binary", "/bin/playground", "--", "--odd-dir"]));
        for own in [&["list", "--binary", "/x"][..], &["--binary=/x", "list"][..]] {
            assert_eq!(with_binary(args(own), this), args(own), "the user's own --binary wins");
        }
    }
}
