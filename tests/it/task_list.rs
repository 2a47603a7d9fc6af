//! Issue 10, item 4: `GET /client/task` filters (`?state=`, `?prefix=`,
//! `?limit=`) over real HTTP, and 400 for values that mean nothing.

use serde_json::Value;

use crate::support::{read_head_lines, wait_until, Lab, DEADLINE, STRESS60};

/// The `id` of each listed task, in list order.
fn ids(lab: &Lab, query: &str) -> Vec<String> {
    let (status, tasks) = lab.get(&format!("/client/task{query}"));
    assert_eq!(status, 200, "{query}: {tasks}");
    tasks
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|task| task["id"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn the_task_list_filters_by_state_prefix_and_limit() {
    let lab = Lab::start();
    // Running, waiting for ever (no node has that much memory), and ended
    // (the same host port twice: the master refuses it, TASK_ERROR).
    let huge = r#"{"id":"huge task","dockerimage":"nginx","mem":"9000000"}"#;
    let twice = r#"{"id":"twice","dockerimage":"nginx","mem":"10","nodetype":"lab",
        "ports":[{"host_port":31600,"container_port":80},{"host_port":31600,"container_port":81}]}"#;
    for body in [STRESS60, huge, twice] {
        let (status, reply) = lab.post("/client/task", body);
        assert_eq!(status, 202, "{reply}");
    }
    lab.wait_running("stress60", 1);
    let ended = wait_until(DEADLINE, || ids(&lab, "?state=TASK_ERROR") == ["twice"]);
    assert!(ended, "{:?}", lab.all_tasks());

    assert_eq!(ids(&lab, ""), ["huge task", "stress60", "twice"]);
    assert_eq!(ids(&lab, "?state=active"), ["huge task", "stress60"]);
    assert_eq!(ids(&lab, "?state=pending"), ["huge task"]);
    assert_eq!(ids(&lab, "?state=launching"), Vec::<String>::new());
    assert_eq!(ids(&lab, "?state=running"), ["stress60"]);
    assert_eq!(ids(&lab, "?state=TASK_RUNNING"), ["stress60"]);
    assert_eq!(ids(&lab, "?prefix=stress"), ["stress60"]);
    assert_eq!(ids(&lab, "?prefix=tw"), ["twice"]);
    assert_eq!(ids(&lab, "?prefix=tw&state=active"), Vec::<String>::new());
    // Internal ids drop spaces; a prefix with one matches the user id.
    assert_eq!(ids(&lab, "?prefix=hugetask"), ["huge task"]);
    assert_eq!(ids(&lab, "?prefix=huge%20t"), ["huge task"]);
    assert_eq!(ids(&lab, "?limit=2"), ["huge task", "stress60"]);
    assert_eq!(ids(&lab, "?limit=1&state=running"), ["stress60"]);
    assert_eq!(ids(&lab, "?limit=100&prefix=s&pretty"), ["stress60"]);

    for (query, says) in [
        ("?state=finished", "bad state \"finished\""),
        ("?state=", "bad state \"\""),
        ("?limit=0", "bad limit \"0\""),
        ("?limit=many", "bad limit \"many\""),
        ("?prefix=", "empty prefix"),
        ("?prefix=%G1", "bad percent-encoding in prefix"),
    ] {
        let (status, reply) = lab.get(&format!("/client/task{query}"));
        assert_eq!(status, 400, "{query}: {reply}");
        let message = reply["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "{query}: {reply}");
        assert_eq!(reply["code"], Value::from(400), "{query}: {reply}");
    }
}

/// Tasks in a list longer than one page (`api::pages::LIST_PAGE`, 10,000):
/// its body is written page by page, so its length is not known up front.
const LONGER_THAN_A_PAGE: usize = 10_001;
/// Clients submitting the long list's tasks at once.
const SUBMITTERS: usize = 8;

/// `GET /client/task` in HTTP/1.0 on a raw socket: the head's lines and
/// the body, read until the server closes the connection.
fn list_over_http_1_0(lab: &Lab) -> (Vec<String>, Vec<u8>) {
    use std::io::{BufReader, Read, Write};
    let socket = std::net::TcpStream::connect(lab.api_addr()).expect("connects");
    socket
        .set_read_timeout(Some(DEADLINE))
        .expect("timeout set");
    // Keep-alive asked for: only the connection's end can delimit the body.
    (&socket)
        .write_all(b"GET /client/task HTTP/1.0\r\nHost: lab\r\nConnection: keep-alive\r\n\r\n")
        .expect("request sent");
    let mut reader = BufReader::new(socket);
    let head = read_head_lines(&mut reader)
        .iter()
        .map(|line| line.to_ascii_lowercase())
        .collect();
    let mut body = Vec::new();
    reader
        .read_to_end(&mut body)
        .expect("the body ends with the connection");
    (head, body)
}

/// A list longer than a page has no `Content-Length`: HTTP/1.1 clients get
/// it chunked, HTTP/1.0 clients as it is written, ended by the connection's
/// close (tiny_http P18; it used to read the whole body into memory first),
/// even when they asked to keep the connection. Both read the same list.
#[test]
fn a_list_longer_than_a_page_streams_to_http_1_0_clients() {
    let lab = Lab::start();
    // Never placed (no node has that memory): all stay listed as pending.
    std::thread::scope(|scope| {
        for first in 0..SUBMITTERS {
            let lab = &lab;
            scope.spawn(move || {
                let http = crate::support::http_agent();
                for n in (first..LONGER_THAN_A_PAGE).step_by(SUBMITTERS) {
                    let body =
                        format!(r#"{{"id":"long{n}","dockerimage":"nginx","mem":"9000000"}}"#);
                    crate::support::submit(&http, &lab.api_addr().to_string(), &body);
                }
            });
        }
    });

    let mut chunked = lab
        .http
        .get(&lab.api("/client/task"))
        .call()
        .expect("HTTP/1.1 list");
    let encoding = chunked.headers().get("transfer-encoding").cloned();
    assert_eq!(
        encoding.as_ref().map(|v| v.to_str().unwrap_or("")),
        Some("chunked")
    );
    let over_1_1 = chunked
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .expect("HTTP/1.1 body");
    let over_1_1: Vec<Value> = serde_json::from_slice(&over_1_1).expect("a JSON array");
    assert_eq!(over_1_1.len(), LONGER_THAN_A_PAGE);

    let (head, body) = list_over_http_1_0(&lab);
    assert!(head[0].starts_with("http/1.0 200"), "{head:?}");
    assert!(head.iter().any(|h| h == "connection: close"), "{head:?}");
    assert!(
        !head.iter().any(|h| h.starts_with("content-length:")),
        "{head:?}"
    );
    assert!(
        !head.iter().any(|h| h.starts_with("transfer-encoding:")),
        "{head:?}"
    );
    let over_1_0: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
    // The same tasks in the same order (a pending reason may change between
    // the two reads, as the state judges the new tasks).
    let task_ids = |list: &[Value]| -> Vec<String> {
        list.iter()
            .map(|task| task["InternalID"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(over_1_0.len(), LONGER_THAN_A_PAGE);
    assert!(
        task_ids(&over_1_0) == task_ids(&over_1_1),
        "HTTP/1.0 and HTTP/1.1 list different tasks"
    );
}
