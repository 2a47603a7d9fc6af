//! A bare tiny_http server answering `Pong` to every request: the baseline
//! that `scripts/bench` compares the scheduler's `GET /admin/ping` against, in
//! the same run, with the same client and the same worker count.
//!
//! usage: `bare_pong ADDR:PORT [WORKERS]` (default 32 workers, the
//! scheduler's `--http-workers` default).

use std::sync::Arc;

/// Worker threads when none are named: the scheduler's `--http-workers` default.
const DEFAULT_WORKERS: usize = charmander::config::DEFAULT_HTTP_WORKERS;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".to_string());
    let workers = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_WORKERS);
    let server = match tiny_http::Server::http(&addr) {
        Ok(server) => Arc::new(server),
        Err(error) => {
            eprintln!("bare_pong: cannot listen on {addr}: {error}");
            std::process::exit(1);
        }
    };
    println!("bare_pong listening on {addr}");
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    // A client gone away is not this server's problem.
                    let _ = request.respond(tiny_http::Response::from_string("Pong"));
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}
