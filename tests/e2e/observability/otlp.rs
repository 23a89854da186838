//! OTLP trace export: with `LUCID_OTLP_ENDPOINT` set, a real API process and
//! a real worker process send their spans to a collector, and the worker's
//! span for a job continues the trace of the API call that enqueued it.

use std::{collections::HashMap, time::Duration};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value as AnyValue,
};
use prost::Message as _;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use crate::{
    helpers::{
        ItemBuilder, TestApp, admin_claims, authed_client, eventually, free_port, mint,
        spawn_app_with, test_settings,
    },
    receiver::Receiver,
};

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// Every span the collector received on `/v1/traces`.
fn spans(collector: &Receiver) -> Vec<Span> {
    let mut out = Vec::new();
    for r in collector.received() {
        assert_eq!(
            (
                r.method.as_str(),
                r.path.as_str(),
                r.content_type.as_deref()
            ),
            ("POST", "/v1/traces", Some("application/x-protobuf")),
            "OTLP/HTTP protobuf export"
        );
        let req = ExportTraceServiceRequest::decode(r.raw.as_slice()).expect("OTLP protobuf");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|res| &res.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.clone())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                out.push(Span {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(span.trace_id),
                    span_id: hex::encode(span.span_id),
                    parent_span_id: hex::encode(span.parent_span_id),
                });
            }
        }
    }
    out
}

/// A real process of `exe` exporting to `collector`, logging warnings only.
fn process(
    app: &TestApp,
    exe: &str,
    collector: &Receiver,
    extra: &[(&str, String)],
) -> tokio::process::Child {
    let mut env = app.worker_env("otlp-worker");
    env.retain(|(k, _)| k != "LUCID_LOG_LEVEL");
    env.extend([
        ("LUCID_LOG_LEVEL".to_string(), "warn".to_string()),
        (
            "LUCID_OTLP_ENDPOINT".into(),
            collector.base_url().to_string(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ]);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    tokio::process::Command::new(exe)
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn")
}

#[tokio::test]
async fn with_an_otlp_endpoint_the_workers_job_span_continues_the_submitting_requests_trace() {
    let app = spawn_app_with(test_settings(), 0).await;
    let collector = Receiver::start(0).await;
    let port = free_port();
    let secret = app
        .settings
        .jwt_secret
        .as_ref()
        .expect("secret")
        .expose_secret()
        .to_string();
    let _api = process(
        &app,
        env!("CARGO_BIN_EXE_lucid-api-e2e"),
        &collector,
        &[
            ("LUCID_JWT_SECRET", secret),
            ("LUCID_NODE_API_HOST", "127.0.0.1".into()),
            ("LUCID_NODE_API_PORT", port.to_string()),
        ],
    );
    let _worker = process(
        &app,
        env!("CARGO_BIN_EXE_lucid-worker-e2e"),
        &collector,
        &[],
    );
    let base = format!("http://127.0.0.1:{port}");
    crate::helpers::wait_until_ready(&base).await;
    app.insert_nodes(&["node_otlp".to_string()]).await;

    // The caller's own trace: the API joins it.
    let trace_id = hex::encode(rand::random::<[u8; 16]>());
    let caller_span = hex::encode(rand::random::<[u8; 8]>());
    let client = authed_client(&mint(&app.settings, &admin_claims()));
    let items: Vec<Value> = (0..3)
        .map(|_| ItemBuilder::new("node_otlp").build())
        .collect();
    let r = client
        .post(format!("{base}/api/v1/nodes/poot/batch-validate"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({ "validations": items }))
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), 202);
    let batch: Value = r.json().await.expect("json");
    let batch_id = batch["batch_id"].as_str().expect("id").to_string();
    let done = app.wait_for_batch(&batch_id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");

    let trace = eventually(
        Duration::from_secs(30),
        "the API's and the worker's spans",
        || async {
            let trace: Vec<Span> = spans(&collector)
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            let has = |service: &str, name: &str| {
                trace.iter().any(|s| s.service == service && s.name == name)
            };
            (has("lucid-api", "request") && has("lucid-worker", "job")).then_some(trace)
        },
    )
    .await;
    let by_id: HashMap<&str, &Span> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let request = trace
        .iter()
        .find(|s| s.service == "lucid-api" && s.name == "request")
        .expect("request span");
    assert_eq!(
        request.parent_span_id, caller_span,
        "the request span is the caller's child: {trace:#?}"
    );
    // The job span's parent is a span the API exported in this trace.
    let job = trace
        .iter()
        .find(|s| s.service == "lucid-worker" && s.name == "job")
        .expect("job span");
    let parent = by_id
        .get(job.parent_span_id.as_str())
        .unwrap_or_else(|| panic!("the job span's parent was exported: {trace:#?}"));
    assert_eq!(parent.service, "lucid-api", "{trace:#?}");
}
