//! placeholder
pub mod placeholder {}
