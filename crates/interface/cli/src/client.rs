//! The API client: finds the project's running daemon through its state directory, reads the
//! admin token from there, and turns API errors into CLI errors with the daemon's hint.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use slipway_api::ErrorBody;
use slipway_api::state_dir::{DaemonInfo, StateDir};

use crate::error::CliError;

/// A client of one running daemon.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    pub(crate) info: DaemonInfo,
}

fn not_running(state: &StateDir) -> CliError {
    // Its files may be gone while its processes are not (a deleted state directory).
    if let Some(lost) = crate::commands::daemon::lost(state) {
        return CliError::new(format!(
            "the control plane's files in {} are gone, but {lost}",
            state.root().display()
        ))
        .hint("`slipway down` stops them; then `slipway up` starts afresh");
    }
    CliError::new(format!(
        "the control plane is not running for {}",
        state.root().display()
    ))
    .hint("start it with `slipway up` (or `slipway up --detach`)")
}

impl Client {
    /// Connects to the daemon of `state`, checking that it answers.
    pub(crate) async fn connect(state: &StateDir) -> Result<Self, CliError> {
        let info = state
            .daemon_info()
            .map_err(|e| CliError::from_error("cannot read the daemon file", &e))?
            .ok_or_else(|| not_running(state))?;
        let token = match std::env::var("SLIPWAY_TOKEN") {
            Ok(t) if !t.is_empty() => t,
            _ => state
                .read_token()
                .map_err(|e| {
                    CliError::from_error("cannot read the admin token", &e)
                        .hint("the token file must be private: `chmod 600 .slipway/admin.token`")
                })?
                .ok_or_else(|| not_running(state))?,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| CliError::from_error("cannot build the HTTP client", &e))?;
        let client = Client {
            http,
            base: format!("http://{}", info.listen),
            token,
            info,
        };
        let health = client
            .http
            .get(format!("{}/healthz", client.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match health {
            Ok(r) if r.status().is_success() => Ok(client),
            _ => Err(CliError::new(format!(
                "the control plane of {} (pid {}) does not answer at {}",
                state.root().display(),
                client.info.pid,
                client.info.listen
            ))
            .hint("it may have been killed; start it again with `slipway up`")),
        }
    }

    /// Whether a daemon answers for `state` (without reading its token).
    pub(crate) async fn running(state: &StateDir) -> Option<DaemonInfo> {
        let info = state.daemon_info().ok().flatten()?;
        let url = format!("http://{}/healthz", info.listen);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let health: slipway_api::Health = http
            .get(url)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (health.pid == info.pid).then_some(info)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn decode<T: DeserializeOwned>(res: reqwest::Response) -> Result<T, CliError> {
        let status = res.status();
        if status.is_success() {
            return res
                .json()
                .await
                .map_err(|e| CliError::from_error("unexpected answer from the control plane", &e));
        }
        let body: Option<ErrorBody> = res.json().await.ok();
        Err(match body {
            Some(b) => {
                let mut err = CliError::new(b.error);
                if let Some(h) = b.hint {
                    err = err.hint(h);
                }
                err.with_diagnostics(b.diagnostics)
            }
            None => CliError::new(format!("the control plane answered {status}")),
        })
    }

    fn transport(e: reqwest::Error) -> CliError {
        CliError::from_error("cannot reach the control plane", &e)
            .hint("is it running? `slipway status` tells")
    }

    /// `GET path` as JSON.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let res = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(Self::transport)?;
        Self::decode(res).await
    }

    /// A call of the Prometheus-compatible API (`/api/v1/...`): its whole answer, or its
    /// `error` as the failure. The parameters are sent as a form, as Prometheus' clients do,
    /// so a long query is not limited by the URL's length.
    pub(crate) async fn prometheus(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<serde_json::Value, CliError> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            form.append_pair(k, v);
        }
        let req = if params.is_empty() {
            self.request(reqwest::Method::GET, path)
        } else {
            self.request(reqwest::Method::POST, path)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.finish())
        };
        let res = req.send().await.map_err(Self::transport)?;
        Self::decode(res).await
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let res = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .map_err(Self::transport)?;
        Self::decode(res).await
    }

    /// `DELETE path`, ignoring the answer's body.
    pub(crate) async fn delete(&self, path: &str) -> Result<(), CliError> {
        self.bodiless(reqwest::Method::DELETE, path).await
    }

    /// `POST path` without a body, ignoring the answer's body.
    pub(crate) async fn post_empty(&self, path: &str) -> Result<(), CliError> {
        self.bodiless(reqwest::Method::POST, path).await
    }

    /// A call without a body whose answer's body does not matter (but its error does).
    async fn bodiless(&self, method: reqwest::Method, path: &str) -> Result<(), CliError> {
        let res = self
            .request(method, path)
            .send()
            .await
            .map_err(Self::transport)?;
        if res.status().is_success() {
            return Ok(());
        }
        Self::decode::<serde_json::Value>(res).await.map(|_| ())
    }

    /// `GET path` as a streaming response (server-sent events).
    pub(crate) async fn stream(&self, path: &str) -> Result<reqwest::Response, CliError> {
        let res = self
            .request(reqwest::Method::GET, path)
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(Self::transport)?;
        if !res.status().is_success() {
            return Self::decode::<serde_json::Value>(res)
                .await
                .and(Err(CliError::new("the event stream was refused")));
        }
        Ok(res)
    }
}
