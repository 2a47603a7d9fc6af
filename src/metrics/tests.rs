//! The exposition text, the histogram and the `/proc` parsers.

use super::*;
use crate::scheduler::model::{
    AgentId, FrameworkId, Offer, OfferId, StatusReason, TaskId, TaskUpdate,
};

#[track_caller]
fn check_label(value: &str, expected: &str) {
    assert_eq!(escape_label_value(value), expected, "{value:?}");
}

#[test]
fn label_values_are_escaped() {
    check_label("plain", "plain");
    check_label("a\"b", "a\\\"b");
    check_label("back\\slash", "back\\\\slash");
    check_label("two\nlines", "two\\nlines");
    check_label("\\\"\n", "\\\\\\\"\\n");
    check_label("tab\tand ünicode", "tab\tand ünicode");
    check_label("", "");
}

#[test]
fn help_escapes_backslash_and_newline_only() {
    let mut text = Text::default();
    text.family("x_total", "counter", "a \"quoted\" \\ and\nnewline");
    assert_eq!(
        text.out,
        "# HELP x_total a \"quoted\" \\\\ and\\nnewline\n# TYPE x_total counter\n"
    );
}

#[track_caller]
fn check_value(value: f64, expected: &str) {
    assert_eq!(format_value(value), expected);
}

#[test]
fn values_use_the_go_float_syntax() {
    check_value(0.0, "0");
    check_value(3.0, "3");
    check_value(0.005, "0.005");
    check_value(0.0001, "0.0001");
    check_value(1e-7, "0.0000001");
    check_value(1.5e12, "1500000000000");
    check_value(f64::INFINITY, "+Inf");
    check_value(f64::NEG_INFINITY, "-Inf");
    check_value(f64::NAN, "NaN");
}

#[track_caller]
fn check_sample(labels: &[(&str, &str)], value: f64, expected: &str) {
    let mut text = Text::default();
    text.sample("m", labels, value);
    assert_eq!(text.out, expected);
}

#[test]
fn samples_list_their_labels_in_order() {
    check_sample(&[], 1.0, "m 1\n");
    check_sample(&[("a", "x")], 2.0, "m{a=\"x\"} 2\n");
    check_sample(
        &[("a", "x"), ("b", "y\"")],
        0.5,
        "m{a=\"x\",b=\"y\\\"\"} 0.5\n",
    );
}

/// Observations in milliseconds against bounds in seconds; `expected` is
/// the cumulative count per bound, then count and sum.
#[track_caller]
fn check_histogram(bounds: &'static [f64], observed_ms: &[u64], expected: (&[u64], u64, f64)) {
    let histogram = Histogram::new(bounds);
    for ms in observed_ms {
        histogram.observe(Duration::from_millis(*ms));
    }
    let snapshot = histogram.snapshot();
    let cumulative: Vec<u64> = snapshot.buckets.iter().map(|(_, count)| *count).collect();
    let bounds_seen: Vec<f64> = snapshot.buckets.iter().map(|(bound, _)| *bound).collect();
    assert_eq!(bounds_seen, bounds);
    assert_eq!(
        (cumulative.as_slice(), snapshot.count, snapshot.sum_seconds),
        expected,
        "{observed_ms:?}"
    );
}

#[test]
fn histogram_buckets_are_cumulative_and_le_is_inclusive() {
    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1];
    check_histogram(BOUNDS, &[], (&[0, 0, 0], 0, 0.0));
    check_histogram(BOUNDS, &[0], (&[1, 1, 1], 1, 0.0));
    // On a bound counts in that bucket (`le` is "less or equal").
    check_histogram(BOUNDS, &[1], (&[1, 1, 1], 1, 0.001));
    check_histogram(BOUNDS, &[2, 10], (&[0, 2, 2], 2, 0.012));
    // Above every bound: only in +Inf (the count).
    check_histogram(BOUNDS, &[5, 500, 100], (&[0, 1, 2], 3, 0.605));
}

#[test]
fn histogram_text_has_buckets_inf_sum_and_count() {
    let snapshot = HistogramSnapshot {
        buckets: vec![(0.005, 1), (0.25, 3)],
        count: 4,
        sum_seconds: 1.5,
    };
    let mut text = Text::default();
    text.histogram("t_seconds", &[("route", "a\"b")], &snapshot);
    assert_eq!(
        text.out,
        "t_seconds_bucket{route=\"a\\\"b\",le=\"0.005\"} 1\n\
         t_seconds_bucket{route=\"a\\\"b\",le=\"0.25\"} 3\n\
         t_seconds_bucket{route=\"a\\\"b\",le=\"+Inf\"} 4\n\
         t_seconds_sum{route=\"a\\\"b\"} 1.5\n\
         t_seconds_count{route=\"a\\\"b\"} 4\n"
    );
    let mut text = Text::default();
    text.histogram("u_seconds", &[], &snapshot);
    assert!(text.out.starts_with("u_seconds_bucket{le=\"0.005\"} 1\n"));
    assert!(text.out.ends_with("u_seconds_sum 1.5\nu_seconds_count 4\n"));
}

#[test]
fn bucket_bounds_are_increasing_and_positive() {
    for bounds in [
        TURN_BUCKETS,
        COMMIT_BUCKETS,
        COMPACTION_BUCKETS,
        HTTP_BUCKETS,
        START_BUCKETS,
    ] {
        assert!(bounds.iter().all(|bound| bound.is_finite() && *bound > 0.0));
        assert!(
            bounds.windows(2).all(|pair| pair[0] < pair[1]),
            "{bounds:?}"
        );
    }
    // The turns the log warns about are a bucket of their own.
    assert!(TURN_BUCKETS.contains(&crate::scheduler::SLOW_TURN.as_secs_f64()));
}

#[track_caller]
fn check_rss(status: &str, expected: Option<u64>) {
    assert_eq!(resident_bytes(status), expected, "{status:?}");
}

#[test]
fn resident_memory_comes_from_vmrss() {
    check_rss(
        "Name:\tcharmander\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads: 9\n",
        Some(2048 * 1024),
    );
    check_rss("VmRSS: 0 kB", Some(0));
    check_rss("Name: x\n", None);
    check_rss("VmRSS: lots kB\n", None);
    check_rss("VmRSS: 12 MB\n", None);
    check_rss("VmRSS:\n", None);
}

#[track_caller]
fn check_start(stat: &str, system: &str, expected: Option<f64>) {
    assert_eq!(start_time(stat, system), expected, "{stat:?}");
}

#[test]
fn start_time_is_boot_time_plus_ticks() {
    let fields = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 12345 20 21";
    let system = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
    check_start(
        &format!("42 (charmander) {fields}"),
        system,
        Some(1_700_000_123.45),
    );
    // A command name with spaces and parentheses does not shift the fields.
    check_start(
        &format!("42 (a) b (c)) {fields}"),
        system,
        Some(1_700_000_123.45),
    );
    check_start("42 (short) S 1 2", system, None);
    check_start(&format!("42 (x) {fields}"), "cpu 1\n", None);
    check_start("no name at all", system, None);
}

/// Every sample belongs to the family declared just before it, and no
/// family is declared twice (what `promtool check metrics` also checks;
/// the integration test runs promtool itself).
#[track_caller]
fn check_well_formed(text: &str) {
    let mut family = String::new();
    let mut kind = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, declared) = rest.split_once(' ').expect("name and type");
            assert!(seen.insert(name.to_string()), "declared twice: {name}");
            family = name.to_string();
            kind = declared.to_string();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name = line.split(['{', ' ']).next().expect("a name");
        let base = match kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name),
            _ => name,
        };
        assert_eq!(base, family, "{line}");
    }
}

#[test]
fn render_counts_what_the_threads_saw() {
    let metrics = Metrics::new(&["ping", "submit"]);
    let offer = |id: &str| {
        Offer::unreserved(
            OfferId(id.to_string()),
            AgentId("a".into()),
            "slave1".to_string(),
            1.0,
            256.0,
            Vec::new(),
            Default::default(),
        )
    };
    metrics.count_event(&MesosEvent::Offers(vec![offer("o1"), offer("o2")]));
    metrics.count_event(&MesosEvent::Subscribed {
        framework_id: FrameworkId("f".to_string()),
    });
    metrics.count_event(&MesosEvent::Update(TaskUpdate {
        task_id: TaskId("t".into()),
        state: TaskState::Running,
        reason: StatusReason::Other,
        reason_name: String::new(),
        message: String::new(),
        agent_id: None,
        uuid: None,
        docker: None,
    }));
    metrics.count_calls(&[
        Call::Launch {
            agent_id: AgentId("a".into()),
            offer_ids: vec![OfferId("o1".to_string())],
            tasks: Vec::new(),
            refuse_seconds: 5.0,
        },
        Call::Decline {
            offer_ids: vec![OfferId("o2".to_string())],
            refuse_seconds: 5.0,
        },
    ]);
    metrics.count_call(&Call::Revive, &Ok(()));
    metrics.count_pipelined(0);
    metrics.count_pipelined(2);
    metrics.count_redis_cycle(RedisCycle::StateTimeout);
    metrics.count_http("submit", 202, Duration::from_millis(3));
    metrics.count_http("/weird", 404, Duration::from_millis(1));
    metrics.count_http("ping", 418, Duration::from_millis(1));
    metrics.turn.observe(Duration::from_micros(50));
    metrics.observe_start(Duration::from_secs(2));
    metrics.count_compaction(true, Duration::from_millis(200));
    let process = Process {
        resident_memory_bytes: Some(4096),
        start_time_seconds: Some(1_700_000_000.5),
    };
    let text = metrics.render(Some(&[("pending", 2), ("TASK_RUNNING", 1)]), &process);
    check_well_formed(&text);
    for line in [
        "charmander_tasks{state=\"pending\"} 2",
        "charmander_tasks{state=\"TASK_RUNNING\"} 1",
        "charmander_offers_received_total 2",
        "charmander_offers_used_total 1",
        "charmander_offers_declined_total 1",
        "charmander_task_launches_total 0",
        "charmander_mesos_calls_pipelined_total 2",
        "charmander_status_updates_total{state=\"TASK_RUNNING\"} 1",
        "charmander_status_updates_total{state=\"TASK_FAILED\"} 0",
        "charmander_mesos_calls_total{call=\"REVIVE\",result=\"ok\"} 1",
        "charmander_mesos_calls_total{call=\"ACCEPT\",result=\"outcome_unknown\"} 0",
        "charmander_mesos_subscribed 1",
        "charmander_mesos_resubscriptions_total 0",
        "charmander_state_turn_seconds_bucket{le=\"0.0001\"} 1",
        "charmander_state_turn_seconds_count 1",
        "charmander_task_submit_to_running_seconds_bucket{le=\"1\"} 0",
        "charmander_task_submit_to_running_seconds_bucket{le=\"2.5\"} 1",
        "charmander_journal_commit_seconds_count 0",
        "charmander_journal_compactions_total{result=\"ok\"} 1",
        "charmander_journal_compactions_total{result=\"failed\"} 0",
        "charmander_journal_compaction_seconds_bucket{le=\"0.25\"} 1",
        "charmander_journal_compaction_seconds_count 1",
        "charmander_http_requests_total{route=\"submit\",status=\"202\"} 1",
        "charmander_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
        "charmander_http_requests_total{route=\"ping\",status=\"other\"} 1",
        "charmander_http_request_duration_seconds_count{route=\"submit\"} 1",
        "charmander_redis_cycles_total{result=\"state_timeout\"} 1",
        "charmander_redis_cycles_total{result=\"ok\"} 0",
        "process_resident_memory_bytes 4096",
        "process_start_time_seconds 1700000000.5",
        "charmander_build_info{version=\"0.1.0\"} 1",
    ] {
        assert!(
            text.lines().any(|it| it == line),
            "missing {line:?} in\n{text}"
        );
    }
    // Request counters appear once a route has answered with that status.
    assert!(!text.contains("route=\"submit\",status=\"200\""));
    metrics.count_event(&MesosEvent::Disconnected {
        reason: "gone".to_string(),
    });
    metrics.count_event(&MesosEvent::Subscribed {
        framework_id: FrameworkId("f".to_string()),
    });
    metrics.count_event(&MesosEvent::Disconnected {
        reason: "gone".to_string(),
    });
    let text = metrics.render(None, &Process::default());
    check_well_formed(&text);
    assert!(text.contains("\ncharmander_mesos_subscribed 0\n"));
    assert!(text.contains("\ncharmander_mesos_resubscriptions_total 1\n"));
    // Without the state thread's answer the task family is left out, and
    // so are process figures that could not be read.
    assert!(!text.contains("charmander_tasks"));
    assert!(!text.contains("process_"));
}

#[test]
fn process_figures_are_read_on_linux() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let process = Process::read();
    assert!(process.resident_memory_bytes.is_some_and(|bytes| bytes > 0));
    assert!(process
        .start_time_seconds
        .is_some_and(|seconds| seconds > 1_500_000_000.0));
}
