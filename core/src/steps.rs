//! The steps each node goes through, by procedure and role kind, as plans and messages name
//! them (the names of [`Phase`](crate::Phase)).

use crate::model::Procedure;
use crate::model::RoleKind;

/// The steps of one data node under `procedure`, for plans and messages
/// ([`steps_for`] gives each role kind's).
pub fn steps(procedure: Procedure) -> Vec<String> {
    steps_for(procedure, RoleKind::Data)
}

/// The steps of one node of `kind` under `procedure`. Under the high-availability procedure:
/// data nodes run every step; coordinators run the drain (a leader step-down where the
/// backend has one) but no quiesce; stateless nodes neither. The simple procedure runs the
/// same steps for every kind.
pub fn steps_for(procedure: Procedure, kind: RoleKind) -> Vec<String> {
    let all = steps_all(procedure);
    let skip: &[&str] = match (procedure, kind) {
        (Procedure::HighAvailability, RoleKind::Coordinator) => &["quiesce", "wait quiesced"],
        (Procedure::HighAvailability, RoleKind::Stateless) => {
            &["drain", "wait drained", "quiesce", "wait quiesced"]
        }
        _ => &[],
    };
    all.into_iter()
        .filter(|s| !skip.contains(&s.as_str()))
        .collect()
}

/// `steps` with the temporary-replica steps: added and caught up before the drain, removed
/// after the rejoin.
pub(crate) fn with_temporaries(steps: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(steps.len() + 3);
    for s in steps {
        if s == "drain" {
            out.push("add replica".to_string());
            out.push("wait replica".to_string());
        }
        let rejoined = s == "wait rejoined";
        out.push(s);
        if rejoined {
            out.push("remove replica".to_string());
        }
    }
    out
}

fn steps_all(procedure: Procedure) -> Vec<String> {
    let all: &[&str] = match procedure {
        Procedure::HighAvailability => &[
            "gate",
            "drain",
            "wait drained",
            "quiesce",
            "wait quiesced",
            "stop",
            "wait stopped",
            "apply",
            "start",
            "wait ready",
            "rejoin",
            "wait rejoined",
            "wait healthy",
        ],
        Procedure::Simple => &[
            "gate",
            "stop",
            "wait stopped",
            "apply",
            "start",
            "wait ready",
            "wait healthy",
        ],
    };
    all.iter().map(|s| s.to_string()).collect()
}
