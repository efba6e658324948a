//! What only a Spin-like host can show (see `support::spin_like`): a missing
//! variable named in the answer, and a destination Spin's outbound policy
//! denies reported at once. The protocol scenarios run on this host too, as
//! the `spin_like` target.

use crate::support::spin_like::{serve, serve_with_outbound};
use crate::support::Azurite;

#[test]
fn without_variables_the_spin_build_names_the_missing_setting() {
    let server = serve(&[]);
    let response = server.get(&format!("/cas/{}", "2".repeat(64)));
    let text = response.text();
    assert_eq!(response.status, 500, "{text}");
    assert!(text.contains("AZURE_STORAGE_CONNECTION_STRING"), "{text}");
}

/// A destination the host denies (on Spin: not in `allowed_outbound_hosts`) is
/// final: answered at once, naming the likely cause, not retried for seconds.
#[test]
fn a_denied_destination_is_reported_at_once_not_retried() {
    let azurite = Azurite::start();
    let connection = azurite.connection_string();
    let server = serve_with_outbound(
        &[("azure_storage_connection_string", &connection)],
        Some("storage.example:443"),
    );
    let started = std::time::Instant::now();
    let response = server.get(&format!("/cas/{}", "3".repeat(64)));
    let text = response.text();
    assert_eq!(response.status, 500, "{text}");
    assert!(text.contains("allowed_outbound_hosts"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "a denied request was retried: {:?}",
        started.elapsed()
    );
}
