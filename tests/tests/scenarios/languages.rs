//! Plugins written in Python (componentize-py) and JavaScript (componentize-js), built by this
//! crate's build script against the same WIT world, called over WebSocket like Rust ones.

use anyhow::Result;
use mpreg_tests::{TestNode, plugin, rpc_error, test_config};
use serde_json::{Value, json};

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

/// `mpreg plugin new --lang python|js` gives typed projects (no WIT) that build (with the toolchains the build
/// script installed from PyPI and npm) into plugins that load and answer.
#[tokio::test]
async fn python_and_javascript_templates_build_into_working_plugins() -> Result<()> {
    let tools = std::path::Path::new(mpreg_tests::PLUGIN_DIR)
        .ancestors()
        .nth(2)
        .expect("plugins/target")
        .join("tools");
    let tool_dirs = vec![
        tools.join("python-venv").join("bin"),
        tools.join("js").join("node_modules").join(".bin"),
    ];
    let work = tempfile::tempdir()?;
    let sdk = std::path::Path::new(mpreg::scaffold::SDK_PATH);
    let sdk: &'static std::path::Path = sdk;
    // Both builds at once: each is partly single-threaded.
    let builds: Vec<_> = [
        ("py-template", mpreg::scaffold::Lang::Python),
        ("js-template", mpreg::scaffold::Lang::Js),
    ]
    .into_iter()
    .map(|(name, lang)| {
        let dir = work.path().join(name);
        let dirs = tool_dirs.clone();
        tokio::task::spawn_blocking(move || {
            mpreg::scaffold::new_project(&dir, name, lang, sdk)?;
            mpreg::scaffold::build_with(&dir, &dirs)
        })
    })
    .collect();
    // The templates are typed and share command names: one node each.
    for (lang, build) in ["py", "js"].into_iter().zip(builds) {
        let mut cfg = test_config();
        cfg.plugins = vec![build.await??.path.into()];
        cfg.runtime.call_timeout_ms = 10_000;
        cfg.node.data_dir = Some(
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("templates-{lang}")),
        );
        let node = TestNode::with_config(cfg).await?;
        let client = node.client().await?;
        assert_eq!(
            client.call("hello", vec![json!("ada")]).await?,
            json!(format!("hello, ada, from {lang}-template")),
        );
        // Whole numbers are JSON integers in both (a JavaScript number is an f64).
        assert_eq!(
            client.call("add", vec![json!(2), json!(3)]).await?,
            json!(5)
        );
        let too_big = if lang == "py" {
            (
                json!(9_223_372_036_854_775_807_i64),
                "does not fit in a 64-bit integer",
            )
        } else {
            (
                json!(9_007_199_254_740_991_i64),
                "RangeError: 9007199254740991 + 1 is past 2^53",
            )
        };
        let (code, details) = rpc_error(client.call("add", vec![too_big.0, json!(1)]).await);
        assert_eq!(code, 1003, "{lang}: {details}");
        assert!(details.contains(too_big.1), "{lang}: {details}");
        // A record out, an option in (null), fields in the language's spelling.
        assert_eq!(
            client
                .call("greet", vec![json!("ada"), json!(null)])
                .await?,
            json!({"text": "hello, ada!", "shouted": false}),
        );
    }
    Ok(())
}
