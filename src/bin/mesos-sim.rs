//! `mesos-sim`: the simulated Mesos master as a process, for demos, benchmarks
//! and third-party clients. The library module `charmander::sim` does the work.

use std::process::ExitCode;

fn main() -> ExitCode {
    let (config, level) = match charmander::sim::parse_args(std::env::args().skip(1)) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            print!("{}", charmander::sim::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("mesos-sim: {error}\n(see --help)");
            return ExitCode::from(2);
        }
    };
    charmander::init_logging(level);
    let agents = config.agents.len();
    match charmander::sim::Master::start(config) {
        Ok(master) => {
            println!(
                "mesos-sim listening on {} with {agents} agents",
                master.addr()
            );
            loop {
                std::thread::park();
            }
        }
        Err(error) => {
            eprintln!("mesos-sim: {error}");
            ExitCode::FAILURE
        }
    }
}
