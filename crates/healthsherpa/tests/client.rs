//! The client against a mock HealthSherpa (wiremock): request shapes, error classification,
//! token handling. No real network, no sleeps.

use std::time::Duration;

use intake_healthsherpa::{
    Address, Auth, ContactForSync, HealthSherpaClient, HealthSherpaConfig, HealthSherpaError, Medicare,
};
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{
    body_json, body_partial_json, body_string_contains, header, method, path, query_param,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn v1(server: &MockServer) -> HealthSherpaClient {
    let auth = Auth::ApiKey {
        api_key: SecretString::from("key-1"),
        default_agent_email: Some("agent@example.com".into()),
    };
    HealthSherpaClient::new(HealthSherpaConfig::new(server.uri(), auth)).expect("client")
}

fn v2(server: &MockServer) -> HealthSherpaClient {
    let auth = Auth::OAuth {
        client_id: "client-1".into(),
        client_secret: SecretString::from("secret-1"),
        scope: "partner_api_v2".into(),
        refresh_before_expiry: Duration::from_secs(60),
    };
    HealthSherpaClient::new(HealthSherpaConfig::new(server.uri(), auth)).expect("client")
}

fn contact() -> ContactForSync {
    ContactForSync {
        external_id: Some("c-1".into()),
        first_name: Some("Ada".into()),
        last_name: Some("Lovelace".into()),
        email: Some("ada@example.com".into()),
        phone: Some("555-0100".into()),
        address: Some(Address {
            line1: Some("1 Main St".into()),
            zip: Some("30301".into()),
            ..Address::default()
        }),
        medicare: Some(Medicare {
            mbi: Some("1EG4TE5MK73".into()),
            part_a_date: chrono::NaiveDate::from_ymd_opt(2024, 1, 1),
            part_b_date: None,
        }),
        agent_email: None,
    }
}

fn created(id: &str) -> ResponseTemplate {
    ResponseTemplate::new(201)
        .set_body_json(json!({"id": id, "redirect_url": format!("https://hs.test/quote/{id}")}))
}

fn token(value: &str, expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"access_token": value, "token_type": "Bearer", "expires_in": expires_in}))
}

#[tokio::test]
async fn create_sends_the_mapped_contact_and_returns_id_and_redirect() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/contacts"))
        .and(header("x-api-key", "key-1"))
        .and(body_json(json!({
            "external_id": "c-1", "first_name": "Ada", "last_name": "Lovelace",
            "email": "ada@example.com", "phone": "555-0100",
            "address": {"street_address": "1 Main St", "zip_code": "30301"},
            "medicare": {"mbi": "1EG4TE5MK73", "part_a_effective_date": "2024-01-01"}
        })))
        .respond_with(created("hs-1"))
        .expect(1)
        .mount(&server)
        .await;
    let synced = v1(&server).create(&contact()).await.expect("created");
    assert_eq!(synced.id, "hs-1");
    assert_eq!(synced.redirect_url, "https://hs.test/quote/hs-1");
}

#[tokio::test]
async fn update_sends_the_new_fields_to_the_contact() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/api/v1/contacts/hs-1"))
        .and(body_partial_json(
            json!({"external_id": "c-1", "email": "new@example.com"}),
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": 1, "redirect_url": "https://hs.test/q"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let changed = ContactForSync {
        email: Some("new@example.com".into()),
        ..contact()
    };
    let synced = v1(&server).update("hs-1", &changed).await.expect("updated");
    assert_eq!(synced.id, "1", "numeric ids are kept as strings");
}

#[tokio::test]
async fn search_carries_external_id_and_agent_email_in_v1() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/contacts"))
        .and(query_param("external_id", "c-1"))
        .and(query_param("agent_email", "agent@example.com"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"contacts": [{"id": "hs-9", "external_id": "c-1"}]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = v1(&server);
    let hit = client.search("c-1", None).await.expect("search").expect("found");
    assert_eq!(hit.id, "hs-9");
    // A v1 search without any agent email is refused before a request.
    let auth = Auth::ApiKey {
        api_key: SecretString::from("k"),
        default_agent_email: None,
    };
    let bare = HealthSherpaClient::new(HealthSherpaConfig::new(server.uri(), auth)).expect("client");
    assert!(matches!(
        bare.search("c-1", None).await,
        Err(HealthSherpaError::MissingField { field: "agent_email" })
    ));
}

#[tokio::test]
async fn rate_limit_surfaces_retry_after_in_seconds_or_as_a_date() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "7"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", later.as_str()))
        .mount(&server)
        .await;
    let client = v1(&server);
    let err = client.create(&contact()).await.expect_err("429");
    assert!(
        matches!(err, HealthSherpaError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let err = client.create(&contact()).await.expect_err("429");
    let waited = err.retry_after().expect("date honoured");
    assert!(
        waited > Duration::from_secs(100) && waited <= Duration::from_secs(120),
        "{waited:?}"
    );
}

#[tokio::test]
async fn server_errors_and_timeouts_are_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(created("hs-1").set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let auth = Auth::ApiKey {
        api_key: SecretString::from("k"),
        default_agent_email: None,
    };
    let mut config = HealthSherpaConfig::new(server.uri(), auth);
    config.request_timeout = Duration::from_millis(200);
    let client = HealthSherpaClient::new(config).expect("client");
    let err = client.create(&contact()).await.expect_err("500");
    assert!(
        matches!(err, HealthSherpaError::Transient(_)) && err.is_retryable(),
        "{err:?}"
    );
    let err = client.update("hs-1", &contact()).await.expect_err("timeout");
    assert!(
        matches!(&err, HealthSherpaError::Transient(m) if m.starts_with("timeout")),
        "{err:?}"
    );

    // Nothing listens on a port we just released: a connection error, also transient.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let auth = Auth::ApiKey {
        api_key: SecretString::from("k"),
        default_agent_email: None,
    };
    let dead =
        HealthSherpaClient::new(HealthSherpaConfig::new(format!("http://{closed}"), auth)).expect("client");
    assert!(matches!(
        dead.create(&contact()).await,
        Err(HealthSherpaError::Transient(_))
    ));
}

#[tokio::test]
async fn validation_errors_are_rejected_with_a_message_free_of_sent_values() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "errors": [{"field": "email", "message": "ada@example.com is not allowed"}]
        })))
        .mount(&server)
        .await;
    let err = v1(&server).create(&contact()).await.expect_err("422");
    match &err {
        HealthSherpaError::Rejected { status, message } => {
            assert_eq!(*status, 422);
            assert_eq!(message, "email: [redacted] is not allowed");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains("ada@"));
}

#[tokio::test]
async fn missing_last_name_is_refused_without_a_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created("hs-1"))
        .expect(0)
        .mount(&server)
        .await;
    let incomplete = ContactForSync {
        last_name: None,
        ..contact()
    };
    let err = v1(&server).create(&incomplete).await.expect_err("missing");
    assert!(matches!(
        err,
        HealthSherpaError::MissingField { field: "last_name" }
    ));
    assert!(!err.is_retryable());
    assert!(server.received_requests().await.expect("recording").is_empty());
}

#[tokio::test]
async fn v2_token_expiring_soon_is_refreshed_before_use() {
    let server = MockServer::start().await;
    // The first token expires within the refresh margin (30 s < 60 s): used once, then replaced.
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("client_secret=secret-1"))
        .respond_with(token("t1", 30))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("t2", 3600))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/contacts"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(created("hs-1"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/contacts"))
        .and(header("authorization", "Bearer t2"))
        .respond_with(created("hs-2"))
        .expect(2)
        .mount(&server)
        .await;
    let client = v2(&server);
    assert_eq!(client.create(&contact()).await.expect("first").id, "hs-1");
    assert_eq!(client.create(&contact()).await.expect("second").id, "hs-2");
    // t2 is good for an hour: reused, no third token request (checked by `expect` on drop).
    assert_eq!(client.create(&contact()).await.expect("third").id, "hs-2");
}

#[tokio::test]
async fn v2_401_triggers_one_refresh_and_one_retry() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("t1", 3600))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("t2", 3600))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(header("authorization", "Bearer t2"))
        .respond_with(created("hs-1"))
        .expect(1)
        .mount(&server)
        .await;
    let synced = v2(&server).update("hs-1", &contact()).await.expect("retried");
    assert_eq!(synced.id, "hs-1");
    let tokens = server
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .filter(|r| r.url.path() == "/oauth/token")
        .count();
    assert_eq!(tokens, 2);
}

#[tokio::test]
async fn v2_second_401_is_unauthorized_without_a_third_try() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("t", 3600))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;
    let err = v2(&server).search("c-1", None).await.expect_err("401");
    assert!(matches!(err, HealthSherpaError::Unauthorized));
}
