//! Incidents, independent of the control plane: the lifecycle of one (`triage` →
//! `mitigating` → `monitoring` → `resolved`), its timeline assembled from what the store
//! already knows (the event log, the alert history, the incident's own log), the deploy that
//! likely caused it with the command that undoes it, and the postmortem in seed 000's template
//! with every measurable section filled.
//!
//! The records live in `slipway-store` (`IncidentRecord`, its log and action items); this
//! crate gives them meaning and does no I/O.

pub mod open;
pub mod postmortem;
pub mod timeline;

use serde::{Deserialize, Serialize};

/// Where an incident stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Confirming it, judging severity and impact, naming a commander.
    Triage,
    /// Acting on it (a rollback, a flag off).
    Mitigating,
    /// The impact is gone; watching that it stays so.
    Monitoring,
    /// Over.
    Resolved,
}

impl Status {
    /// Every status, in order.
    pub const ALL: [Status; 4] = [
        Status::Triage,
        Status::Mitigating,
        Status::Monitoring,
        Status::Resolved,
    ];

    /// Its word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Triage => "triage",
            Status::Mitigating => "mitigating",
            Status::Monitoring => "monitoring",
            Status::Resolved => "resolved",
        }
    }

    /// From its word; the error lists the words.
    pub fn parse(word: &str) -> Result<Status, String> {
        Status::ALL
            .into_iter()
            .find(|s| s.as_str() == word)
            .ok_or_else(|| {
                format!(
                    "unknown incident status `{word}`: write one of {}",
                    Status::ALL.map(Status::as_str).join(", ")
                )
            })
    }
}

/// `HH:MM` (UTC) of a time in ms, as the postmortem template writes timeline lines.
pub fn clock(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%H:%M").to_string())
        .unwrap_or_default()
}

/// A duration in ms as people read it, to the second: `45s`, `6m 30s`, `2h 5m`.
pub fn human(ms: i64) -> String {
    let seconds = u64::try_from(ms / 1000).unwrap_or(0);
    slipway_spec::units::Duration(std::time::Duration::from_secs(seconds)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_unknown_ones_list_the_words() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Ok(s));
        }
        let e = Status::parse("fixed").unwrap_err();
        assert!(
            e.contains("triage, mitigating, monitoring, resolved"),
            "{e}"
        );
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human(45_000), "45s");
        assert_eq!(human(360_000), "6m");
        assert_eq!(human(390_000), "6m 30s");
        assert_eq!(human(7_500_000), "2h 5m");
        assert_eq!(human(7_200_000), "2h");
        assert_eq!(clock(0), "00:00");
    }
}
