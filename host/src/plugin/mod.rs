//! Plugins: the registry of callable versions, the sled store of published components, and the
//! manager that publishes, retires and restores them.

pub mod manager;
pub mod registry;
pub mod store;

pub use manager::{PluginManager, PublishError, PublishOptions, Published, Retired};
pub use registry::{FunctionEntry, Registry, RegistryError};
pub use store::{PluginRecord, PluginStore, StoreError};
