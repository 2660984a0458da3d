//! Plugin lifecycle over the network: publish over HTTP, hot swap and retire under load with zero
//! failed calls, restart with the store, authentication, and every bad upload.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mpreg::protocol::RpcCommand;
use mpreg_tests::{ADMIN_TOKEN, TestNode, admin, plugin, publish, test_config};
use serde_json::{Value, json};

/// A node with no plugins of its own and a data directory.
fn empty_config(data: &std::path::Path) -> mpreg::config::NodeConfig {
    let mut cfg = test_config();
    cfg.plugins.clear();
    cfg.node.data_dir = Some(data.to_owned());
    cfg
}

fn bytes(name: &str) -> Result<Vec<u8>> {
    std::fs::read(plugin(name)).with_context(|| format!("plugin {name}"))
}

/// Tallies of the load loop.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    v1: AtomicU64,
    v2: AtomicU64,
}

/// `clients` connections each calling `greet` in a loop until `stop` (bounded by count and time).
fn spawn_load(
    url: &str,
    clients: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<Result<()>>> {
    (0..clients)
        .map(|_| {
            let (url, stop, tally) = (url.to_owned(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                let client = mpreg::client::Client::connect(&url).await?;
                let until = Instant::now() + Duration::from_secs(60);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && Instant::now() < until && n < 200_000 {
                    n += 1;
                    match client.call("greet", vec![json!("load")]).await {
                        Ok(Value::String(s)) => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                            if s.ends_with("1.0.0") {
                                tally.v1.fetch_add(1, Ordering::Relaxed);
                            } else if s.ends_with("2.0.0") {
                                tally.v2.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        other => {
                            eprintln!("failed call during swap: {other:?}");
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(())
            })
        })
        .collect()
}

async fn greet(url: &str, version: Option<&str>) -> Result<Value, mpreg::client::ClientError> {
    let client = mpreg::client::Client::connect(url).await?;
    let mut cmd = RpcCommand::new("g", "greet", vec![json!("probe")]);
    cmd.version_constraint = version.map(str::to_owned);
    client.call_command(cmd).await
}

#[tokio::test]
async fn publish_hot_swap_retire_under_load_then_restart() -> Result<()> {
    let data = tempfile::tempdir()?;
    let node = TestNode::with_config(empty_config(data.path())).await?;

    // v1 over HTTP, then callable over WebSocket. Both versions reuse instances, so the swap
    // and the retire happen while warm instances of v1 wait for calls.
    let serial = mpreg::sandbox::Sandbox {
        instance_reuse: Some(mpreg::sandbox::InstanceReuse::Serial),
        ..Default::default()
    };
    let publish_serial = |bytes: Vec<u8>| {
        let serial = serial.clone();
        admin(&node.url, ADMIN_TOKEN, move |c| {
            c.publish(&bytes, Some(&serial), &mut |_| {})
        })
    };
    let v1 = publish_serial(bytes("greeter")?).await?;
    assert_eq!(v1["outcome"], "published", "{v1}");
    assert_eq!(v1["version"], "1.0.0");
    assert_eq!(
        greet(&node.url, None).await?,
        json!("hello probe from greeter 1.0.0")
    );

    // v2 while calls run: none fails, and calls made after the publish reply reach v2.
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let load = spawn_load(&node.url, 8, stop.clone(), tally.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v2 = publish_serial(bytes("greeter2")?).await?;
    assert_eq!(v2["version"], "2.0.0", "{v2}");
    assert_eq!(
        greet(&node.url, None).await?,
        json!("hello probe from greeter 2.0.0")
    );
    // Both versions side by side: a constraint still reaches v1.
    assert_eq!(
        greet(&node.url, Some("^1")).await?,
        json!("hello probe from greeter 1.0.0")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Retire v1 under load: drained, still zero failures.
    let retired = admin(&node.url, ADMIN_TOKEN, |c| c.retire("greeter", "1.0.0")).await?;
    assert_eq!(retired["drained"], true, "{retired}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await??;
    }
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    ensure!(
        failed == 0,
        "{failed} calls failed during the swap ({ok} succeeded)"
    );
    ensure!(ok > 100, "the load loop barely ran: {ok} calls");
    ensure!(tally.v1.load(Ordering::Relaxed) > 0 && tally.v2.load(Ordering::Relaxed) > 0);
    let err = greet(&node.url, Some("^1"))
        .await
        .expect_err("v1 is retired");
    assert_eq!(err.code(), Some(1001), "{err}");

    // describe: metadata, signature, sha256, size, load time, call counts.
    let d = admin(&node.url, ADMIN_TOKEN, |c| c.describe("greeter", None)).await?;
    assert_eq!(d["version"], "2.0.0");
    assert_eq!(
        d["functions"][0]["signature"],
        "func(name: string) -> string"
    );
    assert_eq!(d["sha256"], v2["sha256"]);
    assert!(d["calls"].as_u64().unwrap_or(0) > 0, "{d}");
    assert_eq!(d["instance_reuse"], "serial", "{d}");
    assert!(d["reused_calls"].as_u64().unwrap_or(0) > 0, "{d}");
    assert!(d["size"].as_u64().unwrap_or(0) > 1000, "{d}");
    assert!(d["load_ms"].as_f64().is_some(), "{d}");
    let list = admin(&node.url, ADMIN_TOKEN, |c| c.list()).await?;
    let versions: Vec<(String, bool)> = list["plugins"]
        .as_array()
        .context("list")?
        .iter()
        .map(|p| {
            (
                p["version"].as_str().unwrap_or("").to_owned(),
                p["active"] == true,
            )
        })
        .collect();
    assert_eq!(
        versions,
        [("2.0.0".to_owned(), true), ("1.0.0".to_owned(), false)]
    );

    // Restart on the same data directory: v2 is back, v1 stays retired; compiled code is cached.
    node.handle.clone().shutdown().await;
    drop(node);
    let node = TestNode::with_config(empty_config(data.path())).await?;
    assert_eq!(
        greet(&node.url, None).await?,
        json!("hello probe from greeter 2.0.0")
    );
    assert_eq!(
        greet(&node.url, Some("^1"))
            .await
            .expect_err("retired")
            .code(),
        Some(1001)
    );
    // Re-publishing retired bytes brings the version back from the compile cache.
    let again = publish(&node.url, bytes("greeter")?).await?;
    assert_eq!(again["outcome"], "reactivated", "{again}");
    assert_eq!(again["code"], "cache", "{again}");
    assert_eq!(
        greet(&node.url, Some("^1")).await?,
        json!("hello probe from greeter 1.0.0")
    );
    // Publishing the same bytes again changes nothing.
    let same = publish(&node.url, bytes("greeter")?).await?;
    assert_eq!(same["outcome"], "unchanged", "{same}");
    Ok(())
}

#[tokio::test]
async fn admin_api_refuses_without_the_token_and_stores_nothing() -> Result<()> {
    let data = tempfile::tempdir()?;
    let node = TestNode::with_config(empty_config(data.path())).await?;
    let wasm = bytes("greeter")?;
    let w = wasm.clone();
    let none = admin(&node.url, "", move |c| c.publish(&w, None, &mut |_| {}))
        .await
        .expect_err("no token");
    assert_eq!(none.status(), Some(401), "{none}");
    let w = wasm.clone();
    let wrong = admin(&node.url, "not-the-token-at-all", move |c| {
        c.publish(&w, None, &mut |_| {})
    })
    .await
    .expect_err("wrong token");
    assert_eq!(wrong.status(), Some(403), "{wrong}");
    assert!(wrong.to_string().contains("nothing was changed"), "{wrong}");
    let listing = admin(&node.url, "nope", |c| c.list())
        .await
        .expect_err("list needs it too");
    assert_eq!(listing.status(), Some(403));
    let retire = admin(&node.url, "", |c| c.retire("greeter", "1.0.0"))
        .await
        .expect_err("retire");
    assert_eq!(retire.status(), Some(401));
    let list = admin(&node.url, ADMIN_TOKEN, |c| c.list()).await?;
    assert_eq!(list["plugins"], json!([]), "nothing stored");
    let err = greet(&node.url, None).await.expect_err("nothing loaded");
    assert_eq!(err.code(), Some(1001));

    // Without a configured token one is generated, shown once, and works; a restart keeps it.
    let data2 = tempfile::tempdir()?;
    let mut cfg = empty_config(data2.path());
    cfg.admin.token = None;
    let node2 = TestNode::with_config(cfg.clone()).await?;
    let token = node2
        .handle
        .generated_admin_token()
        .context("a generated token")?
        .to_owned();
    let t = token.clone();
    admin(&node2.url, &t, |c| c.list()).await?;
    node2.handle.clone().shutdown().await;
    drop(node2);
    let node3 = TestNode::with_config(cfg).await?;
    assert!(
        node3.handle.generated_admin_token().is_none(),
        "shown only once"
    );
    admin(&node3.url, &token, |c| c.list()).await?;
    Ok(())
}

/// Appends a custom section: different bytes (and sha256), same code and manifest.
fn with_custom_section(mut wasm: Vec<u8>) -> Vec<u8> {
    let name = b"note";
    let payload = b"rebuilt";
    wasm.push(0);
    wasm.push((1 + name.len() + payload.len()) as u8);
    wasm.push(name.len() as u8);
    wasm.extend_from_slice(name);
    wasm.extend_from_slice(payload);
    wasm
}

#[tokio::test]
async fn every_bad_upload_is_refused_with_a_reason_and_stores_nothing() -> Result<()> {
    let data = tempfile::tempdir()?;
    let mut cfg = empty_config(data.path());
    cfg.admin.max_upload_mib = 1;
    let node = TestNode::with_config(cfg).await?;
    let refused = |r: Result<Value, mpreg::admin_client::AdminError>| match r {
        Ok(v) => panic!("accepted: {v}"),
        Err(mpreg::admin_client::AdminError::Refused {
            status,
            kind,
            message,
        }) => (status, kind, message),
        Err(e) => panic!("transport error: {e}"),
    };

    let (status, kind, msg) = refused(publish(&node.url, b"hello, not wasm".to_vec()).await);
    assert_eq!((status, kind.as_str()), (400, "not_a_component"), "{msg}");
    assert!(msg.contains("not a WebAssembly component"), "{msg}");

    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let (status, kind, msg) = refused(publish(&node.url, core_module).await);
    assert_eq!((status, kind.as_str()), (400, "not_a_component"), "{msg}");
    assert!(msg.contains("core WebAssembly module"), "{msg}");

    let broken = b"\0asm\x0d\0\x01\0\x07\xff\xff".to_vec();
    let (status, kind, msg) = refused(publish(&node.url, broken).await);
    assert_eq!((status, kind.as_str()), (400, "not_loadable"), "{msg}");

    // A valid component that does not target our world (no metadata export).
    let empty_component = b"\0asm\x0d\0\x01\0".to_vec();
    let (status, kind, msg) = refused(publish(&node.url, empty_component).await);
    assert_eq!((status, kind.as_str()), (422, "wrong_world"), "{msg}");

    let (status, kind, msg) = refused(publish(&node.url, bytes("badmeta")?).await);
    assert_eq!((status, kind.as_str()), (422, "invalid_metadata"), "{msg}");
    assert!(msg.contains("banana"), "{msg}");

    let (status, kind, msg) = refused(publish(&node.url, vec![0u8; 2 << 20]).await);
    assert_eq!((status, kind.as_str()), (413, "too_large"), "{msg}");

    let w = bytes("greeter")?;
    let (status, kind, msg) = refused(
        admin(&node.url, ADMIN_TOKEN, move |c| {
            let sandbox = mpreg::runtime::Sandbox {
                memory_limit_mib: Some(1 << 20),
                ..Default::default()
            };
            c.publish(&w, Some(&sandbox), &mut |_| {})
        })
        .await,
    );
    assert_eq!((status, kind.as_str()), (400, "invalid_sandbox"), "{msg}");

    let list = admin(&node.url, ADMIN_TOKEN, |c| c.list()).await?;
    assert_eq!(
        list["plugins"],
        json!([]),
        "nothing stored after bad uploads"
    );

    // A version, once published, is bound to its bytes.
    publish(&node.url, bytes("greeter")?).await?;
    let (status, kind, msg) =
        refused(publish(&node.url, with_custom_section(bytes("greeter")?)).await);
    assert_eq!((status, kind.as_str()), (409, "conflict"), "{msg}");
    assert!(
        msg.contains("already published with different bytes"),
        "{msg}"
    );
    let list = admin(&node.url, ADMIN_TOKEN, |c| c.list()).await?;
    assert_eq!(list["plugins"].as_array().map(Vec::len), Some(1), "{list}");
    let (status, _, _) =
        refused(admin(&node.url, ADMIN_TOKEN, |c| c.retire("greeter", "9.9.9")).await);
    assert_eq!(status, 404);
    // A path segment that is not a version is a bad request, not a missing plugin.
    for call in [true, false] {
        let r = admin(&node.url, ADMIN_TOKEN, move |c| {
            if call {
                c.retire("greeter", "not-a-version").map(|r| json!(r))
            } else {
                c.describe("greeter", Some("1.x.y"))
            }
        })
        .await;
        let (status, kind, msg) = refused(r);
        assert_eq!((status, kind.as_str()), (400, "invalid_version"), "{msg}");
    }
    Ok(())
}

/// Sends one raw HTTP request to the admin API and returns the status code.
async fn raw_status(addr: std::net::SocketAddr, authorization: &str) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET /admin/plugins HTTP/1.1\r\nHost: node\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply)).await??;
    let head = String::from_utf8_lossy(&reply);
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status line")?
        .parse()?;
    Ok(status)
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_the_token_is_not() -> Result<()> {
    let node = TestNode::start().await?;
    let addr = node.handle.addr();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let status = raw_status(addr, &format!("{scheme} {ADMIN_TOKEN}")).await?;
        assert_eq!(status, 200, "scheme {scheme}");
    }
    let wrong = raw_status(addr, &format!("bearer {}", ADMIN_TOKEN.to_uppercase())).await?;
    assert_eq!(wrong, 403);
    assert_eq!(raw_status(addr, ADMIN_TOKEN).await?, 401, "no scheme");
    assert_eq!(
        raw_status(addr, &format!("Basic {ADMIN_TOKEN}")).await?,
        401
    );
    Ok(())
}

/// The refusal of a publish: status, kind and message.
fn refusal(r: Result<Value, mpreg::admin_client::AdminError>) -> Result<(u16, String, String)> {
    match r {
        Ok(v) => anyhow::bail!("accepted: {v}"),
        Err(mpreg::admin_client::AdminError::Refused {
            status,
            kind,
            message,
        }) => Ok((status, kind, message)),
        Err(e) => anyhow::bail!("transport error: {e}"),
    }
}

/// `raw` with an `mpreg-manifest` section naming `name` and `version` (what `plugin build` writes).
fn stamped(raw: &[u8], name: &str, version: &str) -> Vec<u8> {
    let stamp = mpreg::runtime::stamp::Stamp {
        name: name.into(),
        version: version.into(),
        ..Default::default()
    };
    mpreg::runtime::stamp::write(raw, &stamp)
}

#[tokio::test]
async fn a_stamped_duplicate_is_refused_before_compiling_and_a_dev_node_replaces_in_place()
-> Result<()> {
    let greeter = bytes("greeter")?;
    let data = tempfile::tempdir()?;
    let node = TestNode::with_config(empty_config(data.path())).await?;

    // The stamp's version is the one served, whatever describe says.
    let v3 = publish(&node.url, stamped(&greeter, "greeter", "3.0.0")).await?;
    assert_eq!(v3["version"], "3.0.0", "{v3}");
    greet(&node.url, Some("=3.0.0")).await?;

    // Other bytes under that version: refused without compiling them.
    let compiles =
        |s: &prometheus_parse::Scrape| mpreg_tests::sample(s, "mpreg_compile_seconds", &[]);
    let before = compiles(&mpreg_tests::scrape(&node.url).await?);
    let other = stamped(&with_custom_section(greeter.clone()), "greeter", "3.0.0");
    let (status, kind, msg) = refusal(publish(&node.url, other.clone()).await)?;
    assert_eq!((status, kind.as_str()), (409, "conflict"), "{msg}");
    assert!(
        msg.contains("mpreg.toml") && msg.contains("mpreg dev"),
        "{msg}"
    );
    let after = compiles(&mpreg_tests::scrape(&node.url).await?);
    assert_eq!(before, after, "the refused bytes were compiled");

    // A stamp must name the plugin the code describes.
    let (status, kind, msg) =
        refusal(publish(&node.url, stamped(&greeter, "grater", "1.0.0")).await)?;
    assert_eq!((status, kind.as_str()), (422, "invalid_metadata"), "{msg}");
    assert!(msg.contains("grater") && msg.contains("greeter"), "{msg}");
    // A stamp that is not a manifest is refused with the section's name.
    let mut junk = greeter.clone();
    let (name, payload) = (b"mpreg-manifest", b"not json");
    junk.extend([0, (1 + name.len() + payload.len()) as u8, name.len() as u8]);
    junk.extend_from_slice(name);
    junk.extend_from_slice(payload);
    let (status, _, msg) = refusal(publish(&node.url, junk).await)?;
    assert!(
        status >= 400 && msg.contains("mpreg-manifest"),
        "{status} {msg}"
    );
    drop(node);

    // A dev node replaces the version in place, under load, without a failed call.
    let dev_data = tempfile::tempdir()?;
    let mut cfg = empty_config(dev_data.path());
    cfg.admin.replace_versions = true;
    let dev = TestNode::with_config(cfg).await?;
    let first = publish(&dev.url, stamped(&greeter, "greeter", "3.0.0")).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let load = spawn_load(&dev.url, 2, stop.clone(), tally.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = publish(&dev.url, other).await?;
    ensure!(first["sha256"] != second["sha256"], "{first} {second}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await??;
    }
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0);
    ensure!(tally.ok.load(Ordering::Relaxed) > 0, "no calls ran");
    let d = admin(&dev.url, ADMIN_TOKEN, |c| {
        c.describe("greeter", Some("3.0.0"))
    })
    .await?;
    assert_eq!(d["sha256"], second["sha256"], "{d}");
    let list = admin(&dev.url, ADMIN_TOKEN, |c| c.list()).await?;
    assert_eq!(list["plugins"].as_array().map(Vec::len), Some(1), "{list}");
    Ok(())
}
