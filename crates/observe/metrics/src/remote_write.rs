//! Prometheus remote write 1.0: every sample the store accepts is also shipped to a receiver
//! (Prometheus with `--web.enable-remote-write-receiver`, Mimir, VictoriaMetrics, Thanos),
//! as snappy-compressed protobuf `WriteRequest`s.
//!
//! Samples wait in a bounded queue; a shipper sends them in batches (at most
//! [`MAX_BATCH`] samples, at least every second), each series' samples in time order. A
//! failure the receiver may recover from (a network error, 5xx, 429) is retried with
//! exponential backoff and the batch stays first in line; one it refuses (another 4xx) is
//! dropped and counted, as Prometheus does. When the queue is full (the receiver has been
//! away a long time) the oldest samples go: memory stays bounded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::labels::Labels;
use crate::storage::{Sample, Tap};

/// Most samples in one request (Prometheus' default `max_samples_per_send` is 2000).
pub const MAX_BATCH: usize = 2000;
/// Most samples waiting: about a minute of 3 000 series scraped every second.
const QUEUE_CAPACITY: usize = 200_000;
const MIN_BACKOFF: Duration = Duration::from_millis(30);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The protobuf messages of remote write 1.0 (`prompb`), as far as samples go.
pub mod proto {
    /// `prometheus.WriteRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        /// The series and their samples.
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// `prometheus.TimeSeries`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Sorted by name, `__name__` included.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// Oldest first.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// `prometheus.Label`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// The label's name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Its value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `prometheus.Sample`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// The value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Unix milliseconds.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

/// A request's body: `samples` grouped per series (first appearance order), snappy
/// compressed (the block format, as the protocol says).
pub fn encode(samples: &[Sample]) -> Vec<u8> {
    use prost::Message as _;
    let mut index: std::collections::HashMap<&Labels, usize> = std::collections::HashMap::new();
    let mut request = proto::WriteRequest::default();
    for (labels, t, v) in samples {
        let i = *index.entry(labels).or_insert_with(|| {
            request.timeseries.push(proto::TimeSeries {
                labels: labels
                    .iter()
                    .map(|(name, value)| proto::Label {
                        name: name.to_string(),
                        value: value.to_string(),
                    })
                    .collect(),
                samples: Vec::new(),
            });
            request.timeseries.len() - 1
        });
        request.timeseries[i].samples.push(proto::Sample {
            value: *v,
            timestamp: *t,
        });
    }
    let raw = request.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// The samples of a request body (what a receiver reads; for tests and the receiver side).
pub fn decode(body: &[u8]) -> Result<Vec<Sample>, String> {
    use prost::Message as _;
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("not snappy: {e}"))?;
    let request = proto::WriteRequest::decode(raw.as_slice())
        .map_err(|e| format!("not a WriteRequest: {e}"))?;
    let mut out = Vec::new();
    for ts in request.timeseries {
        let labels = Labels::from_pairs(ts.labels.into_iter().map(|l| (l.name, l.value)));
        for s in ts.samples {
            out.push((labels.clone(), s.timestamp, s.value));
        }
    }
    Ok(out)
}

/// What the shipper did so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemoteWriteStats {
    /// Samples the receiver accepted.
    pub sent: u64,
    /// Samples it refused (4xx other than 429): dropped.
    pub refused: u64,
    /// Samples dropped because the queue was full.
    pub dropped: u64,
    /// Requests that failed and were retried.
    pub retries: u64,
    /// Samples waiting.
    pub pending: usize,
    /// The last failure, if the last request failed.
    pub last_error: Option<String>,
}

/// See the module docs.
pub struct RemoteWriter {
    url: String,
    client: reqwest::Client,
    queue: Mutex<VecDeque<Sample>>,
    wake: tokio::sync::Notify,
    sent: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    last_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Outcome {
    Sent,
    Refused(String),
    Retry(String),
}

impl RemoteWriter {
    /// A writer to `url`, shipping until `shutdown` (then it sends what is queued, for at most
    /// a few seconds).
    pub fn start(url: &str, shutdown: CancellationToken) -> Arc<RemoteWriter> {
        let writer = Arc::new(RemoteWriter {
            url: url.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            queue: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            sent: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        tokio::spawn(writer.clone().ship(shutdown));
        writer
    }

    /// Where it writes.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the store calls with every batch it accepted.
    pub fn tap(self: &Arc<Self>) -> Tap {
        let this = self.clone();
        Arc::new(move |samples: &[Sample]| this.enqueue(samples))
    }

    /// Queues samples to ship.
    pub fn enqueue(&self, samples: &[Sample]) {
        let mut q = lock(&self.queue);
        q.extend(samples.iter().cloned());
        let over = q.len().saturating_sub(QUEUE_CAPACITY);
        if over > 0 {
            q.drain(..over);
            self.dropped.fetch_add(over as u64, Ordering::Relaxed);
        }
        let full = q.len() >= MAX_BATCH;
        drop(q);
        if full {
            self.wake.notify_one();
        }
    }

    /// The counters.
    pub fn stats(&self) -> RemoteWriteStats {
        RemoteWriteStats {
            sent: self.sent.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            pending: lock(&self.queue).len(),
            last_error: lock(&self.last_error).clone(),
        }
    }

    async fn ship(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let batch = self.take();
            if batch.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            match self.send(&batch).await {
                Outcome::Sent => {
                    self.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    *lock(&self.last_error) = None;
                    backoff = MIN_BACKOFF;
                }
                Outcome::Refused(e) => {
                    tracing::warn!(url = %self.url, error = %e, samples = batch.len(), "remote write refused a batch; dropped");
                    self.refused
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    *lock(&self.last_error) = Some(e);
                }
                Outcome::Retry(e) => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    *lock(&self.last_error) = Some(e);
                    self.put_back(batch);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        // Stopping: what is queued goes out if the receiver takes it promptly.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            let batch = self.take();
            if batch.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, self.send(&batch)).await {
                Ok(Outcome::Sent) => {
                    self.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                _ => break,
            }
        }
    }

    fn take(&self) -> Vec<Sample> {
        let mut q = lock(&self.queue);
        let n = q.len().min(MAX_BATCH);
        q.drain(..n).collect()
    }

    fn put_back(&self, batch: Vec<Sample>) {
        let mut q = lock(&self.queue);
        for s in batch.into_iter().rev() {
            q.push_front(s);
        }
        let over = q.len().saturating_sub(QUEUE_CAPACITY);
        if over > 0 {
            q.drain(..over);
            self.dropped.fetch_add(over as u64, Ordering::Relaxed);
        }
    }

    async fn send(&self, batch: &[Sample]) -> Outcome {
        let res = self
            .client
            .post(&self.url)
            .header("content-encoding", "snappy")
            .header("content-type", "application/x-protobuf")
            .header("x-prometheus-remote-write-version", "0.1.0")
            .header("user-agent", concat!("slipway/", env!("CARGO_PKG_VERSION")))
            .body(encode(batch))
            .send()
            .await;
        match res {
            Err(e) => Outcome::Retry(format!("cannot reach {}: {e}", self.url)),
            Ok(r) if r.status().is_success() => Outcome::Sent,
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                let e = format!("{} answered {status}: {}", self.url, body.trim());
                if status.is_server_error() || status.as_u16() == 429 {
                    Outcome::Retry(e)
                } else {
                    Outcome::Refused(e)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_groups_samples_by_series_and_round_trips() {
        let a = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "b")]);
        let samples = vec![
            (a.clone(), 1000, 1.0),
            (b.clone(), 1000, 0.0),
            (a.clone(), 2000, 1.0),
        ];
        let body = encode(&samples);
        use prost::Message as _;
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let req = proto::WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(req.timeseries.len(), 2);
        assert_eq!(req.timeseries[0].samples.len(), 2);
        assert_eq!(req.timeseries[0].labels[0].name, "__name__");
        let mut back = decode(&body).unwrap();
        back.sort_by_key(|s| (s.0.to_string(), s.1));
        let mut want = samples;
        want.sort_by_key(|s| (s.0.to_string(), s.1));
        assert_eq!(back, want);
    }
}
