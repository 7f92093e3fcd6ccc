//! Prints committed alarm transitions as they happen (optionally of one device).
//!
//! ```text
//! cargo run -p starling-sdk --example watch_alerts -- [PROFILE] [DEVICE]
//! ```
//!
//! PROFILE is a client profile (`starling dev` writes `./starling-data/client.toml`); without
//! it, `$STARLING_PROFILE` or that default path. Without DEVICE, every device's alarms.

use futures::StreamExt;
use starling_sdk::proto::WatchAlarmsRequest;
use starling_sdk::{Client, Error, Profile};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let profile_path = args.next().map(std::path::PathBuf::from);
    let device = args.next().unwrap_or_default();
    let profile = Profile::from_env_or(profile_path.as_deref())?;
    let client = Client::connect(&profile)?;

    let request = WatchAlarmsRequest {
        device,
        ..Default::default()
    };
    let mut events = client.watch_alarms(request).await?;
    println!("watching; Ctrl-C to stop");
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                let alarm = event.alarm.clone().unwrap_or_default();
                println!(
                    "{:?} {} on {} ({}): {}",
                    event.transition(),
                    alarm.rule_id,
                    alarm.device,
                    alarm.severity,
                    alarm.message
                );
            }
            // The open stream does not fail over: say why it ended (a watcher that fell
            // behind gets Error::DataLoss; list alarms and watch again).
            Err(e) => {
                eprintln!("watch ended: {e}");
                return Err(e);
            }
        }
    }
    Ok(())
}
