//! A stateful fake of the HealthSherpa partner API on a wiremock server, speaking the request
//! shapes assumed in `intake_healthsherpa::api`: it keeps the contacts it was sent, answers
//! searches from them, issues OAuth tokens and refuses unknown or revoked credentials. Failures
//! are injected with [`FakeHealthSherpa::fail`] (a higher-priority mock used a number of times).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The v1 API key the fake accepts.
pub const API_KEY: &str = "test-api-key";
/// The OAuth client the fake accepts.
pub const CLIENT_ID: &str = "test-client";
/// Its secret.
pub const CLIENT_SECRET: &str = "test-client-secret";

/// Which API mode the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// v1: `x-api-key` header, searches carry `agent_email`.
    ApiKey,
    /// v2: OAuth client credentials, bearer tokens.
    OAuth,
}

impl Mode {
    fn version(self) -> &'static str {
        match self {
            Mode::ApiKey => "v1",
            Mode::OAuth => "v2",
        }
    }
}

/// One contact as the fake holds it.
#[derive(Debug, Clone)]
pub struct FakeContact {
    /// HealthSherpa's id.
    pub id: String,
    /// The last body received for it (create or update).
    pub body: Value,
    /// Creates and updates it received.
    pub writes: u32,
}

#[derive(Debug, Default)]
struct State {
    contacts: Vec<FakeContact>,
    /// Tokens issued, in order (`tok-1`, `tok-2`, …).
    issued: Vec<String>,
    /// Lifetimes (`expires_in`) of the next tokens; 3600 once empty.
    lifetimes: VecDeque<u64>,
    /// Tokens answered with 401.
    revoked: HashSet<String>,
}

/// The fake server and what it holds.
#[derive(Debug)]
pub struct FakeHealthSherpa {
    /// The wiremock server (its `received_requests` lists every request).
    pub server: MockServer,
    /// The API mode served.
    pub mode: Mode,
    state: Arc<Mutex<State>>,
}

#[derive(Clone)]
struct Handler {
    mode: Mode,
    state: Arc<Mutex<State>>,
    op: Op,
}

#[derive(Clone, Copy)]
enum Op {
    Search,
    Create,
    Update,
    Token,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn quote_url(id: &str) -> String {
    format!("https://healthsherpa.test/quotes/{id}")
}

impl Handler {
    /// Whether the request carries a valid credential for the mode.
    fn authorized(&self, request: &Request, state: &State) -> bool {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        match self.mode {
            Mode::ApiKey => header("x-api-key").as_deref() == Some(API_KEY),
            Mode::OAuth => {
                match header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned)) {
                    Some(token) => state.issued.contains(&token) && !state.revoked.contains(&token),
                    None => false,
                }
            }
        }
    }
}

impl Respond for Handler {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = lock(&self.state);
        if let Op::Token = self.op {
            let form: Vec<(String, String)> = url_form(&request.body);
            let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            if get("grant_type") != Some("client_credentials")
                || get("client_id") != Some(CLIENT_ID)
                || get("client_secret") != Some(CLIENT_SECRET)
            {
                return ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_client"}));
            }
            let token = format!("tok-{}", state.issued.len() + 1);
            state.issued.push(token.clone());
            let expires_in = state.lifetimes.pop_front().unwrap_or(3600);
            return ResponseTemplate::new(200).set_body_json(json!({
                "access_token": token, "token_type": "Bearer", "expires_in": expires_in
            }));
        }
        if !self.authorized(request, &state) {
            return ResponseTemplate::new(401).set_body_json(json!({"error": "unauthorized"}));
        }
        match self.op {
            Op::Search => {
                let external_id = request
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "external_id")
                    .map(|(_, v)| v.into_owned());
                let hits: Vec<Value> = state
                    .contacts
                    .iter()
                    .filter(|c| c.body["external_id"].as_str() == external_id.as_deref())
                    .map(|c| json!({"id": c.id, "external_id": c.body["external_id"]}))
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({ "contacts": hits }))
            }
            Op::Create => {
                let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
                    return ResponseTemplate::new(400).set_body_json(json!({"error": "bad json"}));
                };
                let id = (state.contacts.len() + 1001).to_string();
                state.contacts.push(FakeContact {
                    id: id.clone(),
                    body,
                    writes: 1,
                });
                ResponseTemplate::new(201).set_body_json(json!({"id": id, "redirect_url": quote_url(&id)}))
            }
            Op::Update => {
                let id = request
                    .url
                    .path()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
                    return ResponseTemplate::new(400).set_body_json(json!({"error": "bad json"}));
                };
                let Some(contact) = state.contacts.iter_mut().find(|c| c.id == id) else {
                    return ResponseTemplate::new(404).set_body_json(json!({"error": "not found"}));
                };
                contact.body = body;
                contact.writes += 1;
                ResponseTemplate::new(200).set_body_json(json!({"id": id, "redirect_url": quote_url(&id)}))
            }
            Op::Token => unreachable!("answered above"),
        }
    }
}

/// `application/x-www-form-urlencoded` pairs of a body.
fn url_form(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    reqwest::Url::parse(&format!("http://x/?{text}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

impl FakeHealthSherpa {
    /// Starts the fake for `mode`.
    pub async fn start(mode: Mode) -> FakeHealthSherpa {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        let v = mode.version();
        let handler = |op| Handler {
            mode,
            state: state.clone(),
            op,
        };
        let collection = format!("/api/{v}/contacts");
        Mock::given(method("GET"))
            .and(path(collection.clone()))
            .respond_with(handler(Op::Search))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(collection))
            .respond_with(handler(Op::Create))
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(path_regex(format!("^/api/{v}/contacts/[^/]+$")))
            .respond_with(handler(Op::Update))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .respond_with(handler(Op::Token))
            .mount(&server)
            .await;
        FakeHealthSherpa { server, mode, state }
    }

    /// The base URL to configure.
    pub fn base_url(&self) -> String {
        self.server.uri()
    }

    /// Answers the next `times` requests of `http_method` to the contacts collection (and, for
    /// PATCH, a contact) with `response`, before the normal behaviour resumes.
    pub async fn fail(&self, http_method: &str, times: u64, response: ResponseTemplate) {
        let v = self.mode.version();
        Mock::given(method(http_method))
            .and(path_regex(format!("^/api/{v}/contacts(/[^/]+)?$")))
            .respond_with(response)
            .up_to_n_times(times)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// Lifetimes (`expires_in` seconds) of the next tokens issued.
    pub fn token_lifetimes(&self, lifetimes: &[u64]) {
        lock(&self.state).lifetimes.extend(lifetimes);
    }

    /// Makes the fake answer 401 to `token` from now on (as if revoked).
    pub fn revoke(&self, token: &str) {
        lock(&self.state).revoked.insert(token.to_owned());
    }

    /// Tokens issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state).issued.clone()
    }

    /// The contacts it holds.
    pub fn contacts(&self) -> Vec<FakeContact> {
        lock(&self.state).contacts.clone()
    }

    /// Every request received as (method, path, bearer token if any), in order.
    pub async fn requests(&self) -> Vec<(String, String, Option<String>)> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let bearer = r
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned);
                (r.method.to_string(), r.url.path().to_owned(), bearer)
            })
            .collect()
    }

    /// How many requests of `http_method` went to a contacts path.
    pub async fn count(&self, http_method: &str) -> usize {
        self.requests()
            .await
            .iter()
            .filter(|(m, p, _)| m == http_method && p.contains("/contacts"))
            .count()
    }
}
