//! Slack through its Web API (a bot token and a channel), where an incoming webhook cannot
//! follow up: a group's first notification is a message (`chat.postMessage`), everything
//! after it a reply in that message's thread, and the message itself is updated
//! (`chat.update`) to say how the group stands: still firing, acknowledged by whom, resolved.
//! The thread of each group is remembered in the state store, so a restart keeps it.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use slipway_store::Store;

use crate::notify::{Endpoint, Notification, Notifier, NotifyError, Slack, Status};

/// See the module docs.
pub struct SlackApp {
    /// `https://slack.com/api`, the bot token, the channel id.
    endpoint: Endpoint,
    client: reqwest::Client,
    store: Arc<dyn Store>,
}

impl SlackApp {
    /// The bot `endpoint.key` writing to channel `endpoint.chat` through the Web API at
    /// `endpoint.url`; threads remembered in `store`.
    pub fn new(endpoint: Endpoint, store: Arc<dyn Store>) -> SlackApp {
        SlackApp {
            endpoint,
            client: crate::notify::client(),
            store,
        }
    }

    fn thread_key(&self, n: &Notification) -> String {
        format!(
            "slack-thread:{}:{}",
            self.endpoint.chat.as_deref().unwrap_or_default(),
            &n.group_digest()[..32]
        )
    }

    /// Calls `method` with `body`; Slack answers 200 with `ok: false` and a reason when it
    /// refuses, 429 when it wants us slower.
    async fn call(&self, method: &str, body: &Value) -> Result<Value, NotifyError> {
        let url = format!("{}/{method}", self.endpoint.url.trim_end_matches('/'));
        let r = self
            .client
            .post(&url)
            .bearer_auth(self.endpoint.key.as_deref().unwrap_or_default())
            .json(body)
            .send()
            .await
            .map_err(|e| NotifyError {
                message: format!(
                    "Slack does not answer ({})",
                    if e.is_timeout() {
                        "timed out"
                    } else {
                        "connection failed"
                    }
                ),
                retryable: true,
            })?;
        let status = r.status();
        if !status.is_success() {
            return Err(NotifyError {
                message: format!("Slack's {method} answered {status}"),
                retryable: status.is_server_error() || status.as_u16() == 429,
            });
        }
        let v: Value = r.json().await.map_err(|_| NotifyError {
            message: format!("Slack's {method} answered something that is not JSON"),
            retryable: true,
        })?;
        if v["ok"] == true {
            return Ok(v);
        }
        let error = v["error"].as_str().unwrap_or("unknown").to_string();
        Err(NotifyError {
            retryable: matches!(
                error.as_str(),
                "ratelimited" | "internal_error" | "fatal_error" | "service_unavailable"
            ),
            message: format!("Slack's {method} refused: {error}"),
        })
    }

    /// The thread's first message as the group stands now.
    fn parent(n: &Notification, chat: &str) -> Value {
        let mut m = Slack::message(n);
        m["channel"] = Value::String(chat.to_string());
        m
    }
}

#[async_trait]
impl Notifier for SlackApp {
    fn kind(&self) -> &'static str {
        "slack"
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let chat = self.endpoint.chat.as_deref().unwrap_or_default();
        let key = self.thread_key(n);
        let remember = |e: slipway_store::StoreError| NotifyError {
            message: format!("the Slack thread cannot be remembered: {e}"),
            retryable: true,
        };
        let thread = self
            .store
            .meta(&key)
            .await
            .map_err(remember)?
            .filter(|ts| !ts.is_empty());
        let Some(ts) = thread else {
            // A new thread; its first message is the group itself.
            let posted = self
                .call("chat.postMessage", &SlackApp::parent(n, chat))
                .await?;
            let ts = posted["ts"].as_str().unwrap_or_default();
            let ts = if n.status == Status::Resolved { "" } else { ts };
            self.store.set_meta(&key, ts).await.map_err(remember)?;
            return Ok(());
        };
        // The first message shows where the group stands; the thread tells what happened.
        let mut update = SlackApp::parent(n, chat);
        update["ts"] = Value::String(ts.clone());
        self.call("chat.update", &update).await?;
        let mut reply = Slack::message(n);
        reply["channel"] = Value::String(chat.to_string());
        reply["thread_ts"] = Value::String(ts.clone());
        // A resolution is shown in the channel too, not only in the thread.
        reply["reply_broadcast"] = json!(n.status == Status::Resolved);
        self.call("chat.postMessage", &reply).await?;
        if n.status == Status::Resolved {
            // The group is over: its next firing starts a new thread.
            self.store.set_meta(&key, "").await.map_err(remember)?;
        }
        Ok(())
    }
}
