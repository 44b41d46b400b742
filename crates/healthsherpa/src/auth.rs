//! Credentials on each request: the v1 API key header, or a v2 bearer token from
//! [`TokenCache`] — fetched with client credentials, reused until shortly before it expires,
//! dropped after a 401 so the next request fetches a fresh one.

use std::time::{Duration, Instant};

use reqwest::RequestBuilder;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::api::{self, TokenResponse};
use crate::config::{Auth, HealthSherpaConfig};
use crate::{HealthSherpaError, metrics};

struct CachedToken {
    token: SecretString,
    expires_at: Instant,
}

/// The current v2 bearer token. One async lock: concurrent requests that find the token
/// expiring wait for the one refresh instead of each fetching their own.
#[derive(Default)]
pub struct TokenCache {
    current: Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache(<redacted>)")
    }
}

impl TokenCache {
    /// A token valid for at least `refresh_before` more, fetching one if needed.
    pub async fn get(
        &self,
        http: &reqwest::Client,
        config: &HealthSherpaConfig,
    ) -> Result<SecretString, HealthSherpaError> {
        let Auth::OAuth {
            refresh_before_expiry,
            ..
        } = &config.auth
        else {
            return Err(HealthSherpaError::Config("no OAuth configured".into()));
        };
        let mut current = self.current.lock().await;
        if let Some(cached) = current.as_ref()
            && Instant::now() + *refresh_before_expiry < cached.expires_at
        {
            return Ok(cached.token.clone());
        }
        let started = Instant::now();
        let fetched = fetch(http, config).await;
        metrics::record("token", started, &fetched);
        let (token, lifetime) = fetched?;
        *current = Some(CachedToken {
            token: token.clone(),
            expires_at: started + lifetime,
        });
        Ok(token)
    }

    /// Forgets `refused` (a token the API answered 401 to), unless another request already
    /// replaced it — so a burst of 401s leads to one refresh, not one each.
    pub async fn invalidate(&self, refused: &SecretString) {
        let mut current = self.current.lock().await;
        if current
            .as_ref()
            .is_some_and(|c| c.token.expose_secret() == refused.expose_secret())
        {
            *current = None;
        }
    }
}

async fn fetch(
    http: &reqwest::Client,
    config: &HealthSherpaConfig,
) -> Result<(SecretString, Duration), HealthSherpaError> {
    let Auth::OAuth {
        client_id,
        client_secret,
        scope,
        ..
    } = &config.auth
    else {
        return Err(HealthSherpaError::Config("no OAuth configured".into()));
    };
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("client_secret", client_secret.expose_secret()),
        ("scope", scope.as_str()),
    ];
    let url = format!("{}{}", config.base(), api::TOKEN_PATH);
    let response = http
        .post(url)
        .form(&form)
        .send()
        .await
        .map_err(HealthSherpaError::transport)?;
    let status = response.status();
    let retry_after = crate::client::retry_after_of(&response);
    let body = response.bytes().await.map_err(HealthSherpaError::transport)?;
    if !status.is_success() {
        // The token endpoint refusing our client (RFC 6749 answers 400 invalid_client or 401).
        if matches!(status.as_u16(), 400 | 401 | 403) {
            return Err(HealthSherpaError::Unauthorized);
        }
        return Err(HealthSherpaError::from_response(status, retry_after, &body, &[]));
    }
    let token: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
        HealthSherpaError::InvalidResponse(format!("token response unreadable ({:?})", e.classify()))
    })?;
    if token.access_token.is_empty() {
        return Err(HealthSherpaError::InvalidResponse(
            "token response has an empty access_token".into(),
        ));
    }
    let lifetime = Duration::from_secs(token.expires_in.unwrap_or(api::DEFAULT_TOKEN_LIFETIME_SECS));
    Ok((SecretString::from(token.access_token), lifetime))
}

/// Adds the credentials of `config` to `request`; returns the bearer token used, if any (so a
/// 401 can invalidate exactly that one).
pub(crate) async fn authorize(
    request: RequestBuilder,
    http: &reqwest::Client,
    config: &HealthSherpaConfig,
    tokens: &TokenCache,
) -> Result<(RequestBuilder, Option<SecretString>), HealthSherpaError> {
    match &config.auth {
        Auth::ApiKey { api_key, .. } => {
            let mut value = HeaderValue::from_str(api_key.expose_secret())
                .map_err(|_| HealthSherpaError::Config("API key is not a valid header value".into()))?;
            // Sensitive: kept out of reqwest's and hyper's debug output.
            value.set_sensitive(true);
            Ok((request.header(api::API_KEY_HEADER, value), None))
        }
        Auth::OAuth { .. } => {
            let token = tokens.get(http, config).await?;
            Ok((request.bearer_auth(token.expose_secret()), Some(token)))
        }
    }
}
