//! Metrics: what Slipway scrapes, keeps and answers queries on.
//!
//! - [`exposition`]: the Prometheus text and OpenMetrics formats a scrape reads.
//! - [`labels`]: a series' label set and the matchers that select series.
//! - [`storage`]: where samples are kept ([`storage::Queryable`], [`storage::Appender`]) and
//!   their compressed chunks.
//! - [`promql`]: PromQL evaluation over a store, with Prometheus' semantics.
//!
//! **Invariant:** nothing here knows about HTTP or the control plane; the server turns
//! [`promql::Value`]s into Prometheus' JSON and schedules scrapes.

pub mod exposition;
pub mod labels;
pub mod promql;
pub mod storage;
