//! One module per command group; each function runs one command against a [`Context`].

pub mod auth;
pub mod endpoints;
pub mod list;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod predict;
pub mod registry;
pub mod rollout;
pub mod serve;
pub mod service;
pub mod shadow;
pub mod store;
pub mod triton_repo;
