//! The control channel: a loopback HTTP API on the admin port, bearer-token authenticated
//! except `GET /healthz`.
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | alive, and the table version |
//! | `GET /routes` | the current table, `:0` ports resolved |
//! | `PUT /routes` | replace the table (409 when not newer, 422 when invalid) |
//! | `PUT`/`DELETE /faults/{environment}/{service}` | switch a fault on or off |
//! | `GET /metrics` | Prometheus text |
//! | `GET /stats?window=60` | per pool: requests, status classes, error rate, p50/p95/p99 |
//! | `GET /samples` | per pool, draining ones too: cumulative counts and requests in flight |

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fault::Fault;
use crate::server::{Body, Proxy};
use crate::table::{RouteTable, TableError};

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()).map_err(|e| match e {}).boxed())
        .expect("static response")
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    reply(status, "application/json", value.to_string())
}

fn error(status: StatusCode, reason: impl Into<String>, hint: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "error": status.canonical_reason(), "reason": reason.into(), "hint": hint }),
    )
}

/// Serves the admin API until `stop`.
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    token: String,
    stop: CancellationToken,
) {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(route(&proxy, req, &digest).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(proxy: &Arc<Proxy>, req: Request<Incoming>, digest: &[u8; 32]) -> Response<Body> {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path == "/healthz" {
        return json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ok", "version": proxy.table().version }),
        );
    }
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| <[u8; 32]>::from(Sha256::digest(t.as_bytes())) == *digest);
    if !authorized {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
            "the token is in the proxy directory's admin.token",
        );
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["routes"]) => json(
            StatusCode::OK,
            &serde_json::to_value(proxy.table()).unwrap_or_default(),
        ),
        (Method::PUT, ["routes"]) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let table: RouteTable = match serde_json::from_slice(&body) {
                Ok(t) => t,
                Err(e) => {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("not a route table: {e}"),
                        "send {\"version\": N, \"routes\": [...]}",
                    );
                }
            };
            match proxy.apply(table).await {
                Ok(applied) => json(
                    StatusCode::OK,
                    &serde_json::to_value(applied).unwrap_or_default(),
                ),
                Err(e @ TableError::Stale { .. }) => error(
                    StatusCode::CONFLICT,
                    e.to_string(),
                    "GET /routes for the current version",
                ),
                Err(e) => error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    e.to_string(),
                    "fix the table and send it again",
                ),
            }
        }
        (method @ (Method::PUT | Method::DELETE), ["faults", environment, service]) => {
            let fault = if method == Method::PUT {
                let body = match read_body(req).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                match serde_json::from_slice::<Fault>(&body) {
                    Ok(f) if (0.0..=100.0).contains(&f.abort_percent) => Some(f),
                    Ok(_) => {
                        return error(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "abort_percent must be within 0–100",
                            "e.g. {\"abort_percent\": 10, \"abort_status\": 503}",
                        );
                    }
                    Err(e) => {
                        return error(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            format!("not a fault: {e}"),
                            "e.g. {\"delay_ms\": 200} or {\"abort_percent\": 10}",
                        );
                    }
                }
            } else {
                None
            };
            let environment = if *environment == "-" { "" } else { environment };
            if proxy.set_fault(environment, service, fault) {
                json(StatusCode::OK, &serde_json::json!({ "service": service }))
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    format!("no route for `{service}` in `{environment}`"),
                    "GET /routes lists them (an empty environment is written `-`)",
                )
            }
        }
        (Method::GET, ["metrics"]) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            proxy.metrics.encode(),
        ),
        (Method::GET, ["samples"]) => json(
            StatusCode::OK,
            &serde_json::to_value(proxy.samples()).unwrap_or_default(),
        ),
        (Method::GET, ["stats"]) => {
            let window = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("window="))
                .and_then(|w| w.parse::<u64>().ok())
                .unwrap_or(60);
            json(
                StatusCode::OK,
                &serde_json::Value::Array(proxy.stats(Duration::from_secs(window))),
            )
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no route {} {path}", req.method()),
            "see the module docs of slipway_proxy::admin",
        ),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    http_body_util::Limited::new(req.into_body(), 16 * 1024 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
                "send at most 16 MiB",
            )
        })
}
