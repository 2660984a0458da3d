//! `badmeta`: a component that targets our world but describes itself wrongly (a version that
//! is not semver, a command naming an export that does not exist), for publish validation tests.

use mpreg_plugin_sdk::{Command, Manifest};

mpreg_plugin_sdk::plugin! {
    wit: "../../wit",
    inline: r#"
        package mpreg-examples:badmeta;

        world badmeta {
            include mpreg:plugin/plugin@0.1.0;

            export ping: func() -> string;
        }
    "#,
    world: "mpreg-examples:badmeta/badmeta",
    export: BadMeta,
    describe: {
        Manifest::new("badmeta", "banana").command(Command::new("ping"))
    },
}

struct BadMeta;

impl Guest for BadMeta {
    fn ping() -> String {
        "pong".into()
    }
}
