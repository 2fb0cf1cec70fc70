//! Branch nodes: route on earlier answers and contact attributes; they show nothing.
//!
//! Conditions are deliberately simple (equals, one of, number range) so a campaign manager can
//! read them. A missing value never matches; a non-number never falls in a range.

use crate::engine::state::SessionState;
use crate::flow::model::{BranchNode, Condition, NodeId};

/// The node to go to: the first rule that holds, else the default.
pub(in crate::engine) fn route(node: &BranchNode, s: &SessionState) -> NodeId {
    node.rules
        .iter()
        .find(|r| holds(&r.when, s))
        .map(|r| r.next.clone())
        .unwrap_or_else(|| node.default.clone())
}

/// Whether a condition holds for this session.
pub fn holds(c: &Condition, s: &SessionState) -> bool {
    let value = match (&c.result, &c.contact) {
        (Some(r), None) => s.answers.get(r),
        (None, Some(k)) => s.contact.get(k),
        _ => None,
    };
    let Some(value) = value else {
        return false;
    };
    if let Some(expected) = &c.equals {
        return value.trim().eq_ignore_ascii_case(expected.trim());
    }
    if let Some(set) = &c.one_of {
        return set
            .iter()
            .any(|e| value.trim().eq_ignore_ascii_case(e.trim()));
    }
    if c.min.is_some() || c.max.is_some() {
        let Ok(n) = value.trim().parse::<f64>() else {
            return false;
        };
        return n.is_finite() && c.min.is_none_or(|m| n >= m) && c.max.is_none_or(|m| n <= m);
    }
    false
}
