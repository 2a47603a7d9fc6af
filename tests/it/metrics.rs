//! `GET /metrics` over real HTTP: the exposition moves with what the
//! scheduler does (offers, launches, RUNNING updates, ACCEPTs, the
//! subscription), stays open with `--api-token-file` (it is a read), and
//! passes Prometheus' own parser and linter, `promtool check metrics`
//! (`scripts/test` installs the Debian package `prometheus`).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{request, wait_until, Lab, DEADLINE, STRESS60};

const TOKEN: &str = "metrics-t0ken";

/// The content type and body of one scrape, without credentials.
fn scrape(lab: &Lab) -> (u16, String, String) {
    let mut response = lab
        .http
        .get(lab.api("/metrics"))
        .call()
        .expect("GET /metrics");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.body_mut().read_to_string().expect("a text body");
    (status, content_type, body)
}

/// The value of the sample `series` (name and labels exactly as written).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// Runs `promtool check metrics` on `text`; its verdict and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|err| {
        panic!(
            "promtool not runnable ({err}): install the Debian package `prometheus` \
             (scripts/test does), it checks the exposition format"
        )
    });
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(text.as_bytes())
        .expect("promtool reads the scrape");
    let output = child.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

/// A state directory for one test (journal commits are measured only with
/// one), removed on drop.
struct StateDir(std::path::PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn metrics_move_with_the_work_and_pass_promtool() {
    let dir = StateDir(
        std::env::temp_dir().join(format!("charmander-it-metrics-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir.0);
    let lab = Lab::start_with(|config| {
        config.api_token = Some(TOKEN.into());
        config.state_dir = Some(dir.0.clone());
    });
    // Open without the token: a scrape is a read.
    let (status, content_type, before) = scrape(&lab);
    assert_eq!(status, 200, "{before}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let (ok, said) = promtool_check(&before);
    assert!(ok, "promtool check metrics failed:\n{said}\non:\n{before}");
    assert_eq!(value(&before, "charmander_task_launches_total"), Some(0.0));
    assert_eq!(
        value(&before, "charmander_tasks{state=\"TASK_RUNNING\"}"),
        Some(0.0)
    );
    assert!(value(&before, "charmander_build_info{version=\"0.1.0\"}") == Some(1.0));

    // A submit with the token, then wait for it to run.
    let submitted = lab
        .http
        .post(lab.api("/client/task"))
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send(STRESS60)
        .expect("submit");
    assert_eq!(submitted.status().as_u16(), 202);
    lab.wait_running("stress60", 1);

    // The caller counts an ACCEPT once its answer is in, which may be just
    // after the RUNNING update: wait for the figures rather than race them.
    let mut text = String::new();
    let expected = [
        ("charmander_mesos_subscribed", 1.0),
        ("charmander_tasks{state=\"TASK_RUNNING\"}", 1.0),
        ("charmander_tasks{state=\"pending\"}", 0.0),
        ("charmander_task_launches_total", 1.0),
        (
            "charmander_status_updates_total{state=\"TASK_RUNNING\"}",
            1.0,
        ),
        (
            "charmander_mesos_calls_total{call=\"ACCEPT\",result=\"ok\"}",
            1.0,
        ),
        ("charmander_task_submit_to_running_seconds_count", 1.0),
        (
            "charmander_http_requests_total{route=\"task_submit\",status=\"202\"}",
            1.0,
        ),
        (
            "charmander_http_request_duration_seconds_count{route=\"task_submit\"}",
            1.0,
        ),
    ];
    let settled = wait_until(DEADLINE, || {
        text = scrape(&lab).2;
        expected
            .iter()
            .all(|(series, want)| value(&text, series) == Some(*want))
    });
    assert!(settled, "expected {expected:?} in:\n{text}");
    for series in [
        "charmander_offers_received_total",
        "charmander_offers_used_total",
        "charmander_state_turn_seconds_count",
        "charmander_journal_commit_seconds_count",
        "charmander_mesos_calls_total{call=\"ACKNOWLEDGE\",result=\"ok\"}",
        "charmander_http_requests_total{route=\"metrics\",status=\"200\"}",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
    ] {
        assert!(
            value(&text, series).is_some_and(|it| it > 0.0),
            "{series} > 0 expected in:\n{text}"
        );
    }
    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics failed:\n{said}\non:\n{text}");

    // A URL no route knows is counted under one label, not its path.
    let (status, _) = request(&lab.http, "GET", &lab.api("/no/such/x%22y"), None);
    assert_eq!(status, 404);
    let settled = wait_until(DEADLINE, || {
        text = scrape(&lab).2;
        value(
            &text,
            "charmander_http_requests_total{route=\"unmatched\",status=\"404\"}",
        ) == Some(1.0)
    });
    assert!(settled, "{text}");
    assert!(!text.contains("/no/such"));
}
