//! Runnable demos of MPREG's public API; see `examples/` (each file starts with its run command).
