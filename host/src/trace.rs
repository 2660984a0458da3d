//! Traces across nodes (docs/observability.md, "Traces").
//!
//! A request, each of its commands, each hop to a peer, each plugin call, a plugin's nested
//! `call`, a publish and a queue delivery are `tracing` spans (at `DEBUG`, target `mpreg::…`;
//! their names and fields are tabled in docs/observability.md, "Traces").
//!
//! When the node exports traces (an OTLP endpoint is configured), the OpenTelemetry layer turns
//! those spans into OpenTelemetry spans, and the W3C `traceparent` of the span that sends a call
//! to a peer travels in the forwarded call, so the peer's spans join the same trace. A client
//! may send its own `traceparent` (an extension field of the request): the request's span is
//! then its child. With no exporter, the spans are `tracing` spans only (disabled at the
//! default `info` level: they cost a level check) and nothing is sent to peers.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C `traceparent` of `span`, when it belongs to an exported trace.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span `traceparent` names (a malformed value is ignored:
/// the span starts a trace of its own).
pub fn continue_from(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else { return };
    if span.is_disabled() || !valid(tp) {
        return;
    }
    let carrier: HashMap<String, String> = HashMap::from([("traceparent".into(), tp.into())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// Whether `tp` has the W3C shape `00-<32 hex>-<16 hex>-<2 hex>` (checked before it is
/// trusted or passed on: it comes from a client).
pub fn valid(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    matches!(parts.as_slice(), [v, t, s, f] if hex(v, 2) && hex(t, 32) && hex(s, 16) && hex(f, 2))
        && parts[1] != "00000000000000000000000000000000"
        && parts[2] != "0000000000000000"
}

/// Why traces cannot be exported.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter for {endpoint}: {message}")]
pub struct ExportError {
    endpoint: String,
    message: String,
}

/// A tracer provider that batches spans to an OTLP/HTTP (protobuf) collector at `endpoint`
/// (`http://host:4318`; `/v1/traces` is added when the path is not given), under the service
/// `mpreg`.
pub fn otlp_provider(
    endpoint: &str,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, ExportError> {
    use opentelemetry_otlp::WithExportConfig;
    let endpoint = endpoint.trim_end_matches('/');
    let url = if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .map_err(|e| ExportError {
            endpoint: endpoint.to_owned(),
            message: e.to_string(),
        })?;
    Ok(provider_with(|b| b.with_batch_exporter(exporter)))
}

/// A tracer provider for the service `mpreg`, its exporter set by `add`.
pub fn provider_with(
    add: impl FnOnce(
        opentelemetry_sdk::trace::TracerProviderBuilder,
    ) -> opentelemetry_sdk::trace::TracerProviderBuilder,
) -> opentelemetry_sdk::trace::SdkTracerProvider {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("mpreg")
        .build();
    add(opentelemetry_sdk::trace::SdkTracerProvider::builder().with_resource(resource)).build()
}

/// The layer that turns the node's spans (targets `mpreg…`, up to `DEBUG`) into OpenTelemetry
/// spans of `provider`; events are left to the log layer.
pub fn layer<S>(
    provider: &opentelemetry_sdk::trace::SdkTracerProvider,
) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::Layer as _;
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("mpreg"))
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.is_span() && m.target().starts_with("mpreg") && *m.level() <= tracing::Level::DEBUG
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_taken() {
        assert!(valid(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(!valid(bad), "{bad}");
        }
    }

    #[test]
    fn without_an_exporter_nothing_is_sent_on() {
        let span = tracing::Span::none();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        continue_from(&span, Some(tp));
        assert_eq!(traceparent(&span), None);
    }
}
