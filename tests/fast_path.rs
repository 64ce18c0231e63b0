//! The fast path against the reference: the same raw requests go through a load balancer with
//! `proxy.engine: fast` and one with `proxy.engine: hyper`, in front of one scripted replica that
//! records what it receives; what the replica got and what the client got must match (up to the
//! framing each path may choose). Both also follow the one forwarding policy (`proxy/retry.rs`):
//! a request that fails before an answer is sent again only when that is safe. Then what only the
//! fast path promises: smuggling shapes refused before anything reaches a replica, pipelined
//! requests, replica connections closed while idle.

mod common;

use common::Lb;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the replica received it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Received {
    method: String,
    target: String,
    /// Lower-case names, sorted; framing and connection headers left out.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A response as the client received it.
#[derive(Debug, PartialEq, Eq)]
struct Got {
    status: u16,
    /// Lower-case names, sorted; `date` and framing headers left out.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Headers whose presence or form depends on the framing a path chose, not on the rules.
const FRAMING: [&str; 5] = ["content-length", "transfer-encoding", "connection", "date", "te"];

fn normal(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .filter(|(name, _)| !FRAMING.contains(&name.as_str()))
        .collect();
    list.sort();
    list
}

/// Decodes a chunked body (no trailers expected here); returns the body and the bytes used.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, usize) {
    let total = raw.len();
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            assert!(raw.starts_with(b"\r\n"), "no trailers expected");
            return (body, total - raw.len() + 2);
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Connections the scripted replica has closed after a `/silent-close` answer.
static SILENT_CLOSES: AtomicUsize = AtomicUsize::new(0);

/// The scripted replica: answers by path and records every request but heartbeats.
async fn replica(listener: TcpListener, seen: Arc<Mutex<Vec<Received>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let _ = serve_replica_connection(stream, seen).await;
        });
    }
}

async fn serve_replica_connection(
    mut stream: TcpStream,
    seen: Arc<Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // A head.
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 65536];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut fields);
        request.parse(&buf[..head_end]).expect("the load balancer sent a valid head");
        let method = request.method.unwrap().to_string();
        let target = request.path.unwrap().to_string();
        let value = |name: &str| {
            request.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.to_vec())
        };
        let chunked = value("transfer-encoding").is_some();
        let length: usize =
            value("content-length").map(|v| String::from_utf8(v).unwrap().parse().unwrap()).unwrap_or(0);
        let headers = normal(request.headers);
        let expects_continue = value("expect").is_some();
        buf.drain(..head_end);
        if expects_continue {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        // Its body.
        let body = loop {
            let complete = if chunked {
                let ends = buf.windows(5).any(|w| w == b"0\r\n\r\n");
                ends.then(|| dechunk(&buf))
            } else {
                (buf.len() >= length).then(|| (buf[..length].to_vec(), length))
            };
            if let Some((body, used)) = complete {
                buf.drain(..used);
                break body;
            }
            let mut chunk = [0u8; 65536];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if target != "/heartbeat" {
            seen.lock().unwrap().push(Received {
                method: method.clone(),
                target: target.clone(),
                headers,
                body: body.clone(),
            });
        }
        let head_only = method == "HEAD";
        let answer: Vec<u8> = match target.split('?').next().unwrap() {
            "/heartbeat" => b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
            "/echo" => {
                let mut a = format!("HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
                a.extend_from_slice(&body);
                a
            }
            "/chunked" => b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3;x=y\r\ncde\r\n0\r\n\r\n".to_vec(),
            "/until-close" => {
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end").await?;
                return Ok(());
            }
            "/no-content" => b"HTTP/1.1 204 No Content\r\nx-kind: empty\r\n\r\n".to_vec(),
            "/upgrade" => {
                // Switches to an echo protocol: greets, then sends back every byte until EOF.
                stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\nX-Tunnel: yes\r\n\r\nhello ")
                    .await?;
                stream.write_all(&buf).await?;
                let mut chunk = [0u8; 4096];
                loop {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return stream.shutdown().await;
                    }
                    stream.write_all(&chunk[..n]).await?;
                }
            }
            "/missing" => b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\r\nnope".to_vec(),
            "/hop" => b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 2\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            "/big" => {
                let mut a = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
                a.extend((0..1_048_576u32).map(|i| (i % 251) as u8));
                a
            }
            "/silent-close" => {
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nclosed").await?;
                drop(stream);
                SILENT_CLOSES.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            _ => b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-backend: 1\r\ncontent-length: 10\r\n\r\nplain body".to_vec(),
        };
        if head_only {
            let end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            stream.write_all(&answer[..end]).await?;
        } else {
            stream.write_all(&answer).await?;
        }
    }
}

/// One scripted replica and two load balancers in front of it, one per engine.
struct Bench {
    seen: Arc<Mutex<Vec<Received>>>,
    fast: Lb,
    hyper: Lb,
}

async fn bench(extra: &str) -> Bench {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(replica(listener, Arc::clone(&seen)));
    let manifest = |engine: &str| {
        format!(
            "name: fast-{engine}\nreplicas: 1\nhostnames: [only]\nlisten: 127.0.0.1:0\nreplica:\n  runtime: static\n  \
             endpoints: [\"{addr}\"]\nhealth:\n  interval: 200ms\n  timeout: 150ms\nproxy:\n  engine: {engine}\n{extra}"
        )
    };
    let fast = Lb::start(&manifest("fast")).await;
    let hyper = Lb::start(&manifest("hyper")).await;
    Bench { seen, fast, hyper }
}

/// Sends `raw` on a new connection and reads until the load balancer closes it.
async fn exchange(lb: &Lb, raw: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all))
        .await
        .expect("the load balancer closed the connection in time")
        .ok();
    all
}

/// Splits the responses of one connection; `heads` says which requests were HEAD.
fn responses(mut raw: &[u8], heads: &[bool]) -> Vec<Got> {
    let mut list = Vec::new();
    for is_head in heads {
        // An interim answer (100 Continue) comes before the real one.
        while raw.starts_with(b"HTTP/1.1 1") {
            let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("interim head") + 4;
            raw = &raw[end..];
        }
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut fields);
        let Ok(httparse::Status::Complete(head_len)) = response.parse(raw) else {
            panic!("no complete response in {:?}", String::from_utf8_lossy(raw));
        };
        let status = response.code.unwrap();
        let value =
            |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
        let rest = &raw[head_len..];
        let (body, used) = if *is_head || status == 204 || status == 304 {
            (Vec::new(), 0)
        } else if value("transfer-encoding").is_some() {
            dechunk(rest)
        } else if let Some(length) = value("content-length") {
            let length: usize = std::str::from_utf8(length).unwrap().parse().unwrap();
            (rest[..length].to_vec(), length)
        } else {
            (rest.to_vec(), rest.len())
        };
        list.push(Got { status, headers: normal(response.headers), body });
        raw = &rest[used..];
    }
    assert!(raw.is_empty(), "bytes after the last response: {:?}", String::from_utf8_lossy(raw));
    list
}

fn take_seen(seen: &Mutex<Vec<Received>>) -> Vec<Received> {
    std::mem::take(&mut *seen.lock().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_forward_the_same_requests_and_answers() {
    let bench = bench("").await;
    let big_body = "b".repeat(200 * 1024);
    let cases: Vec<(String, bool)> = vec![
        ("GET /plain?q=1 HTTP/1.1\r\nHost: lb\r\nAccept: */*\r\nX-Request-Id: 123456\r\nConnection: close\r\n\r\n".into(), false),
        ("GET /plain HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 7\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 9\r\nTE: trailers\r\nX-Keep: a\r\n\r\n".into(), false),
        ("POST /echo HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 70\r\nConnection: close, Host, Content-Length\r\nContent-Length: 3\r\n\r\nabc".into(), false),
        ("GET /plain HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 7\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: front\r\nConnection: close\r\n\r\n".into(), false),
        ("POST /echo HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 8\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".into(), false),
        (format!("PUT /echo HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 9\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big_body}", big_body.len()), false),
        ("POST /echo HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 10\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".into(), false),
        ("POST /echo HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 11\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz".into(), false),
        ("GET /plain HTTP/1.0\r\nHost: lb\r\nX-Request-Id: 12\r\n\r\n".into(), false),
        ("GET /chunked HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 13\r\nConnection: close\r\n\r\n".into(), false),
        ("GET /until-close HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 14\r\nConnection: close\r\n\r\n".into(), false),
        ("GET /no-content HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 15\r\nConnection: close\r\n\r\n".into(), false),
        ("GET /missing HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 16\r\nConnection: close\r\n\r\n".into(), false),
        ("GET /hop HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 17\r\nConnection: close\r\n\r\n".into(), false),
        ("HEAD /plain HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 18\r\nConnection: close\r\n\r\n".into(), true),
        ("DELETE /plain HTTP/1.1\r\nhost: lb\r\nx-request-id: 19\r\nconnection: close\r\n\r\n".into(), false),
        ("GET /big HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 20\r\nConnection: close\r\n\r\n".into(), false),
    ];
    for (raw, is_head) in &cases {
        let first_line = raw.lines().next().unwrap();
        let fast = responses(&exchange(&bench.fast, raw.as_bytes()).await, &[*is_head]);
        let fast_seen = take_seen(&bench.seen);
        let hyper = responses(&exchange(&bench.hyper, raw.as_bytes()).await, &[*is_head]);
        let hyper_seen = take_seen(&bench.seen);
        assert_eq!(fast_seen.len(), 1, "{first_line}: the replica got {fast_seen:?}");
        assert_eq!(fast_seen, hyper_seen, "{first_line}: what the replica got differs (fast, then hyper)");
        assert_eq!(fast, hyper, "{first_line}: what the client got differs (fast, then hyper)");
        assert!(fast[0].headers.contains(&("x-ringlb-replica".into(), "only".into())), "{first_line}");
    }
    // The fast path served every case itself but the three it passes to hyper.
    let metrics = bench.fast.get("/_ringlb/metrics").await.body;
    let handovers: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("ringlb_fast_path_handovers_total{")).collect();
    let mut counts: Vec<(&str, &str)> =
        handovers.iter().map(|l| (l.split('"').nth(1).unwrap(), l.rsplit(' ').next().unwrap())).collect();
    counts.sort();
    assert_eq!(counts, [("expect", "1"), ("http/1.0", "1"), ("transfer-encoding", "1")], "{handovers:?}");
}

/// An upgrade through `lb`: the `101` head the client got (normalised) and the bytes after it,
/// with `early` sent right behind the request and `later` once the head has arrived.
async fn upgrade_through(lb: &Lb, early: &[u8], later: &[u8]) -> (Got, Vec<u8>) {
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    let mut raw = b"GET /upgrade HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 30\r\nConnection: keep-alive, Upgrade\r\nUpgrade: echo\r\nX-Keep: 1\r\n\r\n".to_vec();
    raw.extend_from_slice(early);
    stream.write_all(&raw).await.unwrap();
    let mut all = Vec::new();
    let head_len = loop {
        if let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 4096];
        let n =
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the 101: {}", String::from_utf8_lossy(&all));
        all.extend_from_slice(&chunk[..n]);
    };
    stream.write_all(later).await.unwrap();
    stream.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all))
        .await
        .expect("the tunnel closed after the client's close")
        .unwrap();
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut fields);
    response.parse(&all[..head_len]).unwrap();
    let mut headers = normal(response.headers);
    // Kept by both: the upgrade's own headers, here in their forwarded form.
    for name in ["connection", "upgrade"] {
        let value = response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
        headers.push((name.into(), String::from_utf8_lossy(value.unwrap_or_default()).to_ascii_lowercase()));
    }
    (Got { status: response.code.unwrap(), headers, body: Vec::new() }, all[head_len..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_tunnel_an_upgrade_the_same_way() {
    let bench = bench("").await;
    let fast = upgrade_through(&bench.fast, b"", b"ping").await;
    let fast_seen = take_seen(&bench.seen);
    let hyper = upgrade_through(&bench.hyper, b"", b"ping").await;
    let hyper_seen = take_seen(&bench.seen);
    assert_eq!(fast_seen.len(), 1, "the replica got {fast_seen:?}");
    assert!(fast_seen[0].headers.contains(&("upgrade".into(), "echo".into())), "{fast_seen:?}");
    assert_eq!(fast_seen, hyper_seen, "what the replica got differs (fast, then hyper)");
    assert_eq!(fast, hyper, "what the client got differs (fast, then hyper)");
    assert_eq!(fast.0.status, 101);
    assert!(fast.0.headers.contains(&("connection".into(), "upgrade".into())), "{:?}", fast.0);
    assert!(fast.0.headers.contains(&("upgrade".into(), "echo".into())), "{:?}", fast.0);
    assert!(fast.0.headers.contains(&("x-ringlb-replica".into(), "only".into())), "{:?}", fast.0);
    assert_eq!(fast.1, b"hello ping");
    // Bytes the client sends right behind its request reach the replica through the tunnel.
    for lb in [&bench.fast, &bench.hyper] {
        let (head, bytes) = upgrade_through(lb, b"early ", b"late").await;
        assert_eq!((head.status, bytes.as_slice()), (101, &b"hello early late"[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_never_reach_a_replica() {
    let bench = bench("").await;
    let bad: [&[u8]; 9] = [
        b"POST /echo HTTP/1.1\r\nHost: lb\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: lb\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /echo HTTP/1.1\r\nHost: lb\r\nContent-Length: -3\r\n\r\nabc",
        b"POST /echo HTTP/1.1\r\nHost: lb\r\nContent-Length: 0x3\r\n\r\nabc",
        b"GET /plain HTTP/1.1\nHost: lb\n\n",
        b"GET /plain HTTP/1.1\r\nHost: lb\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET /plain HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /plain HTTP/1.1\r\nX-No-Host: 1\r\n\r\n",
    ];
    for raw in bad {
        let answer = exchange(&bench.fast, raw).await;
        let got = responses(&answer, &[false]);
        assert_eq!(got[0].status, 400, "{:?}", String::from_utf8_lossy(raw));
        let body = String::from_utf8_lossy(&got[0].body);
        assert!(body.starts_with(r#"{"message": "<Error> "#), "{body}");
        assert!(take_seen(&bench.seen).is_empty(), "{:?} reached the replica", String::from_utf8_lossy(raw));
    }
    let huge = format!("GET /plain HTTP/1.1\r\nHost: lb\r\nX-Big: {}\r\n\r\n", "x".repeat(70 * 1024));
    let got = responses(&exchange(&bench.fast, huge.as_bytes()).await, &[false]);
    assert_eq!(got[0].status, 431);
    // Other clients are served all along.
    let ok = responses(
        &exchange(&bench.fast, b"GET /plain HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n").await,
        &[false],
    );
    assert_eq!((ok[0].status, ok[0].body.as_slice()), (200, &b"plain body"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let bench = bench("").await;
    let raw = b"GET /plain HTTP/1.1\r\nHost: lb\r\n\r\n\
                POST /echo HTTP/1.1\r\nHost: lb\r\nContent-Length: 5\r\n\r\nhello\
                HEAD /plain HTTP/1.1\r\nHost: lb\r\n\r\n\
                GET /chunked HTTP/1.1\r\nHost: lb\r\n\r\n\
                GET /rep HTTP/1.1\r\nHost: lb\r\n\r\n\
                GET /plain HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";
    for lb in [&bench.fast, &bench.hyper] {
        let got = responses(&exchange(lb, raw).await, &[false, false, true, false, false, false]);
        let bodies: Vec<&[u8]> = got.iter().map(|g| g.body.as_slice()).collect();
        assert_eq!(bodies[..4], [&b"plain body"[..], b"hello", b"", b"abcde"]);
        assert!(String::from_utf8_lossy(bodies[4]).contains(r#""replicas": ["only"]"#));
        assert_eq!(bodies[5], b"plain body");
        assert!(got.iter().all(|g| g.status == 200));
    }
}

/// A replica that closes a keep-alive connection after an answer, without saying so: the next
/// request finds that connection in the pool. The fast path looks at a pooled connection before it
/// reuses it, for a POST with a system call that sees a close the runtime has not noticed yet; a
/// GET that finds the close too late for that is sent again on a new connection. So neither costs
/// a request. (A POST is never sent twice, so one that meets a close at the very moment it is sent
/// fails: before a POST the test waits until the replica has closed, which it cannot do in the
/// GET rounds. The hyper path's pooled client cannot check with the kernel, so only the fast path
/// is held to this.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_connections_closed_while_idle_cost_no_request() {
    let bench = bench("").await;
    for round in 0..60 {
        let closed_before = SILENT_CLOSES.load(Ordering::SeqCst);
        let closing = bench.fast.get("/silent-close").await;
        assert_eq!((closing.status, closing.body.as_str()), (200, "closed"), "round {round}");
        let method = if round % 2 == 0 { "POST" } else { "GET" };
        if method == "POST" {
            let closed = common::eventually(Duration::from_secs(5), || async {
                SILENT_CLOSES.load(Ordering::SeqCst) > closed_before
            })
            .await;
            assert!(closed, "round {round}: the replica did not close its connection");
        }
        let next = bench.fast.request(method, "/echo", "payload", &[]).await;
        assert_eq!((next.status, next.body.as_str()), (200, "payload"), "{method}, round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exercises_404_is_the_same_on_both_paths() {
    let bench = bench("  unknown_path: exercise\n").await;
    let raw = b"GET /missing?x=1 HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";
    let fast = responses(&exchange(&bench.fast, raw).await, &[false]);
    let hyper = responses(&exchange(&bench.hyper, raw).await, &[false]);
    assert_eq!(fast, hyper);
    assert_eq!(fast[0].status, 400);
    assert_eq!(
        String::from_utf8_lossy(&fast[0].body),
        r#"{"message": "<Error> '/missing' endpoint does not exist in server replicas", "status": "failure"}"#
    );
}

/// A replica that takes requests and then resets the connection without answering (a crash with
/// the request unread) but answers its heartbeats, so it stays in the ring; it counts what it got.
async fn resetting_replica(listener: TcpListener, got: Arc<Mutex<usize>>) {
    dying_replica(listener, got, b"").await;
}

/// A replica like [`resetting_replica`] that first sends `last_words` (an answer's head, say)
/// and then closes; with nothing to send, it resets the connection with the request unread.
async fn dying_replica(listener: TcpListener, got: Arc<Mutex<usize>>, last_words: &'static [u8]) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let got = Arc::clone(&got);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let mut chunk = [0u8; 4096];
                let Ok(n) = stream.read(&mut chunk).await else { return };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                if buf.starts_with(b"GET /heartbeat ") {
                    buf.drain(..end + 4);
                    if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                        return;
                    }
                    continue;
                }
                *got.lock().unwrap() += 1;
                if last_words.is_empty() {
                    // Close with the request unread: the kernel answers with a reset.
                    let _ = stream.set_zero_linger();
                } else {
                    let _ = stream.write_all(last_words).await;
                }
                return;
            }
        });
    }
}

/// A replica that fails every request twice in a row (on a pooled connection and on a new one)
/// costs an idempotent request nothing: it goes on to the next candidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_fails_twice_sends_the_request_to_the_next() {
    let bad = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad_addr = bad.local_addr().unwrap();
    let got = Arc::new(Mutex::new(0));
    tokio::spawn(resetting_replica(bad, Arc::clone(&got)));
    let good = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let good_addr = good.local_addr().unwrap();
    tokio::spawn(replica(good, Arc::new(Mutex::new(Vec::new()))));
    for engine in ["fast", "hyper"] {
        let lb = Lb::start(&format!(
            "name: twice-{engine}\nreplicas: 2\nhostnames: [bad, good]\nlisten: 127.0.0.1:0\nreplica:\n  \
             runtime: static\n  endpoints: [\"{bad_addr}\", \"{good_addr}\"]\nhealth:\n  interval: 200ms\n  \
             timeout: 150ms\nproxy:\n  engine: {engine}\n"
        ))
        .await;
        let before = *got.lock().unwrap();
        for id in 100_000..100_020 {
            let answer = lb.request("GET", "/plain", "", &[("x-request-id", &id.to_string())]).await;
            assert_eq!(
                (answer.status, answer.replica().as_str()),
                (200, "good"),
                "{engine}, id {id}: {}",
                answer.body
            );
        }
        assert!(*got.lock().unwrap() > before, "{engine}: no request went to the failing replica first");
    }
}

/// On the fast path, a replica that dies between a small answer's head and its body costs an
/// idempotent request nothing: the answer is read whole before it goes to the client, so the
/// request goes to the next replica as one cut inside the head would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_dies_between_head_and_body_costs_the_fast_path_no_request() {
    let bad = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad_addr = bad.local_addr().unwrap();
    let got = Arc::new(Mutex::new(0));
    let head_only: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n";
    tokio::spawn(dying_replica(bad, Arc::clone(&got), head_only));
    let good = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let good_addr = good.local_addr().unwrap();
    tokio::spawn(replica(good, Arc::new(Mutex::new(Vec::new()))));
    let lb = Lb::start(&format!(
        "name: headonly\nreplicas: 2\nhostnames: [bad, good]\nlisten: 127.0.0.1:0\nreplica:\n  \
         runtime: static\n  endpoints: [\"{bad_addr}\", \"{good_addr}\"]\nhealth:\n  interval: 200ms\n  \
         timeout: 150ms\nproxy:\n  engine: fast\n"
    ))
    .await;
    for id in 100_000..100_020 {
        let answer = lb.request("GET", "/plain", "", &[("x-request-id", &id.to_string())]).await;
        assert_eq!((answer.status, answer.replica().as_str()), (200, "good"), "id {id}: {}", answer.body);
    }
    assert!(*got.lock().unwrap() > 0, "no request went to the dying replica first");
}

/// A replica that answers the first request of each connection and resets the connection at the
/// second (as a replica does whose process dies with the connection open), counting what it got;
/// heartbeats are always answered.
async fn reset_on_reuse_replica(listener: TcpListener, got: Arc<Mutex<Vec<(String, bool)>>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let got = Arc::clone(&got);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut served = 0;
            loop {
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() < end + 4 + length {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    continue;
                }
                buf.drain(..end + 4 + length);
                if head.starts_with("GET /heartbeat ") {
                    if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                        return;
                    }
                    continue;
                }
                let method = head.split(' ').next().unwrap_or_default().to_owned();
                served += 1;
                let answered = served == 1;
                got.lock().unwrap().push((method, answered));
                if !answered {
                    let _ = stream.set_zero_linger();
                    return;
                }
                if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Where the two engines differed before they shared one policy: a reset on a reused replica
/// connection, before any answer. A GET is sent again over a new connection (and answered); a
/// POST is never sent twice (RFC 9110 section 9.2.2: a proxy does not retry a non-idempotent
/// request), so the client gets the 502 and the replica saw the POST exactly once. Both engines
/// give the same answers and get the same requests answered. (How many GETs were reset depends on
/// which connections each engine keeps: the fast path pools the new connection of a retry, the
/// hyper path's retry client does not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_on_a_reused_connection_resends_a_get_but_never_a_post() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(reset_on_reuse_replica(listener, Arc::clone(&got)));
    let mut seen_by_engine = Vec::new();
    for engine in ["fast", "hyper"] {
        let lb = Lb::start(&format!(
            "name: reuse-{engine}\nreplicas: 1\nhostnames: [only]\nlisten: 127.0.0.1:0\nreplica:\n  runtime: static\n  \
             endpoints: [\"{addr}\"]\nhealth:\n  interval: 200ms\n  timeout: 150ms\nproxy:\n  engine: {engine}\n"
        ))
        .await;
        got.lock().unwrap().clear();
        // A new connection, answered and pooled; its second request is reset and sent again on a
        // new one; the same again, so that the POST goes out on a reused connection.
        let mut statuses = Vec::new();
        for method in ["GET", "GET", "GET", "POST"] {
            statuses.push(lb.request(method, "/plain", "", &[]).await.status);
        }
        assert_eq!(statuses, [200, 200, 200, 502], "{engine}");
        let seen = got.lock().unwrap().clone();
        let posts: Vec<bool> =
            seen.iter().filter(|(m, _)| m == "POST").map(|(_, answered)| *answered).collect();
        assert_eq!(posts, [false], "{engine}: the POST was not sent exactly once: {seen:?}");
        let resent = seen.iter().filter(|(m, answered)| m == "GET" && !answered).count();
        assert!(resent >= 1, "{engine}: no GET went out on a reused connection: {seen:?}");
        let answered: Vec<String> = seen.into_iter().filter(|(_, a)| *a).map(|(m, _)| m).collect();
        seen_by_engine.push(answered);
    }
    assert_eq!(seen_by_engine[0], ["GET", "GET", "GET"]);
    assert_eq!(seen_by_engine[0], seen_by_engine[1], "the engines got different requests answered");
}
