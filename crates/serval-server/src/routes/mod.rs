//! HTTP routes, one module per area, merged in [`crate::router`].

pub mod health;
pub mod serve;
