# Conveniences only: the README's commands work without `just`.

# Start a node with the example plugins, call it, print results.
demo:
    rustup target add wasm32-wasip2 && cargo run -p mpreg-examples --example demo

# The whole test suite (what CI runs after fmt and clippy).
test:
    rustup target add wasm32-wasip2 && cargo test --workspace

# Build the example plugins into plugins/target/wasm32-wasip2/release/.
plugins:
    cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml

# A node with every example plugin on port 6666, for `mpreg call` and `mpreg bench`.
serve: plugins
    cargo run --release -p mpreg -- server start --port 6666 \
        --data-dir mpreg-data \
        $(for p in math text pipeline chaos greeter greeter2 relay; do echo --plugin plugins/target/wasm32-wasip2/release/mpreg_plugin_$p.wasm; done)

# End-to-end load test against `just serve` (run in another terminal), then the in-process benches
# (planner, invocation, plugin lifecycle, cluster).
bench:
    cargo run --release -p mpreg -- bench --url ws://127.0.0.1:6666
    cargo bench -p mpreg-tests

# The floor under `mpreg bench` on this machine: a bare WebSocket echo in a second process.
bench-floor:
    cargo bench -p mpreg-tests --bench ws_floor

# Publish / hot swap / per-language figures only.
bench-lifecycle:
    cargo bench -p mpreg-tests --bench lifecycle

# Forwarding, formation and failure-detection figures (nodes in process).
bench-cluster:
    cargo bench -p mpreg-tests --bench cluster

# Three nodes in one process: a chain across them, publish on one and call on another, a crash.
cluster-demo:
    rustup target add wasm32-wasip2 && cargo run -p mpreg-examples --example cluster

# Pub/sub and queues on one node: wildcards, backlog, plugin imports, DLQ, push consumer.
messaging-demo:
    rustup target add wasm32-wasip2 && cargo run -p mpreg-examples --example messaging

# Pub/sub notification and durable queue figures (node in process).
bench-messaging:
    cargo bench -p mpreg-tests --bench messaging

# Everything CI checks.
ci:
    bash .ci/run
