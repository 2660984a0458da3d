//! Host imports and per-plugin sandboxes: a plugin calling other functions through `call`, the
//! depth limit, and limits and grants given per plugin (default deny).

use anyhow::Result;
use mpreg::runtime::{DirGrant, Sandbox};
use mpreg_tests::{TestNode, plugin, rpc_error, test_config};
use serde_json::{Value, json};

#[tokio::test]
async fn a_plugin_calls_other_functions_and_runaway_recursion_hits_the_depth_limit() -> Result<()> {
    let node = TestNode::start().await?;
    let client = node.client().await?;
    // relay.double → math.add, through the host's `call` import.
    assert_eq!(client.call("double", vec![json!(21)]).await?, json!(42));
    // With a version constraint, as a client would route.
    assert_eq!(
        client
            .call("greet_version", vec![json!("ada"), json!("^1")])
            .await?,
        json!("hello ada from greeter 1.0.0")
    );
    assert_eq!(
        client
            .call("forward", vec![json!("upper"), json!("[\"abc\"]")])
            .await?,
        json!("\"ABC\"")
    );
    // Errors of the callee come back typed and readable.
    let (code, details) = rpc_error(
        client
            .call("forward", vec![json!("nope"), json!("[]")])
            .await,
    );
    assert_eq!(code, 1003);
    assert!(
        details.contains("not found: Command not found: nope"),
        "{details}"
    );
    let (_, details) = rpc_error(
        client
            .call("forward", vec![json!("upper"), json!("{}")])
            .await,
    );
    assert!(details.contains("args must be a JSON array"), "{details}");
    let (_, details) = rpc_error(
        client
            .call("forward", vec![json!("upper"), json!("[1]")])
            .await,
    );
    assert!(details.contains("bad arguments"), "{details}");

    // A plugin that calls itself forever is stopped by the depth limit, with a clear error.
    let (code, details) = rpc_error(client.call("descend", vec![json!(0)]).await);
    assert_eq!(code, 1003);
    assert!(
        details.contains("depth limit of 8"),
        "depth error expected: {details}"
    );
    // The node is fine afterwards.
    assert_eq!(client.call("double", vec![json!(2)]).await?, json!(4));
    Ok(())
}

#[tokio::test]
async fn grants_are_per_plugin_and_everything_is_denied_by_default() -> Result<()> {
    let shared = tempfile::tempdir()?;
    std::fs::write(shared.path().join("hello.txt"), "from the host")?;

    // Default: no environment, no files.
    let node = TestNode::start().await?;
    let client = node.client().await?;
    assert_eq!(client.call("env", vec![json!("HOME")]).await?, Value::Null);
    let (code, details) = rpc_error(
        client
            .call("read_file", vec![json!("/data/hello.txt")])
            .await,
    );
    assert_eq!(code, 1003);
    assert!(details.contains("/data/hello.txt"), "{details}");

    // Granted to chaos only, in the config.
    let mut cfg = test_config();
    cfg.plugins
        .retain(|p| !p.path.ends_with("mpreg_plugin_chaos.wasm"));
    let mut spec: mpreg::config::PluginSpec = plugin("chaos").into();
    spec.sandbox = Sandbox {
        env: [("MODE".to_owned(), "granted".to_owned())].into(),
        dirs: vec![DirGrant {
            host: shared.path().to_owned(),
            guest: "/data".into(),
            read_only: true,
        }],
        memory_limit_mib: Some(16),
        ..Sandbox::default()
    };
    cfg.plugins.push(spec);
    let node = TestNode::with_config(cfg).await?;
    let client = node.client().await?;
    assert_eq!(
        client.call("env", vec![json!("MODE")]).await?,
        json!("granted")
    );
    assert_eq!(client.call("env", vec![json!("HOME")]).await?, Value::Null);
    assert_eq!(
        client
            .call("read_file", vec![json!("/data/hello.txt")])
            .await?,
        json!("from the host")
    );
    // Its own memory limit (16 MiB, the node default is 64 MiB).
    let (code, details) = rpc_error(client.call("hog", vec![json!(32)]).await);
    assert_eq!(code, 1008);
    assert!(details.contains("memory limit of 16 MiB"), "{details}");
    Ok(())
}

#[tokio::test]
async fn fuel_budgets_stop_a_plugin_deterministically() -> Result<()> {
    let mut cfg = test_config();
    cfg.runtime.fuel_metering = true;
    cfg.runtime.call_timeout_ms = 5_000;
    cfg.plugins
        .retain(|p| !p.path.ends_with("mpreg_plugin_chaos.wasm"));
    let mut spec: mpreg::config::PluginSpec = plugin("chaos").into();
    spec.sandbox.fuel = Some(5_000_000);
    cfg.plugins.push(spec);
    let node = TestNode::with_config(cfg).await?;
    let client = node.client().await?;
    let (code, details) = rpc_error(client.call("spin", vec![]).await);
    assert_eq!(code, 1008);
    assert!(details.contains("fuel budget of 5000000"), "{details}");
    // Other plugins are unmetered (no budget) and work as before.
    assert_eq!(
        client.call("add", vec![json!(1), json!(2)]).await?,
        json!(3)
    );

    // Fuel without metering is a start-up error naming the setting.
    let mut cfg = test_config();
    cfg.plugins
        .retain(|p| !p.path.ends_with("mpreg_plugin_chaos.wasm"));
    let mut spec: mpreg::config::PluginSpec = plugin("chaos").into();
    spec.sandbox.fuel = Some(1);
    cfg.plugins.push(spec);
    let err = mpreg::node::start(cfg).await.err().expect("must fail");
    assert!(err.to_string().contains("fuel_metering"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_read_only_when_granted_and_never_shown() -> Result<()> {
    const VALUE: &str = "s3cr3t-value-7f1c";
    let dir = tempfile::tempdir()?;
    let (db, other) = (dir.path().join("db"), dir.path().join("other"));
    std::fs::write(&db, format!("{VALUE}\n"))?;
    std::fs::write(&other, "another")?;
    let mut cfg = test_config();
    cfg.secrets
        .insert("db".into(), mpreg::secrets::SecretSource::File(db));
    cfg.secrets
        .insert("other".into(), mpreg::secrets::SecretSource::File(other));
    let mut relay: mpreg::config::PluginSpec = plugin("relay").into();
    relay.sandbox = Sandbox {
        secrets: vec!["db".into(), "missing".into()],
        ..Sandbox::default()
    };
    cfg.plugins
        .retain(|p| !p.path.ends_with("mpreg_plugin_relay.wasm"));
    cfg.plugins.push(relay);
    let node = TestNode::with_config(cfg).await?;
    let client = node.client().await?;
    let check = |name: &str, guess: &str| {
        let c = client.clone();
        let args = vec![json!(name), json!(guess)];
        async move { c.call("check_secret", args).await }
    };
    // The trailing newline of the file is not part of the value.
    assert_eq!(check("db", VALUE).await?, json!([true, VALUE.len()]));
    assert_eq!(check("db", "wrong").await?, json!([false, VALUE.len()]));
    let (_, details) = rpc_error(check("other", "").await);
    assert!(details.contains("not granted"), "{details}");
    let (_, details) = rpc_error(check("missing", "").await);
    assert!(details.contains("not configured on this node"), "{details}");
    // Nowhere to be seen: not in describe, discovery, metrics or monitoring.
    let described = mpreg_tests::admin(&node.url, mpreg_tests::ADMIN_TOKEN, |c| {
        c.describe("relay", None)
    })
    .await?
    .to_string();
    assert!(
        described.contains("\"db\""),
        "the grant is listed by name: {described}"
    );
    let listed = client
        .call("rpc_describe", vec![json!("check_secret")])
        .await?;
    let metrics = mpreg_tests::http_get(&node.url, "/metrics", None).await?;
    let funcz = mpreg_tests::http_get(&node.url, "/monitor/funcz", None).await?;
    for text in [described, listed.to_string(), metrics, funcz] {
        assert!(!text.contains(VALUE), "the value leaked");
    }
    Ok(())
}
