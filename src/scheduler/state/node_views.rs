//! `State::node_views`: the node registry as `GET /client/node` and the
//! Redis bridge show it, with each node's free and used cpus and mem.
//!
//! Computed when asked (a request, a Redis cycle), in one pass over the live
//! tasks grouped by agent plus one pass over the nodes; nothing is kept.

use std::collections::BTreeMap;

use super::{Phase, State};
use crate::scheduler::model::AgentId;
use crate::scheduler::NodeView;

impl State {
    pub(super) fn node_views(&self) -> Vec<NodeView> {
        // (cpus, mem) of our live tasks, by agent. A pending task holds
        // nothing; every other task in `tasks` (launching, running, being
        // killed, unreachable) still takes what it was launched with.
        let mut used: BTreeMap<&AgentId, (f64, f64)> = BTreeMap::new();
        for task in self.tasks.values() {
            let Some(agent_id) = &task.agent_id else {
                continue;
            };
            if task.phase == Phase::Pending {
                continue;
            }
            let (cpus, mem_mb) = used.entry(agent_id).or_default();
            *cpus += task.spec.launch_cpus();
            *mem_mb += task.spec.mem_mb as f64;
        }
        self.nodes
            .iter()
            .map(|(agent_id, node)| {
                let (used_cpus, used_mem_mb) = used.get(agent_id).copied().unwrap_or_default();
                // What we may use of its last offer, less our launches since.
                let usable = node
                    .offered
                    .pools
                    .iter()
                    .filter(|pool| pool.reservation.usable_by(&self.role));
                let (free_cpus, free_mem_mb) = usable.fold((0.0, 0.0), |(cpus, mem), pool| {
                    (cpus + pool.cpus, mem + pool.mem_mb)
                });
                NodeView {
                    agent_id: agent_id.clone(),
                    hostname: node.hostname.to_string(),
                    node_type: node.node_type.clone(),
                    node_name: node.node_name.clone(),
                    time_of_last_offer: node.time_of_last_offer,
                    free_cpus,
                    free_mem_mb,
                    used_cpus,
                    used_mem_mb,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use super::*;
    use crate::scheduler::model::{
        Offer, OfferId, Pool, Reservation, StatusReason, TaskSpec, TaskState, TaskUpdate,
    };
    use crate::scheduler::placement::format_number;
    use crate::scheduler::{ApiRequest, Event, MesosEvent, Now, RequestId};

    const ROLE: &str = "lab";

    fn spec(id: &str, cpus: Option<f64>, mem_mb: u64) -> TaskSpec {
        TaskSpec {
            cpus,
            ..TaskSpec::for_test(id, "image", mem_mb)
        }
    }

    fn pool(role: &str, cpus: f64, mem_mb: f64) -> Pool {
        Pool {
            reservation: Reservation {
                role: role.to_string(),
                ..Reservation::unreserved()
            },
            cpus,
            mem_mb,
            ports: Vec::new(),
        }
    }

    fn offer(id: &str, agent: &str, pools: Vec<Pool>) -> Offer {
        Offer {
            id: OfferId(id.to_string()),
            agent_id: AgentId(agent.into()),
            hostname: agent.to_string(),
            pools,
            attributes: BTreeMap::new(),
        }
    }

    /// `hostname free=cpus/mem used=cpus/mem` per node.
    fn usage(state: &State) -> Vec<String> {
        state
            .node_views()
            .iter()
            .map(|node| {
                format!(
                    "{} free={}/{} used={}/{}",
                    node.hostname,
                    format_number(node.free_cpus),
                    format_number(node.free_mem_mb),
                    format_number(node.used_cpus),
                    format_number(node.used_mem_mb)
                )
            })
            .collect()
    }

    #[test]
    fn nodes_show_what_we_may_use_and_what_our_live_tasks_take() {
        let mut state = State::new(None);
        state.set_role(ROLE);
        let now = Now {
            instant: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1000),
        };
        let step = |state: &mut State, event: Event| {
            state.handle_event(event, now);
        };
        let submit = |spec: TaskSpec| {
            Event::Api(
                RequestId(1),
                ApiRequest::Submit {
                    spec,
                    idempotency_key: None,
                },
            )
        };
        step(&mut state, submit(spec("small", None, 100)));
        step(&mut state, submit(spec("big", Some(1.0), 5000)));
        step(&mut state, submit(spec("web", Some(1.5), 300)));
        // slave1 has resources reserved for us and for another role; only
        // unreserved and ours count. slave2 gets no task that fits.
        let offers = vec![
            offer(
                "o1",
                "slave1",
                vec![
                    pool(ROLE, 1.0, 512.0),
                    pool("*", 2.0, 1024.0),
                    pool("other", 4.0, 4096.0),
                ],
            ),
            offer("o2", "slave2", vec![pool("*", 0.5, 256.0)]),
        ];
        step(&mut state, Event::Mesos(MesosEvent::Offers(offers)));
        // The pending `big` takes nothing; `small` (0.1 cpus by default) and
        // `web` are launched on slave1.
        assert_eq!(
            usage(&state),
            [
                "slave1 free=1.4/1136 used=1.6/400",
                "slave2 free=0.5/256 used=0/0"
            ]
        );
        // A task that ended frees what it used; what is free stays as last
        // offered until the node offers again.
        let web = state
            .tasks
            .iter()
            .find(|(_, task)| task.spec.id == "web")
            .map(|(task_id, _)| task_id.clone())
            .expect("web is known");
        let finished = TaskUpdate {
            task_id: web,
            state: TaskState::Finished,
            reason: StatusReason::Other,
            reason_name: String::new(),
            message: String::new(),
            agent_id: Some(AgentId("slave1".into())),
            uuid: None,
            docker: None,
        };
        step(&mut state, Event::Mesos(MesosEvent::Update(finished)));
        assert_eq!(
            usage(&state),
            [
                "slave1 free=1.4/1136 used=0.1/100",
                "slave2 free=0.5/256 used=0/0"
            ]
        );
        // Two offers of one agent in one event: the node has both, less
        // what went on either. `late` fits o4 only (the larger), so o3 is
        // declined whole; before, o3 alone was kept as what slave2 has.
        step(&mut state, submit(spec("late", Some(1.0), 600)));
        let offers = vec![
            offer("o3", "slave2", vec![pool("*", 0.5, 256.0)]),
            offer("o4", "slave2", vec![pool("*", 2.0, 1024.0)]),
        ];
        step(&mut state, Event::Mesos(MesosEvent::Offers(offers)));
        assert_eq!(
            usage(&state),
            [
                "slave1 free=1.4/1136 used=0.1/100",
                "slave2 free=1.5/680 used=1/600"
            ]
        );
    }
}
