//! `badmeta`: a component that targets our world but describes itself wrongly (a version that
//! is not semver, a command naming an export that does not exist), for publish validation tests.

use mpreg_plugin_sdk::{Command, Manifest};

mpreg_plugin_sdk::wit_bindgen::generate!({
    path: "../../wit",
    inline: r#"
        package mpreg-examples:badmeta;

        world badmeta {
            include mpreg:plugin/plugin@0.1.0;

            export ping: func() -> string;
        }
    "#,
    world: "mpreg-examples:badmeta/badmeta",
    runtime_path: "mpreg_plugin_sdk::wit_bindgen::rt",
    with: {
        "mpreg:plugin/log@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::log,
        "mpreg:plugin/call@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::call,
        "mpreg:plugin/publish@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::publish,
        "mpreg:plugin/queue@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::queue,
        "mpreg:plugin/types@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::types,
    },
});

struct BadMeta;

impl Guest for BadMeta {
    fn ping() -> String {
        "pong".into()
    }
}

impl exports::mpreg::plugin::metadata::Guest for BadMeta {
    fn describe() -> Manifest {
        Manifest::new("badmeta", "banana").command(Command::new("ping"))
    }
}

export!(BadMeta);
