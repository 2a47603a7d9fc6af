//! Task intelligence: what the lab learned about a task (e.g. its observed
//! peak memory), keyed by task id and attribute, with where each value came
//! from. Applied to every submit, every one-per-node copy and every reshuffle.
//!
//! Pure: values are validated and converted here; the table lives inside
//! `State` on the `state` thread. REST and Redis are two doors to one table.

use std::collections::BTreeMap;

use crate::scheduler::model::{Sla, TaskSpec};

/// The attributes the scheduler understands.
pub const ATTRIBUTES: [&str; 5] = ["mem", "cpus", "nodename", "nodetype", "sla"];

/// Where an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Rest,
    Redis,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Rest => "rest",
            Source::Redis => "redis",
        }
    }
}

/// A validated value, ready to apply.
#[derive(Clone, Debug, PartialEq)]
pub enum Derived {
    MemMb(u64),
    Cpus(f64),
    NodeName(String),
    NodeType(String),
    Sla(Sla),
}

impl Derived {
    /// The derived value as the user sees it, e.g. "230" for mem.
    pub fn display(&self) -> String {
        match self {
            Derived::MemMb(mb) => mb.to_string(),
            Derived::Cpus(cpus) => crate::scheduler::placement::format_number(*cpus),
            Derived::NodeName(text) | Derived::NodeType(text) => text.clone(),
            Derived::Sla(sla) => sla.as_str().to_string(),
        }
    }
}

/// One entry of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub source: Source,
    pub raw: String,
    pub derived: Derived,
    /// Unix seconds.
    pub updated_at: u64,
}

/// task id → attribute → entry.
pub type Table = BTreeMap<String, BTreeMap<String, Entry>>;

/// Validates `raw` for `attribute` and converts it. An empty value is not
/// valid here: callers treat it as "clear the override".
pub fn derive(attribute: &str, raw: &str) -> Result<Derived, String> {
    let value = raw.trim();
    match attribute {
        "mem" => mem_mb_from_bytes(value).map(Derived::MemMb),
        "cpus" => match value.parse::<f64>() {
            Ok(cpus) if cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0 => Ok(Derived::Cpus(cpus)),
            _ => Err(format!(
                "cpus must be a positive number of cpus, got {value:?}"
            )),
        },
        "nodename" | "nodetype" if value.is_empty() || value.chars().any(char::is_control) => Err(
            format!("{attribute} must be a plain non-empty name, got {value:?}"),
        ),
        "nodename" => Ok(Derived::NodeName(value.to_string())),
        "nodetype" => Ok(Derived::NodeType(value.to_string())),
        "sla" => match value {
            "singleton" => Ok(Derived::Sla(Sla::Singleton)),
            "one-per-node" => Ok(Derived::Sla(Sla::OnePerNode)),
            "none" => Ok(Derived::Sla(Sla::None)),
            _ => Err(format!(
                "sla must be singleton, one-per-node or none, got {value:?}"
            )),
        },
        _ => Err(format!(
            "unknown attribute {attribute:?}; known: {}",
            ATTRIBUTES.join(", ")
        )),
    }
}

/// Observed bytes → the MB a task gets, exactly as the original computed it:
/// `math.Ceil(float64(bytes/1e6) * 1.1)` in float64, so its results carry
/// over (50 MB → 56, as 50 × 1.1 is 55.000000000000007 in float64), and 2 MB
/// below 1e6 bytes. Unlike the original, a value that is not a whole number
/// of bytes is an error, not 2 MB.
pub fn mem_mb_from_bytes(raw: &str) -> Result<u64, String> {
    let bytes: u64 = raw
        .parse()
        .map_err(|_| format!("mem must be a whole number of bytes, got {raw:?}"))?;
    if bytes < 1_000_000 {
        return Ok(2);
    }
    let mb = bytes / 1_000_000;
    // The same IEEE float64 arithmetic as Go; `as` saturates, so no overflow.
    Ok((mb as f64 * 1.1).ceil() as u64)
}

/// The spec a task runs with: `requested` with every entry for its id
/// applied. Returns the entries that changed something, as
/// (attribute, derived value) pairs.
pub fn apply(requested: &TaskSpec, table: &Table) -> (TaskSpec, Vec<(String, String)>) {
    let mut effective = requested.clone();
    let mut changed = Vec::new();
    let Some(entries) = table
        .get(&requested.id)
        .or_else(|| table.get(&requested.id.replace(' ', "")))
    else {
        return (effective, changed);
    };
    for (attribute, entry) in entries {
        let before = effective.clone();
        match &entry.derived {
            Derived::MemMb(mb) => effective.mem_mb = *mb,
            Derived::Cpus(cpus) => effective.cpus = Some(*cpus),
            Derived::NodeName(name) => effective.node_name = name.clone(),
            Derived::NodeType(node_type) => effective.node_type = node_type.clone(),
            Derived::Sla(sla) => effective.sla = *sla,
        }
        if effective != before {
            changed.push((attribute.clone(), entry.derived.display()));
        }
    }
    (effective, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_mem(raw: &str, expected: Result<u64, &str>) {
        assert_eq!(
            mem_mb_from_bytes(raw),
            expected.map_err(str::to_string),
            "{raw}"
        );
    }

    #[test]
    fn mem_formula_and_its_edges() {
        check_mem("0", Ok(2));
        check_mem("999999", Ok(2));
        check_mem("1000000", Ok(2)); // 1 MB → ceil(1.1) = 2
        check_mem("209924096", Ok(230)); // the lab's own example
        check_mem("10000000", Ok(11));
        // float64 as in the original: 50 × 1.1 = 55.000000000000007 → 56.
        check_mem("50000000", Ok(56));
        check_mem("100000000", Ok(111));
        check_mem("300000000", Ok(330));
        check_mem("18446744073709551615", Ok(20291418481080));
        check_mem(
            "2.1E8",
            Err("mem must be a whole number of bytes, got \"2.1E8\""),
        );
        check_mem(
            "209924096.0",
            Err("mem must be a whole number of bytes, got \"209924096.0\""),
        );
        check_mem("-5", Err("mem must be a whole number of bytes, got \"-5\""));
        check_mem(
            "18446744073709551616",
            Err("mem must be a whole number of bytes, got \"18446744073709551616\""),
        );
        check_mem(
            "lots",
            Err("mem must be a whole number of bytes, got \"lots\""),
        );
    }

    #[test]
    fn other_attributes_are_validated() {
        assert_eq!(derive("cpus", "0.5"), Ok(Derived::Cpus(0.5)));
        assert!(derive("cpus", "NaN").is_err());
        assert!(derive("cpus", "0").is_err());
        assert_eq!(
            derive("nodename", " slave2 "),
            Ok(Derived::NodeName("slave2".to_string()))
        );
        assert_eq!(derive("sla", "singleton"), Ok(Derived::Sla(Sla::Singleton)));
        assert!(derive("sla", "sometimes").is_err());
        assert!(derive("colour", "blue")
            .unwrap_err()
            .starts_with("unknown attribute \"colour\""));
    }
}
