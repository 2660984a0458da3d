//! Applies a plugin's [`Sandbox`] grants to the WASI context of one call.

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::sandbox::Sandbox;

/// Adds the grants to a WASI context that otherwise has no ambient authority.
pub(crate) fn grant(sandbox: &Sandbox, builder: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
    for (key, value) in &sandbox.env {
        builder.env(key, value);
    }
    for dir in &sandbox.dirs {
        let perms = if dir.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder.preopened_dir(&dir.host, &dir.guest, perms)?;
    }
    Ok(())
}
