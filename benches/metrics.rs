//! What a scrape of `/_ringlb/metrics` costs at N = 64 replicas (`cargo bench --bench metrics`):
//! rendering the Prometheus text from the recorder, after every replica recorded requests of a few
//! kinds (so every series the scrape lists exists), and recording one request.

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, StatusCode};
use metrics_exporter_prometheus::PrometheusBuilder;
use ringlb::telemetry::ReplicaMetrics;
use std::hint::black_box;
use std::time::Duration;

fn scrape(c: &mut Criterion) {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(ringlb::telemetry::REQUEST_DURATION.into()),
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        )
        .expect("buckets")
        .build_recorder();
    let handle = recorder.handle();
    let replicas: Vec<ReplicaMetrics> = metrics::with_local_recorder(&recorder, || {
        (0..64)
            .map(|i| {
                let m = ReplicaMetrics::new("demo", &format!("server{i}"));
                for (method, status) in [
                    (Method::GET, StatusCode::OK),
                    (Method::POST, StatusCode::OK),
                    (Method::GET, StatusCode::NOT_FOUND),
                    (Method::GET, StatusCode::BAD_GATEWAY),
                ] {
                    for _ in 0..100 {
                        m.record(&method, status, Duration::from_micros(800));
                    }
                }
                m.set_inflight(3);
                m
            })
            .collect()
    });
    let text = handle.render();
    println!("scrape at N = 64: {} bytes, {} lines", text.len(), text.lines().count());
    c.bench_function("render /_ringlb/metrics at N = 64", |b| b.iter(|| black_box(handle.render())));
    c.bench_function("record one request", |b| {
        b.iter(|| {
            replicas[7].record(black_box(&Method::GET), black_box(StatusCode::OK), Duration::from_micros(900))
        })
    });
}

criterion_group!(benches, scrape);
criterion_main!(benches);
