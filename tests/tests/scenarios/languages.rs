//! Plugins written in Python (componentize-py) and JavaScript (componentize-js), built by this
//! crate's build script against the same WIT world, called over WebSocket like Rust ones.

use anyhow::Result;
use mpreg::client::ClientError;
use mpreg_tests::{TestNode, plugin, test_config};
use serde_json::{Value, json};

fn rpc_error(r: Result<Value, ClientError>) -> (i64, String) {
    match r {
        Err(ClientError::Rpc { code, details, .. }) => (code, details.to_string()),
        other => panic!("expected an rpc error, got {other:?}"),
    }
}

#[tokio::test]
async fn python_and_javascript_plugins_take_typed_arguments() -> Result<()> {
    let mut cfg = test_config();
    cfg.plugins = vec![
        plugin("math").into(),
        plugin("pystats").into(),
        plugin("jstext").into(),
    ];
    cfg.runtime.call_timeout_ms = 10_000;
    // Compiling an 18 MB Python and a 12 MB JavaScript component takes a while; a data directory
    // that outlives the test run keeps the compiled code for the next run.
    cfg.node.data_dir = Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("languages"));
    let node = TestNode::with_config(cfg).await?;
    let client = node.client().await?;

    // Python: lists of floats in, a record out; a `result` error; a u8 parameter; the call import.
    assert_eq!(
        client.call("py_mean", vec![json!([1.0, 2.0, 4.5])]).await?,
        json!(2.5)
    );
    assert_eq!(
        client
            .call("py_summarize", vec![json!([1, 2, 3, 4])])
            .await?,
        json!({"count": 4, "mean": 2.5, "median": 2.5, "stdev": 1.2909944487358056})
    );
    assert_eq!(
        client.call("py_summarize", vec![json!([7])]).await?["stdev"],
        Value::Null
    );
    assert_eq!(
        client
            .call("py_shout", vec![json!("hi there"), json!(2)])
            .await?,
        json!("Hi There Hi There")
    );
    assert_eq!(
        client
            .call("py_add_via_node", vec![json!(40), json!(2)])
            .await?,
        json!(42)
    );
    let (code, details) = rpc_error(client.call("py_mean", vec![json!([])]).await);
    assert_eq!(code, 1003);
    assert!(details.contains("mean of an empty list"), "{details}");
    let (code, details) = rpc_error(client.call("py_shout", vec![json!("x"), json!(300)]).await);
    assert_eq!(code, 1003);
    assert!(
        details.contains("argument 'times': expected u8"),
        "{details}"
    );
    let (_, details) = rpc_error(client.call("py_mean", vec![json!(["a"])]).await);
    assert!(details.contains("argument 'xs'"), "{details}");

    // JavaScript.
    assert_eq!(
        client
            .call("js_slugify", vec![json!("Hello, World!")])
            .await?,
        json!("hello-world")
    );
    assert_eq!(
        client
            .call("js_word_count", vec![json!("  a b   c ")])
            .await?,
        json!(3)
    );
    assert_eq!(
        client
            .call(
                "js_wrap",
                vec![json!("the quick brown fox jumps"), json!(10)]
            )
            .await?,
        json!(["the quick", "brown fox", "jumps"])
    );
    assert_eq!(
        client
            .call("js_json_keys", vec![json!("{\"a\": 1, \"b\": 2}")])
            .await?,
        json!(["a", "b"])
    );
    let (code, details) = rpc_error(client.call("js_json_keys", vec![json!("[1]")]).await);
    assert_eq!(code, 1003);
    assert!(details.contains("not a JSON object"), "{details}");
    let (code, details) = rpc_error(client.call("js_wrap", vec![json!("x"), json!(-1)]).await);
    assert_eq!(code, 1003);
    assert!(
        details.contains("argument 'width': expected u32"),
        "{details}"
    );

    // Their metadata came from inside the components, like a Rust plugin's.
    let listed = client
        .call("rpc_describe", vec![json!("py_summarize")])
        .await?;
    assert!(
        listed.to_string().contains("pystats.py_summarize"),
        "{listed}"
    );
    Ok(())
}
