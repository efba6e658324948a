//! Real ccache (the Debian package) against blobcache, in each storage layout:
//! build a small C project, throw the local cache away, build again, and count
//! the remote hits ccache itself reports.

mod support;

use support::ccache::round_trip;
use support::Server;

#[test]
fn ccache_gets_remote_hits_in_every_layout() {
    for layout in ["subdirs", "flat", "bazel"] {
        let server = Server::start();
        round_trip(&server, layout);
        let stored = server.blob_count();
        assert!(
            stored >= 3,
            "{layout}: ccache stored {stored} entries in blobcache"
        );
    }
}

/// The same with the Azure store, on Azurite.
#[test]
fn ccache_gets_remote_hits_with_the_azure_store() {
    let azurite = support::Azurite::start();
    let args = [
        "--store",
        "azure",
        "--azure-create-container",
        "--azure-container",
        "ccache",
    ];
    let server = Server::start_with_env(
        &args,
        &[(
            "AZURE_STORAGE_CONNECTION_STRING",
            &azurite.connection_string(),
        )],
    );
    round_trip(&server, "subdirs");
}
