// `greeter`: one source built as two plugin versions (`greeter` 1.0.0 and `greeter2` 2.0.0, which
// includes this file), so tests and demos can show versions side by side.

use mpreg_plugin_sdk::{Command, Manifest};

mpreg_plugin_sdk::wit_bindgen::generate!({
    path: "../../wit",
    inline: r#"
        package mpreg-examples:greeter;

        world greeter {
            include mpreg:plugin/plugin@0.1.0;

            export greet: func(name: string) -> string;
        }
    "#,
    world: "mpreg-examples:greeter/greeter",
    runtime_path: "mpreg_plugin_sdk::wit_bindgen::rt",
    with: {
        "mpreg:plugin/log@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::log,
        "mpreg:plugin/call@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::call,
        "mpreg:plugin/publish@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::publish,
        "mpreg:plugin/queue@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::queue,
        "mpreg:plugin/types@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::types,
    },
});

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        mpreg_plugin_sdk::log::info(&format!("greeting {name}"));
        format!("hello {name} from greeter {}", env!("CARGO_PKG_VERSION"))
    }
}

impl exports::mpreg::plugin::metadata::Guest for Greeter {
    fn describe() -> Manifest {
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
    }
}

export!(Greeter);
