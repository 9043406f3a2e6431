//! A webhook endpoint: an [`axum`] route that takes the updates Telegram posts and hands
//! each to a [`Pipeline`], answering **after** the update's session is committed and its
//! replies are sent.
//!
//! Answering late is what makes a webhook safe with replicas. Telegram posts one update
//! of a bot at a time per connection and waits for the answer, and it posts an update
//! again when the answer is an error or never comes. So:
//!
//! - `200 OK` means the update was handled (or skipped as handled before: a redelivery
//!   is recognised by its id, see [`PipelineBuilder::dedup_window`](crate::pipeline::PipelineBuilder::dedup_window));
//! - a failure that a retry can cure (the store is down, the update ran out of time, the
//!   session kept changing elsewhere, the replies could not be sent) answers
//!   `503 Service Unavailable`, so Telegram posts the update again, to this replica or
//!   another;
//! - an update that cannot be read, or whose handler failed, answers `200 OK` after a
//!   logged warning: posting it again would fail the same way, and Telegram would stop
//!   sending the bot's other updates meanwhile.
//!
//! With [`WebhookOptions::secret_token`] the route answers `401 Unauthorized` to a
//! request without Telegram's `X-Telegram-Bot-Api-Secret-Token` header of that value
//! (give the same token to `setWebhook`).
//!
//! Updates of one user that reach different replicas take turns through the store's
//! per-key lease (see [concurrency](crate::guide::concurrency)); the route adds nothing
//! to that.
//!
//! ```
//! use stagecraft::adapters::webhook::{WebhookOptions, router};
//! use stagecraft::prelude::*;
//!
//! let bot = Pipeline::<u32>::builder().build();
//! let app: axum::Router = router(bot, WebhookOptions::new("/telegram").secret_token("s3cr3t"));
//! // axum::serve(tokio::net::TcpListener::bind("0.0.0.0:8443").await?, app).await?;
//! # drop(app);
//! ```

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::de::DeserializeOwned;

use crate::error::{Error, error_chain};
use crate::pipeline::Pipeline;
use crate::record::SessionData;
use crate::update::Update;

/// The header Telegram sends with the secret token given to `setWebhook`.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Where the route listens and what it asks of a request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebhookOptions {
    /// The path Telegram posts to (default `/`).
    pub path: String,
    /// The secret token every request must carry in [`SECRET_HEADER`] (`None`: any
    /// request is taken).
    pub secret_token: Option<String>,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self::new("/")
    }
}

impl WebhookOptions {
    /// Posts to `path`, without a secret token.
    #[must_use]
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            secret_token: None,
        }
    }

    /// Requires `token` in [`SECRET_HEADER`].
    #[must_use]
    pub fn secret_token(mut self, token: impl Into<String>) -> Self {
        self.secret_token = Some(token.into());
        self
    }
}

struct Endpoint<S, U> {
    pipeline: Pipeline<S, U>,
    secret: Option<String>,
}

/// An `axum` router with one `POST` route at `options.path` that hands each posted
/// update to `pipeline` (see the [module](self) for what it answers).
pub fn router<S, U>(pipeline: Pipeline<S, U>, options: WebhookOptions) -> Router
where
    S: SessionData,
    U: Update + DeserializeOwned,
{
    let endpoint = Arc::new(Endpoint {
        pipeline,
        secret: options.secret_token,
    });
    Router::new()
        .route(&options.path, post(take::<S, U>))
        .with_state(endpoint)
}

async fn take<S, U>(
    State(endpoint): State<Arc<Endpoint<S, U>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode
where
    S: SessionData,
    U: Update + DeserializeOwned,
{
    if let Some(secret) = &endpoint.secret {
        let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes());
        if given != Some(secret.as_bytes()) {
            tracing::warn!(target: "stagecraft::webhook", "request without the secret token refused");
            return StatusCode::UNAUTHORIZED;
        }
    }
    let update: U = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(target: "stagecraft::webhook", error = %e, bytes = body.len(),
                "a posted update could not be read; answered OK (posting it again would not help)");
            return StatusCode::OK;
        }
    };
    match endpoint.pipeline.handle(update).await {
        Ok(_) => StatusCode::OK,
        Err(e) if retry_helps(&e) => {
            tracing::warn!(target: "stagecraft::webhook", error = %error_chain(&e),
                "update not handled; asking Telegram to post it again");
            StatusCode::SERVICE_UNAVAILABLE
        }
        Err(e) => {
            tracing::warn!(target: "stagecraft::webhook", error = %error_chain(&e),
                "update failed; answered OK (posting it again would fail the same way)");
            StatusCode::OK
        }
    }
}

/// Whether posting the update again may succeed.
fn retry_helps(e: &Error) -> bool {
    matches!(
        e,
        Error::Store { .. }
            | Error::Unusable { .. }
            | Error::Conflict { .. }
            | Error::NotHandled { .. }
            | Error::Deadline { .. }
            | Error::LeaseTimeout { .. }
            | Error::Overloaded { .. }
            | Error::Transport(_)
    )
}
