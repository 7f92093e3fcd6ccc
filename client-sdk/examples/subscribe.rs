//! Prints the points of one device as they are stored.
//!
//! ```text
//! cargo run -p starling-sdk --example subscribe -- DEVICE [PROFILE] [METRIC…]
//! ```
//!
//! PROFILE is a client profile (`starling dev` writes `./starling-data/client.toml`); without
//! it, `$STARLING_PROFILE` or that default path. METRICs filter (default: every metric).

use futures::StreamExt;
use starling_sdk::proto::SubscribeRequest;
use starling_sdk::{Client, Error, Profile};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let Some(device) = args.next() else {
        return Err(Error::Config(
            "usage: subscribe DEVICE [PROFILE] [METRIC…]".into(),
        ));
    };
    let profile_path = args.next().map(std::path::PathBuf::from);
    let metrics: Vec<String> = args.collect();
    let profile = Profile::from_env_or(profile_path.as_deref())?;
    let client = Client::connect(&profile)?;

    let mut points = client
        .subscribe_with(SubscribeRequest {
            device,
            metrics,
            ..Default::default()
        })
        .await?;
    while let Some(point) = points.next().await {
        match point {
            Ok(p) => println!(
                "{} {} {} {:?}",
                p.ts_ms,
                p.device,
                p.metric,
                p.value.and_then(|v| v.kind)
            ),
            // A lag ends the stream with Error::DataLoss saying how many points were skipped.
            Err(e) => {
                eprintln!("subscription ended: {e}");
                return Err(e);
            }
        }
    }
    Ok(())
}
