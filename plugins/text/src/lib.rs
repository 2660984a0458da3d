//! `text`: string functions, including `identity`, the function the benchmarks call.

use mpreg_plugin_sdk::{Command, Manifest};

mpreg_plugin_sdk::plugin! {
    wit: "../../wit",
    inline: r#"
        package mpreg-examples:text;

        world text {
            include mpreg:plugin/plugin@0.1.0;

            export identity: func(s: string) -> string;
            export upper: func(s: string) -> string;
            export lower: func(s: string) -> string;
            export reverse: func(s: string) -> string;
            export length: func(s: string) -> u32;
            export words: func(s: string) -> list<string>;
            export join: func(parts: list<string>, sep: string) -> string;
            export split-once: func(s: string, sep: string) -> option<tuple<string, string>>;
            export nth-char: func(s: string, n: u32) -> option<char>;
            export repeat: func(s: string, times: u32) -> string;
        }
    "#,
    world: "mpreg-examples:text/text",
    export: Text,
    describe: {
        Manifest::new("text", env!("CARGO_PKG_VERSION"))
            .command(Command::new("identity").describe("returns its input"))
            .command(Command::new("upper").describe("upper-cases a string"))
            .command(Command::new("lower").describe("lower-cases a string"))
            .command(Command::new("reverse").describe("reverses the characters"))
            .command(Command::new("length").describe("number of characters"))
            .command(Command::new("words").describe("splits on whitespace"))
            .command(Command::new("join").describe("joins parts with sep"))
            .command(Command::new("split_once").describe("[before, after] the first sep, or null"))
            .command(Command::new("nth_char").describe("n-th character, or null"))
            .command(Command::new("repeat").describe("s repeated, capped at 1 MiB"))
    },
}

/// Largest string `repeat` builds, so a careless call cannot ask for gigabytes.
const MAX_REPEAT_BYTES: usize = 1 << 20;

struct Text;

impl Guest for Text {
    fn identity(s: String) -> String {
        s
    }

    fn upper(s: String) -> String {
        s.to_uppercase()
    }

    fn lower(s: String) -> String {
        s.to_lowercase()
    }

    fn reverse(s: String) -> String {
        s.chars().rev().collect()
    }

    fn length(s: String) -> u32 {
        s.chars().count() as u32
    }

    fn words(s: String) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn join(parts: Vec<String>, sep: String) -> String {
        parts.join(&sep)
    }

    fn split_once(s: String, sep: String) -> Option<(String, String)> {
        s.split_once(sep.as_str())
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    }

    fn nth_char(s: String, n: u32) -> Option<char> {
        s.chars().nth(n as usize)
    }

    fn repeat(s: String, times: u32) -> String {
        let cap = MAX_REPEAT_BYTES / s.len().max(1);
        let times = (times as usize).min(cap);
        if times < 1 {
            mpreg_plugin_sdk::log::warn("repeat: result would exceed 1 MiB, returning empty");
        }
        s.repeat(times)
    }
}
