//! The khard binary: parse arguments, run, map the outcome to an exit code.

use clap::Parser;
use khard::cli::{Cli, Command};
use khard::error::{Exit, is_input_error};
use khard::settings::Settings;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(message) = khard::cli::ansible_only_flag(&args) {
        eprintln!("khard: {message}");
        std::process::exit(Exit::Invalid.code());
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Invalid.code()
            } else {
                0
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let result = match cli.command {
        Command::Apply(args) => Settings::from_args(&args).and_then(khard::app::apply),
        Command::Report(args) => Settings::from_report_args(&args).and_then(khard::app::report),
        Command::Inventory(args) => khard::app::inventory(&args),
        Command::Merge(args) => khard::app::merge(&args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "khard", &mut std::io::stdout());
            Ok(Exit::Ok)
        }
    };
    let code = match result {
        Ok(exit) => exit,
        Err(e) => {
            // An error may quote a node's or an input's text: shown, never
            // sent; and never a value that came out of a vault.
            let text = khard::input::vault::scrub(&format!("{e:#}"));
            eprintln!("khard: {}", khard::terminal::lines(&text));
            if is_input_error(&e) {
                Exit::Invalid
            } else {
                Exit::Failed
            }
        }
    };
    std::process::exit(code.code());
}
