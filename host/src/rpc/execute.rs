//! Runs a planned request: every command starts as soon as what it waits for is done,
//! independent commands run concurrently, the first failure fails the request and drops (so
//! cancels) everything still running, and the whole request is bounded by its deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{Map, Value};
use tracing::Instrument;

use super::budget::{Budget, OverBudget, encoded_len, substituted_len};
use super::plan::{self, Plan};
pub use super::port::{BoxFuture, Call, CallError, Dispatcher};
use super::substitute::{Results, substitute, unresolved};
use super::version::VersionConstraint;
use crate::abort::AbortOnDrop;
use crate::auth::Principal;
use crate::protocol::{
    ExecutionSummary, IntermediateResult, RpcCommand, RpcErrorBody, RpcRequest, RpcResponse, codes,
};

/// Answers a one-command request on the spot when its target is immediate (built-in `echo`,
/// say): no planner tables, timer or task. Same replies as [`execute`]; `None` means "use it".
pub fn execute_immediate(
    req: &RpcRequest,
    dispatcher: &dyn Dispatcher,
    principal: &Principal,
) -> Option<RpcResponse> {
    if req.cmds.len() != 1
        || req.return_intermediate_results
        || req.include_execution_summary
        || req.stream_intermediate_results
    {
        return None;
    }
    let u = || req.u.clone();
    // A self-reference is a cycle even for one command.
    if let Err(e) = plan::plan(&req.cmds) {
        return Some(error_reply(u(), codes::EXECUTION_FAILED, e.to_string()));
    }
    let c = &req.cmds[0];
    let constraint = match VersionConstraint::parse_optional(c.version_constraint.as_deref()) {
        Ok(vc) => vc,
        Err(e) => {
            return Some(error_reply(
                u(),
                codes::EXECUTION_FAILED,
                format!("command '{}': {e}", c.name),
            ));
        }
    };
    Some(
        match dispatcher.immediate(c, constraint.as_ref(), &req.u, principal)? {
            Ok(v) => {
                let mut r = Map::with_capacity(1);
                r.insert(c.name.clone(), v);
                RpcResponse::ok(u(), r)
            }
            Err(f) => error_reply(u(), f.code(), failure_details(c, f)),
        },
    )
}

/// Receives each completed level, in level order.
pub type LevelHook = Box<dyn FnMut(&IntermediateResult) + Send>;

/// What is told a request's number of dependency levels.
pub type LevelsHook = Box<dyn FnOnce(usize) + Send>;

/// A running command: its index, when it started, and how it ended.
type Running = BoxFuture<(usize, Duration, Result<Value, CallError>)>;

/// Per-request options the session decides.
pub struct ExecOptions {
    /// Deadline of the whole request.
    pub deadline: Duration,
    /// Called with each level's results, in level order, as levels complete.
    pub on_level: Option<LevelHook>,
    /// Bytes the request's results and running commands' substituted arguments may hold at
    /// once (`server.max_request_bytes`); past it the request fails with 1008.
    pub max_bytes: usize,
    /// Told the number of dependency levels of the request once it is planned (metrics).
    pub levels: Option<LevelsHook>,
    /// Who sent it: every command is checked against its policy before any runs.
    pub principal: Principal,
}

/// The 1008 of a request past its byte budget, at command `name`.
fn over_budget(o: OverBudget, name: &str) -> CallError {
    CallError::ResourceLimit(format!(
        "the request would hold {} bytes of results and arguments at command '{name}', over its \
         budget of {} bytes (server.max_request_bytes)",
        o.wanted, o.limit
    ))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Results of one command's visible dependencies.
struct Visible<'a> {
    cmds: &'a [RpcCommand],
    results: &'a [Option<Value>],
    allowed: Vec<usize>,
}

impl Results for Visible<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.allowed
            .iter()
            .find(|&&j| self.cmds[j].name == name)
            .and_then(|&j| self.results[j].as_ref())
    }
}

/// The reply details of a failed command. MPREG's exact 1001 text (`Command not found: <fun>`)
/// is kept as is; every other failure names the command and its function.
fn failure_details(c: &RpcCommand, f: CallError) -> String {
    if let CallError::NotFound(cause) = f {
        cause
    } else {
        format!("command '{}' (fun '{}'): {}", c.name, c.fun, f.cause())
    }
}

fn error_reply(u: String, code: i64, details: String) -> RpcResponse {
    RpcResponse::err(u, RpcErrorBody::new(code, details))
}

/// Executes `req` and builds its reply (success or error; never panics on bad input).
pub async fn execute(
    req: RpcRequest,
    dispatcher: Arc<dyn Dispatcher>,
    opts: ExecOptions,
) -> RpcResponse {
    let u = req.u.clone();
    let deadline = opts.deadline;
    match tokio::time::timeout(deadline, run(req, dispatcher, opts)).await {
        Ok(reply) => reply,
        Err(_) => RpcResponse::err(
            u,
            RpcErrorBody {
                code: codes::DEADLINE_EXCEEDED,
                message: "Deadline exceeded".into(),
                details: Value::String(format!(
                    "request exceeded its deadline of {} ms",
                    deadline.as_millis()
                )),
            },
        ),
    }
}

async fn run(
    req: RpcRequest,
    dispatcher: Arc<dyn Dispatcher>,
    mut opts: ExecOptions,
) -> RpcResponse {
    let started = Instant::now();
    let u = req.u.clone();
    let plan = match plan::plan(&req.cmds) {
        Ok(p) => p,
        Err(e) => return error_reply(u, codes::EXECUTION_FAILED, e.to_string()),
    };
    if let Some(h) = opts.levels.take() {
        h(plan.levels.len());
    }
    let request_id: Arc<str> = u.as_str().into();
    let mut constraints = Vec::with_capacity(req.cmds.len());
    for c in &req.cmds {
        // A request of 100,000 commands is checked and started in slices: other tasks on this
        // worker get their turn in between.
        tokio::task::consume_budget().await;
        let vc = match VersionConstraint::parse_optional(c.version_constraint.as_deref()) {
            Ok(vc) => vc,
            Err(e) => {
                return error_reply(
                    u,
                    codes::EXECUTION_FAILED,
                    format!("command '{}': {e}", c.name),
                );
            }
        };
        // With one command, dispatching it fails just as fast: resolve once, not twice.
        if req.cmds.len() == 1 {
            constraints.push(vc);
            continue;
        }
        let probe = Call {
            command: c.clone(),
            constraint: vc.clone(),
            request_id: request_id.clone(),
            depth: 0,
            deadline: None,
            principal: opts.principal.clone(),
        };
        if let Err(f) = dispatcher.check(&probe) {
            return error_reply(u, f.code(), failure_details(c, f));
        }
        constraints.push(vc);
    }

    let n = req.cmds.len();
    let spawn = n > 1;
    let mut waiting: Vec<usize> = (0..n).map(|i| plan.waits_for(i).count()).collect();
    let mut dependents = vec![Vec::new(); n];
    for i in 0..n {
        for d in plan.waits_for(i) {
            dependents[d].push(i);
        }
    }
    let mut results: Vec<Option<Value>> = vec![None; n];
    let mut spans: Vec<(Duration, Duration)> = vec![(Duration::ZERO, Duration::ZERO); n];
    let mut level_left: Vec<usize> = plan.levels.iter().map(Vec::len).collect();
    let mut level_done_at: Vec<Option<Duration>> = vec![None; plan.levels.len()];
    let mut emitted = 0usize;
    let want_intermediate = req.return_intermediate_results;
    let mut intermediate = Vec::new();
    let mut accumulated = Map::new();
    let mut accumulated_len = 0usize;

    let deadline_at = started + opts.deadline;
    let mut running: FuturesUnordered<Running> = FuturesUnordered::new();
    // One command cannot amplify (no references); its reply is bounded when it is encoded.
    let mut budget = (n > 1).then(|| Budget::new(opts.max_bytes));
    let mut args_held = vec![0usize; n];
    let mut result_len = vec![0usize; n];
    // A result nobody waits for any more, that is not part of the reply and not reported per
    // level, is dropped (and given back to the budget) once its last dependent has started.
    let in_reply: Vec<bool> = {
        let mut v = vec![false; n];
        plan.last_level().iter().for_each(|&i| v[i] = true);
        v
    };
    let keep_all = want_intermediate || opts.on_level.is_some();
    let mut unstarted_dependents: Vec<usize> = dependents.iter().map(Vec::len).collect();
    let principal = opts.principal.clone();
    let start_command = |i: usize,
                         results: &[Option<Value>],
                         budget: &mut Option<Budget>,
                         args_held: &mut [usize]|
     -> Result<Running, CallError> {
        let mut command = req.cmds[i].clone();
        let visible = Visible {
            cmds: &req.cmds,
            results,
            allowed: plan.waits_for(i).collect(),
        };
        if let Some(b) = budget.as_mut() {
            // Sized before anything is copied: past the budget, nothing is built.
            let bytes = command
                .args
                .iter()
                .chain(command.kwargs.values())
                .map(|a| substituted_len(a, &visible))
                .sum::<usize>();
            b.take(bytes)
                .map_err(|o| over_budget(o, &req.cmds[i].name))?;
            args_held[i] = bytes;
        }
        if req.strict_references
            && let Some(why) = command
                .args
                .iter()
                .chain(command.kwargs.values())
                .find_map(|a| unresolved(a, &visible))
        {
            return Err(CallError::Malformed(format!("{why} (strict_references)")));
        }
        command
            .args
            .iter_mut()
            .for_each(|a| substitute(a, &visible));
        command
            .kwargs
            .values_mut()
            .for_each(|a| substitute(a, &visible));
        let call = Call {
            command,
            constraint: constraints[i].clone(),
            request_id: request_id.clone(),
            depth: 0,
            deadline: Some(deadline_at),
            principal: principal.clone(),
        };
        let begun = started.elapsed();
        let span = tracing::debug_span!(
            target: "mpreg::command",
            "command",
            request_id = %request_id,
            command = %call.command.name,
            fun = %call.command.fun,
        );
        let fut = span.in_scope(|| dispatcher.dispatch(call)).instrument(span);
        Ok(if spawn {
            let task = AbortOnDrop(tokio::spawn(fut));
            Box::pin(async move {
                let r = task
                    .await
                    .unwrap_or_else(|e| Err(CallError::Failed(format!("task failed: {e}"))));
                (i, begun, r)
            })
        } else {
            Box::pin(async move { (i, begun, fut.await) })
        })
    };
    let fail =
        |i: usize, f: CallError| error_reply(u.clone(), f.code(), failure_details(&req.cmds[i], f));
    for i in (0..n).filter(|&i| waiting[i] == 0) {
        tokio::task::consume_budget().await;
        match start_command(i, &results, &mut budget, &mut args_held) {
            Ok(r) => running.push(r),
            Err(f) => return fail(i, f),
        }
    }
    while let Some((i, begun, outcome)) = running.next().await {
        let value = match outcome {
            Ok(v) => v,
            Err(f) => return fail(i, f),
        };
        if let Some(b) = budget.as_mut() {
            b.release(args_held[i]);
            result_len[i] = encoded_len(&value);
            if let Err(o) = b.take(result_len[i]) {
                return fail(i, over_budget(o, &req.cmds[i].name));
            }
        }
        spans[i] = (begun, started.elapsed());
        results[i] = Some(value);
        let level = plan.level_of[i];
        level_left[level] -= 1;
        if level_left[level] == 0 {
            level_done_at[level] = Some(started.elapsed());
        }
        // Emit completed levels in order.
        while emitted < plan.levels.len() && level_left[emitted] == 0 {
            if want_intermediate && let Some(b) = budget.as_mut() {
                // Kept for the reply, each level repeats everything before it: charged before
                // it is built, so a deep chain fails at its budget instead of growing with the
                // square of its depth.
                let level_len: usize = plan.levels[emitted]
                    .iter()
                    .map(|&j| results[j].as_ref().map_or(4, encoded_len))
                    .sum();
                accumulated_len += level_len;
                let last = plan.levels[emitted].last().copied().unwrap_or(i);
                if let Err(o) = b.take(level_len + accumulated_len) {
                    return fail(last, over_budget(o, &req.cmds[last].name));
                }
            }
            if want_intermediate || opts.on_level.is_some() {
                let level_results: Map<String, Value> = plan.levels[emitted]
                    .iter()
                    .map(|&j| {
                        (
                            req.cmds[j].name.clone(),
                            results[j].clone().unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                accumulated.extend(level_results.clone());
                let ir = IntermediateResult {
                    request_id: u.clone(),
                    level_index: emitted,
                    level_results,
                    accumulated_results: accumulated.clone(),
                    total_levels: plan.levels.len(),
                    completed_levels: emitted + 1,
                    timestamp: crate::clock::unix_now(),
                    execution_time_ms: ms(level_done_at[emitted].unwrap_or_default()),
                };
                if let Some(cb) = opts.on_level.as_mut() {
                    cb(&ir);
                }
                if want_intermediate {
                    intermediate.push(ir);
                }
            }
            emitted += 1;
        }
        let mut started_now = Vec::new();
        for &j in &dependents[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                match start_command(j, &results, &mut budget, &mut args_held) {
                    Ok(r) => running.push(r),
                    Err(f) => return fail(j, f),
                }
                started_now.push(j);
            }
        }
        if !keep_all {
            // Their arguments are built: results only they still waited for can go, and so can
            // this one if nothing waits for it.
            let mut done_with: Vec<usize> = started_now
                .iter()
                .flat_map(|&j| plan.waits_for(j))
                .collect();
            for &d in &done_with {
                unstarted_dependents[d] = unstarted_dependents[d].saturating_sub(1);
            }
            if dependents[i].is_empty() {
                done_with.push(i);
            }
            for d in done_with {
                if unstarted_dependents[d] == 0
                    && !in_reply[d]
                    && results[d].take().is_some()
                    && let Some(b) = budget.as_mut()
                {
                    b.release(result_len[d]);
                }
            }
        }
    }

    let mut r = Map::new();
    for &i in plan.last_level() {
        r.insert(
            req.cmds[i].name.clone(),
            results[i].take().unwrap_or(Value::Null),
        );
    }
    let mut reply = RpcResponse::ok(u.clone(), r);
    if want_intermediate {
        reply.intermediate_results = Some(intermediate);
    }
    if req.include_execution_summary {
        reply.execution_summary = Some(summary(&u, &plan, &spans, started.elapsed()));
    }
    reply
}

fn summary(
    u: &str,
    plan: &Plan,
    spans: &[(Duration, Duration)],
    total: Duration,
) -> ExecutionSummary {
    let level_times: Vec<f64> = plan
        .levels
        .iter()
        .map(|l| {
            let start = l.iter().map(|&i| spans[i].0).min().unwrap_or_default();
            let end = l.iter().map(|&i| spans[i].1).max().unwrap_or_default();
            ms(end.saturating_sub(start))
        })
        .collect();
    let bottleneck = level_times
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    let overlapping = (0..spans.len())
        .filter(|&i| {
            (0..spans.len()).any(|j| j != i && spans[i].0 < spans[j].1 && spans[j].0 < spans[i].1)
        })
        .count();
    ExecutionSummary {
        request_id: u.to_owned(),
        total_execution_time_ms: ms(total),
        total_levels: plan.levels.len(),
        average_level_time_ms: level_times.iter().sum::<f64>() / level_times.len().max(1) as f64,
        level_execution_times: level_times,
        bottleneck_level_index: bottleneck,
        parallel_commands_executed: overlapping,
        cross_cluster_hops: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Runs built-in-like functions in process: `echo`, `echos`, `sleep(ms)` and `fail`.
    struct Inline;

    impl Dispatcher for Inline {
        fn check(&self, call: &Call) -> Result<(), CallError> {
            match call.command.fun.as_str() {
                "echo" | "echos" | "sleep" | "fail" => Ok(()),
                other => Err(CallError::NotFound(format!("no function '{other}'"))),
            }
        }
        fn dispatch(&self, call: Call) -> BoxFuture<Result<Value, CallError>> {
            // Like the node's dispatcher, dispatch resolves the target itself.
            let resolved = self.check(&call);
            Box::pin(async move {
                resolved?;
                let args = call.command.args;
                match call.command.fun.as_str() {
                    "echo" => Ok(args.into_iter().next().unwrap_or(Value::Null)),
                    "echos" => Ok(Value::Array(args)),
                    "sleep" => {
                        let ms = args.first().and_then(Value::as_u64).unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Ok(json!(ms))
                    }
                    _ => Err(CallError::Failed("failed on purpose".into())),
                }
            })
        }
    }

    fn req(cmds: Value) -> RpcRequest {
        let cmds: Vec<RpcCommand> = serde_json::from_value(cmds).expect("commands");
        RpcRequest::new("u1", cmds)
    }

    async fn exec(r: RpcRequest, deadline_ms: u64) -> RpcResponse {
        execute(
            r,
            Arc::new(Inline),
            ExecOptions {
                deadline: Duration::from_millis(deadline_ms),
                on_level: None,
                max_bytes: 1 << 20,
                levels: None,
                principal: Principal::anonymous(),
            },
        )
        .await
    }

    #[tokio::test]
    async fn strict_references_fail_a_path_that_does_not_resolve() {
        let cmds = json!([
            {"name": "a", "fun": "echo", "args": [{"x": 1}]},
            {"name": "b", "fun": "echo", "args": ["a.y"]},
        ]);
        // MPREG's default: the unresolved path is passed as a string.
        let reply = exec(req(cmds.clone()), 5_000).await;
        assert_eq!(reply.r.map(Value::Object), Some(json!({"b": "a.y"})));
        let mut strict = req(cmds);
        strict.strict_references = true;
        let reply = exec(strict, 5_000).await;
        let e = reply.error.expect("strict references fail");
        assert_eq!(e.code, codes::MALFORMED_REQUEST);
        let details = e.details.to_string();
        assert!(
            details.contains("command 'b'")
                && details.contains("'a.y' does not resolve: a has no field 'y' (its fields: x)"),
            "{details}"
        );
        // A path that resolves is substituted as usual.
        let mut ok = req(json!([
            {"name": "a", "fun": "echo", "args": [{"x": 1}]},
            {"name": "b", "fun": "echo", "args": ["a.x"]},
        ]));
        ok.strict_references = true;
        assert_eq!(
            exec(ok, 5_000).await.r.map(Value::Object),
            Some(json!({"b": 1}))
        );
    }

    #[tokio::test]
    async fn an_amplifying_request_fails_at_its_budget_before_building_the_value() {
        // Each command doubles the one before: 2^30 KiB if it ran to the end.
        let mut cmds = vec![json!({"name": "c0", "fun": "echo", "args": ["x".repeat(1024)]})];
        for k in 1..=30 {
            let prev = format!("c{}", k - 1);
            cmds.push(json!({"name": format!("c{k}"), "fun": "echos", "args": [prev, prev]}));
        }
        let started = std::time::Instant::now();
        let reply = exec(req(Value::Array(cmds)), 5_000).await;
        let e = reply.error.expect("over budget");
        assert_eq!(e.code, codes::RESOURCE_LIMIT, "{:?}", e.details);
        let details = e.details.to_string();
        assert!(details.contains("budget of 1048576 bytes"), "{details}");
        // 1 MiB is passed between c9 and c10: nothing larger was built.
        assert!(
            details.contains("'c9'") || details.contains("'c10'"),
            "{details}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn kept_intermediate_results_count_against_the_budget() {
        // A chain: each level's intermediate result repeats every level before it.
        let mut cmds = vec![json!({"name": "c0", "fun": "echo", "args": ["x".repeat(1000)]})];
        // 500 results of 1 KB fit in 1 MiB; kept as intermediates, about 125 MB would not.
        for k in 1..500 {
            cmds.push(
                json!({"name": format!("c{k}"), "fun": "echo", "args": [format!("c{}", k - 1)]}),
            );
        }
        let mut r = req(Value::Array(cmds.clone()));
        r.return_intermediate_results = true;
        let e = exec(r, 5_000)
            .await
            .error
            .expect("quadratic intermediates pass 1 MiB");
        assert_eq!(e.code, codes::RESOURCE_LIMIT, "{:?}", e.details);
        // Without intermediate results the same chain fits.
        let reply = exec(req(Value::Array(cmds)), 5_000).await;
        assert!(reply.error.is_none(), "{:?}", reply.error);
    }

    #[tokio::test]
    async fn a_long_chain_holds_only_what_is_still_waited_for() {
        // 2000 results of 1 KB would pass 1 MiB if all were kept; each is dropped once the
        // next command's arguments are built.
        let mut cmds = vec![json!({"name": "c0", "fun": "echo", "args": ["x".repeat(1000)]})];
        for k in 1..2000 {
            let prev = format!("c{}", k - 1);
            cmds.push(json!({"name": format!("c{k}"), "fun": "echo", "args": [prev]}));
        }
        let reply = exec(req(Value::Array(cmds)), 5_000).await;
        assert!(reply.error.is_none(), "{:?}", reply.error);
        let r = serde_json::to_value(reply.r).expect("json");
        assert_eq!(r["c1999"], json!("x".repeat(1000)));
        assert_eq!(r.as_object().map(|m| m.len()), Some(1));
    }

    #[tokio::test]
    async fn one_result_fanned_into_many_arguments_counts_every_copy() {
        let mut cmds = vec![json!({"name": "big", "fun": "echo", "args": ["x".repeat(100 << 10)]})];
        for k in 0..30 {
            cmds.push(json!({"name": format!("f{k}"), "fun": "echo", "args": ["big"]}));
        }
        let reply = exec(req(Value::Array(cmds)), 5_000).await;
        let e = reply.error.expect("30 copies of 100 KiB pass 1 MiB");
        assert_eq!(e.code, codes::RESOURCE_LIMIT);
        // Within the budget, the same shape runs.
        let mut cmds = vec![json!({"name": "big", "fun": "echo", "args": ["x".repeat(10 << 10)]})];
        for k in 0..30 {
            cmds.push(json!({"name": format!("f{k}"), "fun": "echo", "args": ["big"]}));
        }
        let reply = exec(req(Value::Array(cmds)), 5_000).await;
        assert!(reply.error.is_none(), "{:?}", reply.error);
    }

    #[tokio::test]
    async fn worked_example_one() {
        let r = req(json!([
            {"name": "third", "fun": "echos", "args": ["second", {"k": "first"}]},
            {"name": "first", "fun": "echo", "args": ["hello"]},
            {"name": "second", "fun": "echos", "args": ["first", "lit"]},
        ]));
        let reply = exec(r, 1000).await;
        assert_eq!(
            serde_json::to_value(reply.r).expect("json"),
            json!({"third": [["hello", "lit"], {"k": "hello"}]})
        );
    }

    #[tokio::test(start_paused = true)]
    async fn independent_commands_run_concurrently_and_deadline_holds() {
        let r = req(json!([
            {"name": "a", "fun": "sleep", "args": [100]},
            {"name": "b", "fun": "sleep", "args": [100]},
            {"name": "c", "fun": "echos", "args": ["a", "b"]},
        ]));
        let t = tokio::time::Instant::now();
        let reply = exec(r.clone(), 1000).await;
        assert!(t.elapsed() < Duration::from_millis(150), "a and b overlap");
        assert_eq!(
            serde_json::to_value(reply.r).expect("json"),
            json!({"c": [100, 100]})
        );
        let reply = exec(r, 50).await;
        assert_eq!(reply.error.map(|e| e.code), Some(codes::DEADLINE_EXCEEDED));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_fails_the_request_without_waiting_for_slow_siblings() {
        let r = req(json!([
            {"name": "slow", "fun": "sleep", "args": [10000]},
            {"name": "bad", "fun": "fail", "args": []},
            {"name": "after", "fun": "echo", "args": ["bad"]},
        ]));
        let t = tokio::time::Instant::now();
        let reply = exec(r, 60_000).await;
        assert!(t.elapsed() < Duration::from_millis(10));
        let e = reply.error.expect("error");
        assert_eq!(e.code, codes::EXECUTION_FAILED);
        assert_eq!(
            e.details,
            json!("command 'bad' (fun 'fail'): failed on purpose")
        );
    }

    #[tokio::test]
    async fn not_found_details_are_mpregs_exact_text_alone_or_in_a_graph() {
        for cmds in [
            json!([{"name": "x", "fun": "nope"}]),
            json!([{"name": "a", "fun": "echo", "args": [1]}, {"name": "x", "fun": "nope"}]),
        ] {
            let e = exec(req(cmds), 1000).await.error.expect("error");
            assert_eq!(
                (e.code, e.details),
                (codes::COMMAND_NOT_FOUND, json!("no function 'nope'"))
            );
        }
    }

    #[tokio::test]
    async fn unknown_function_fails_before_anything_runs() {
        let r = req(
            json!([{"name": "a", "fun": "echo", "args": [1]}, {"name": "b", "fun": "nope", "args": ["a"]}]),
        );
        let e = exec(r, 1000).await.error.expect("error");
        assert_eq!(e.code, codes::COMMAND_NOT_FOUND);
    }

    #[tokio::test(start_paused = true)]
    async fn levels_are_reported_in_order_even_when_a_later_one_finishes_first() {
        let mut r = req(json!([
            {"name": "a", "fun": "echo", "args": [1]},
            {"name": "lone", "fun": "sleep", "args": [50]},
            {"name": "b", "fun": "echos", "args": ["a"]},
        ]));
        r.return_intermediate_results = true;
        r.include_execution_summary = true;
        let reply = exec(r, 1000).await;
        assert_eq!(
            serde_json::to_value(&reply.r).expect("json"),
            json!({"b": [1]})
        );
        let ir = reply.intermediate_results.expect("intermediate");
        assert_eq!(ir.len(), 2);
        assert_eq!(ir[0].level_index, 0);
        assert_eq!(
            serde_json::to_value(&ir[0].level_results).expect("json"),
            json!({"a": 1, "lone": 50})
        );
        assert_eq!(
            serde_json::to_value(&ir[1].accumulated_results).expect("json"),
            json!({"a": 1, "lone": 50, "b": [1]})
        );
        let s = reply.execution_summary.expect("summary");
        assert_eq!(s.total_levels, 2);
        assert_eq!(s.bottleneck_level_index, 0);
    }
}
