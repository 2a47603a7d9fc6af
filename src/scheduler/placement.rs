//! Placement: which pending task goes onto which offer. Pure: a function of
//! the pending requests and the offers of one OFFERS event, with no I/O, no
//! clock and no logging, so the same input always gives the same output.
//!
//! Only resources unreserved (`*`) or reserved for the framework's role
//! count; a task takes reserved-for-us resources first, then unreserved
//! ones, and each piece remembers the reservation it was offered with so
//! the launch can ask for it the same way.
//!
//! Strategy: tasks are taken in the order given (the state passes them oldest
//! first). Each task considers only the offers its constraints allow (pinned
//! agent, `nodename`, `nodetype`, or all), indexed by free memory, and takes
//! the one with the most free memory that also has the cpus and host ports
//! (worst fit, which spreads simulators over the lab). Several tasks can land
//! on one offer; what is left of an offer goes back with a DECLINE.
//!
//! `explain` says why a task waits, against the node registry (every
//! node's last offered resources) instead of one round's offers, so the
//! reason is the same however the offers happen to arrive.
//!
//! Cost: at most `MAX_PROBES` offers are examined per task after an
//! O(log offers) index lookup, so a round is O(tasks × log offers), not
//! O(tasks × offers), even with 10,000 tasks and 1,000 agents.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::ranges::{add_ranges, subtract_ranges};
use crate::scheduler::model::{
    AgentId, Allocation, Amount, Offer, OfferId, Reservation, TaskId, TaskSpec,
};

/// Offers examined per task before it is left pending for this round.
pub const MAX_PROBES: usize = 32;

/// Registry nodes examined per task by `explain`.
pub const MAX_EXPLAIN_NODES: usize = 256;

/// Nodes named in a reason that lists the known nodes.
const MAX_NAMED_NODES: usize = 5;

/// One task that wants a place.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub task_id: &'a TaskId,
    pub spec: &'a TaskSpec,
    /// One-per-node copies are pinned to their agent.
    pub agent: Option<&'a AgentId>,
}

/// One placed task and the resources it takes from its offer.
pub type Placed = (TaskId, Vec<Allocation>);

/// The outcome of one round.
#[derive(Debug, Default, PartialEq)]
pub struct Placement {
    /// Per used offer, the tasks to launch on it, in placement order, each
    /// with the resources it takes.
    pub launches: Vec<(OfferId, AgentId, Vec<Placed>)>,
    /// Offers nothing was placed on.
    pub unused: Vec<OfferId>,
    /// Tasks left pending, with the reason for the user.
    pub unplaced: Vec<(TaskId, String)>,
    /// Every request's search, in request order: the reasons as data.
    pub decisions: Vec<Decision>,
}

/// Memory (MB) and cpus in thousandths (Mesos scalars carry three decimals), so
/// they are exact and memory can be an ordered index key.
type MemKey = u64;

fn thousandths(value: f64) -> MemKey {
    (value.max(0.0) * 1000.0).round() as MemKey
}

/// Cpus in thousandths, like memory.
type CpuKey = u64;

/// What is left of one usable pool of an offer.
struct PoolLeft<'a> {
    reservation: &'a Reservation,
    cpus: CpuKey,
    mem: MemKey,
    ports: &'a [(u64, u64)],
}

/// What is left of one offer during the round.
struct Remaining<'a> {
    offer: &'a Offer,
    /// The pools we may use: reserved for our role first, then unreserved.
    pools: Vec<PoolLeft<'a>>,
    cpus: CpuKey,
    mem: MemKey,
    ports_taken: BTreeSet<u64>,
    tasks: Vec<Placed>,
}

impl<'a> Remaining<'a> {
    fn new(offer: &'a Offer, role: &str) -> Remaining<'a> {
        let mut pools: Vec<PoolLeft<'a>> = offer
            .pools
            .iter()
            .filter(|pool| pool.reservation.usable_by(role))
            .map(|pool| PoolLeft {
                reservation: &pool.reservation,
                cpus: thousandths(pool.cpus),
                mem: thousandths(pool.mem_mb),
                ports: &pool.ports,
            })
            .collect();
        // Stable: reserved-for-us pools keep their offered order, then `*`.
        pools.sort_by_key(|pool| pool.reservation.is_unreserved());
        Remaining {
            offer,
            cpus: pools.iter().map(|pool| pool.cpus).sum(),
            mem: pools.iter().map(|pool| pool.mem).sum(),
            pools,
            ports_taken: BTreeSet::new(),
            tasks: Vec::new(),
        }
    }

    /// Every usable port range.
    fn port_ranges(&self) -> impl Iterator<Item = &(u64, u64)> {
        self.pools.iter().flat_map(|pool| pool.ports.iter())
    }

    /// Takes what `spec` needs (it fits: `choose` checked), reserved pools
    /// first; returns the pieces, each with its pool's reservation.
    fn take(&mut self, spec: &TaskSpec) -> Vec<Allocation> {
        let mut pieces = Vec::new();
        let needs = [
            ("cpus", thousandths(spec.launch_cpus())),
            ("mem", thousandths(spec.mem_mb as f64)),
        ];
        for (name, mut need) in needs {
            for pool in &mut self.pools {
                let left = if name == "cpus" {
                    &mut pool.cpus
                } else {
                    &mut pool.mem
                };
                let taken = need.min(*left);
                if taken == 0 {
                    continue;
                }
                *left -= taken;
                need -= taken;
                pieces.push(Allocation {
                    name,
                    amount: Amount::Scalar(taken as f64 / 1000.0),
                    reservation: pool.reservation.clone(),
                });
            }
            if name == "cpus" {
                self.cpus = self.cpus.saturating_sub(thousandths(spec.launch_cpus()));
            } else {
                self.mem = self.mem.saturating_sub(thousandths(spec.mem_mb as f64));
            }
        }
        let mut ports_by_pool: BTreeMap<usize, Vec<(u64, u64)>> = BTreeMap::new();
        for port in spec.ports.iter().map(|port| u64::from(port.host_port)) {
            self.ports_taken.insert(port);
            if let Some(index) = self.pools.iter().position(|pool| {
                pool.ports
                    .iter()
                    .any(|&(begin, end)| begin <= port && port <= end)
            }) {
                ports_by_pool.entry(index).or_default().push((port, port));
            }
        }
        for (index, ranges) in ports_by_pool {
            pieces.push(Allocation {
                name: "ports",
                amount: Amount::Ranges(ranges),
                reservation: self.pools[index].reservation.clone(),
            });
        }
        pieces
    }
}

/// Offer indexes by constraint, each ordered by free memory, then by offer
/// position (earlier offers first on ties).
type Key = (MemKey, Reverse<usize>);

#[derive(Default)]
struct Index<'a> {
    all: BTreeSet<Key>,
    by_agent: BTreeMap<&'a str, BTreeSet<Key>>,
    by_node_name: BTreeMap<&'a str, BTreeSet<Key>>,
    by_node_type: BTreeMap<&'a str, BTreeSet<Key>>,
}

impl<'a> Index<'a> {
    fn insert(&mut self, offer: &'a Offer, key: Key) {
        self.all.insert(key);
        self.by_agent
            .entry(offer.agent_id.0.as_ref())
            .or_default()
            .insert(key);
        if let Some(name) = offer.attributes.get("nodename") {
            self.by_node_name
                .entry(name.as_str())
                .or_default()
                .insert(key);
        }
        if let Some(node_type) = offer.attributes.get("nodetype") {
            self.by_node_type
                .entry(node_type.as_str())
                .or_default()
                .insert(key);
        }
    }

    fn remove(&mut self, offer: &'a Offer, key: Key) {
        self.all.remove(&key);
        let sets = [
            self.by_agent.get_mut(offer.agent_id.0.as_ref()),
            offer
                .attributes
                .get("nodename")
                .and_then(|name| self.by_node_name.get_mut(name.as_str())),
            offer
                .attributes
                .get("nodetype")
                .and_then(|node_type| self.by_node_type.get_mut(node_type.as_str())),
        ];
        for set in sets.into_iter().flatten() {
            set.remove(&key);
        }
    }

    /// The candidate set for a request: the narrowest constraint wins, and
    /// every other constraint is re-checked per offer by `constraint_miss`.
    fn candidates(&self, request: &Request<'_>) -> Option<&BTreeSet<Key>> {
        if let Some(agent) = request.agent {
            self.by_agent.get(agent.0.as_ref())
        } else if !request.spec.node_name.is_empty() {
            self.by_node_name.get(request.spec.node_name.as_str())
        } else if !request.spec.node_type.is_empty() {
            self.by_node_type.get(request.spec.node_type.as_str())
        } else {
            Some(&self.all)
        }
    }
}

/// Places `requests` onto `offers`, using only resources unreserved or
/// reserved for `role`.
pub fn place(requests: &[Request<'_>], offers: &[Offer], role: &str) -> Placement {
    let mut remaining: Vec<Remaining<'_>> = offers
        .iter()
        .map(|offer| Remaining::new(offer, role))
        .collect();
    let mut index = Index::default();
    for (offer_idx, offer) in offers.iter().enumerate() {
        index.insert(offer, (remaining[offer_idx].mem, Reverse(offer_idx)));
    }
    let mut unplaced = Vec::new();
    let mut decisions = Vec::with_capacity(requests.len());
    for request in requests {
        let decision = choose(&index, &remaining, request);
        match decision.verdict {
            Verdict::Placed {
                offer: offer_idx, ..
            } => {
                let slot = &mut remaining[offer_idx];
                let offer = slot.offer;
                index.remove(offer, (slot.mem, Reverse(offer_idx)));
                let pieces = slot.take(request.spec);
                slot.tasks.push((request.task_id.clone(), pieces));
                index.insert(offer, (slot.mem, Reverse(offer_idx)));
            }
            _ => unplaced.push((request.task_id.clone(), decision.reason(request, offers))),
        }
        decisions.push(decision);
    }
    let mut placement = Placement {
        unplaced,
        decisions,
        ..Placement::default()
    };
    for slot in remaining {
        if slot.tasks.is_empty() {
            placement.unused.push(slot.offer.id.clone());
        } else {
            placement.launches.push((
                slot.offer.id.clone(),
                slot.offer.agent_id.clone(),
                slot.tasks,
            ));
        }
    }
    placement
}

/// Why one examined offer did not take a task: compact, with the numbers
/// (cpus and mem in thousandths), so the state can keep it per task and
/// build text only when someone reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// Its `nodename` attribute is not the one asked for.
    NodeName,
    /// Its `nodetype` attribute is not the one asked for.
    NodeType,
    Cpus {
        need: u64,
        has: u64,
    },
    /// The first offer (largest first) with too little memory: every offer
    /// after it has less, so the search stops there.
    Mem {
        need: u64,
        has: u64,
    },
    /// A host port outside every range the offer has.
    PortOutside(u16),
    /// A host port in the offer's ranges but already taken this round.
    PortTaken(u16),
}

/// One rejected offer: its position in the round's offers, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub offer: usize,
    pub miss: Miss,
}

/// The candidate set a placed task was chosen from; the rule within it is
/// always worst fit (the most free memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every offer.
    All,
    /// A one-per-node copy: only its own agent.
    Pinned,
    /// Offers with the `nodename` asked for.
    NodeName,
    /// Offers with the `nodetype` asked for.
    NodeType,
}

/// How one task's search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Placed on this offer (position in the round's offers).
    Placed { offer: usize, scope: Scope },
    /// No offer in the round matches its constraints at all.
    NoCandidates,
    /// Offers were examined and none fits; `largest_mem` is the free memory
    /// of the largest examined offer its constraints allow (thousandths).
    NoFit { largest_mem: Option<u64> },
}

/// Rejections kept per task and round: the first few explain a round.
pub const MAX_REJECTIONS: usize = 3;

/// One task's search in one round, as data: how many offers were examined,
/// the first `MAX_REJECTIONS` offers rejected (in examination order) and
/// how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub task_id: TaskId,
    pub examined: u32,
    pub rejected: Vec<Rejection>,
    pub verdict: Verdict,
}

impl Decision {
    /// The reason a task left unplaced gets in `Placement::unplaced`.
    fn reason(&self, request: &Request<'_>, offers: &[Offer]) -> String {
        let spec = request.spec;
        if self.verdict == Verdict::NoCandidates {
            return no_candidate_reason(request);
        }
        let first_miss = self
            .rejected
            .iter()
            .find(|rejection| !matches!(rejection.miss, Miss::Mem { .. }));
        match (first_miss, self.verdict) {
            (Some(rejection), _) => rejection_text(rejection, request, offers),
            (
                None,
                Verdict::NoFit {
                    largest_mem: Some(mem),
                },
            ) if mem < thousandths(spec.mem_mb as f64) => {
                format!(
                    "needs mem {}, largest offer has {}",
                    spec.mem_mb,
                    format_number(mem as f64 / 1000.0)
                )
            }
            _ => format!("no fitting offer among the {MAX_PROBES} largest"),
        }
    }
}

/// The unplaced reason for one rejected offer.
fn rejection_text(rejection: &Rejection, request: &Request<'_>, offers: &[Offer]) -> String {
    let offer = &offers[rejection.offer];
    let host = &offer.hostname;
    let spec = request.spec;
    let attribute = |name: &str| offer.attributes.get(name).map(String::as_str).unwrap_or("");
    match rejection.miss {
        Miss::NodeName => format!(
            "{host} has nodename={}, needs {}",
            attribute("nodename"),
            spec.node_name
        ),
        Miss::NodeType => format!(
            "{host} has nodetype={}, needs {}",
            attribute("nodetype"),
            spec.node_type
        ),
        Miss::Cpus { need, has } => format!(
            "needs cpus {}, {host} has {}",
            format_number(need as f64 / 1000.0),
            format_number(has as f64 / 1000.0)
        ),
        Miss::Mem { need, has } => format!(
            "needs mem {}, {host} has {}",
            format_number(need as f64 / 1000.0),
            format_number(has as f64 / 1000.0)
        ),
        Miss::PortOutside(port) => format!("port {port} outside the ports {host} offers"),
        Miss::PortTaken(port) => format!("port {port} not free on {host}"),
    }
}

/// How one request's search went (see `Decision`).
fn choose(index: &Index<'_>, remaining: &[Remaining<'_>], request: &Request<'_>) -> Decision {
    let spec = request.spec;
    let mut decision = Decision {
        task_id: request.task_id.clone(),
        examined: 0,
        rejected: Vec::new(),
        verdict: Verdict::NoCandidates,
    };
    let Some(candidates) = index.candidates(request).filter(|set| !set.is_empty()) else {
        return decision;
    };
    let reject = |decision: &mut Decision, offer: usize, miss: Miss| {
        if decision.rejected.len() < MAX_REJECTIONS {
            decision.rejected.push(Rejection { offer, miss });
        }
    };
    let need_mem = thousandths(spec.mem_mb as f64);
    let need_cpus = thousandths(spec.launch_cpus());
    // The most free memory first; nothing below `need_mem` can fit.
    let mut largest_mem = None;
    for &(mem, Reverse(offer_idx)) in candidates.iter().rev().take(MAX_PROBES) {
        let slot = &remaining[offer_idx];
        decision.examined += 1;
        if let Some(miss) = constraint_miss(request, slot.offer) {
            reject(&mut decision, offer_idx, miss);
            continue;
        }
        largest_mem.get_or_insert(mem);
        if mem < need_mem {
            reject(
                &mut decision,
                offer_idx,
                Miss::Mem {
                    need: need_mem,
                    has: mem,
                },
            );
            break;
        }
        if slot.cpus < need_cpus {
            let miss = Miss::Cpus {
                need: need_cpus,
                has: slot.cpus,
            };
            reject(&mut decision, offer_idx, miss);
            continue;
        }
        if let Some(port) = spec
            .ports
            .iter()
            .map(|port| u64::from(port.host_port))
            .find(|port| !port_free(slot, *port))
        {
            // Below or above every range the agent offers: not a question of it being taken.
            let lowest = slot.port_ranges().map(|range| range.0).min();
            let highest = slot.port_ranges().map(|range| range.1).max();
            let outside =
                lowest.is_none_or(|low| port < low) || highest.is_none_or(|high| port > high);
            let port = u16::try_from(port).unwrap_or(u16::MAX);
            let miss = if outside {
                Miss::PortOutside(port)
            } else {
                Miss::PortTaken(port)
            };
            reject(&mut decision, offer_idx, miss);
            continue;
        }
        decision.verdict = Verdict::Placed {
            offer: offer_idx,
            scope: scope(request),
        };
        return decision;
    }
    decision.verdict = Verdict::NoFit { largest_mem };
    decision
}

/// The candidate set `Index::candidates` picks for a request.
fn scope(request: &Request<'_>) -> Scope {
    if request.agent.is_some() {
        Scope::Pinned
    } else if !request.spec.node_name.is_empty() {
        Scope::NodeName
    } else if !request.spec.node_type.is_empty() {
        Scope::NodeType
    } else {
        Scope::All
    }
}

/// A constraint the narrowest index did not already guarantee.
fn constraint_miss(request: &Request<'_>, offer: &Offer) -> Option<Miss> {
    // A request pinned to an agent (a one-per-node copy) is that node's by
    // construction: its `nodename` is for display and may be the hostname
    // of an agent that has no `nodename` attribute at all.
    if request.agent.is_some() {
        return None;
    }
    let spec = request.spec;
    let attribute = |name: &str| offer.attributes.get(name).map(String::as_str).unwrap_or("");
    if !spec.node_name.is_empty() && attribute("nodename") != spec.node_name {
        return Some(Miss::NodeName);
    }
    if !spec.node_type.is_empty() && attribute("nodetype") != spec.node_type {
        return Some(Miss::NodeType);
    }
    None
}

fn no_candidate_reason(request: &Request<'_>) -> String {
    let spec = request.spec;
    if request.agent.is_some() {
        // A copy's nodename is its node's nodename or hostname: never an agent id.
        format!("no offer from its node {}", spec.node_name)
    } else if !spec.node_name.is_empty() {
        format!("no offer from a node with nodename={}", spec.node_name)
    } else if !spec.node_type.is_empty() {
        format!("no offer from a node with nodetype={}", spec.node_type)
    } else {
        "no offers".to_string()
    }
}

fn port_free(slot: &Remaining<'_>, port: u64) -> bool {
    !slot.ports_taken.contains(&port)
        && slot
            .port_ranges()
            .any(|&(begin, end)| begin <= port && port <= end)
}

/// Why `request` waits, judged against the node registry: every known
/// node's last offered resources (`nodes`, in registry order, each an
/// `Offer` less what we launched on it since), not only this round's
/// offers, so the same registry always gives the same reason.
///
/// Among the nodes the constraints allow (at most `MAX_EXPLAIN_NODES`), the
/// closest is the one with the fewest unmet needs, then the most free
/// memory, then the first in registry order; the reason names it and its
/// first unmet need (a host port, cpus, mem). A node that would fit is
/// named too: the task waits for its next offer. Hostnames only, never
/// agent ids.
#[cfg(test)]
pub fn explain(request: &Request<'_>, nodes: &[&Offer], role: &str) -> String {
    // One task: only the nodes its constraints allow are worth reading.
    let allowed: Vec<&Offer> = nodes
        .iter()
        .copied()
        .filter(|offer| allows(request, offer))
        .take(MAX_EXPLAIN_NODES)
        .collect();
    if allowed.is_empty() {
        return no_node_reason(request, nodes);
    }
    Registry::new(&allowed, role).explain(request)
}

/// The request's constraints allow this node.
fn allows(request: &Request<'_>, offer: &Offer) -> bool {
    match request.agent {
        Some(agent) => &offer.agent_id == agent,
        None => constraint_miss(request, offer).is_none(),
    }
}

/// The node registry as `explain` reads it, shared by the tasks of one
/// turn: each node's usable resources (unreserved or reserved for the
/// role), worked out the first time a task's constraints allow the node,
/// so a turn that explains one task reads at most `MAX_EXPLAIN_NODES`
/// nodes of a large cluster, and one that explains many reads each once.
pub struct Registry<'a> {
    offers: Vec<&'a Offer>,
    role: &'a str,
    nodes: Vec<std::cell::OnceCell<Remaining<'a>>>,
}

impl<'a> Registry<'a> {
    pub fn new(nodes: &[&'a Offer], role: &'a str) -> Registry<'a> {
        Registry {
            offers: nodes.to_vec(),
            role,
            nodes: nodes.iter().map(|_| std::cell::OnceCell::new()).collect(),
        }
    }

    /// The nodes `request`'s constraints allow, in registry order, at most
    /// `MAX_EXPLAIN_NODES`.
    fn allowed<'r>(&'r self, request: &'r Request<'_>) -> impl Iterator<Item = &'r Remaining<'a>> {
        self.offers
            .iter()
            .zip(&self.nodes)
            .filter(|(offer, _)| allows(request, offer))
            .take(MAX_EXPLAIN_NODES)
            .map(|(offer, slot)| slot.get_or_init(|| Remaining::new(offer, self.role)))
    }

    /// See `explain`.
    pub fn explain(&self, request: &Request<'_>) -> String {
        explain_in(request, self)
    }
}

fn explain_in(request: &Request<'_>, registry: &Registry<'_>) -> String {
    let spec = request.spec;
    let nodes = &registry.offers;
    let allowed = registry.allowed(request);
    let need_cpus = thousandths(spec.launch_cpus());
    let need_mem = thousandths(spec.mem_mb as f64);
    let mut closest: Option<((usize, Reverse<MemKey>), String)> = None;
    for slot in allowed {
        let offer = slot.offer;
        let host = &offer.hostname;
        let mut unmet = Vec::new();
        for port in spec.ports.iter().map(|port| u64::from(port.host_port)) {
            if port_free(slot, port) {
                continue;
            }
            let lowest = slot.port_ranges().map(|range| range.0).min();
            let highest = slot.port_ranges().map(|range| range.1).max();
            let outside =
                lowest.is_none_or(|low| port < low) || highest.is_none_or(|high| port > high);
            unmet.push(if outside {
                format!(
                    "port {port} outside the ports {host} offers ({})",
                    ranges_text(slot.port_ranges())
                )
            } else {
                format!("port {port} not free on {host}")
            });
        }
        if slot.cpus < need_cpus {
            unmet.push(format!(
                "needs cpus {}, {host} offered {}",
                format_number(spec.launch_cpus()),
                format_number(slot.cpus as f64 / 1000.0)
            ));
        }
        if slot.mem < need_mem {
            unmet.push(format!(
                "needs mem {}, {host} offered {}",
                spec.mem_mb,
                format_number(slot.mem as f64 / 1000.0)
            ));
        }
        let key = (unmet.len(), Reverse(slot.mem));
        if closest.as_ref().is_none_or(|(best, _)| key < *best) {
            let reason = match unmet.into_iter().next() {
                Some(first) => first,
                None => format!("fits {host} as last offered, waiting for its next offer"),
            };
            closest = Some((key, reason));
        }
    }
    match closest {
        Some((_, reason)) => reason,
        None => no_node_reason(request, nodes),
    }
}

/// No known node is allowed by the constraints: say which constraint and
/// what the known nodes have.
fn no_node_reason(request: &Request<'_>, nodes: &[&Offer]) -> String {
    let spec = request.spec;
    if nodes.is_empty() {
        return "no node has offered yet".to_string();
    }
    if request.agent.is_some() {
        // A one-per-node copy's nodename is its node's nodename or hostname.
        return format!(
            "its node {} has not offered since it was lost",
            spec.node_name
        );
    }
    let attribute =
        |offer: &Offer, name: &str| offer.attributes.get(name).cloned().unwrap_or_default();
    let (name, wanted) = if !spec.node_name.is_empty() {
        ("nodename", &spec.node_name)
    } else {
        ("nodetype", &spec.node_type)
    };
    let mut known: Vec<String> = nodes
        .iter()
        .take(MAX_NAMED_NODES)
        .map(|offer| format!("{} has {name}={}", offer.hostname, attribute(offer, name)))
        .collect();
    if nodes.len() > MAX_NAMED_NODES {
        known.push(format!("{} more", nodes.len() - MAX_NAMED_NODES));
    }
    format!("no known node has {name}={wanted} ({})", known.join(", "))
}

/// `31000-32000` or `31000-31099,31101-32000`.
fn ranges_text<'a>(ranges: impl Iterator<Item = &'a (u64, u64)>) -> String {
    const SHOWN: usize = 4;
    let ranges: Vec<&(u64, u64)> = ranges.collect();
    let mut text: Vec<String> = ranges
        .iter()
        .take(SHOWN)
        .map(|(begin, end)| format!("{begin}-{end}"))
        .collect();
    if ranges.len() > SHOWN {
        text.push("…".to_string());
    }
    if text.is_empty() {
        "none".to_string()
    } else {
        text.join(",")
    }
}

/// What is left of `offer` once `pieces` are taken from it: the node
/// registry keeps this as the node's last offered resources, so a reason
/// does not count on resources we just used.
pub fn remainder(offer: &Offer, pieces: &[Allocation]) -> Offer {
    let mut left = offer.clone();
    for piece in pieces {
        let Some(pool) = left
            .pools
            .iter_mut()
            .find(|pool| pool.reservation == piece.reservation)
        else {
            continue;
        };
        match (&piece.amount, piece.name) {
            (Amount::Scalar(value), "cpus") => pool.cpus = (pool.cpus - value).max(0.0),
            (Amount::Scalar(value), "mem") => pool.mem_mb = (pool.mem_mb - value).max(0.0),
            (Amount::Ranges(taken), _) => pool.ports = subtract_ranges(&pool.ports, taken),
            _ => {}
        }
    }
    left
}

/// Adds `other`'s resources to `into` (two offers of one agent in one
/// round): each pool joins the pool of its reservation, ports as sorted
/// ranges with overlapping or adjacent ones joined, or comes after the
/// pools `into` has. The node registry keeps the sum as what the node has.
pub fn absorb(into: &mut Offer, other: Offer) {
    for pool in other.pools {
        let Some(mine) = into
            .pools
            .iter_mut()
            .find(|mine| mine.reservation == pool.reservation)
        else {
            into.pools.push(pool);
            continue;
        };
        mine.cpus += pool.cpus;
        mine.mem_mb += pool.mem_mb;
        mine.ports = add_ranges(&mine.ports, &pool.ports);
    }
}

/// Shortest decimal form: 1 not 1.0, 0.5, 64.
pub fn format_number(value: f64) -> String {
    let rounded = (value * 1000.0).round() / 1000.0;
    format!("{rounded}")
}

#[cfg(test)]
mod tests;
