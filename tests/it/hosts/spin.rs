//! What only Spin shows, under the real Spin (`spin up` of the committed
//! `spin.toml`): a missing variable named in the answer, and a destination
//! outside `allowed_outbound_hosts` (the manifest's default, the public cloud,
//! does not admit Azurite) refused at once instead of retried. The protocol
//! scenarios run under Spin too, as the `spin` target.

use std::time::{Duration, Instant};

use crate::support::{Azurite, Server};
use crate::targets::{available, Target};

#[test]
fn without_variables_the_spin_build_names_the_missing_setting() {
    if !available(Target::Spin) {
        return;
    }
    let server = Server::spin_up(&[]);
    let response = server.get(&format!("/cas/{}", "2".repeat(64)));
    let text = response.text();
    assert_eq!(response.status, 500, "{text}");
    assert!(text.contains("AZURE_STORAGE_CONNECTION_STRING"), "{text}");
    assert!(text.contains("Spin variables"), "{text}");
}

#[test]
fn a_denied_destination_is_reported_at_once_not_retried() {
    if !available(Target::Spin) {
        return;
    }
    let azurite = Azurite::start();
    let connection = azurite.connection_string();
    // No AZURE_OUTBOUND_HOST: Spin allows only https://*.blob.core.windows.net.
    let server = Server::spin_up(&[("AZURE_STORAGE_CONNECTION_STRING", &connection)]);
    let started = Instant::now();
    let response = server.get(&format!("/cas/{}", "3".repeat(64)));
    let text = response.text();
    assert_eq!(response.status, 500, "{text}");
    assert!(text.contains("allowed_outbound_hosts"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a denied request was retried: {:?}",
        started.elapsed()
    );
}
