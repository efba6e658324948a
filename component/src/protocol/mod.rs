//! One module per cache protocol: each maps its requests onto store calls.

pub mod bazel;
pub mod ccache;
pub mod status;
