//! The life of one rule's alerts, as Prometheus' `rules/alerting.go` lives it, plus
//! hysteresis: each label set the condition returns is an alert, pending from the first
//! evaluation that sees it, firing once it has been seen for `for`, resolved when it is gone
//! — unless `keep_firing_for` has not passed since it went, or the rule's holding condition
//! (the recovery threshold) still returns it. A pending alert that goes is forgotten without
//! a word. Every change is a [`Transition`]; the state is plain data, saved and restored
//! whole, so a restart neither loses nor repeats a firing alert.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use slipway_metrics::labels::Labels;

use crate::rule::Rule;

/// Where an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The condition holds, not yet for `for`.
    Pending,
    /// The condition has held for `for` (or still holds by hysteresis or `keep_firing_for`).
    Firing,
}

/// One alert of a rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Its labels (with `alertname` and `severity`), as pairs.
    pub labels: Vec<(String, String)>,
    /// Pending or firing.
    pub phase: Phase,
    /// When the condition was first seen (ms).
    pub active_at: i64,
    /// When it fired (ms).
    pub fired_at: Option<i64>,
    /// The condition's last value.
    pub value: f64,
    /// When the condition was last seen (ms).
    pub last_seen: i64,
    /// Since when the condition is gone but the alert keeps firing (`keep_firing_for`, or
    /// hysteresis), if it is.
    pub holding_since: Option<i64>,
}

/// A change of one alert.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// It started firing.
    Fired {
        /// The alert.
        labels: Labels,
        /// The condition's value.
        value: f64,
        /// When the condition was first seen.
        active_at: i64,
        /// Now.
        at: i64,
    },
    /// It stopped firing.
    Resolved {
        /// The alert.
        labels: Labels,
        /// The condition's last value.
        value: f64,
        /// When it fired.
        fired_at: i64,
        /// Now.
        at: i64,
    },
}

impl Transition {
    /// The alert's labels.
    pub fn labels(&self) -> &Labels {
        match self {
            Transition::Fired { labels, .. } | Transition::Resolved { labels, .. } => labels,
        }
    }
}

/// The alerts of one rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// By label set (its text).
    pub alerts: BTreeMap<String, Instance>,
}

fn labels_of(i: &Instance) -> Labels {
    Labels::from_pairs(i.labels.iter().cloned())
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RuleState {
    /// One evaluation at `now` (ms): `active` is what the condition returned (alert labels,
    /// value), `holding` the alert label sets the holding condition returned (empty when the
    /// rule has none). Returns what changed, fired ones first.
    pub fn step(
        &mut self,
        rule: &Rule,
        now: i64,
        active: &[(Labels, f64)],
        holding: &[Labels],
    ) -> Vec<Transition> {
        let mut fired = Vec::new();
        let mut resolved = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (labels, value) in active {
            let key = labels.to_string();
            seen.insert(key.clone());
            let a = self.alerts.entry(key).or_insert_with(|| Instance {
                labels: crate::rule::pairs(labels),
                phase: Phase::Pending,
                active_at: now,
                fired_at: None,
                value: *value,
                last_seen: now,
                holding_since: None,
            });
            a.value = *value;
            a.last_seen = now;
            a.holding_since = None;
            if a.phase == Phase::Pending && now - a.active_at >= ms(rule.for_) {
                a.phase = Phase::Firing;
                a.fired_at = Some(now);
                fired.push(Transition::Fired {
                    labels: labels.clone(),
                    value: *value,
                    active_at: a.active_at,
                    at: now,
                });
            }
        }
        let holding: std::collections::HashSet<String> =
            holding.iter().map(Labels::to_string).collect();
        let keep = ms(rule.keep_firing_for);
        let mut gone = Vec::new();
        for (key, a) in &mut self.alerts {
            if seen.contains(key) {
                continue;
            }
            match a.phase {
                Phase::Pending => gone.push(key.clone()),
                Phase::Firing => {
                    if holding.contains(key) {
                        // Past the firing threshold no more, not back past the recovery one.
                        a.holding_since.get_or_insert(now);
                        continue;
                    }
                    let since = *a.holding_since.get_or_insert(now);
                    if keep > 0 && now - since < keep {
                        continue;
                    }
                    gone.push(key.clone());
                    resolved.push(Transition::Resolved {
                        labels: labels_of(a),
                        value: a.value,
                        fired_at: a.fired_at.unwrap_or(a.active_at),
                        at: now,
                    });
                }
            }
        }
        for key in gone {
            self.alerts.remove(&key);
        }
        fired.extend(resolved);
        fired
    }

    /// The alerts now firing.
    pub fn firing(&self) -> impl Iterator<Item = &Instance> {
        self.alerts.values().filter(|a| a.phase == Phase::Firing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_spec::model::Alert;

    fn rule(toml_text: &str) -> Rule {
        let alert: Alert = toml::from_str(toml_text).unwrap();
        Rule::from_spec("r", &alert).unwrap()
    }

    fn l(svc: &str) -> Labels {
        Labels::from_pairs([("alertname", "r"), ("service", svc)])
    }

    #[test]
    fn pending_for_then_firing_then_resolved() {
        let r = rule("expr = 'x > 1'\nfor = \"10s\"");
        let mut s = RuleState::default();
        assert!(s.step(&r, 0, &[(l("a"), 2.0)], &[]).is_empty());
        assert_eq!(s.alerts.values().next().unwrap().phase, Phase::Pending);
        assert!(s.step(&r, 9_000, &[(l("a"), 2.0)], &[]).is_empty());
        let t = s.step(&r, 10_000, &[(l("a"), 3.0)], &[]);
        assert!(
            matches!(&t[..], [Transition::Fired { value, active_at: 0, at: 10_000, .. }] if *value == 3.0)
        );
        // Still firing: nothing new.
        assert!(s.step(&r, 11_000, &[(l("a"), 3.0)], &[]).is_empty());
        let t = s.step(&r, 12_000, &[], &[]);
        assert!(matches!(
            &t[..],
            [Transition::Resolved {
                fired_at: 10_000,
                at: 12_000,
                ..
            }]
        ));
        assert!(s.alerts.is_empty());
    }

    #[test]
    fn a_pending_alert_that_goes_is_forgotten_without_a_word() {
        let r = rule("expr = 'x > 1'\nfor = \"10s\"");
        let mut s = RuleState::default();
        s.step(&r, 0, &[(l("a"), 2.0)], &[]);
        assert!(s.step(&r, 5_000, &[], &[]).is_empty());
        assert!(s.alerts.is_empty());
        // Back again: `for` starts over.
        s.step(&r, 6_000, &[(l("a"), 2.0)], &[]);
        assert!(s.step(&r, 15_000, &[(l("a"), 2.0)], &[]).is_empty());
        assert_eq!(s.step(&r, 16_000, &[(l("a"), 2.0)], &[]).len(), 1);
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert_that_blinks() {
        let r = rule("expr = 'x > 1'\nkeep_firing_for = \"30s\"");
        let mut s = RuleState::default();
        assert_eq!(s.step(&r, 0, &[(l("a"), 2.0)], &[]).len(), 1);
        assert!(s.step(&r, 10_000, &[], &[]).is_empty());
        assert!(s.step(&r, 20_000, &[(l("a"), 2.0)], &[]).is_empty());
        assert!(s.step(&r, 30_000, &[], &[]).is_empty());
        assert!(s.step(&r, 59_000, &[], &[]).is_empty());
        assert_eq!(s.step(&r, 60_000, &[], &[]).len(), 1);
    }

    /// Seed 000's principle: a metric oscillating around the firing threshold, but above the
    /// recovery threshold, fires once and never resolves; once below the recovery threshold
    /// it resolves, once.
    #[test]
    fn hysteresis_fires_once_for_a_value_oscillating_above_the_recovery_threshold() {
        let r = rule("expr = 'errors > 5'\nrecover = 3");
        let holding_expr = r.holding.clone().unwrap();
        assert_eq!(holding_expr, "(errors) > 3");
        let mut s = RuleState::default();
        let mut fired = 0;
        let mut resolved = 0;
        // 4.0 … 6.0 and back, for ten minutes at one evaluation a second.
        for k in 0..600i64 {
            let v = 5.0 + ((k as f64) / 7.0).sin();
            let active: Vec<(Labels, f64)> = if v > 5.0 { vec![(l("a"), v)] } else { vec![] };
            let holding: Vec<Labels> = if v > 3.0 { vec![l("a")] } else { vec![] };
            for t in s.step(&r, k * 1000, &active, &holding) {
                match t {
                    Transition::Fired { .. } => fired += 1,
                    Transition::Resolved { .. } => resolved += 1,
                }
            }
        }
        assert_eq!((fired, resolved), (1, 0));
        // Below the recovery threshold: resolved, once.
        let t = s.step(&r, 600_000, &[], &[]);
        assert!(matches!(&t[..], [Transition::Resolved { .. }]), "{t:?}");
        assert!(s.step(&r, 601_000, &[], &[]).is_empty());
    }

    #[test]
    fn the_state_survives_a_round_trip_through_json() {
        let r = rule("expr = 'x > 1'\nfor = \"5s\"");
        let mut s = RuleState::default();
        s.step(&r, 0, &[(l("a"), 2.0), (l("b"), 3.0)], &[]);
        s.step(&r, 5_000, &[(l("a"), 2.0), (l("b"), 3.0)], &[]);
        let saved = serde_json::to_string(&s).unwrap();
        let mut back: RuleState = serde_json::from_str(&saved).unwrap();
        assert_eq!(back, s);
        // Restored, nothing fires again; going away resolves.
        assert!(
            back.step(&r, 6_000, &[(l("a"), 2.0), (l("b"), 3.0)], &[])
                .is_empty()
        );
        assert_eq!(back.step(&r, 7_000, &[(l("a"), 2.0)], &[]).len(), 1);
    }
}
