//! Our signing against vectors computed by Microsoft's own SDK.
//!
//! `tests/vectors/shared_key.json` was produced by `tests/vectors/generate.py`, which
//! drives the signing code of the Python `azure-storage-blob` package (the version
//! is recorded in the file) on fixed requests and SAS parameters. Nothing in it was
//! computed by this crate.

use blobcache_azure::signing::{self, BlobSas};
use blobcache_azure::Account;
use serde_json::Value;

fn cases(kind: &str) -> Vec<Value> {
    let text = include_str!("vectors/shared_key.json");
    let json: Value = serde_json::from_str(text).unwrap();
    let cases: Vec<Value> = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == kind)
        .cloned()
        .collect();
    assert!(!cases.is_empty(), "no {kind} vectors");
    cases
}

fn text(case: &Value, field: &str) -> String {
    case[field]
        .as_str()
        .unwrap_or_else(|| panic!("{} lacks {field}", case["name"]))
        .to_string()
}

#[test]
fn shared_key_matches_the_sdk() {
    for case in cases("shared_key") {
        let name = text(&case, "name");
        let account = Account::new(&text(&case, "account"), &text(&case, "key"), None).unwrap();
        let mut request = http::Request::builder()
            .method(text(&case, "method").as_str())
            .uri(text(&case, "url"));
        for pair in case["headers"].as_array().unwrap() {
            request = request.header(pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        }
        let mut request = request.body(()).unwrap();
        let string_to_sign = signing::string_to_sign(
            account.name(),
            request.method(),
            request.uri(),
            request.headers(),
        );
        assert_eq!(
            string_to_sign,
            text(&case, "string_to_sign"),
            "{name}: string-to-sign"
        );
        signing::sign(&account, &mut request);
        assert_eq!(
            request.headers()["authorization"],
            text(&case, "authorization").as_str(),
            "{name}"
        );
    }
}

#[test]
fn service_sas_matches_the_sdk() {
    for case in cases("sas") {
        let name = text(&case, "name");
        let account = Account::new(&text(&case, "account"), &text(&case, "key"), None).unwrap();
        let sas = BlobSas {
            permissions: text(&case, "permission"),
            start: case["start"].as_str().map(str::to_string),
            expiry: text(&case, "expiry"),
            protocol: case["protocol"].as_str().map(str::to_string),
            version: text(&case, "version"),
        };
        let (container, blob) = (text(&case, "container"), text(&case, "blob"));
        let string_to_sign = signing::sas_string_to_sign(account.name(), &container, &blob, &sas);
        assert_eq!(
            string_to_sign,
            text(&case, "string_to_sign"),
            "{name}: string-to-sign"
        );
        let query = signing::sas_query(&account, &container, &blob, &sas).unwrap();
        let signature = query.split("&sig=").nth(1).unwrap();
        let decoded = percent_encoding::percent_decode_str(signature)
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, text(&case, "signature"), "{name}: signature");
    }
}
