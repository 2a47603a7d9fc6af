//! What `GET /client/events` tells: one `Notice` per durable change worth
//! watching (a task submitted, placed, launched, its status, a kill, a
//! move, a restart; a node joined or lost; subscribed or disconnected; an
//! intelligence entry changed).
//!
//! `State::handle_event` returns a turn's notices in `Turn::notices`, as
//! data; they travel through the journal with the replies, so only what is
//! durable is published, and `run` numbers them and hands them to the
//! `hub`. The JSON is `api::dto`'s (`notice_json`), a contract the
//! dashboard consumes.

use crate::scheduler::model::{AgentId, FrameworkId, TaskId, TaskState};

/// The longest text (bytes) of one field of a notice, of a task's history
/// entry, and of the status message kept on a task. A master may send a
/// status message of up to `recordio::MAX_RECORD` (16 MiB), offers carry
/// its hostnames and attributes, REST and Redis intelligence values of
/// kilobytes: the event ring (`hub::RING_CAPACITY` notices) and each task's
/// history (`trail::MAX_HISTORY` entries) are bounded in bytes only because
/// each text in them is. Longer text is cut with `CLIPPED` (`clip`).
pub const MAX_EVENT_TEXT: usize = 1024;

/// Ends a text cut at `MAX_EVENT_TEXT`, so the cut shows.
pub const CLIPPED: &str = "…";

/// `text` cut to at most `MAX_EVENT_TEXT` bytes on a char boundary, ending
/// in `CLIPPED` when it was cut.
pub fn clip(text: &str) -> String {
    clip_to(text, MAX_EVENT_TEXT)
}

/// `clip` in place (the capacity let go of too).
pub fn clip_in_place(text: &mut String) {
    if let Some(end) = cut_at(text, MAX_EVENT_TEXT) {
        text.truncate(end);
        text.push_str(CLIPPED);
        text.shrink_to_fit();
    }
}

/// `clip` of a shared text, replaced only when it is cut.
pub fn clip_shared(text: &mut std::sync::Arc<str>) {
    if cut_at(text, MAX_EVENT_TEXT).is_some() {
        *text = clip(text).into();
    }
}

/// Whether `clipped` is what `clip(full)` gives, without building it.
pub fn is_clip_of(clipped: &str, full: &str) -> bool {
    match cut_at(full, MAX_EVENT_TEXT) {
        None => clipped == full,
        Some(end) => clipped.strip_suffix(CLIPPED) == full.get(..end),
    }
}

fn clip_to(text: &str, max: usize) -> String {
    match cut_at(text, max) {
        None => text.to_string(),
        Some(end) => format!("{}{CLIPPED}", &text[..end]),
    }
}

/// Where `text` is cut to fit `max` bytes with the marker: `None` when it
/// fits whole.
fn cut_at(text: &str, max: usize) -> Option<usize> {
    if text.len() <= max {
        return None;
    }
    let mut end = max.saturating_sub(CLIPPED.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(end)
}

/// One change, stamped with the wall clock of its turn (unix milliseconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub time_ms: u64,
    pub kind: NoticeKind,
}

/// The kinds and their fields; `name` is the SSE `event:` and the JSON
/// `kind`. `task` is always the internal id, `id` the user id.
#[derive(Clone, Debug, PartialEq)]
pub enum NoticeKind {
    TaskSubmitted {
        task: TaskId,
        id: String,
    },
    TaskPlaced {
        task: TaskId,
        id: String,
        node: String,
        agent_id: AgentId,
        /// The placement summary, as in the task's history.
        why: String,
    },
    TaskLaunched {
        task: TaskId,
        id: String,
        node: String,
        agent_id: AgentId,
    },
    TaskStatus {
        task: TaskId,
        id: String,
        state: TaskState,
        reason: Option<String>,
        message: Option<String>,
        node: Option<String>,
    },
    TaskKilled {
        task: TaskId,
        id: String,
        by: KilledBy,
    },
    /// A reshuffle replaces `task` with `replacement`.
    TaskMoved {
        task: TaskId,
        id: String,
        replacement: TaskId,
        from: Option<String>,
        to: Option<String>,
    },
    /// The restart policy replaces the ended `task` with `replacement`.
    TaskRestarted {
        task: TaskId,
        id: String,
        replacement: TaskId,
        restarts: u32,
        delay_seconds: u64,
    },
    NodeJoined {
        agent_id: AgentId,
        node: String,
    },
    NodeLost {
        agent_id: AgentId,
        node: Option<String>,
    },
    Subscribed {
        framework_id: FrameworkId,
    },
    Disconnected {
        reason: String,
    },
    IntelligenceChanged {
        task: String,
        attribute: String,
        /// None when the entry was cleared.
        value: Option<String>,
        source: &'static str,
    },
}

/// Who asked for a kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KilledBy {
    /// `DELETE /client/task/<prefix>`.
    User,
    /// Replaced by a reshuffle.
    Reshuffle,
    /// `POST /admin/reset` or `--reset`.
    Reset,
    /// The framework was removed by the master.
    Framework,
}

impl KilledBy {
    pub fn as_str(self) -> &'static str {
        match self {
            KilledBy::User => "user",
            KilledBy::Reshuffle => "reshuffle",
            KilledBy::Reset => "reset",
            KilledBy::Framework => "framework",
        }
    }
}

impl NoticeKind {
    /// Cuts every text field to `MAX_EVENT_TEXT` bytes (`clip`); the ids
    /// a master chose too. Ids of our own tasks are short by construction.
    pub fn clip(&mut self) {
        let clip_all = |texts: &mut [&mut String]| {
            for text in texts {
                clip_in_place(text);
            }
        };
        match self {
            NoticeKind::TaskSubmitted { id, .. } | NoticeKind::TaskKilled { id, .. } => {
                clip_all(&mut [id]);
            }
            NoticeKind::TaskPlaced {
                id,
                node,
                agent_id,
                why,
                ..
            } => {
                clip_all(&mut [id, node, why]);
                clip_shared(&mut agent_id.0);
            }
            NoticeKind::TaskLaunched {
                id, node, agent_id, ..
            } => {
                clip_all(&mut [id, node]);
                clip_shared(&mut agent_id.0);
            }
            NoticeKind::TaskStatus {
                id,
                reason,
                message,
                node,
                ..
            } => {
                clip_all(&mut [id]);
                for text in [reason, message, node].into_iter().flatten() {
                    clip_in_place(text);
                }
            }
            NoticeKind::TaskMoved { id, from, to, .. } => {
                clip_all(&mut [id]);
                for text in [from, to].into_iter().flatten() {
                    clip_in_place(text);
                }
            }
            NoticeKind::TaskRestarted { id, .. } => clip_all(&mut [id]),
            NoticeKind::NodeJoined { agent_id, node } => {
                clip_all(&mut [node]);
                clip_shared(&mut agent_id.0);
            }
            NoticeKind::NodeLost { agent_id, node } => {
                clip_shared(&mut agent_id.0);
                if let Some(node) = node {
                    clip_in_place(node);
                }
            }
            NoticeKind::Subscribed { framework_id } => clip_all(&mut [&mut framework_id.0]),
            NoticeKind::Disconnected { reason } => clip_all(&mut [reason]),
            NoticeKind::IntelligenceChanged {
                task,
                attribute,
                value,
                ..
            } => {
                clip_all(&mut [task, attribute]);
                if let Some(value) = value {
                    clip_in_place(value);
                }
            }
        }
    }

    /// The SSE event name and JSON `kind`.
    pub fn name(&self) -> &'static str {
        match self {
            NoticeKind::TaskSubmitted { .. } => "task_submitted",
            NoticeKind::TaskPlaced { .. } => "task_placed",
            NoticeKind::TaskLaunched { .. } => "task_launched",
            NoticeKind::TaskStatus { .. } => "task_status",
            NoticeKind::TaskKilled { .. } => "task_killed",
            NoticeKind::TaskMoved { .. } => "task_moved",
            NoticeKind::TaskRestarted { .. } => "task_restarted",
            NoticeKind::NodeJoined { .. } => "node_joined",
            NoticeKind::NodeLost { .. } => "node_lost",
            NoticeKind::Subscribed { .. } => "subscribed",
            NoticeKind::Disconnected { .. } => "disconnected",
            NoticeKind::IntelligenceChanged { .. } => "intelligence_changed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` cut to `max` bytes gives `expected`; `is_clip_of` agrees.
    #[track_caller]
    fn check(text: &str, max: usize, expected: &str) {
        let clipped = clip_to(text, max);
        assert_eq!(clipped, expected, "{text:?} to {max}");
        assert!(clipped.len() <= max.max(CLIPPED.len()), "{clipped:?}");
    }

    #[test]
    fn text_is_cut_on_a_char_boundary_with_a_visible_marker() {
        check("", 8, "");
        check("abcdefgh", 8, "abcdefgh");
        // The marker takes 3 bytes of the 8.
        check("abcdefghi", 8, "abcde…");
        // é is 2 bytes, € 3, 🦀 4: never cut inside one.
        check("ééééé", 8, "éé…");
        check("aéééé", 8, "aéé…");
        check("€€€€", 8, "€…");
        check("a€€€", 8, "a€…");
        check("🦀🦀🦀", 8, "🦀…");
        check("a🦀🦀", 8, "a🦀…");
        check("🦀🦀", 8, "🦀🦀");
        check("ab🦀🦀", 9, "ab🦀…");
        check("abcd🦀🦀", 11, "abcd🦀…");
        check("…………", 9, "………");
        // Not even the marker fits: the marker alone.
        check("abcdef", 2, "…");
    }

    #[test]
    fn clip_in_place_and_is_clip_of_agree_with_clip() {
        for text in [
            String::new(),
            "x".repeat(MAX_EVENT_TEXT),
            "x".repeat(MAX_EVENT_TEXT + 1),
            "é".repeat(MAX_EVENT_TEXT),
            format!("a{}", "🦀".repeat(MAX_EVENT_TEXT)),
        ] {
            let clipped = clip(&text);
            assert!(clipped.len() <= MAX_EVENT_TEXT, "{}", clipped.len());
            assert_eq!(clipped == text, text.len() <= MAX_EVENT_TEXT);
            let mut in_place = text.clone();
            clip_in_place(&mut in_place);
            assert_eq!(in_place, clipped);
            assert!(is_clip_of(&clipped, &text));
            assert!(!is_clip_of(&format!("{clipped}x"), &text));
        }
        assert!(!is_clip_of("abc…", &"abd".repeat(MAX_EVENT_TEXT)));
    }

    /// See: review of issue 10. Every text a notice carries is bounded,
    /// whatever the master, Redis or a client sent.
    #[test]
    fn a_notice_keeps_at_most_max_event_text_per_field() {
        let long = "é".repeat(MAX_EVENT_TEXT);
        let mut status = NoticeKind::TaskStatus {
            task: TaskId("t-1".into()),
            id: "t".to_string(),
            state: TaskState::Failed,
            reason: Some(long.clone()),
            message: Some(long.clone()),
            node: None,
        };
        status.clip();
        let NoticeKind::TaskStatus {
            reason, message, ..
        } = &status
        else {
            unreachable!()
        };
        for text in [reason, message].into_iter().flatten() {
            assert!(text.len() <= MAX_EVENT_TEXT && text.ends_with(CLIPPED));
        }
        let mut intelligence = NoticeKind::IntelligenceChanged {
            task: "t".to_string(),
            attribute: "nodename".to_string(),
            value: Some(long),
            source: "redis",
        };
        intelligence.clip();
        let NoticeKind::IntelligenceChanged { value, .. } = &intelligence else {
            unreachable!()
        };
        assert_eq!(value.as_ref().map(String::len), Some(MAX_EVENT_TEXT - 1));
    }
}
