//! The store contract on every backend (one test per operation and store), and
//! what only the Azure store shows (Azurite, Microsoft's SDK, faults), and
//! stores with a maximum size.

mod azure;
mod bounded;
mod contract;
mod edge;
mod gc;
