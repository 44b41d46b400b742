//! [`HealthSherpaClient`]: the three contact operations over one pooled HTTP client, each
//! authenticated (with one token refresh and retry after a 401 in v2 mode), timed, counted and
//! its failure classified. Retrying later is the caller's business (see [`crate::retry`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::api::{self, ContactResponse, SearchHit, SearchResponse};
use crate::auth::{self, TokenCache};
use crate::config::{Auth, HealthSherpaConfig};
use crate::error::parse_retry_after;
use crate::{ContactForSync, HealthSherpaError, metrics};

/// A contact as HealthSherpa holds it after a create or update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedContact {
    /// HealthSherpa's id.
    pub id: String,
    /// The quote page to send the agent to.
    pub redirect_url: String,
}

/// The HealthSherpa API client. Cheap to clone (shares the connection pool and token cache).
#[derive(Debug, Clone)]
pub struct HealthSherpaClient {
    http: reqwest::Client,
    config: Arc<HealthSherpaConfig>,
    tokens: Arc<TokenCache>,
}

impl HealthSherpaClient {
    /// Validates `config` and builds the client (no request is made yet).
    pub fn new(config: HealthSherpaConfig) -> Result<HealthSherpaClient, HealthSherpaError> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("intake-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HealthSherpaError::Config(format!("HTTP client: {e}")))?;
        Ok(HealthSherpaClient {
            http,
            config: Arc::new(config),
            tokens: Arc::default(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &HealthSherpaConfig {
        &self.config
    }

    fn url(&self, id: Option<&str>) -> Result<Url, HealthSherpaError> {
        let base = format!(
            "{}{}",
            self.config.base(),
            api::contacts_path(self.config.auth.api_version())
        );
        let mut url = Url::parse(&base).map_err(|e| HealthSherpaError::Config(format!("base URL: {e}")))?;
        if let Some(id) = id {
            // Pushed as a path segment, so an id with `/` or `?` cannot change the request.
            url.path_segments_mut()
                .map_err(|_| HealthSherpaError::Config("base URL cannot hold a path".into()))?
                .push(id);
        }
        Ok(url)
    }

    /// Finds the contact created with `external_id`, if any. In v1 mode the search carries
    /// `agent_email` (or the configured default; with neither it fails with
    /// [`HealthSherpaError::MissingField`] before any request).
    pub async fn search(
        &self,
        external_id: &str,
        agent_email: Option<&str>,
    ) -> Result<Option<SearchHit>, HealthSherpaError> {
        let mut url = self.url(None)?;
        let mut sent = vec![external_id.to_owned()];
        url.query_pairs_mut().append_pair("external_id", external_id);
        if let Auth::ApiKey {
            default_agent_email, ..
        } = &self.config.auth
        {
            let email = agent_email
                .or(default_agent_email.as_deref())
                .filter(|e| !e.trim().is_empty())
                .ok_or(HealthSherpaError::MissingField { field: "agent_email" })?;
            url.query_pairs_mut().append_pair("agent_email", email);
            sent.push(email.to_owned());
        }
        let found: SearchResponse = self.send("search", |http| http.get(url.clone()), &sent).await?;
        // Trust an echoed external id over the server's filtering, when it is there.
        Ok(found
            .contacts
            .into_iter()
            .find(|hit| hit.external_id.as_deref().is_none_or(|e| e == external_id)))
    }

    /// Creates the contact; returns its HealthSherpa id and quote redirect URL.
    pub async fn create(&self, contact: &ContactForSync) -> Result<SyncedContact, HealthSherpaError> {
        let body = contact.to_body()?;
        let url = self.url(None)?;
        let r: ContactResponse = self
            .send(
                "create",
                |http| http.post(url.clone()).json(&body),
                &body.sent_values(),
            )
            .await?;
        Ok(SyncedContact {
            id: r.id,
            redirect_url: r.redirect_url,
        })
    }

    /// Sends the contact's whole current state to HealthSherpa's contact `id`.
    pub async fn update(
        &self,
        id: &str,
        contact: &ContactForSync,
    ) -> Result<SyncedContact, HealthSherpaError> {
        let body = contact.to_body()?;
        let url = self.url(Some(id))?;
        let r: ContactResponse = self
            .send(
                "update",
                |http| http.patch(url.clone()).json(&body),
                &body.sent_values(),
            )
            .await?;
        Ok(SyncedContact {
            id: r.id,
            redirect_url: r.redirect_url,
        })
    }

    /// One operation, timed and counted as a whole (a 401 refresh and retry included).
    async fn send<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
        sent: &[String],
    ) -> Result<T, HealthSherpaError> {
        let started = Instant::now();
        let result = self.send_with_refresh(operation, build, sent).await;
        metrics::record(operation, started, &result);
        if let Err(e) = &result {
            // The error carries no body, PHI or credential (see `HealthSherpaError`).
            tracing::debug!(operation, kind = e.kind(), error = %e, "HealthSherpa request failed");
        }
        result
    }

    async fn send_with_refresh<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
        sent: &[String],
    ) -> Result<T, HealthSherpaError> {
        let mut refreshed = false;
        loop {
            let (request, token) =
                auth::authorize(build(&self.http), &self.http, &self.config, &self.tokens).await?;
            let response = request.send().await.map_err(HealthSherpaError::transport)?;
            if response.status() == StatusCode::UNAUTHORIZED {
                // A v2 token may have been revoked or expired early: refresh once, retry once.
                if let Some(token) = token
                    && !refreshed
                {
                    tracing::info!(operation, "HealthSherpa answered 401; refreshing the token");
                    self.tokens.invalidate(&token).await;
                    refreshed = true;
                    continue;
                }
                return Err(HealthSherpaError::Unauthorized);
            }
            return read(response, sent).await;
        }
    }
}

/// The `Retry-After` of a response, if it has a readable one.
pub(crate) fn retry_after_of(response: &Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    parse_retry_after(value, Utc::now())
}

async fn read<T: DeserializeOwned>(response: Response, sent: &[String]) -> Result<T, HealthSherpaError> {
    let status = response.status();
    let retry_after = retry_after_of(&response);
    let body = response.bytes().await.map_err(HealthSherpaError::transport)?;
    if !status.is_success() {
        return Err(HealthSherpaError::from_response(status, retry_after, &body, sent));
    }
    // Only the error's category and position: serde's message may quote response values.
    serde_json::from_slice(&body).map_err(|e| {
        HealthSherpaError::InvalidResponse(format!(
            "HTTP {} body unreadable ({:?} at line {} column {})",
            status.as_u16(),
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}
