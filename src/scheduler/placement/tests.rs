//! Data-driven placement tests: a compact text world in, sorted text out.

use std::collections::BTreeMap;

use super::*;
use crate::scheduler::model::{NetworkMode, Pool, PortMapping, ReservationInfo, Sla};

/// Parses the fixture, places, and compares the rendered outcome.
///
/// Fixture lines:
/// `offer <id> agent=<a> host=<h> [type=<t>] [name=<n>] cpus=<c> mem=<m> [ports=<b>-<e>,...] [role=<r> [principal=<p>]]`
/// (an offer id given again adds a pool with another reservation to that offer)
/// `task <id> mem=<m> [cpus=<c>] [type=<t>] [name=<n>] [agent=<a>] [ports=<p>,...]`
#[track_caller]
fn check(fixture: &str, expected: &str) {
    check_as("*", fixture, expected);
}

/// A reservation as the fixture names it: `role=` (default `*`), and
/// `principal=` for a dynamic reservation.
fn reservation(role: &str, principal: &str) -> Reservation {
    let mut reservation = Reservation::unreserved();
    if !role.is_empty() {
        reservation.role = role.to_string();
    }
    if !principal.is_empty() {
        reservation.dynamic = Some(ReservationInfo {
            principal: Some(principal.to_string()),
            ..ReservationInfo::default()
        });
    }
    reservation
}

/// `check` for a framework of `role`.
#[track_caller]
fn check_as(role: &str, fixture: &str, expected: &str) {
    let (offers, tasks) = parse_fixture(fixture);
    let requests: Vec<Request<'_>> = tasks
        .iter()
        .map(|(task_id, spec, agent)| Request {
            task_id,
            spec,
            agent: agent.as_ref(),
        })
        .collect();
    let placement = place(&requests, &offers, role);
    let mut lines = Vec::new();
    for (offer_id, agent_id, placed) in &placement.launches {
        let names: Vec<String> = placed
            .iter()
            .map(|(task_id, pieces)| {
                if pieces.iter().all(|piece| piece.reservation.is_unreserved()) {
                    return task_id.0.to_string();
                }
                // Reserved pieces are shown: what the TaskInfo will ask for.
                let shown: Vec<String> = pieces
                    .iter()
                    .map(|piece| {
                        let amount = match &piece.amount {
                            Amount::Scalar(value) => format_number(*value),
                            Amount::Ranges(ranges) => ranges
                                .iter()
                                .map(|(begin, end)| format!("{begin}-{end}"))
                                .collect::<Vec<_>>()
                                .join(","),
                        };
                        let dynamic = piece
                            .reservation
                            .dynamic
                            .as_ref()
                            .and_then(|info| info.principal.as_deref())
                            .map(|principal| format!("/{principal}"))
                            .unwrap_or_default();
                        format!(
                            "{}={amount}@{}{dynamic}",
                            piece.name, piece.reservation.role
                        )
                    })
                    .collect();
                format!("{}({})", task_id.0, shown.join(" "))
            })
            .collect();
        lines.push(format!(
            "launch {} {}: {}",
            offer_id.0,
            agent_id.0,
            names.join(" ")
        ));
    }
    for offer_id in &placement.unused {
        lines.push(format!("decline {}", offer_id.0));
    }
    for (task_id, reason) in &placement.unplaced {
        lines.push(format!("pending {}: {}", task_id.0, reason));
    }
    lines.sort();
    let mut expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    expected.sort();
    assert_eq!(lines.join("\n"), expected.join("\n"));
}

/// The offers and tasks of a fixture.
fn parse_fixture(fixture: &str) -> (Vec<Offer>, Vec<Task>) {
    let mut offers = Vec::new();
    let mut tasks: Vec<Task> = Vec::new();
    for line in fixture
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        let mut words = line.split_whitespace();
        let kind = words.next().unwrap();
        let id = words.next().unwrap().to_string();
        let fields: BTreeMap<&str, &str> =
            words.map(|word| word.split_once('=').unwrap()).collect();
        let get = |key: &str| fields.get(key).copied().unwrap_or("");
        match kind {
            "offer" => {
                let mut attributes = BTreeMap::new();
                if !get("type").is_empty() {
                    attributes.insert("nodetype".to_string(), get("type").to_string());
                }
                if !get("name").is_empty() {
                    attributes.insert("nodename".to_string(), get("name").to_string());
                }
                let ports = get("ports")
                    .split(',')
                    .filter(|it| !it.is_empty())
                    .map(|range| {
                        let (begin, end) = range.split_once('-').unwrap();
                        (begin.parse().unwrap(), end.parse().unwrap())
                    })
                    .collect();
                let pool = Pool {
                    reservation: reservation(get("role"), get("principal")),
                    cpus: get("cpus").parse().unwrap(),
                    mem_mb: get("mem").parse().unwrap(),
                    ports,
                };
                // A repeated offer id adds a pool (another reservation) to it.
                match offers
                    .iter_mut()
                    .find(|offer: &&mut Offer| offer.id.0 == id)
                {
                    Some(offer) => offer.pools.push(pool),
                    None => offers.push(Offer {
                        id: OfferId(id),
                        agent_id: AgentId(get("agent").into()),
                        hostname: get("host").to_string(),
                        pools: vec![pool],
                        attributes,
                    }),
                }
            }
            "task" => {
                let spec = TaskSpec {
                    id: id.clone(),
                    docker_image: "image".to_string(),
                    mem_mb: get("mem").parse().unwrap(),
                    cpus: fields.get("cpus").map(|it| it.parse().unwrap()),
                    sla: Sla::None,
                    node_type: get("type").to_string(),
                    node_name: get("name").to_string(),
                    not_metered: false,
                    reshuffleable: false,
                    arguments: Vec::new(),
                    volumes: Vec::new(),
                    ports: get("ports")
                        .split(',')
                        .filter(|it| !it.is_empty())
                        .map(|port| PortMapping {
                            host_port: port.parse().unwrap(),
                            container_port: 80,
                        })
                        .collect(),
                    network: NetworkMode::Default,
                    restart: Default::default(),
                    privileged: false,
                };
                let agent = fields.get("agent").map(|it| AgentId((*it).into()));
                tasks.push((TaskId(id.into()), spec, agent));
            }
            other => panic!("unknown fixture line kind {other}"),
        }
    }
    (offers, tasks)
}

/// A fixture task: its id, spec and pinned agent.
type Task = (TaskId, TaskSpec, Option<AgentId>);

const LAB: &str = "
    offer o1 agent=a1 host=slave1 type=analytics name=slave1 cpus=3 mem=2048 ports=31000-32000
    offer o2 agent=a2 host=slave2 type=lab name=slave2 cpus=2 mem=1024 ports=31000-32000
    offer o3 agent=a3 host=slave3 type=lab name=slave3 cpus=2 mem=1024 ports=31000-32000
";

#[test]
fn node_type_constraint_picks_a_matching_node() {
    check(
        &format!("{LAB} task stress60 mem=100 type=lab"),
        "
        decline o1
        decline o3
        launch o2 a2: stress60
    ",
    );
    check(
        &format!("{LAB} task influxdb mem=100 cpus=1 type=analytics ports=31400,31410"),
        "
        decline o2
        decline o3
        launch o1 a1: influxdb
    ",
    );
}

#[test]
fn node_name_and_pinned_agent() {
    check(
        &format!("{LAB} task dns mem=250 name=slave3"),
        "
        decline o1
        decline o2
        launch o3 a3: dns
    ",
    );
    check(
        &format!("{LAB} task copy mem=50 agent=a2"),
        "
        decline o1
        decline o3
        launch o2 a2: copy
    ",
    );
    // See: issue 8 (real-Mesos suite). A copy pinned to an agent without a
    // nodename attribute carries the hostname as its nodename, and waited
    // for ever for an offer whose nodename matched it.
    check(
        "
        offer o1 agent=a1 host=10.0.0.7 cpus=1 mem=512
        task copy mem=50 name=10.0.0.7 agent=a1
    ",
        "launch o1 a1: copy",
    );
}

#[test]
fn several_tasks_are_packed_into_one_offer() {
    check(
        "
        offer o1 agent=a1 host=slave1 cpus=1 mem=300
        task t1 mem=100
        task t2 mem=100
        task t3 mem=100
        task t4 mem=100
    ",
        "
        launch o1 a1: t1 t2 t3
        pending t4: needs mem 100, largest offer has 0
    ",
    );
}

#[test]
fn worst_fit_spreads_tasks_over_nodes() {
    check(
        &format!("{LAB} task a mem=600 type=lab\n task b mem=600 type=lab"),
        "
        decline o1
        launch o2 a2: a
        launch o3 a3: b
    ",
    );
}

#[test]
fn port_conflicts_send_the_second_task_elsewhere_or_leave_it_pending() {
    check(
        "
        offer o2 agent=a2 host=slave2 cpus=2 mem=1024 ports=31000-32000
        task first mem=10 ports=31500
        task second mem=10 ports=31500
    ",
        "
        launch o2 a2: first
        pending second: port 31500 not free on slave2
    ",
    );
    check(&format!("{LAB} task first mem=10 type=lab ports=31500\n task second mem=10 type=lab ports=31500"), "
        decline o1
        launch o2 a2: first
        launch o3 a3: second
    ");
    check(
        "
        offer o1 agent=a1 host=slave1 cpus=2 mem=1024 ports=31000-31099
        task outside mem=10 ports=31500
    ",
        "
        decline o1
        pending outside: port 31500 outside the ports slave1 offers
    ",
    );
}

#[test]
fn pending_reasons_name_the_missing_thing() {
    check(
        &format!("{LAB} task big mem=4096"),
        "
        decline o1
        decline o2
        decline o3
        pending big: needs mem 4096, largest offer has 2048
    ",
    );
    check(
        &format!("{LAB} task wide mem=10 cpus=4"),
        "
        decline o1
        decline o2
        decline o3
        pending wide: needs cpus 4, slave1 has 3
    ",
    );
    check(
        "offer o2 agent=a2 host=slave2 type=lab cpus=2 mem=1024\n task db mem=10 type=analytics",
        "
        decline o2
        pending db: no offer from a node with nodetype=analytics
    ",
    );
    check(
        "offer o2 agent=a2 host=slave2 type=lab cpus=2 mem=1024\n task x mem=10 name=slave9",
        "
        decline o2
        pending x: no offer from a node with nodename=slave9
    ",
    );
    check("task lonely mem=10", "pending lonely: no offers");
}

#[test]
fn default_cpus_are_accounted() {
    // Ten tasks with the default 0.1 cpus fit one cpu exactly; the eleventh does not.
    let tasks: String = (0..11).map(|n| format!("task t{n:02} mem=1\n")).collect();
    check(
        &format!("offer o1 agent=a1 host=h cpus=1 mem=100\n{tasks}"),
        "
        launch o1 a1: t00 t01 t02 t03 t04 t05 t06 t07 t08 t09
        pending t10: needs cpus 0.1, h has 0
    ",
    );
}

#[test]
fn a_round_is_deterministic() {
    let fixture = format!("{LAB} task a mem=100\n task b mem=100 type=lab\n task c mem=5000");
    for _ in 0..2 {
        check(
            &fixture,
            "
            launch o1 a1: a
            launch o2 a2: b
            decline o3
            pending c: needs mem 5000, largest offer has 1948
        ",
        );
    }
}

#[test]
fn only_unreserved_and_own_role_resources_are_used_and_each_piece_keeps_its_reservation() {
    let cluster = "
        offer o1 agent=a1 host=slave1 cpus=1 mem=512 ports=31000-31100
        offer o1 role=eng cpus=2 mem=1024 ports=32000-32100
        offer o1 role=other cpus=8 mem=8192
        offer o2 agent=a2 host=slave2 role=other cpus=8 mem=8192
        task t1 mem=1500 cpus=2.5 ports=32000
        task t2 mem=100
    ";
    // Our role's reservation first, then unreserved; never another role's.
    check_as(
        "eng",
        cluster,
        "
        launch o1 a1: t1(cpus=2@eng cpus=0.5@* mem=1024@eng mem=476@* ports=32000-32000@eng)
        decline o2
        pending t2: needs mem 100, largest offer has 36
        ",
    );
    // A `*` framework sees only the unreserved part.
    check(
        cluster,
        "
        launch o1 a1: t2
        decline o2
        pending t1: needs mem 1500, largest offer has 512
        ",
    );
    // A dynamic reservation goes back as offered, principal included.
    check_as(
        "eng",
        "
        offer o3 agent=a3 host=slave3 role=eng principal=ops cpus=1 mem=100
        task t3 mem=50 cpus=0.5
        ",
        "launch o3 a3: t3(cpus=0.5@eng/ops mem=50@eng/ops)",
    );
}

/// `explain` over a fixture: the offers are the node registry (each
/// node's last offered resources); one line per task, `<task>: <reason>`.
#[track_caller]
fn check_explain(fixture: &str, expected: &str) {
    let (offers, tasks) = parse_fixture(fixture);
    let nodes: Vec<&Offer> = offers.iter().collect();
    let lines: Vec<String> = tasks
        .iter()
        .map(|(task_id, spec, agent)| {
            let request = Request {
                task_id,
                spec,
                agent: agent.as_ref(),
            };
            format!("{}: {}", task_id.0, explain(&request, &nodes, "*"))
        })
        .collect();
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(lines.join("\n"), expected.join("\n"));
}

/// See: issue 11, item 3. A task for host port 8080 (outside the offered
/// 31000-32000) mostly read "no offer from a node with nodetype=lab" while
/// a lab node had cpus free: the reason came from whichever offers arrived
/// that round. Against the registry it names the node and the port.
#[test]
fn explain_names_the_closest_node_and_the_binding_constraint() {
    check_explain(
        &format!(
            "{LAB}
            task web mem=100 type=lab ports=8080
            task big mem=1500 type=lab
            task wide mem=10 cpus=2.5 type=lab
            task both mem=2000 cpus=2.5 type=lab ports=31500
            task fits mem=10 type=lab
            task db mem=10 type=traffic
            task x mem=10 name=slave9
            task copy mem=10 name=slave4 agent=a4
            task pinned mem=4000 name=slave2 agent=a2
            "
        ),
        "
        web: port 8080 outside the ports slave2 offers (31000-32000)
        big: needs mem 1500, slave2 offered 1024
        wide: needs cpus 2.5, slave2 offered 2
        both: needs cpus 2.5, slave2 offered 2
        fits: fits slave2 as last offered, waiting for its next offer
        db: no known node has nodetype=traffic (slave1 has nodetype=analytics, slave2 has nodetype=lab, slave3 has nodetype=lab)
        x: no known node has nodename=slave9 (slave1 has nodename=slave1, slave2 has nodename=slave2, slave3 has nodename=slave3)
        copy: its node slave4 has not offered since it was lost
        pinned: needs mem 4000, slave2 offered 1024
        ",
    );
    check_explain("task lonely mem=10", "lonely: no node has offered yet");
}

/// The same registry gives the same reason, whatever the order of the
/// task list or how often it is asked.
#[test]
fn explain_is_stable() {
    let fixture = format!("{LAB} task web mem=100 type=lab ports=8080");
    for _ in 0..3 {
        check_explain(
            &fixture,
            "web: port 8080 outside the ports slave2 offers (31000-32000)",
        );
    }
}

#[test]
fn the_remainder_is_what_the_node_has_left() {
    let (offers, _) = parse_fixture(
        "offer o1 agent=a1 host=slave1 cpus=2 mem=1024 ports=31000-32000
         offer o1 role=eng cpus=1 mem=100",
    );
    let unreserved = Reservation::unreserved();
    let piece = |name, amount| Allocation {
        name,
        amount,
        reservation: unreserved.clone(),
    };
    let left = remainder(
        &offers[0],
        &[
            piece("cpus", Amount::Scalar(0.5)),
            piece("mem", Amount::Scalar(1000.0)),
            piece(
                "ports",
                Amount::Ranges(vec![(31000, 31000), (31500, 31500)]),
            ),
        ],
    );
    assert_eq!(
        (
            left.pools[0].cpus,
            left.pools[0].mem_mb,
            &left.pools[0].ports
        ),
        (1.5, 24.0, &vec![(31001, 31499), (31501, 32000)])
    );
    assert_eq!(
        left.pools[1], offers[0].pools[1],
        "another reservation is untouched"
    );
    // A port taken from the registry is then "not free", not "outside".
    let spec = TaskSpec {
        ports: vec![PortMapping {
            host_port: 31500,
            container_port: 80,
        }],
        ..parse_fixture("task t mem=10").1[0].1.clone()
    };
    let task_id = TaskId("t".into());
    let request = Request {
        task_id: &task_id,
        spec: &spec,
        agent: None,
    };
    assert_eq!(
        explain(&request, &[&left], "*"),
        "port 31500 not free on slave1"
    );
}

/// Absorbs every offer of the fixture after the first into the first and
/// compares the pools as `role cpus/mem ports` lines.
#[track_caller]
fn check_absorb(fixture: &str, expected: &[&str]) {
    let (offers, _) = parse_fixture(fixture);
    let mut offers = offers.into_iter();
    let mut sum = offers.next().expect("an offer");
    for other in offers {
        absorb(&mut sum, other);
    }
    let pools: Vec<String> = sum
        .pools
        .iter()
        .map(|pool| {
            format!(
                "{} {}/{} {}",
                pool.reservation.role,
                format_number(pool.cpus),
                format_number(pool.mem_mb),
                ranges_text(pool.ports.iter())
            )
        })
        .collect();
    assert_eq!(pools, expected, "{fixture}");
}

#[test]
fn two_offers_of_one_agent_add_up() {
    check_absorb(
        "offer o1 agent=a1 host=s1 cpus=1 mem=512 ports=31000-31010
         offer o2 agent=a1 host=s1 cpus=2 mem=1024 ports=31011-31020,31030-31040",
        &["* 3/1536 31000-31020,31030-31040"],
    );
    // Overlapping and nested ranges join; a gap stays.
    check_absorb(
        "offer o1 agent=a1 host=s1 cpus=1 mem=1 ports=100-200,300-400
         offer o2 agent=a1 host=s1 cpus=0 mem=0 ports=150-250,310-320,500-500",
        &["* 1/1 100-250,300-400,500-500"],
    );
    // Each reservation keeps its own pool; a new one comes last.
    check_absorb(
        "offer o1 agent=a1 host=s1 cpus=1 mem=10
         offer o1 role=eng cpus=2 mem=20
         offer o2 agent=a1 host=s1 cpus=0.5 mem=5 role=ops
         offer o3 agent=a1 host=s1 cpus=1 mem=1 role=eng",
        &["* 1/10 none", "eng 3/21 none", "ops 0.5/5 none"],
    );
}

/// Places the fixture and compares each task's `Decision` as one line:
/// `<task>: examined=<n> <host>:<miss>... -> <verdict>`.
#[track_caller]
fn check_decisions(fixture: &str, expected: &str) {
    let (offers, tasks) = parse_fixture(fixture);
    let requests: Vec<Request<'_>> = tasks
        .iter()
        .map(|(task_id, spec, agent)| Request {
            task_id,
            spec,
            agent: agent.as_ref(),
        })
        .collect();
    let placement = place(&requests, &offers, "*");
    let host = |offer: usize| offers[offer].hostname.as_str();
    let lines: Vec<String> = placement
        .decisions
        .iter()
        .map(|decision| {
            let rejected: Vec<String> = decision
                .rejected
                .iter()
                .map(|rejection| format!(" {}:{:?}", host(rejection.offer), rejection.miss))
                .collect();
            let verdict = match decision.verdict {
                Verdict::Placed { offer, scope } => format!("{} {scope:?}", host(offer)),
                other => format!("{other:?}"),
            };
            format!(
                "{}: examined={}{} -> {verdict}",
                decision.task_id.0,
                decision.examined,
                rejected.concat()
            )
        })
        .collect();
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(lines, expected);
}

#[test]
fn decisions_keep_the_deciding_reasons_as_data() {
    check_decisions(
        &format!("{LAB}\n task big mem=4096\n task wide mem=10 cpus=4\n task web mem=100"),
        "
        big: examined=1 slave1:Mem { need: 4096000, has: 2048000 } -> NoFit { largest_mem: Some(2048000) }
        wide: examined=3 slave1:Cpus { need: 4000, has: 3000 } slave2:Cpus { need: 4000, has: 2000 } slave3:Cpus { need: 4000, has: 2000 } -> NoFit { largest_mem: Some(2048000) }
        web: examined=1 -> slave1 All
        ",
    );
    check_decisions(
        "offer o1 agent=a1 host=slave1 type=analytics cpus=3 mem=2048
         offer o2 agent=a2 host=slave2 type=lab cpus=2 mem=1024 ports=31000-31005
         task sim mem=100 type=lab ports=8080
         task db mem=10 type=gpu
         task pin mem=10 agent=a2",
        "
        sim: examined=1 slave2:PortOutside(8080) -> NoFit { largest_mem: Some(1024000) }
        db: examined=0 -> NoCandidates
        pin: examined=1 -> slave2 Pinned
        ",
    );
}
