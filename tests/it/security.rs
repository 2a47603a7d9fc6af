//! The bearer token (`--api-token-file`): mutating endpoints need
//! `Authorization: Bearer <token>`, reads and dry runs stay open, and routing
//! errors (404, 405) come before the token check. And Mesos HTTP basic auth
//! (`--principal`, `--secret-file`) against a master that demands it.

use serde_json::{json, Value};

use crate::support::{Lab, STRESS60};

const TOKEN: &str = "s3cret";

/// One request with an optional `Authorization` header; the status, the
/// `WWW-Authenticate` header and the body as JSON.
fn call(
    lab: &Lab,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&str>,
) -> (u16, Option<String>, Value) {
    let url = lab.api(path);
    let result = match (method, body) {
        ("GET", _) => {
            let mut request = lab.http.get(&url);
            if let Some(value) = authorization {
                request = request.header("Authorization", value);
            }
            request.call()
        }
        ("DELETE", _) => {
            let mut request = lab.http.delete(&url);
            if let Some(value) = authorization {
                request = request.header("Authorization", value);
            }
            request.call()
        }
        ("POST", body) | ("PUT", body) => {
            let mut request = if method == "POST" {
                lab.http.post(&url)
            } else {
                lab.http.put(&url)
            };
            if let Some(value) = authorization {
                request = request.header("Authorization", value);
            }
            request
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(""))
        }
        _ => panic!("unsupported method {method}"),
    };
    let mut response = result.unwrap_or_else(|err| panic!("{method} {path} failed: {err}"));
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, challenge, value)
}

#[track_caller]
fn assert_refused(answer: (u16, Option<String>, Value)) {
    assert_eq!(
        answer,
        (
            401,
            Some(r#"Bearer realm="charmander""#.to_string()),
            json!({"code": 401, "message": "missing or wrong bearer token"})
        )
    );
}

#[test]
fn mutating_endpoints_need_the_bearer_token() {
    let lab = Lab::start_with(|config| config.api_token = Some(TOKEN.into()));
    let right = format!("Bearer {TOKEN}");

    assert_refused(call(&lab, "POST", "/client/task", None, Some(STRESS60)));
    assert_refused(call(
        &lab,
        "POST",
        "/client/task",
        Some("Bearer wrong"),
        Some(STRESS60),
    ));
    assert_refused(call(
        &lab,
        "POST",
        "/client/task",
        Some(&format!("Basic {TOKEN}")),
        Some(STRESS60),
    ));
    // The token is checked before the body is parsed: garbage is 401, not 400.
    assert_refused(call(&lab, "POST", "/client/task", None, Some("{not json")));
    assert!(lab.tasks().is_empty(), "a refused submit created a task");

    let (status, _, reply) = call(&lab, "POST", "/client/task", Some(&right), Some(STRESS60));
    assert_eq!(
        (status, reply),
        (202, json!({"code": 202, "message": "Run task: stress60"}))
    );
    lab.wait_running("stress60", 1);

    // Reads stay open.
    let (status, challenge, tasks) = call(&lab, "GET", "/client/task", None, None);
    assert_eq!((status, challenge), (200, None));
    assert_eq!(tasks.as_array().map(Vec::len), Some(1), "{tasks}");
    for path in ["/admin/ping", "/client/node", "/client/intelligence"] {
        let (status, _, _) = call(&lab, "GET", path, None, None);
        assert_eq!(status, 200, "{path}");
    }

    // A dry-run reshuffle changes nothing and stays open; a real one does not.
    let (status, _, plan) = call(
        &lab,
        "GET",
        "/client/task/reshuffle?dry_run=true",
        None,
        None,
    );
    assert_eq!((status, &plan["dry_run"]), (202, &json!(true)), "{plan}");
    assert_refused(call(&lab, "GET", "/client/task/reshuffle", None, None));
    assert_refused(call(
        &lab,
        "GET",
        "/client/task/reshuffle?dry_run=false",
        None,
        None,
    ));
    let (status, _, plan) = call(&lab, "GET", "/client/task/reshuffle", Some(&right), None);
    assert_eq!(status, 202, "{plan}");

    // Intelligence writes and kills.
    assert_refused(call(
        &lab,
        "PUT",
        "/client/intelligence/stress60/mem",
        None,
        Some("120"),
    ));
    assert_refused(call(
        &lab,
        "DELETE",
        "/client/intelligence/stress60/mem",
        Some("Bearer s3cret2"),
        None,
    ));
    assert_refused(call(&lab, "DELETE", "/client/task/stress", None, None));
    let (status, _, _) = call(
        &lab,
        "PUT",
        "/client/intelligence/stress60/mem",
        Some(&right),
        Some("120"),
    );
    assert_eq!(status, 200);

    // Routing errors come first: no endpoint is 404 and a wrong method 405,
    // with or without a token.
    let (status, challenge, _) = call(&lab, "POST", "/client/nowhere", None, Some("{}"));
    assert_eq!((status, challenge), (404, None));
    let (status, challenge, _) = call(&lab, "PUT", "/client/task", None, Some("{}"));
    assert_eq!((status, challenge), (405, None));

    let (status, _, killed) = call(&lab, "DELETE", "/client/task/stress", Some(&right), None);
    assert_eq!(status, 200, "{killed}");
}

#[test]
fn without_a_token_everything_stays_open() {
    let lab = Lab::start();
    let (status, _, _) = call(&lab, "POST", "/client/task", None, Some(STRESS60));
    assert_eq!(status, 202);
    // A client that sends a token anyway is not refused.
    let (status, _, _) = call(
        &lab,
        "GET",
        "/client/task/reshuffle",
        Some("Bearer anything"),
        None,
    );
    assert_eq!(status, 202);
}

fn authenticating_master() -> charmander::sim::Master {
    let mut config = crate::support::fast_sim(charmander::sim::charmander_lab());
    config.credentials = vec![("lab".to_string(), "pa55".to_string())];
    charmander::sim::Master::start(config).expect("sim starts")
}

fn scheduler_with(master: &charmander::sim::Master, secret: &str) -> charmander::Running {
    let mut config = crate::support::scheduler_config(&master.addr().to_string());
    config.auth = Some(charmander::mesos::client::BasicAuth {
        principal: "lab".to_string(),
        secret: secret.to_string(),
    });
    charmander::start(config).expect("scheduler starts")
}

#[test]
fn mesos_basic_auth_gets_us_in_and_a_wrong_secret_does_not() {
    let master = authenticating_master();
    let http = crate::support::http_agent();
    let state = || crate::support::sim_state(&master);
    // A raw SUBSCRIBE without credentials is refused first of all, with the realm.
    let response = http
        .post(format!("http://{}/api/v1/scheduler", master.addr()))
        .header("Content-Type", "application/json")
        .send("{}")
        .expect("answered");
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response
            .headers()
            .get("WWW-Authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"mesos-master-scheduler\"")
    );

    let wrong = scheduler_with(&master, "guess");
    // Refused, it keeps trying with backoff (and never gets in).
    let tried = crate::support::wait_until(crate::support::DEADLINE, || {
        state()["calls"]["UNAUTHENTICATED"].as_u64() >= Some(3)
    });
    assert!(tried, "{}", state());
    wrong.shutdown();
    assert!(
        state()["frameworks"].as_array().is_some_and(Vec::is_empty),
        "{}",
        state()
    );

    let right = scheduler_with(&master, "pa55");
    let subscribed = crate::support::wait_until(crate::support::DEADLINE, || {
        state()["frameworks"]
            .as_array()
            .is_some_and(|f| f.iter().any(|fw| fw["connected"] == true))
    });
    assert!(subscribed, "{}", state());
    // Calls carry the credentials too: a task launches and runs.
    let api = right.api_addr();
    crate::support::submit(&http, &api.to_string(), STRESS60);
    let running = crate::support::wait_until(crate::support::DEADLINE, || {
        state()["tasks"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["state"] == "TASK_RUNNING"))
    });
    assert!(running, "{}", state());
    right.shutdown();
}

/// A child process killed (SIGKILL) on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// See: issue 9, B8. At trace level ureq_proto dumped every request's bytes,
// the Basic header (base64 of principal:secret) included. The scheduler now
// speaks HTTP to the master itself; this keeps any level from printing it.
#[test]
fn no_log_level_prints_the_mesos_secret() {
    let master = authenticating_master();
    let dir = std::env::temp_dir().join(format!("charmander-it-secret-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, "pa55\n").expect("secret written");
    let log_path = dir.join("log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let api = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .to_string();
    let scheduler = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_charmander-scheduler"))
            .args(["--master", &master.addr().to_string(), "--listen", &api])
            .args(["--principal", "lab", "--secret-file"])
            .arg(&secret_file)
            .args(["--state-dir"])
            .arg(dir.join("state"))
            .args(["--log-level", "trace"])
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("scheduler spawns"),
    );
    let http = crate::support::http_agent();
    let up = crate::support::wait_until(crate::support::DEADLINE, || {
        http.get(format!("http://{api}/admin/ping")).call().is_ok()
    });
    assert!(up, "scheduler at {api} did not start");
    // Subscribed, launched and acknowledged: SUBSCRIBE and calls all went out.
    crate::support::submit(&http, &api, STRESS60);
    let acknowledged = crate::support::wait_until(crate::support::DEADLINE, || {
        crate::support::request(
            &http,
            "GET",
            &format!("http://{}/sim/state", master.addr()),
            None,
        )
        .1["calls"]["ACKNOWLEDGE"]
            .as_u64()
            >= Some(2)
    });
    assert!(acknowledged, "the task never ran");
    drop(scheduler);
    let written = std::fs::read_to_string(&log_path).expect("log read");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        written.contains("DEBUG"),
        "verbose logging was not on:\n{written}"
    );
    let header = charmander::base64::encode(b"lab:pa55");
    // Wire dumps split a header over rows of 16 bytes: search the bytes too.
    let dumped = String::from_utf8_lossy(&hex_dumped_bytes(&written)).into_owned();
    for leak in ["pa55", header.as_str()] {
        let line = written.lines().find(|line| line.contains(leak));
        assert_eq!(line, None, "the log shows {leak:?}");
        assert!(
            !dumped.contains(leak),
            "a wire dump in the log shows {leak:?}"
        );
    }
}

/// The bytes of every hex-dump row in a log (`… ] 504f 5354 …  POST./a`):
/// up to eight groups of four hex digits, `--` for padding.
fn hex_dumped_bytes(log: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in log.lines() {
        let Some((_, row)) = line.split_once("] ") else {
            continue;
        };
        let groups: Vec<&str> = row.split(' ').take(8).collect();
        let is_dump = groups.len() == 8
            && groups.iter().all(|group| {
                group.len() == 4 && group.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            });
        if !is_dump {
            continue;
        }
        for group in groups {
            for pair in [&group[..2], &group[2..]] {
                if let Ok(byte) = u8::from_str_radix(pair, 16) {
                    bytes.push(byte);
                }
            }
        }
    }
    bytes
}
