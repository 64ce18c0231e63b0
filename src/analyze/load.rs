//! The analysis's client side: asynchronous requests through the load balancer, each answer
//! attributed to the replica that wrote it (read from the body, as the exercise's students did).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One request's fate in a stream.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was sent, since the stream started.
    pub sent: Duration,
    /// When its answer was complete.
    pub done: Duration,
    /// The replica that answered, or `None` for a failure (no answer, or not a 200).
    pub replica: Option<String>,
}

/// A keep-alive HTTP client for the load balancer at `base`.
#[derive(Clone)]
pub struct Load {
    client: Client<HttpConnector, Full<Bytes>>,
    base: Arc<str>,
}

/// An exchange with the load balancer, as the report shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Exchange {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Request body ("" for none).
    pub body: String,
    /// Status code (0: no answer).
    pub status: u16,
    /// Response body, exactly.
    pub response: String,
}

/// `n` request ids of six digits, reproducible from `seed`.
pub fn request_ids(seed: u64, n: usize) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(100_000..=999_999)).collect()
}

/// The replica name in a `/home` answer: `{"message": "Hello from Server: <id>", ...}`.
pub fn replica_of(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value["message"].as_str()?.strip_prefix("Hello from Server: ").map(str::to_owned)
}

impl Load {
    /// A client for `base` (`http://host:port`).
    pub fn new(base: &str) -> Load {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Load { client: Client::builder(TokioExecutor::new()).build(connector), base: Arc::from(base) }
    }

    /// Sends one request and returns the exchange.
    pub async fn exchange(&self, method: &str, path: &str, body: &str, request_id: Option<u32>) -> Exchange {
        let mut builder = http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(id) = request_id {
            builder = builder.header("x-request-id", id);
        }
        if !body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        let mut exchange = Exchange {
            method: method.into(),
            path: path.into(),
            body: body.into(),
            status: 0,
            response: String::new(),
        };
        let Ok(request) = builder.body(Full::new(Bytes::from(body.to_owned()))) else { return exchange };
        match tokio::time::timeout(Duration::from_secs(30), self.client.request(request)).await {
            Ok(Ok(response)) => {
                exchange.status = response.status().as_u16();
                if let Ok(collected) = response.into_body().collect().await {
                    exchange.response = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
                }
            }
            Ok(Err(error)) => exchange.response = crate::error_chain(&error),
            Err(_) => exchange.response = "no answer within 30 s".into(),
        }
        exchange
    }

    /// `GET /home` once per id, `concurrency` at a time; the answering replica per request
    /// (`None` for failures), in the order of `ids`, and the time it took.
    pub async fn home_for_ids(&self, ids: &[u32], concurrency: usize) -> (Vec<Option<String>>, Duration) {
        let ids: Arc<[u32]> = Arc::from(ids);
        let workers = concurrency.clamp(1, ids.len().max(1));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..workers {
            let (load, ids) = (self.clone(), Arc::clone(&ids));
            tasks.spawn(async move {
                let mut answers = Vec::new();
                for i in (worker..ids.len()).step_by(workers) {
                    let exchange = load.exchange("GET", "/home", "", Some(ids[i])).await;
                    let replica = (exchange.status == 200).then(|| replica_of(&exchange.response)).flatten();
                    answers.push((i, replica));
                }
                answers
            });
        }
        let mut answers = vec![None; ids.len()];
        while let Some(done) = tasks.join_next().await {
            for (i, replica) in done.unwrap_or_default() {
                answers[i] = replica;
            }
        }
        (answers, started.elapsed())
    }

    /// `GET /home` from `workers` clients in a loop until `stop` is set; every request's fate.
    pub async fn stream(
        &self,
        workers: usize,
        seed: u64,
        stop: Arc<AtomicBool>,
        origin: Instant,
    ) -> Vec<Sample> {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..workers {
            let (load, stop) = (self.clone(), Arc::clone(&stop));
            tasks.spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(worker as u64));
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = origin.elapsed();
                    let id = rng.random_range(100_000..=999_999);
                    let exchange = load.exchange("GET", "/home", "", Some(id)).await;
                    let replica = (exchange.status == 200).then(|| replica_of(&exchange.response)).flatten();
                    samples.push(Sample { sent, done: origin.elapsed(), replica });
                }
                samples
            });
        }
        let mut samples = Vec::new();
        while let Some(done) = tasks.join_next().await {
            samples.extend(done.unwrap_or_default());
        }
        samples.sort_by_key(|s| s.sent);
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_six_digits_and_reproducible() {
        let a = request_ids(7, 1000);
        assert_eq!(a, request_ids(7, 1000));
        assert_ne!(a, request_ids(8, 1000));
        assert!(a.iter().all(|i| (100_000..=999_999).contains(i)));
    }

    #[test]
    fn the_replica_is_read_from_the_answer() {
        assert_eq!(
            replica_of(r#"{"message": "Hello from Server: s1", "status": "successful"}"#).as_deref(),
            Some("s1")
        );
        assert_eq!(replica_of("nope"), None);
    }
}
