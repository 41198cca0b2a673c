//! `rae-cli`: training and sampling of RAE + DiT-DH from the command line.

use clap::{CommandFactory, FromArgMatches};
use rae_cli::backends::{dispatch, BackendChoice};
use rae_cli::cli::{Cli, Command};
use rae_cli::commands::{codec, eval, sample, stats, tools, train};
use rae_cli::CliResult;

fn run(cli: Cli) -> CliResult<()> {
    let choice: BackendChoice = cli.backend.parse()?;
    match cli.command {
        Command::Train(a) => dispatch(choice, cli.device, train::TrainJob(a)),
        Command::Sample(a) => dispatch(choice, cli.device, sample::SampleJob(a)).map(|_| ()),
        Command::Encode(a) => dispatch(choice, cli.device, codec::EncodeJob(a)),
        Command::Decode(a) => dispatch(choice, cli.device, codec::DecodeJob(a)),
        Command::Reconstruct(a) => {
            dispatch(choice, cli.device, codec::ReconstructJob(a)).map(|_| ())
        }
        Command::Stats(a) => dispatch(choice, cli.device, stats::StatsJob(a)),
        Command::Eval(a) => dispatch(choice, cli.device, eval::EvalJob(a)).map(|_| ()),
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
