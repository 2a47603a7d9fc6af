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
