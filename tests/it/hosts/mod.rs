//! What only one host can show; the protocol scenarios run on every host
//! through [`crate::targets`].

mod azure_functions;
mod components;
mod deploy_targets;
mod spin;
