//! Tests of the embedded store: the conformance suite, plus what only a durable local store
//! promises (reopen, drop, close racing writes, corrupt values, batch limits).

use super::*;
use crate::model::Value;
use tempfile::TempDir;

/// A fresh store in its own temporary directory, which lives as long as the returned guard.
async fn fresh() -> (Arc<EmbeddedStore>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
    (store, dir)
}

mod conformance {
    crate::telemetry_store_conformance!(super::fresh);
}

fn point(device: &str, metric: &str, ts_ms: TimestampMs, value: f64) -> Point {
    Point {
        device: DeviceKey::new("t", device),
        metric: metric.to_owned(),
        ts_ms,
        value: Value::Number(value),
    }
}

fn everything(device: &str) -> RangeQuery {
    RangeQuery {
        device: DeviceKey::new("t", device),
        metric: None,
        from_ms: TimestampMs::MIN,
        to_ms: TimestampMs::MAX,
        limit: 1_000_000,
        page_token: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_after_close_sees_every_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
    store
        .write(vec![point("d", "m", 1, 1.0), point("d", "n", 2, 2.0)])
        .await
        .expect("write");
    store
        .write(vec![point("d", "m", 3, 3.0)])
        .await
        .expect("write");
    store.close().await;
    drop(store);

    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("reopen");
    let page = store.query(everything("d")).await.expect("query");
    assert_eq!(
        page.points,
        vec![
            point("d", "m", 1, 1.0),
            point("d", "m", 3, 3.0),
            point("d", "n", 2, 2.0)
        ]
    );
    let latest = store
        .latest(&DeviceKey::new("t", "d"))
        .await
        .expect("latest");
    assert_eq!(
        latest,
        vec![point("d", "m", 3, 3.0), point("d", "n", 2, 2.0)]
    );
    let info = store
        .device(&DeviceKey::new("t", "d"))
        .await
        .expect("device");
    assert_eq!(
        info.map(|i| (i.first_seen_ms, i.last_seen_ms)),
        Some((1, 3))
    );
    store
        .write(vec![point("d", "m", 4, 4.0)])
        .await
        .expect("write after reopen");
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_without_close_stops_the_writer_and_keeps_the_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
    store
        .write(vec![point("d", "m", 1, 1.0)])
        .await
        .expect("write");
    // The drop joins the writer, which releases the file: the reopen would fail otherwise.
    drop(store);
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("reopen");
    assert_eq!(
        store
            .query(everything("d"))
            .await
            .expect("query")
            .points
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_open_of_an_open_store_fails() {
    let (_store, dir) = fresh().await;
    match EmbeddedStore::open(dir.path(), EmbeddedOptions::default()) {
        Err(StorageError::Engine(_)) => {}
        Err(other) => panic!("expected an engine error, got {other}"),
        Ok(_) => panic!("the same file opened twice"),
    }
}

/// Writes racing with `close` either complete (and are durable) or fail with `Closed`.
#[tokio::test(flavor = "multi_thread")]
async fn writes_racing_close_complete_or_are_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..50 {
                let p = point("d", &format!("m{task}"), i, 0.0);
                match store.write(vec![p.clone()]).await {
                    Ok(()) => acked.push(p),
                    Err(StorageError::Closed) => break,
                    Err(other) => panic!("unexpected {other}"),
                }
            }
            acked
        });
    }
    tokio::task::yield_now().await;
    store.close().await;
    let mut acked = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        acked.extend(joined.expect("task"));
    }
    drop(store);

    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("reopen");
    let stored = store.query(everything("d")).await.expect("query").points;
    for p in &acked {
        assert!(stored.contains(p), "acknowledged {p:?} lost");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tiny_batches_still_store_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = EmbeddedOptions {
        max_batch_points: 1,
    };
    let store = EmbeddedStore::open(dir.path(), options).expect("open");
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            for i in 0..20 {
                store
                    .write(vec![point("d", "m", task * 100 + i, 0.0)])
                    .await
                    .expect("write");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
    }
    assert_eq!(
        store
            .query(everything("d"))
            .await
            .expect("query")
            .points
            .len(),
        160
    );
}

/// Within one batch the later of two points with the same identity wins, in the points and
/// in latest alike.
#[tokio::test(flavor = "multi_thread")]
async fn last_point_of_a_batch_wins() {
    let (store, _dir) = fresh().await;
    store
        .write(vec![point("d", "m", 5, 1.0), point("d", "m", 5, 2.0)])
        .await
        .expect("write");
    assert_eq!(
        store.query(everything("d")).await.expect("query").points,
        vec![point("d", "m", 5, 2.0)]
    );
    let latest = store
        .latest(&DeviceKey::new("t", "d"))
        .await
        .expect("latest");
    assert_eq!(latest, vec![point("d", "m", 5, 2.0)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_write_is_ok() {
    let (store, _dir) = fresh().await;
    store.write(Vec::new()).await.expect("empty write");
    assert_eq!(
        store.devices("t", None, 10).await.expect("devices"),
        Vec::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_stored_value_is_an_engine_error() {
    let (store, _dir) = fresh().await;
    store
        .write(vec![point("d", "m", 1, 1.0)])
        .await
        .expect("write");
    let txn = store.db.begin_write().expect("begin");
    {
        let mut points = txn.open_table(POINTS).expect("table");
        points
            .insert(("t", "d", "m", 2), [0x7f_u8, 1].as_slice())
            .expect("insert");
    }
    txn.commit().expect("commit");
    match store.query(everything("d")).await {
        Err(StorageError::Engine(message)) => assert!(message.contains("corrupt"), "{message}"),
        other => panic!("expected an engine error, got {other:?}"),
    }
}
