//! Metrics: what Slipway scrapes, keeps and answers queries on.
//!
//! - [`exposition`]: the Prometheus text and OpenMetrics formats a scrape reads.
//! - [`labels`]: a series' label set and the matchers that select series.
//! - [`storage`]: where samples are kept ([`storage::Queryable`], [`storage::Appender`]) and
//!   their compressed chunks.
//! - [`promql`]: PromQL evaluation over a store, with Prometheus' semantics.
//! - [`scrape`]: targets scraped on their interval into the store.
//! - [`backend`]: where queries go: the embedded store, or a real Prometheus.
//! - [`remote_write`]: every stored sample shipped on to a Prometheus-compatible receiver.
//!
//! **Invariant:** nothing here knows about the control plane: the server tells the scraper
//! its targets and turns [`promql::Value`]s into Prometheus' JSON.

pub mod backend;
pub mod exposition;
pub mod labels;
pub mod promql;
pub mod remote_write;
pub mod scrape;
pub mod storage;
