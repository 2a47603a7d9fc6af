//! Resource arithmetic for the simulated master: cpus and mem in fixed-point
//! thousandths (Mesos keeps three decimals), ports as inclusive ranges. An
//! agent may hold cpus and mem statically reserved for one role; they are
//! counted apart, and the caller knows the role (`from_proto`, `to_proto`).

use crate::mesos::proto::mesos as v1;
use crate::ranges::{add_ranges, subtract_ranges};

/// One thousandth: Mesos scalars carry three decimal places.
const MILLI: f64 = 1000.0;

/// The largest scalar a task may ask for: far beyond any agent, small enough
/// that sums in thousandths cannot overflow.
const MAX_SCALAR: f64 = 1e12;

/// Port ranges one task may list.
const MAX_RANGES: usize = 65_536;

/// Smallest offer worth making, as the Mesos allocator's defaults: 0.01 cpus or 32 MB.
const MIN_OFFER_CPUS: i64 = 10;
const MIN_OFFER_MEM: i64 = 32 * 1000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Thousandths of a cpu.
    pub cpus: i64,
    /// Thousandths of a MB.
    pub mem: i64,
    /// Inclusive, sorted, non-overlapping port ranges.
    pub ports: Vec<(u64, u64)>,
    /// Thousandths of a cpu reserved for the agent's role.
    pub reserved_cpus: i64,
    /// Thousandths of a MB reserved for the agent's role.
    pub reserved_mem: i64,
}

impl Resources {
    pub fn new(cpus: f64, mem_mb: f64, ports: &[(u64, u64)]) -> Resources {
        let mut resources = Resources {
            cpus: milli(cpus),
            mem: milli(mem_mb),
            ..Resources::default()
        };
        for range in ports {
            resources.ports = add_ranges(&resources.ports, &[*range]);
        }
        resources
    }

    /// These resources plus cpus and mem reserved for a role.
    pub fn with_reserved(mut self, cpus: f64, mem_mb: f64) -> Resources {
        self.reserved_cpus = milli(cpus);
        self.reserved_mem = milli(mem_mb);
        self
    }

    /// The unreserved part: what a framework of another role may be offered.
    pub fn unreserved(&self) -> Resources {
        Resources {
            reserved_cpus: 0,
            reserved_mem: 0,
            ..self.clone()
        }
    }

    pub fn has_reserved(&self) -> bool {
        self.reserved_cpus > 0 || self.reserved_mem > 0
    }

    /// Sums a task's resources. Only cpus, mem and ports exist on our agents,
    /// so anything else can never fit and is an error. cpus and mem with a
    /// role count as reserved when it is `reserved_role`, the agent's; any
    /// other role is never offered here.
    pub fn from_proto(
        list: &[v1::Resource],
        reserved_role: Option<&str>,
    ) -> Result<Resources, String> {
        let mut total = Resources::default();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for resource in list {
            match (resource.name(), resource.type_()) {
                ("cpus" | "mem", v1::value::Type::SCALAR) => {
                    let value = resource.scalar.value();
                    if !value.is_finite() || !(0.0..=MAX_SCALAR).contains(&value) {
                        return Err(format!(
                            "Invalid scalar resource {}: {value}",
                            resource.name()
                        ));
                    }
                    let reserved = match resource.role() {
                        "*" => false,
                        role if Some(role) == reserved_role => true,
                        role => {
                            return Err(format!(
                            "Resource '{}' reserved for role '{role}' is not offered by this agent",
                            resource.name()
                        ))
                        }
                    };
                    let sum = match (resource.name() == "cpus", reserved) {
                        (true, false) => &mut total.cpus,
                        (false, false) => &mut total.mem,
                        (true, true) => &mut total.reserved_cpus,
                        (false, true) => &mut total.reserved_mem,
                    };
                    *sum = sum.saturating_add(milli(value));
                }
                ("ports", v1::value::Type::RANGES) => {
                    for range in &resource.ranges.range {
                        let (begin, end) = (range.begin(), range.end());
                        if begin > end {
                            return Err(format!("Invalid port range [{begin}-{end}]"));
                        }
                        if ranges.len() >= MAX_RANGES {
                            return Err(format!("More than {MAX_RANGES} port ranges"));
                        }
                        ranges.push((begin, end));
                    }
                }
                (name, _) => return Err(format!("Resource '{name}' is not offered by this agent")),
            }
        }
        // Sorted once: any overlap is between neighbours.
        ranges.sort_unstable();
        if let Some(pair) = ranges.windows(2).find(|pair| pair[1].0 <= pair[0].1) {
            return Err(format!(
                "Port range [{}-{}] is used twice",
                pair[1].0, pair[1].1
            ));
        }
        total.ports = add_ranges(&ranges, &[]);
        Ok(total)
    }

    /// As Mesos resources; reserved ones carry `reserved_role` in `role`, the
    /// format a master sends frameworks without RESERVATION_REFINEMENT.
    pub fn to_proto(&self, reserved_role: Option<&str>) -> Vec<v1::Resource> {
        let mut list = Vec::new();
        if let Some(role) = reserved_role.filter(|_| self.has_reserved()) {
            for (name, value) in [("cpus", self.reserved_cpus), ("mem", self.reserved_mem)] {
                if value > 0 {
                    let mut resource = scalar(name, value);
                    resource.set_role(role.to_string());
                    list.push(resource);
                }
            }
        }
        list.extend([scalar("cpus", self.cpus), scalar("mem", self.mem)]);
        if !self.ports.is_empty() {
            let mut ports = v1::Resource::new();
            ports.set_name("ports".to_string());
            ports.set_type(v1::value::Type::RANGES);
            ports.set_role("*".to_string());
            for &(begin, end) in &self.ports {
                let mut range = v1::value::Range::new();
                range.set_begin(begin);
                range.set_end(end);
                ports.ranges.mut_or_insert_default().range.push(range);
            }
            list.push(ports);
        }
        list
    }

    pub fn contains(&self, other: &Resources) -> bool {
        self.cpus >= other.cpus
            && self.mem >= other.mem
            && self.reserved_cpus >= other.reserved_cpus
            && self.reserved_mem >= other.reserved_mem
            && other.ports.iter().all(|&range| covers(&self.ports, range))
    }

    /// Takes `other` out; the caller has checked `contains`.
    pub fn subtract(&mut self, other: &Resources) {
        self.cpus -= other.cpus;
        self.mem -= other.mem;
        self.reserved_cpus -= other.reserved_cpus;
        self.reserved_mem -= other.reserved_mem;
        self.ports = subtract_ranges(&self.ports, &other.ports);
    }

    pub fn add(&mut self, other: &Resources) {
        self.cpus += other.cpus;
        self.mem += other.mem;
        self.reserved_cpus += other.reserved_cpus;
        self.reserved_mem += other.reserved_mem;
        self.ports = add_ranges(&self.ports, &other.ports);
    }

    pub fn worth_offering(&self) -> bool {
        self.cpus + self.reserved_cpus >= MIN_OFFER_CPUS
            || self.mem + self.reserved_mem >= MIN_OFFER_MEM
    }

    pub fn cpus(&self) -> f64 {
        self.cpus as f64 / MILLI
    }

    pub fn mem_mb(&self) -> f64 {
        self.mem as f64 / MILLI
    }

    pub fn describe(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(|(b, e)| format!("{b}-{e}")).collect();
        let reserved = if self.has_reserved() {
            format!(
                "cpus(reserved):{}; mem(reserved):{}; ",
                self.reserved_cpus as f64 / MILLI,
                self.reserved_mem as f64 / MILLI
            )
        } else {
            String::new()
        };
        format!(
            "{reserved}cpus:{}; mem:{}; ports:[{}]",
            self.cpus(),
            self.mem_mb(),
            ports.join(", ")
        )
    }
}

fn milli(value: f64) -> i64 {
    (value * MILLI).round() as i64
}

fn scalar(name: &str, value: i64) -> v1::Resource {
    let mut resource = v1::Resource::new();
    resource.set_name(name.to_string());
    resource.set_type(v1::value::Type::SCALAR);
    resource
        .scalar
        .mut_or_insert_default()
        .set_value(value as f64 / MILLI);
    resource.set_role("*".to_string());
    resource
}

fn covers(ranges: &[(u64, u64)], (begin, end): (u64, u64)) -> bool {
    ranges.iter().any(|&(b, e)| b <= begin && end <= e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment_and_arithmetic() {
        let mut agent = Resources::new(2.0, 1024.0, &[(31000, 32000)]);
        let task = Resources::new(0.1, 100.0, &[(31500, 31500)]);
        assert!(agent.contains(&task));
        agent.subtract(&task);
        assert_eq!(agent.cpus, 1900);
        assert!(!agent.contains(&task), "port 31500 is gone");
        agent.add(&task);
        assert_eq!(agent, Resources::new(2.0, 1024.0, &[(31000, 32000)]));
        assert!(!Resources::new(0.0, 1.0, &[]).worth_offering());
        let mut reserved = Resources::new(1.0, 64.0, &[]).with_reserved(1.0, 64.0);
        let unreserved = reserved.unreserved();
        assert!(!unreserved.contains(&Resources::default().with_reserved(0.1, 0.0)));
        reserved.subtract(&unreserved);
        assert_eq!(reserved, Resources::default().with_reserved(1.0, 64.0));
        assert!(reserved.worth_offering());
    }

    #[test]
    fn task_resources_are_validated() {
        let mut disk = v1::Resource::new();
        disk.set_name("disk".into());
        disk.set_type(v1::value::Type::SCALAR);
        assert!(Resources::from_proto(&[disk], None).is_err());
        let both = Resources::new(1.0, 1.0, &[(5, 5)]).to_proto(None);
        assert_eq!(
            Resources::from_proto(&both, None),
            Ok(Resources::new(1.0, 1.0, &[(5, 5)]))
        );
        let twice: Vec<v1::Resource> = both.iter().chain(&both[2..]).cloned().collect();
        assert!(Resources::from_proto(&twice, None).is_err());
        // Reserved cpus and mem round-trip under their role, and only there.
        let reserved = Resources::new(1.0, 1.0, &[]).with_reserved(0.5, 64.0);
        let listed = reserved.to_proto(Some("lab"));
        assert_eq!(
            (listed[0].role(), listed[0].name(), listed[2].role()),
            ("lab", "cpus", "*")
        );
        assert_eq!(Resources::from_proto(&listed, Some("lab")), Ok(reserved));
        assert!(Resources::from_proto(&listed, Some("other")).is_err());
        assert!(Resources::from_proto(&listed, None).is_err());
        // Hostile sizes are refused, never summed into an overflow.
        let huge = Resources::new(1.0, 1.0, &[]).to_proto(None);
        let mut huge: Vec<v1::Resource> = vec![huge[0].clone(), huge[0].clone()];
        for resource in &mut huge {
            resource.scalar.mut_or_insert_default().set_value(1e300);
        }
        assert!(Resources::from_proto(&huge, None).is_err());
    }
}
