//! `pipeline`: functions meant to be chained in one request, e.g.
//! `raw = ingest("1, 2, x, 3")` → `clean(raw)` → `analyze(clean)`, or fanned out with `scale`
//! and joined again with `merge`.

use mpreg_plugin_sdk::{Command, Manifest};

mpreg_plugin_sdk::plugin! {
    wit: "../../wit",
    inline: r#"
        package mpreg-examples:pipeline;

        world pipeline {
            include mpreg:plugin/plugin@0.1.0;
            /// `analyze` is pure: the node memoizes it (docs/cache.md).
            export mpreg:plugin/caching@0.1.0;

            record analysis { count: u32, sum: f64, mean: f64, min: f64, max: f64, stddev: f64 }

            export ingest: func(source: string) -> list<option<f64>>;
            export clean: func(values: list<option<f64>>) -> list<f64>;
            export analyze: func(values: list<f64>) -> analysis;
            export scale: func(values: list<f64>, factor: f64) -> list<f64>;
            export merge: func(parts: list<list<f64>>) -> list<f64>;
            export total: func(values: list<f64>) -> f64;
        }
    "#,
    world: "mpreg-examples:pipeline/pipeline",
    export: Pipeline,
    describe: {
        Manifest::new("pipeline", env!("CARGO_PKG_VERSION"))
            .resources(["cpu", "dataset-a"])
            .command(
                Command::new("ingest")
                    .describe("parses numbers from text; unreadable ones become null"),
            )
            .command(Command::new("clean").describe("drops nulls"))
            .command(Command::new("analyze").describe("count, sum, mean, min, max, stddev"))
            .command(Command::new("scale").describe("multiplies every value by factor"))
            .command(Command::new("merge").describe("concatenates lists"))
            .command(Command::new("total").describe("sum of a list"))
    },
    cacheable: {
        vec![exports::mpreg::plugin::caching::CacheRule {
            command: "analyze".into(),
            ttl_seconds: Some(600.0),
            dependencies: vec!["pipeline:stats".into()],
        }]
    },
}

struct Pipeline;

impl Guest for Pipeline {
    fn ingest(source: String) -> Vec<Option<f64>> {
        source
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(|t| t.parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect()
    }

    fn clean(values: Vec<Option<f64>>) -> Vec<f64> {
        let dropped = values.iter().filter(|v| v.is_none()).count();
        if dropped > 0 {
            mpreg_plugin_sdk::log::info(&format!("clean: dropped {dropped} unreadable values"));
        }
        values.into_iter().flatten().collect()
    }

    fn analyze(values: Vec<f64>) -> Analysis {
        let count = values.len();
        if count == 0 {
            return Analysis {
                count: 0,
                sum: 0.0,
                mean: 0.0,
                min: 0.0,
                max: 0.0,
                stddev: 0.0,
            };
        }
        let sum: f64 = values.iter().sum();
        let mean = sum / count as f64;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / count as f64;
        Analysis {
            count: count as u32,
            sum,
            mean,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            stddev: var.sqrt(),
        }
    }

    fn scale(values: Vec<f64>, factor: f64) -> Vec<f64> {
        values.into_iter().map(|v| v * factor).collect()
    }

    fn merge(parts: Vec<Vec<f64>>) -> Vec<f64> {
        parts.into_iter().flatten().collect()
    }

    fn total(values: Vec<f64>) -> f64 {
        values.iter().sum()
    }
}
