//! Loaded plugins and the functions they provide.

pub mod registry;

pub use registry::{FunctionEntry, Registry, RegistryError};
