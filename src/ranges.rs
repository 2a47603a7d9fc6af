//! Port ranges as Mesos offers them: inclusive `(begin, end)` pairs. The
//! simulator's resource arithmetic and the scheduler's placement (what is
//! left of an offer, two offers of one agent added up) share these.

/// Union of two range lists, merged and sorted.
pub(crate) fn add_ranges(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (begin, end) in all {
        match merged.last_mut() {
            Some(last) if begin <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((begin, end)),
        }
    }
    merged
}

/// `a` minus `b`.
pub(crate) fn subtract_ranges(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut left = a.to_vec();
    for &(begin, end) in b {
        let mut next = Vec::with_capacity(left.len() + 1);
        for (b0, e0) in left {
            if end < b0 || e0 < begin {
                next.push((b0, e0));
                continue;
            }
            if b0 < begin {
                next.push((b0, begin - 1));
            }
            if end < e0 {
                next.push((end + 1, e0));
            }
        }
        left = next;
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_add_and_subtract() {
        let check_sub = |a: &[(u64, u64)], b: &[(u64, u64)], expected: &[(u64, u64)]| {
            assert_eq!(subtract_ranges(a, b), expected, "{a:?} - {b:?}");
            if covers_all(a, b) {
                assert_eq!(
                    add_ranges(&subtract_ranges(a, b), b),
                    add_ranges(a, &[]),
                    "{a:?}"
                );
            }
        };
        check_sub(
            &[(31000, 32000)],
            &[(31500, 31500)],
            &[(31000, 31499), (31501, 32000)],
        );
        check_sub(&[(31000, 32000)], &[(31000, 31000)], &[(31001, 32000)]);
        check_sub(&[(31000, 32000)], &[(32000, 32000)], &[(31000, 31999)]);
        check_sub(&[(31000, 32000)], &[(31000, 32000)], &[]);
        check_sub(&[(1, 5), (10, 20)], &[(4, 12)], &[(1, 3), (13, 20)]);
        assert_eq!(
            add_ranges(&[(1, 3)], &[(4, 6), (10, 11)]),
            [(1, 6), (10, 11)]
        );
    }

    fn covers_all(a: &[(u64, u64)], b: &[(u64, u64)]) -> bool {
        b.iter()
            .all(|&(begin, end)| a.iter().any(|&(b0, e0)| b0 <= begin && end <= e0))
    }
}
