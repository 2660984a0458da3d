//! `chaos`: misbehaves on purpose, so the tests can show that one bad call fails alone.

use mpreg_plugin_sdk::{Command, Manifest};

mpreg_plugin_sdk::plugin! {
    wit: "../../wit",
    inline: r#"
        package mpreg-examples:chaos;

        world chaos {
            include mpreg:plugin/plugin@0.1.0;

            export spin: func() -> u64;
            export hog: func(mib: u32) -> u32;
            export boom: func(message: string) -> string;
            export trap: func() -> u32;
            export huge: func(mib: u32) -> string;
            export recurse: func(depth: u64) -> u64;
            export busy: func(ms: u32) -> u32;
            export fail: func(message: string) -> result<string, string>;
            export env: func(name: string) -> option<string>;
            export read-file: func(path: string) -> result<string, string>;
            export served: func(ms: u32) -> result<u64, string>;
        }
    "#,
    world: "mpreg-examples:chaos/chaos",
    export: Chaos,
    describe: {
        Manifest::new("chaos", env!("CARGO_PKG_VERSION"))
            .command(Command::new("spin").describe("infinite loop"))
            .command(Command::new("hog").describe("allocates mib MiB"))
            .command(Command::new("boom").describe("panics with message"))
            .command(Command::new("trap").describe("aborts (unreachable trap)"))
            .command(Command::new("huge").describe("returns a string of mib MiB"))
            .command(
                Command::new("recurse").describe("recursion depth n (stack overflow when deep)"),
            )
            .command(Command::new("busy").describe("burns CPU for ms milliseconds"))
            .command(Command::new("fail").describe("returns err(message)"))
            .command(Command::new("env").describe("reads an environment variable (sandbox grant)"))
            .command(Command::new("read_file").describe("reads a file (sandbox grant)"))
            .command(
                Command::new("served")
                    .describe("calls this instance has served, after ms of work (instance reuse)"),
            )
    },
}

struct Chaos;

impl Guest for Chaos {
    /// Never returns: the host's deadline must stop it.
    fn spin() -> u64 {
        let mut n = 0u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    /// Allocates and touches `mib` MiB; past the memory limit the allocation fails and the guest
    /// aborts.
    fn hog(mib: u32) -> u32 {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        for _ in 0..mib {
            blocks.push(vec![1u8; 1 << 20]);
        }
        std::hint::black_box(&blocks);
        blocks.len() as u32
    }

    fn boom(message: String) -> String {
        panic!("{message}");
    }

    fn trap() -> u32 {
        std::process::abort()
    }

    /// Returns a string of `mib` MiB: too big to send back over the wire past the reply limit.
    fn huge(mib: u32) -> String {
        "x".repeat((mib as usize) << 20)
    }

    /// Recurses `depth` times without tail calls: deep enough overflows the guest stack.
    fn recurse(depth: u64) -> u64 {
        if depth == 0 {
            return 0;
        }
        // A live stack buffer per frame, so the recursion cannot be turned into a loop.
        let buf = std::hint::black_box([depth; 16]);
        let below = Self::recurse(depth - 1);
        1 + below + u64::from(std::hint::black_box(buf)[depth as usize % 16] == u64::MAX)
    }

    /// Burns CPU for `ms` milliseconds of wall time, then returns `ms`.
    fn busy(ms: u32) -> u32 {
        let start = std::time::Instant::now();
        while start.elapsed().as_millis() < u128::from(ms) {
            std::hint::spin_loop();
        }
        ms
    }

    fn fail(message: String) -> Result<String, String> {
        Err(message)
    }

    /// `None` unless the plugin's sandbox grants the variable.
    fn env(name: String) -> Option<String> {
        std::env::var(name).ok()
    }

    /// Fails unless the plugin's sandbox preopens a directory holding `path`.
    fn read_file(path: String) -> Result<String, String> {
        std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))
    }

    /// Counts the calls this instance has served (1 in a fresh instance, more in a reused
    /// one) after `ms` of work, and fails if another call entered the instance meanwhile.
    fn served(ms: u32) -> Result<u64, String> {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        static INSIDE: AtomicBool = AtomicBool::new(false);
        static SERVED: AtomicU64 = AtomicU64::new(0);
        if INSIDE.swap(true, Ordering::SeqCst) {
            return Err("two calls at once in one instance".into());
        }
        let served = SERVED.fetch_add(1, Ordering::SeqCst) + 1;
        Self::busy(ms);
        INSIDE.store(false, Ordering::SeqCst);
        Ok(served)
    }
}
