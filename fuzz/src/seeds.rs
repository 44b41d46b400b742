//! The seed corpus (`fuzz/seeds/<target>/`), built from the provider documents
//! (`../shared/providers/*.txt`: every JSON example in them, the broken ones included, as
//! written) and the fixtures of `crates/providers` (the same examples made valid), plus the
//! Standard Webhooks specification's example and a few edge cases (scalars, arrays, invalid
//! UTF-8, lone surrogates, deep nesting). `make-seeds` writes it; the corpus is committed.

use std::fs;
use std::io;
use std::path::Path;

use bytes::Bytes;
use intake_core::{Envelope, Provider};
use sha2::{Digest, Sha256};

use crate::receiver::Endpoint;
use crate::{auth, codec, decode, receiver};

/// One example body and where it comes from.
#[derive(Debug, Clone)]
pub struct Example {
    /// Whose payload it is.
    pub provider: Provider,
    /// Short label for file names.
    pub label: String,
    /// The bytes.
    pub body: Vec<u8>,
}

/// The provider documents and the provider each describes.
const DOCUMENTS: [(&str, Provider); 4] = [
    ("spark-contact-sync.txt", Provider::Spark),
    ("sparkloop.txt", Provider::SparkLoop),
    ("spark360.txt", Provider::Spark360),
    ("healthsherpa-webhooks.txt", Provider::HealthSherpa),
];

/// The example of the Standard Webhooks specification, and one with a numeric timestamp.
const STANDARD: [&str; 2] = [
    r#"{"type":"contact.created","timestamp":"2022-11-03T20:26:10.344522Z","data":{"id":"1f81eb52-5198-4599-803e-771906343485","type":"contact"}}"#,
    r#"{"type":"invoice.paid","timestamp":1667507170,"data":{"id":"inv_1","amount":1200}}"#,
];

/// Bodies at the edges of what the receiver must refuse or accept.
pub const EDGES: [&[u8]; 14] = [
    b"",
    b"42",
    b"\"x\"",
    b"true",
    b"null",
    b"[]",
    b"{}",
    b"{\"name\":\"\xff\xfe\"}",
    b"{\"\xc3\":1}",
    b"{\"a\":\"\\ud800\"}",
    b"{\"a\":\"\\ud83d\\ude00\"}",
    b"{\"a\":1e400}",
    b"{\"a\":{\"b\":{\"c\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}}",
    b"{\"a\":1} {\"b\":2}",
];

/// Every example: the fixtures, the documents' JSON (when `docs` exists) and Standard Webhooks.
pub fn examples(docs: &Path) -> io::Result<Vec<Example>> {
    let mut examples: Vec<Example> = intake_providers::fixtures::ALL
        .iter()
        .enumerate()
        .map(|(i, (provider, body))| Example {
            provider: *provider,
            label: format!("{provider}-fixture-{i}"),
            body: body.as_bytes().to_vec(),
        })
        .collect();
    for (file, provider) in DOCUMENTS {
        let path = docs.join(file);
        if !path.exists() {
            continue;
        }
        let text = fs::read_to_string(&path)?;
        for (i, span) in json_spans(&text).into_iter().enumerate() {
            examples.push(Example {
                provider,
                label: format!("{provider}-doc-{i}"),
                body: span.into_bytes(),
            });
        }
    }
    for (i, body) in STANDARD.iter().enumerate() {
        examples.push(Example {
            provider: Provider::Standard,
            label: format!("standard-spec-{i}"),
            body: body.as_bytes().to_vec(),
        });
    }
    Ok(examples)
}

/// The JSON examples of a document, as written: per paragraph (blank-line separated), every
/// top-level `{…}` to its matching brace or, where the document drops a closing brace, to the
/// paragraph's end; a paragraph of bare members (SparkLoop's examples lack their outer braces)
/// is wrapped in one pair of braces.
pub fn json_spans(text: &str) -> Vec<String> {
    let mut spans = Vec::new();
    for paragraph in text.split("\n\n") {
        if paragraph.trim_start().starts_with('"') {
            spans.push(format!("{{\n{}\n}}", paragraph.trim_end()));
        } else {
            spans.extend(brace_spans(paragraph));
        }
    }
    spans
}

fn brace_spans(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'{' {
            i += 1;
            continue;
        }
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        let mut end = bytes.len();
        for (j, &b) in bytes.iter().enumerate().skip(i) {
            match (in_string, escaped, b) {
                (true, true, _) => escaped = false,
                (true, false, b'\\') => escaped = true,
                (true, false, b'"') => in_string = false,
                (false, _, b'"') => in_string = true,
                (false, _, b'{') => depth += 1,
                (false, _, b'}') => {
                    depth -= 1;
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        spans.push(text[i..end].to_owned());
        i = end;
    }
    spans
}

fn name(label: &str, content: &[u8]) -> String {
    let digest = Sha256::digest(content);
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{label}-{hash}")
}

fn write(dir: &Path, seeds: &[(String, Vec<u8>)]) -> io::Result<usize> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    for (label, content) in seeds {
        fs::write(dir.join(name(label, content)), content)?;
    }
    Ok(seeds.len())
}

/// Writes the seeds of every target under `out` (one directory per target, replaced); returns
/// the number of seeds per target.
pub fn write_all(out: &Path, docs: &Path) -> io::Result<Vec<(&'static str, usize)>> {
    let examples = examples(docs)?;
    let mut decode_seeds = Vec::new();
    for example in &examples {
        for provider in Provider::ALL {
            let label = format!("{}-as-{provider}", example.label);
            decode_seeds.push((label, decode::seed(provider, &example.body)));
        }
    }
    for (i, edge) in EDGES.iter().enumerate() {
        for provider in Provider::ALL {
            decode_seeds.push((format!("edge-{i}-as-{provider}"), decode::seed(provider, edge)));
        }
    }

    let mut codec_seeds = Vec::new();
    for example in &examples {
        let mut envelope = Envelope::new(
            "endpoint-a",
            example.provider,
            vec![
                ("content-type".into(), "application/json".into()),
                ("user-agent".into(), "provider/1.0".into()),
                ("webhook-id".into(), "msg_2mJ5".into()),
            ],
            Bytes::from(example.body.clone()),
        );
        envelope.id = uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        codec_seeds.push((example.label.clone(), codec::seed(&envelope)));
    }

    let mut auth_seeds = Vec::new();
    for example in examples.iter().take(4) {
        for (i, seed) in auth::seeds(&example.body).into_iter().enumerate() {
            auth_seeds.push((format!("{}-mode-{i}", example.label), seed));
        }
    }

    let mut receiver_seeds = Vec::new();
    for example in &examples {
        for endpoint in Endpoint::ALL
            .into_iter()
            .filter(|e| e.provider() == example.provider)
        {
            receiver_seeds.push((
                format!("{}-to-{endpoint:?}", example.label),
                receiver::seed(endpoint, &example.body),
            ));
        }
    }
    for (i, edge) in EDGES.iter().enumerate() {
        receiver_seeds.push((format!("edge-{i}-to-hs"), receiver::seed(Endpoint::Hs, edge)));
    }
    if let Some(example) = examples.first() {
        for (i, seed) in receiver::variations(&example.body).into_iter().enumerate() {
            receiver_seeds.push((format!("variation-{i}"), seed));
        }
    }

    Ok(vec![
        ("decode", write(&out.join("decode"), &decode_seeds)?),
        (
            "envelope_codec",
            write(&out.join("envelope_codec"), &codec_seeds)?,
        ),
        ("auth", write(&out.join("auth"), &auth_seeds)?),
        ("receiver", write(&out.join("receiver"), &receiver_seeds)?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_braces_and_strings() {
        let text = "see {\"a\":{\"b\":\"}\"}} and\n{\"broken\": {\"x\": 1}\n\n  \"type\": \"t\",\n  \"id\": 1\n\nnext";
        assert_eq!(
            json_spans(text),
            vec![
                "{\"a\":{\"b\":\"}\"}}".to_owned(),
                "{\"broken\": {\"x\": 1}".to_owned(),
                "{\n  \"type\": \"t\",\n  \"id\": 1\n}".to_owned(),
            ]
        );
    }
}
