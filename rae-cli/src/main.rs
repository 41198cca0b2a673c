//! `rae-cli`: training and sampling of RAE + DiT-DH from the command line.

use clap::{CommandFactory, FromArgMatches};
use rae_cli::backends::{dispatch, BackendChoice};
use rae_cli::cli::{Cli, Command};
use rae_cli::commands::{codec, eval, sample, stats, tools, train};
use rae_cli::CliResult;
use rae_core::Precision;

fn run(cli: Cli) -> CliResult<()> {
    let choice: BackendChoice = cli.backend.parse()?;
    let prec = cli
        .precision
        .as_deref()
        .map(|s| Precision::parse(s, "--precision"))
        .transpose()?;
    rae_cli::limits::check_command(&cli.command)?;
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
        Command::Convert { input, output } => {
            let n = tools::convert(&input, &output)?;
            eprintln!("wrote {n} tensors to {}", output.display());
            Ok(())
        }
    }
}

fn main() {
    quiet_headless_vulkan();
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `--config X.yaml` of train and sample: the reference's settings, flags winning.
    match rae_cli::config::apply_config(&mut cli, &matches) {
        Ok(notes) => notes.iter().for_each(|n| eprintln!("{n}")),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
    if let Err(e) = run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
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
