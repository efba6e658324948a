//! Azure Blob Storage over its REST API, sans-IO.
//!
//! Operations become signed [`http::Request`]s ([`ops`]); responses become typed
//! results or [`response::AzureError`]s ([`response`]). Nothing here opens a socket
//! or needs an async runtime, so the same code runs in the native host and inside
//! a wasm component, each with its own transport.
//!
//! Signing ([`signing`]) is Shared Key for requests and service SAS for URLs handed
//! to clients, tested against vectors computed with Microsoft's SDK
//! (`tests/vectors/`) and against Azurite.

pub mod account;
pub mod layout;
pub mod ops;
pub mod response;
pub mod signing;
pub mod store;

pub use account::{Account, ConfigError};
pub use ops::{Body, Condition, Container, Operation, WriteProperties};
pub use response::{AzureError, BlobProperties, ErrorKind, ListPage, ListedBlob, RetryPolicy};
