//! Devices publishing telemetry at QoS 1, one MQTT connection each, stop-and-wait: publish
//! sequence number `seq`, wait for its PUBACK (bounded), record the outcome, go on. With
//! one message in flight a PUBACK can only be for that message; after any connection error
//! the client is dropped and a fresh one connects, so a late PUBACK of an old connection is
//! never credited to a new message.
//!
//! Payload `{"ts": base + seq, "seq": seq, "values": {"temp": T}}`: `ts` identifies the point
//! when read back; `T` is 35 for ten messages in every forty and 20 otherwise, so a rule
//! `temp > 30` raises and clears alarms all through the run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::now_ms;
use crate::history::PublishOp;

/// How long one message waits for its PUBACK before it is recorded as unacknowledged.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between one device's messages.
pub const PACE: Duration = Duration::from_millis(25);

/// The temperature of message `seq` (see the module docs).
pub fn temperature(seq: u64) -> f64 {
    if (seq / 10).is_multiple_of(4) {
        35.0
    } else {
        20.0
    }
}

/// `ts` of message `seq`.
pub fn ts_of(base_ts_ms: i64, seq: u64) -> i64 {
    base_ts_ms + seq as i64
}

/// The payload of message `seq`.
pub fn payload(base_ts_ms: i64, seq: u64) -> String {
    format!(
        r#"{{"ts":{},"seq":{seq},"values":{{"temp":{:.1}}}}}"#,
        ts_of(base_ts_ms, seq),
        temperature(seq)
    )
}

/// One running device; [`Device::finish`] returns its history.
pub struct Device {
    pub id: String,
    ops: Arc<Mutex<Vec<PublishOp>>>,
    task: JoinHandle<()>,
}

impl Device {
    /// Starts publishing to the broker at `host:port` until `stop` turns true.
    pub fn start(
        id: String,
        host: String,
        port: u16,
        base_ts_ms: i64,
        stop: watch::Receiver<bool>,
    ) -> Device {
        let ops = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(run(id.clone(), host, port, base_ts_ms, stop, ops.clone()));
        Device { id, ops, task }
    }

    /// Waits for the device to stop and returns every publish it made.
    pub async fn finish(self) -> Vec<PublishOp> {
        let _ = self.task.await;
        std::mem::take(&mut *self.ops.lock().expect("ops lock"))
    }
}

async fn run(
    id: String,
    host: String,
    port: u16,
    base_ts_ms: i64,
    mut stop: watch::Receiver<bool>,
    ops: Arc<Mutex<Vec<PublishOp>>>,
) {
    let topic = format!("devices/{id}/telemetry");
    let mut seq = 0u64;
    while !*stop.borrow() {
        let mut options = MqttOptions::new(format!("chaos-{id}"), host.clone(), port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        // One connection: publish until it fails, then start over with a fresh client.
        loop {
            if *stop.borrow() {
                return;
            }
            seq += 1;
            let sent_ms = now_ms();
            let mut acked_ms = None;
            let mut broken = client
                .publish(&topic, QoS::AtLeastOnce, false, payload(base_ts_ms, seq))
                .await
                .is_err();
            let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
            while !broken && acked_ms.is_none() {
                match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked_ms = Some(now_ms()),
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) | Err(_) => broken = true,
                }
            }
            ops.lock().expect("ops lock").push(PublishOp {
                seq,
                sent_ms,
                acked_ms,
            });
            if broken {
                break;
            }
            tokio::select! {
                // Stop requested: the loop condition ends the device.
                _ = stop.changed() => {}
                // Pace the device.
                _ = tokio::time::sleep(PACE) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_and_pattern() {
        assert_eq!(
            payload(1000, 3),
            r#"{"ts":1003,"seq":3,"values":{"temp":35.0}}"#
        );
        let hot: Vec<u64> = (0..40).filter(|s| temperature(*s) > 30.0).collect();
        assert_eq!(hot, (0..10).collect::<Vec<_>>());
        assert_eq!(temperature(55), 20.0);
    }
}
