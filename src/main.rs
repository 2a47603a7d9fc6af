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
    init_logging(config.log_level);
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

/// Logs to stderr with timestamps and thread names; RUST_LOG overrides the level.
pub fn init_logging(level: log::LevelFilter) {
    let logger = simple_logger::SimpleLogger::new()
        .with_level(level)
        .with_threads(true)
        .env();
    if let Err(error) = logger.init() {
        eprintln!("logging unavailable: {error}");
    }
    std::panic::set_hook(Box::new(|info| {
        log::error!("panic: {info}");
    }));
}
