// `greeter`: one source built as two plugin versions (`greeter` 1.0.0 and `greeter2` 2.0.0, which
// includes this file), so tests and demos can show versions side by side.

use mpreg_plugin_sdk::{Command, Manifest};

mpreg_plugin_sdk::plugin! {
    wit: "../../wit",
    inline: r#"
        package mpreg-examples:greeter;

        world greeter {
            include mpreg:plugin/plugin@0.1.0;

            export greet: func(name: string) -> string;
        }
    "#,
    world: "mpreg-examples:greeter/greeter",
    export: Greeter,
    describe: {
        let manifest = Manifest::new("greeter", env!("CARGO_PKG_VERSION"));
        // Version 2 also runs on GPU nodes, to show `locs` picking a version.
        let manifest = if env!("CARGO_PKG_VERSION").starts_with('2') {
            manifest.resources(["gpu"])
        } else {
            manifest
        };
        manifest.command(
            Command::new("greet")
                .function_id("greeter.greet")
                .describe("says hello, naming its version"),
        )
    },
}

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        mpreg_plugin_sdk::log::info(&format!("greeting {name}"));
        format!("hello {name} from greeter {}", env!("CARGO_PKG_VERSION"))
    }
}
