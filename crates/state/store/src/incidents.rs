//! What the store keeps for incidents: each incident as a record, its log (every status
//! change, update, assignment and attached alert; append-only) and its action items.
//!
//! The store gives the words no meaning: statuses and severities are the incident crate's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An incident as it stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IncidentRecord {
    /// Its number (`0` in one not created yet).
    pub id: i64,
    /// One line: what is wrong.
    pub title: String,
    /// `P1`…`P4`.
    pub severity: String,
    /// `triage`, `mitigating`, `monitoring` or `resolved`.
    pub status: String,
    /// The environment it is in, if one.
    pub environment: Option<String>,
    /// The services it affects.
    pub services: Vec<String>,
    /// Who leads it.
    pub commander: Option<String>,
    /// Other roles (`comms`, `scribe`, …) and who holds them.
    pub roles: BTreeMap<String, String>,
    /// Where its updates go.
    pub channels: Vec<String>,
    /// Who or what opened it: a person's name, or `alert:RULE`.
    pub opened_by: String,
    /// The alert group it was opened for (later alerts of the group attach to it).
    pub group: Option<String>,
    /// The alert history row that opened it.
    pub alert_event: Option<i64>,
    /// When it was opened (ms).
    pub opened_ms: i64,
    /// When the problem was detected (ms): the first alert's firing, else the opening.
    pub detected_ms: i64,
    /// When it was first mitigated (ms): status `monitoring`, or a rollback.
    pub mitigated_ms: Option<i64>,
    /// When it was resolved (ms).
    pub resolved_ms: Option<i64>,
}

/// A line of an incident's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewIncidentEntry {
    /// When (ms).
    pub time_ms: i64,
    /// `opened`, `status`, `update`, `assign`, `alert`, `severity`, `action`, `resolved`.
    pub kind: String,
    /// Who (`system` for what Slipway did).
    pub actor: String,
    /// One line for people.
    pub message: String,
    /// Details.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}

/// A line of an incident's log, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IncidentEntry {
    /// Its id.
    pub id: i64,
    /// The incident.
    pub incident: i64,
    /// The rest, as appended.
    #[serde(flatten)]
    pub entry: NewIncidentEntry,
}

/// Which incidents to read (newest first).
#[derive(Clone, Debug, Default)]
pub struct IncidentQuery {
    /// Only those not resolved.
    pub open: bool,
    /// Only those opened at or after this time (ms).
    pub since_ms: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// An action item to add.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAction {
    /// The incident it follows from.
    pub incident: i64,
    /// What is to be done.
    pub text: String,
    /// Who does it.
    pub owner: Option<String>,
    /// By when (a date, `YYYY-MM-DD`).
    pub due: Option<String>,
    /// When it was added (ms).
    pub created_ms: i64,
}

/// An action item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionRecord {
    /// Its id.
    pub id: i64,
    /// The incident it follows from.
    pub incident: i64,
    /// What is to be done.
    pub text: String,
    /// Who does it.
    pub owner: Option<String>,
    /// By when.
    pub due: Option<String>,
    /// When it was added (ms).
    pub created_ms: i64,
    /// When it was done (ms).
    pub done_ms: Option<i64>,
}
