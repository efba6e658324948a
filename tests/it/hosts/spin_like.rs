//! What only a Spin-like host can show (see `support::spin_like`): a missing
//! variable named in the answer, and a destination Spin's outbound policy
//! denies reported at once. The protocol scenarios run on this host too, as
//! the `spin_like` target.

use crate::support::spin_like::SpinLikeHost;
use crate::support::Azurite;

#[tokio::test(flavor = "multi_thread")]
async fn without_variables_the_spin_build_names_the_missing_setting() {
    let host = SpinLikeHost::new(&[]);
    let (status, text) = host
        .send("GET", &format!("/cas/{}", "2".repeat(64)), b"")
        .await;
    let text = String::from_utf8_lossy(&text);
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("AZURE_STORAGE_CONNECTION_STRING"), "{text}");
}

/// A destination the host denies (on Spin: not in `allowed_outbound_hosts`) is
/// final: answered at once, naming the likely cause, not retried for seconds.
#[tokio::test(flavor = "multi_thread")]
async fn a_denied_destination_is_reported_at_once_not_retried() {
    let azurite = Azurite::start();
    let connection = azurite.connection_string();
    let host = SpinLikeHost::with_outbound(
        &[("azure_storage_connection_string", &connection)],
        Some("storage.example:443"),
    );
    let started = std::time::Instant::now();
    let (status, text) = host
        .send("GET", &format!("/cas/{}", "3".repeat(64)), b"")
        .await;
    let text = String::from_utf8_lossy(&text);
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("allowed_outbound_hosts"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "a denied request was retried: {:?}",
        started.elapsed()
    );
}
