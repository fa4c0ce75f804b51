//! Keep-alive HTTP/1.1 connections to backends, one pool per worker thread.
//!
//! Each worker runs a single-threaded runtime, so its pool needs no lock: a request takes an
//! idle connection for its backend (or opens one), and the connection goes back to the pool
//! when the response body has been read to its end. A connection the backend closed while idle
//! is noticed at checkout and dropped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::http::uri::Authority;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::server::Body;

/// Idle connections kept per backend and worker.
const MAX_IDLE: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    static IDLE: RefCell<HashMap<Authority, Vec<SendRequest<Body>>>> = RefCell::new(HashMap::new());
}

/// Why a request to a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made: nothing was sent.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// A reused connection failed before any response: the backend had closed it.
    #[error("the kept-alive connection was closed: {0}")]
    Stale(hyper::Error),
    /// The exchange failed.
    #[error("{0}")]
    Http(hyper::Error),
}

impl SendError {
    /// Whether nothing reached the backend (safe to retry an idempotent request elsewhere).
    pub fn nothing_sent(&self) -> bool {
        matches!(self, SendError::Connect(_) | SendError::Stale(_))
    }
}

fn checkout(authority: &Authority) -> Option<SendRequest<Body>> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(authority)?;
        while let Some(sender) = list.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    })
}

fn checkin(authority: Authority, sender: SendRequest<Body>) {
    if !sender.is_ready() {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(authority).or_default();
        if list.len() < MAX_IDLE {
            list.push(sender);
        }
    });
}

async fn connect(authority: &Authority) -> Result<SendRequest<Body>, SendError> {
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(authority.as_str()),
    )
    .await
    .map_err(|_| SendError::Connect(format!("timed out after {CONNECT_TIMEOUT:?}")))?
    .map_err(|e| SendError::Connect(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "backend connection ended");
        }
    });
    Ok(sender)
}

/// Sends `req` to `authority` on a pooled connection.
pub async fn send(
    authority: &Authority,
    req: Request<Body>,
) -> Result<Response<ReturnOnEnd>, SendError> {
    let (mut sender, reused) = match checkout(authority) {
        Some(s) => (s, true),
        None => (connect(authority).await?, false),
    };
    let response = sender.send_request(req).await.map_err(|e| {
        if reused && (e.is_canceled() || e.is_incomplete_message() || e.is_closed()) {
            SendError::Stale(e)
        } else {
            SendError::Http(e)
        }
    })?;
    let upgraded = response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS;
    Ok(response.map(|body| {
        let mut body = ReturnOnEnd {
            inner: body,
            home: (!upgraded).then(|| (authority.clone(), sender)),
        };
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }))
}

/// A response body that puts its connection back in the pool once read to the end.
pub struct ReturnOnEnd {
    inner: Incoming,
    home: Option<(Authority, SendRequest<Body>)>,
}

impl ReturnOnEnd {
    fn finish(&mut self) {
        if let Some((authority, sender)) = self.home.take() {
            checkin(authority, sender);
        }
    }
}

impl HttpBody for ReturnOnEnd {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            Poll::Ready(Some(Err(_))) => {
                self.home = None;
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
