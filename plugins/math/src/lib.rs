//! `math`: numeric functions covering every WIT type family the host converts (integers, floats,
//! bool, record, list, tuple, option, result, enum, variant, flags).

use mpreg_plugin_sdk::{Command, Manifest};

mpreg_plugin_sdk::plugin! {
    wit: "../../wit",
    inline: r#"
        package mpreg-examples:math;

        world math {
            include mpreg:plugin/plugin@0.1.0;

            record point { x: f64, y: f64 }
            record summary { count: u32, mean: f64, min: f64, max: f64 }
            record inner { value: s32 }
            record dict { inner: inner, %list: list<s32> }
            enum sign { negative, zero, positive }
            variant shape { circle(f64), rect(tuple<f64, f64>), dot }
            flags permissions { read, write, exec }

            export add: func(a: s32, b: s32) -> s32;
            export mul: func(a: f64, b: f64) -> f64;
            export fib: func(n: u32) -> result<u64, string>;
            export centroid: func(points: list<point>) -> point;
            export stats: func(values: list<f64>) -> summary;
            export safe-div: func(a: f64, b: f64) -> option<f64>;
            export divmod: func(a: s64, b: s64) -> option<tuple<s64, s64>>;
            export classify: func(n: s64) -> sign;
            export area: func(s: shape) -> f64;
            export grant: func(p: permissions, write: bool) -> permissions;
            export is-even: func(n: u64) -> bool;
            export mkdict: func(n: s32) -> dict;
        }
    "#,
    world: "mpreg-examples:math/math",
    export: Math,
    describe: {
        Manifest::new("math", env!("CARGO_PKG_VERSION"))
            .resources(["cpu"])
            .command(Command::new("add").describe("a + b on 32-bit integers (wrapping)"))
            .command(Command::new("mul").describe("a * b"))
            .command(
                Command::new("fib")
                    .function_id("math.fib")
                    .describe("n-th Fibonacci number; error past n = 93"),
            )
            .command(Command::new("centroid").describe("mean point of a list of {x, y}"))
            .command(Command::new("stats").describe("count, mean, min and max of a list"))
            .command(Command::new("safe_div").describe("a / b, or null when b is 0"))
            .command(Command::new("divmod").describe("[a / b, a % b], or null when b is 0"))
            .command(Command::new("classify").describe("sign of n: negative, zero or positive"))
            .command(Command::new("area").describe("area of {circle: r} | {rect: [w, h]} | dot"))
            .command(Command::new("grant").describe("sets or clears the write flag"))
            .command(Command::new("is_even").describe("whether n is even"))
            .command(Command::new("mkdict").describe("{inner: {value: n}, list: [1, 2, 3]}"))
    },
}

struct Math;

impl Guest for Math {
    fn add(a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }

    fn mul(a: f64, b: f64) -> f64 {
        a * b
    }

    fn fib(n: u32) -> Result<u64, String> {
        let (mut a, mut b) = (0u64, 1u64);
        for _ in 0..n {
            let next = a
                .checked_add(b)
                .ok_or_else(|| format!("fib({n}) overflows u64 (largest supported n is 93)"))?;
            a = b;
            b = next;
        }
        Ok(a)
    }

    fn centroid(points: Vec<Point>) -> Point {
        if points.is_empty() {
            return Point { x: 0.0, y: 0.0 };
        }
        let n = points.len() as f64;
        Point {
            x: points.iter().map(|p| p.x).sum::<f64>() / n,
            y: points.iter().map(|p| p.y).sum::<f64>() / n,
        }
    }

    fn stats(values: Vec<f64>) -> Summary {
        let count = values.len() as u32;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        };
        Summary {
            count,
            mean,
            min: if values.is_empty() { 0.0 } else { min },
            max: if values.is_empty() { 0.0 } else { max },
        }
    }

    fn safe_div(a: f64, b: f64) -> Option<f64> {
        (b != 0.0).then(|| a / b)
    }

    fn divmod(a: i64, b: i64) -> Option<(i64, i64)> {
        Some((a.checked_div(b)?, a.checked_rem(b)?))
    }

    fn classify(n: i64) -> Sign {
        match n {
            ..0 => Sign::Negative,
            0 => Sign::Zero,
            _ => Sign::Positive,
        }
    }

    fn area(s: Shape) -> f64 {
        match s {
            Shape::Circle(r) => std::f64::consts::PI * r * r,
            Shape::Rect((w, h)) => w * h,
            Shape::Dot => 0.0,
        }
    }

    fn grant(p: Permissions, write: bool) -> Permissions {
        if write {
            p | Permissions::WRITE
        } else {
            p - Permissions::WRITE
        }
    }

    fn is_even(n: u64) -> bool {
        n.is_multiple_of(2)
    }

    fn mkdict(n: i32) -> Dict {
        Dict {
            inner: Inner { value: n },
            list: vec![1, 2, 3],
        }
    }
}
