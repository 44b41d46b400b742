//! Target `auth`: every authentication check of `intake_receiver::auth` (header token, path
//! token, bearer, basic, HMAC-SHA256 hex and base64, Standard Webhooks with two secrets) on
//! requests built from the fuzz input.
//!
//! Modes (first byte): *raw* — arbitrary headers, path token and body, every check run: no
//! panic, a header or path token passes exactly when it equals the secret, and the `Debug` of
//! what was presented never shows a header value; *signed* — a body signed correctly by the
//! harness, then maybe tampered with (signature, body, timestamp, key): the check passes
//! exactly when nothing was tampered with; *basic* and *bearer* — credentials from the input
//! (or the real ones): pass exactly when they are the configured ones.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use intake_receiver::auth::{AuthCheck, Presented, SignatureEncoding};
use secrecy::SecretString;
use sha2::Sha256;

use crate::{Input, Seed};

/// The token of the header-token, path-token and bearer checks.
pub const TOKEN: &str = "fuzz-token-7f3a";
/// The basic check's user and password.
pub const USER: &str = "spark";
/// The basic check's password.
pub const PASSWORD: &str = "fuzz-password-91c2";
/// The HMAC key.
pub const HMAC_KEY: &str = "fuzz-hmac-key";
/// The two Standard Webhooks secrets (a rotation).
pub const WHSEC: [&str; 2] = [
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_bmV3IGtleSBmb3IgdGVzdGluZyByb3RhdGlvbg==",
];
/// A secret no check knows.
const WHSEC_UNKNOWN: &str = "whsec_dW5rbm93biBrZXkgZm9yIGZ1enppbmc=";

struct Checks {
    header_token: AuthCheck,
    path_token: AuthCheck,
    bearer: AuthCheck,
    basic: AuthCheck,
    hmac_hex: AuthCheck,
    hmac_base64: AuthCheck,
    standard: AuthCheck,
}

fn checks() -> &'static Checks {
    static CHECKS: OnceLock<Checks> = OnceLock::new();
    CHECKS.get_or_init(|| Checks {
        header_token: AuthCheck::HeaderToken {
            header: "sparkloop-token".into(),
            token: SecretString::from(TOKEN),
        },
        path_token: AuthCheck::PathToken(SecretString::from(TOKEN)),
        bearer: AuthCheck::Bearer(SecretString::from(TOKEN)),
        basic: AuthCheck::Basic {
            username: SecretString::from(USER),
            password: SecretString::from(PASSWORD),
        },
        hmac_hex: AuthCheck::HmacSha256 {
            header: "x-sig".into(),
            key: SecretString::from(HMAC_KEY),
            encoding: SignatureEncoding::Hex,
        },
        hmac_base64: AuthCheck::HmacSha256 {
            header: "x-sig-b64".into(),
            key: SecretString::from(HMAC_KEY),
            encoding: SignatureEncoding::Base64,
        },
        standard: AuthCheck::standard_webhooks(&WHSEC.join(" ")).expect("valid secrets"),
    })
}

const NAMES: [&str; 9] = [
    "authorization",
    "sparkloop-token",
    "x-sig",
    "x-sig-b64",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "x-other",
];

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() % 5 {
        0 => raw(input),
        1 => signed_hmac(input),
        2 => signed_standard(input),
        3 => basic(input),
        _ => bearer(input),
    }
}

fn presented<'a>(
    headers: &'a HeaderMap,
    path_token: Option<&'a str>,
    body: Option<&'a [u8]>,
) -> Presented<'a> {
    Presented {
        headers,
        path_token,
        body,
    }
}

fn raw(mut input: Input<'_>) {
    let mut headers = HeaderMap::new();
    for _ in 0..input.byte() % 8 {
        let name = match input.byte() as usize {
            n if n < NAMES.len() * 24 => HeaderName::from_static(NAMES[n % NAMES.len()]),
            _ => match HeaderName::from_bytes(input.short()) {
                Ok(name) => name,
                Err(_) => continue,
            },
        };
        let value = match input.byte() % 4 {
            0 => HeaderValue::from_static(TOKEN),
            _ => match HeaderValue::from_bytes(input.short()) {
                Ok(value) => value,
                Err(_) => continue,
            },
        };
        headers.append(name, value);
    }
    let path_token = match input.byte() % 3 {
        0 => None,
        1 => Some(TOKEN.to_owned()),
        _ => Some(input.text()),
    };
    let body = match input.byte() % 4 {
        0 => None,
        _ => Some(input.rest()),
    };
    let req = presented(&headers, path_token.as_deref(), body);
    let c = checks();
    for check in [&c.bearer, &c.basic, &c.hmac_hex, &c.hmac_base64, &c.standard] {
        let passed = check.verify(req);
        if check.needs_body() && body.is_none() {
            assert!(!passed, "a body check passed without a body");
        }
    }
    let header = headers.get("sparkloop-token").map(HeaderValue::as_bytes);
    assert_eq!(
        c.header_token.verify(req),
        header == Some(TOKEN.as_bytes()),
        "header token"
    );
    assert_eq!(
        c.path_token.verify(req),
        path_token.as_deref() == Some(TOKEN),
        "path token"
    );
    // Debug shows counts and lengths only: exactly this, whatever the headers hold.
    let expected = format!(
        "Presented {{ headers: {}, path_token: {}, body_len: {:?} }}",
        headers.len(),
        if path_token.is_some() {
            "Some(\"<redacted>\")"
        } else {
            "None"
        },
        body.map(<[u8]>::len)
    );
    assert_eq!(format!("{req:?}"), expected, "Debug of a presented request");
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Tampering applied after signing: 0 none; 1 flip a bit of the signature; 2 flip a bit of the
/// body (when it has one); 3 a wrong key.
fn signed_hmac(mut input: Input<'_>) {
    let base64 = input.byte() % 2 == 1;
    let spelling = input.byte() % 4;
    let tamper = input.byte() % 4;
    let at = usize::from(input.byte());
    let bit = 1u8 << (input.byte() % 8);
    let mut body = input.rest().to_vec();
    let key: &[u8] = if tamper == 3 {
        b"another key"
    } else {
        HMAC_KEY.as_bytes()
    };
    let mut signature = hmac(key, &[&body]);
    let mut tampered = tamper == 3;
    if tamper == 1 {
        let i = at % signature.len();
        signature[i] ^= bit;
        tampered = true;
    }
    if tamper == 2 && !body.is_empty() {
        let i = at % body.len();
        body[i] ^= bit;
        tampered = true;
    }
    let (name, value) = if base64 {
        ("x-sig-b64", BASE64.encode(&signature))
    } else {
        let hex = hex::encode(&signature);
        let value = match spelling {
            0 => hex,
            1 => format!("sha256={hex}"),
            2 => hex.to_uppercase(),
            _ => format!(" sha256={hex} "),
        };
        ("x-sig", value)
    };
    let mut headers = HeaderMap::new();
    headers.insert(name, HeaderValue::from_str(&value).expect("ASCII"));
    let c = checks();
    let check = if base64 { &c.hmac_base64 } else { &c.hmac_hex };
    assert_eq!(
        check.verify(presented(&headers, None, Some(&body))),
        !tampered,
        "HMAC (base64: {base64}, tamper: {tamper})"
    );
}

/// The signature Standard Webhooks defines, computed here (the crate signs only UTF-8 bodies).
fn standard_signature(secret: &str, id: &[u8], ts: i64, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.trim_start_matches("whsec_"))
        .expect("base64 secret");
    let mac = hmac(&key, &[id, b".", ts.to_string().as_bytes(), b".", body]);
    format!("v1,{}", BASE64.encode(mac))
}

const OFFSETS: [i64; 8] = [0, -60, 60, -200, 200, -400, 400, -86_400];

/// Tampering: 0 none; 1 flip a bit of the body; 2 an unknown secret; 3 a wrong version tag.
fn signed_standard(mut input: Input<'_>) {
    let which = usize::from(input.byte() % 2);
    let offset = input.pick(&OFFSETS);
    let decoys = input.byte() % 4;
    let position = usize::from(input.byte());
    let tamper = input.byte() % 4;
    let at = usize::from(input.byte());
    let id = input.short().to_vec();
    let mut body = input.rest().to_vec();
    let Ok(id_value) = HeaderValue::from_bytes(&id) else {
        return;
    };
    let now = chrono::Utc::now().timestamp();
    let ts = now + offset;
    let secret = if tamper == 2 { WHSEC_UNKNOWN } else { WHSEC[which] };
    let mut signature = standard_signature(secret, &id, ts, &body);
    if tamper == 3 {
        signature.replace_range(0..2, "v2");
    }
    let mut tampered = tamper == 2 || tamper == 3;
    if tamper == 1 && !body.is_empty() {
        let i = at % body.len();
        body[i] ^= 1;
        tampered = true;
    }
    let mut signatures: Vec<String> = (0..decoys)
        .map(|n| standard_signature(WHSEC_UNKNOWN, &id, ts + i64::from(n) + 1, &body))
        .collect();
    let at = position % (signatures.len() + 1);
    signatures.insert(at, signature);
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", id_value);
    headers.insert("webhook-timestamp", HeaderValue::from(ts));
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(&signatures.join(" ")).expect("ASCII"),
    );
    // The crate verifies UTF-8 ids and bodies only, within 5 minutes either way.
    let expected = !tampered
        && offset.abs() < 300
        && headers["webhook-id"].to_str().is_ok()
        && std::str::from_utf8(&body).is_ok();
    assert_eq!(
        checks().standard.verify(presented(&headers, None, Some(&body))),
        expected,
        "Standard Webhooks (offset {offset}, tamper {tamper})"
    );
}

const BASIC_SCHEMES: [&str; 4] = ["Basic", "basic", "BASIC", "Bearer"];

fn basic(mut input: Input<'_>) {
    let scheme = input.pick(&BASIC_SCHEMES);
    let user = match input.byte() % 2 {
        0 => USER.as_bytes().to_vec(),
        _ => input.short().to_vec(),
    };
    let password = match input.byte() % 2 {
        0 => PASSWORD.as_bytes().to_vec(),
        _ => input.short().to_vec(),
    };
    let padding = " ".repeat(usize::from(input.byte() % 3));
    let credentials = [&user[..], b":", &password[..]].concat();
    let value = format!("{scheme} {padding}{}{padding}", BASE64.encode(&credentials));
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_str(&value).expect("ASCII"));
    let expected =
        scheme.eq_ignore_ascii_case("basic") && credentials == format!("{USER}:{PASSWORD}").as_bytes();
    assert_eq!(
        checks().basic.verify(presented(&headers, None, None)),
        expected,
        "basic"
    );
}

const BEARER_SCHEMES: [&str; 4] = ["Bearer", "bearer", "BEARER", "Basic"];

fn bearer(mut input: Input<'_>) {
    let scheme = input.pick(&BEARER_SCHEMES);
    let token = match input.byte() % 2 {
        0 => TOKEN.as_bytes().to_vec(),
        _ => input.short().to_vec(),
    };
    let Ok(value) = HeaderValue::from_bytes(&[scheme.as_bytes(), b" ", &token].concat()) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("authorization", value);
    let presented_token = std::str::from_utf8(&token).map(str::trim);
    let expected = scheme.eq_ignore_ascii_case("bearer") && presented_token == Ok(TOKEN);
    assert_eq!(
        checks().bearer.verify(presented(&headers, None, None)),
        expected,
        "bearer"
    );
}

/// Seeds: every mode, with `body` where a mode takes one.
pub fn seeds(body: &[u8]) -> Vec<Vec<u8>> {
    vec![
        // raw: the real token in sparkloop-token, a path token, a body
        Seed::new()
            .byte(0)
            .byte(1)
            .byte(1)
            .byte(0)
            .byte(1)
            .byte(1)
            .rest(body),
        // signed HMAC, hex with prefix / base64, untampered and tampered
        Seed::new()
            .byte(1)
            .byte(0)
            .byte(1)
            .byte(0)
            .byte(0)
            .byte(0)
            .rest(body),
        Seed::new()
            .byte(1)
            .byte(1)
            .byte(0)
            .byte(0)
            .byte(0)
            .byte(0)
            .rest(body),
        Seed::new()
            .byte(1)
            .byte(0)
            .byte(0)
            .byte(2)
            .byte(9)
            .byte(3)
            .rest(body),
        // Standard Webhooks: first and second secret, decoys, within and outside tolerance
        Seed::new()
            .byte(2)
            .byte(0)
            .byte(0)
            .byte(0)
            .byte(0)
            .byte(0)
            .byte(0)
            .short(b"msg_2mJ5")
            .rest(body),
        Seed::new()
            .byte(2)
            .byte(1)
            .byte(1)
            .byte(3)
            .byte(2)
            .byte(0)
            .byte(0)
            .short(b"msg_2mJ5")
            .rest(body),
        Seed::new()
            .byte(2)
            .byte(0)
            .byte(5)
            .byte(1)
            .byte(0)
            .byte(0)
            .byte(0)
            .short(b"msg_2mJ5")
            .rest(body),
        // basic and bearer, right and wrong
        Seed::new().byte(3).byte(0).byte(0).byte(0).byte(0).rest(b""),
        Seed::new()
            .byte(3)
            .byte(1)
            .byte(1)
            .short(b"spark:x")
            .byte(0)
            .byte(1)
            .rest(b""),
        Seed::new().byte(4).byte(0).byte(0).rest(b""),
        Seed::new()
            .byte(4)
            .byte(1)
            .byte(1)
            .short(TOKEN.as_bytes())
            .rest(b""),
    ]
}
