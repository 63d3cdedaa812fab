//! placeholder
pub mod placeholder {}
pub mod auth;
