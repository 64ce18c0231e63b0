//! The watched manifest: edits apply, invalid edits change nothing, and admin edits survive a
//! restart with the user's comments intact.

mod common;

use common::{Lb, eventually, manifest, until};
use std::time::Duration;

async fn wait_for_ring(lb: &Lb, count: usize) -> bool {
    eventually(Duration::from_secs(20), || async {
        lb.ring().await.len() == count && lb.replica_pids().len() == count
    })
    .await
}

#[tokio::test]
async fn editing_replicas_moves_the_live_set_and_an_invalid_edit_changes_nothing() {
    let lb = Lb::start(&manifest("edits", 3, "")).await;
    let original = lb.read_manifest();

    lb.write_manifest(&original.replace("replicas: 3", "replicas: 5"));
    assert!(wait_for_ring(&lb, 5).await, "did not grow to 5: {}", lb.status().await);
    assert_eq!(lb.get("/rep").await.json()["message"]["N"], 5);

    lb.write_manifest(&original.replace("replicas: 3", "replicas: 2"));
    assert!(wait_for_ring(&lb, 2).await, "did not shrink to 2: {}", lb.status().await);
    assert_eq!(lb.ring().await, ["edits-1", "edits-2"]);

    // An invalid edit: nothing changes, the error is reported with its line.
    lb.write_manifest(&original.replace("replicas: 3", "replicas: three"));
    until!(
        Duration::from_secs(10),
        || async { lb.status().await["last_manifest_error"].as_str().is_some_and(|e| e.contains("line 3")) },
        "no error reported: {}",
        lb.status().await
    );
    assert_eq!(lb.ring().await.len(), 2);
    assert_eq!(lb.get("/home").await.status, 200);
    assert_eq!(
        lb.request("POST", "/add", r#"{"n": 1}"#, &[]).await.status,
        409,
        "no scaling on an invalid file"
    );

    // The next valid edit applies.
    lb.write_manifest(&original.replace("replicas: 3", "replicas: 4"));
    assert!(wait_for_ring(&lb, 4).await, "did not grow to 4: {}", lb.status().await);
    assert!(lb.status().await["last_manifest_error"].is_null());
}

#[tokio::test]
async fn an_add_survives_a_restart_with_comments_intact() {
    let text = manifest("restart", 2, "hostnames: [alpha, beta]   # named ones\n# a trailing comment\n");
    let mut lb = Lb::start(&text).await;
    let added = lb.request("POST", "/add", r#"{"n": 2, "hostnames": ["gamma"]}"#, &[]).await;
    assert_eq!(added.status, 200, "{}", added.body);
    let names = added.json()["message"]["replicas"].clone();
    assert_eq!(names, serde_json::json!(["alpha", "beta", "gamma", "restart-1"]));
    lb.wait_ready(Duration::from_secs(20)).await;

    let on_disk = lb.read_manifest();
    assert!(on_disk.contains("replicas: 4   # N"), "{on_disk}");
    assert!(on_disk.contains("hostnames: [alpha, beta, gamma, restart-1]   # named ones"), "{on_disk}");
    for line in text.lines().filter(|l| !l.starts_with("replicas:") && !l.starts_with("hostnames:")) {
        assert!(on_disk.contains(line), "lost line {line:?}:\n{on_disk}");
    }

    lb.restart().await;
    assert_eq!(lb.get("/rep").await.json()["message"]["replicas"], names);
    let mut running: Vec<String> = lb.replica_pids().into_iter().map(|(_, id)| id).collect();
    running.sort();
    assert_eq!(running, ["alpha", "beta", "gamma", "restart-1"]);
}

#[tokio::test]
async fn concurrent_admin_calls_are_serialised_and_none_is_lost() {
    let lb = std::sync::Arc::new(Lb::start(&manifest("concurrent", 1, "")).await);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let lb = std::sync::Arc::clone(&lb);
        calls.spawn(async move { lb.request("POST", "/add", r#"{"n": 1}"#, &[]).await.status });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(lb.get("/rep").await.json()["message"]["N"], 7);
    assert!(lb.read_manifest().contains("replicas: 7"));
    assert!(wait_for_ring(&lb, 7).await);
}
