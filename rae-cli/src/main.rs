//! `rae-cli`: training and sampling of RAE + DiT-DH from the command line.

use clap::{CommandFactory, FromArgMatches};
use rae_cli::backends::{dispatch, BackendChoice};
use rae_cli::cli::{Cli, Command};
use rae_cli::commands::{codec, eval, export, sample, stats, tools, train};
use rae_cli::{dist, CliResult};
use rae_core::Precision;

fn run(cli: Cli) -> CliResult<()> {
    let choice: BackendChoice = cli.backend.parse()?;
    let prec = cli
        .precision
        .as_deref()
        .map(|s| Precision::parse(s, "--precision"))
        .transpose()?;
    rae_cli::limits::check_command(&cli.command)?;
    if !matches!(cli.command, Command::Train(_)) {
        rae_cli::dist::single_only(command_name(&cli.command))?;
    }
    match cli.command {
        Command::Train(a) => dispatch(choice, cli.device, prec, train::TrainJob(a)),
        Command::Sample(a) => dispatch(choice, cli.device, prec, sample::SampleJob(a)).map(|_| ()),
        Command::Encode(a) => dispatch(choice, cli.device, prec, codec::EncodeJob(a)),
        Command::Decode(a) => dispatch(choice, cli.device, prec, codec::DecodeJob(a)),
        Command::Reconstruct(a) => {
            dispatch(choice, cli.device, prec, codec::ReconstructJob(a)).map(|_| ())
        }
        Command::Stats(a) => dispatch(choice, cli.device, prec, stats::StatsJob(a)),
        Command::Eval(a) => dispatch(choice, cli.device, prec, eval::EvalJob(a)).map(|_| ()),
        Command::Inspect { file } => {
            for line in tools::inspect(&file)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::BuiltinData {
            out,
            per_class,
            size,
        } => {
            let n = tools::export_builtin(&out, per_class, size)?;
            eprintln!("wrote {n} images to {}", out.display());
            Ok(())
        }
        Command::Export { diffusers, rae } => {
            export::export_diffusers(&rae, &diffusers)?;
            eprintln!(
                "wrote a diffusers AutoencoderRAE to {}",
                diffusers.display()
            );
            Ok(())
        }
        Command::Convert { input, output } => {
            let n = tools::convert(&input, &output)?;
            eprintln!("wrote {n} tensors to {}", output.display());
            Ok(())
        }
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Train(_) => "train",
        Command::Sample(_) => "sample",
        Command::Encode(_) => "encode",
        Command::Decode(_) => "decode",
        Command::Reconstruct(_) => "reconstruct",
        Command::Stats(_) => "stats",
        Command::Eval(_) => "eval",
        Command::Inspect { .. } => "inspect",
        Command::BuiltinData { .. } => "builtin-data",
        Command::Convert { .. } => "convert",
        Command::Export { .. } => "export",
    }
}

/// Prints `e` (naming the process in a group) and ends every process of the group.
fn fail(e: impl std::fmt::Display) -> ! {
    let g = dist::group();
    if g.world > 1 {
        dist::tell(&format!("error (process {} of {}): {e}", g.rank, g.world));
    } else {
        dist::tell(&format!("error: {e}"));
    }
    dist::abort(1)
}

fn main() {
    quiet_headless_vulkan();
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Join the data-parallel group first: every later message and file knows its process.
    let _group = cli
        .dist
        .parse()
        .and_then(dist::init)
        .unwrap_or_else(|e| fail(e));
    // `--config X.yaml` of train and sample: the reference's settings, flags winning.
    match rae_cli::config::apply_config(&mut cli, &matches) {
        Ok(notes) => notes.iter().for_each(|n| rae_cli::say!("{n}")),
        Err(e) => fail(e),
    }
    if let Err(e) = run(cli) {
        fail(e);
    }
}

/// On a headless machine (no Wayland session, no `XDG_RUNTIME_DIR`), probing the Vulkan
/// drivers for a WGPU adapter makes libwayland print "error: XDG_RUNTIME_DIR is invalid or
/// not set", which reads like a failure of ours. Point it at the temporary directory for this
/// process only, before any thread or driver exists; nothing is written there.
fn quiet_headless_vulkan() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
    {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
}
