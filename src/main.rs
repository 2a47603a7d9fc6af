//! `charmander-scheduler`: parse flags, set up logging, start, run until
//! SIGTERM or SIGINT (a graceful stop: the framework stays registered and its
//! tasks keep running), or until the Mesos connection or the state directory
//! fails for good.
//!
//! Exit codes: 0 clean stop (a signal), 1 cannot start (e.g. the state dir is
//! locked by another process, or `--listen`'s port is taken), 2 bad flags, 3
//! state not saved (`store::EXIT_STATE_NOT_SAVED`: an I/O error in the state
//! dir, or a full disk whose reserve is used up; a full disk alone only
//! refuses submits with 507), 4 the framework failed over to another
//! scheduler (`mesos::EXIT_FAILED_OVER`), 5 the master refuses our SUBSCRIBE
//! for good (`mesos::EXIT_SUBSCRIBE_REFUSED`); 130/143 a second SIGINT/SIGTERM
//! while stopping ended the process at once.

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
    // Before `start`: the signals must be blocked before any thread exists,
    // so that every thread inherits the mask (`charmander::stop_signals`).
    let stop = match charmander::stop_signals() {
        Ok(stop) => stop,
        Err(error) => {
            log::warn!("no graceful stop: SIGTERM and SIGINT end the process at once ({error})");
            crossbeam_channel::never()
        }
    };
    match charmander::start(config) {
        Ok(running) => match running.wait_or_stop(&stop) {
            Ok(_) => ExitCode::SUCCESS,
            // Already logged where it happened; this is the exit code.
            Err(failure) => {
                log::error!("stopped: exit_code={} {failure}", failure.exit_code());
                ExitCode::from(failure.exit_code())
            }
        },
        Err(error) => {
            log::error!("cannot start: {error}");
            ExitCode::FAILURE
        }
    }
}
