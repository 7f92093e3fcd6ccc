//! Publishes a few samples of one device, over a publish stream, then reads them back.
//!
//! ```text
//! cargo run -p starling-sdk --example publish_and_query -- [PROFILE] [DEVICE]
//! ```
//!
//! PROFILE is a client profile (`starling dev` writes `./starling-data/client.toml`); without
//! it, `$STARLING_PROFILE` or that default path. DEVICE defaults to `example-1`.

use futures::StreamExt;
use starling_sdk::proto::{AggregateRequest, QueryRequest, Sample, Value, value::Kind};
use starling_sdk::{Client, Profile};

#[tokio::main]
async fn main() -> Result<(), starling_sdk::Error> {
    let mut args = std::env::args().skip(1);
    let profile_path = args.next().map(std::path::PathBuf::from);
    let device = args.next().unwrap_or_else(|| "example-1".to_owned());
    let profile = Profile::from_env_or(profile_path.as_deref())?;
    let client = Client::connect(&profile)?;

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let start = now_ms - 10_000;

    // One unary publish…
    let reply = client
        .publish("", &device, vec![sample(start, 20.0)])
        .await?;
    println!("unary publish: {} point(s) stored", reply.accepted_points);

    // …and nine more over one stream, acknowledged in order once durable.
    let (mut sender, mut acks) = client.publish_stream().await?;
    let stream_device = device.clone();
    let sending = tokio::spawn(async move {
        for i in 1..10 {
            let s = sample(start + i * 1_000, 20.0 + i as f64);
            sender.send(&stream_device, vec![s]).await?;
        }
        // Dropping the sender closes the stream once every request is answered.
        Ok::<_, starling_sdk::Error>(())
    });
    while let Some(ack) = acks.next().await {
        let ack = ack?;
        println!("request {} durable", ack.request_id);
    }
    sending.await.expect("the sending task panicked")?;

    let points = client
        .query_all(QueryRequest {
            device: device.clone(),
            from_ms: start,
            ..Default::default()
        })
        .await?;
    println!("{} point(s) of {device} since {start}:", points.len());
    for p in &points {
        println!(
            "  {} {} {:?}",
            p.ts_ms,
            p.metric,
            p.value.as_ref().and_then(|v| v.kind.clone())
        );
    }

    let avg = client
        .aggregate_all(AggregateRequest {
            device: device.clone(),
            metric: "temp".into(),
            function: "avg".into(),
            interval_ms: 60_000,
            from_ms: start,
            ..Default::default()
        })
        .await?;
    for row in avg {
        println!(
            "avg temp from {}: {:.2} over {} point(s)",
            row.start_ms, row.value, row.count
        );
    }
    Ok(())
}

fn sample(ts_ms: i64, temp: f64) -> Sample {
    let value = Value {
        kind: Some(Kind::Number(temp)),
    };
    Sample {
        ts_ms,
        seq: None,
        values: [("temp".to_owned(), value)].into(),
    }
}
