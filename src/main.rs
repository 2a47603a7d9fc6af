//! `charmander-scheduler`: parse flags, set up logging, start, run until killed.

use std::process::ExitCode;

use charmander::config::{self, Parsed};

fn main() -> ExitCode {
    let config = match config::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Help) => {
            print!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("charmander-scheduler: {error}\n(see --help)");
            return ExitCode::from(2);
        }
    };
    charmander::init_logging(config.log_level);
    match charmander::start(config) {
        Ok(running) => {
            running.wait();
            ExitCode::SUCCESS
        }
        Err(error) => {
            log::error!("cannot start: {error}");
            ExitCode::FAILURE
        }
    }
}
