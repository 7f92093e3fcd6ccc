//! The registry gate in front of the ingest sink: telemetry of a registered device passes;
//! an unknown device is auto-provisioned (one Raft write) or refused for good.
//!
//! Every node checks its own applied copy of the registry (it is replicated through Raft), on
//! the node that received the message, before routing or forwarding. With
//! auto-provisioning on, concurrent messages of one unknown device share a single
//! `AutoRegister` write (per node; two nodes receiving the first messages of one device at
//! once may each write one, and the second is applied as "unchanged"). With it off, the
//! refusal is [`SinkError::unknown_device`]: ingest acknowledges the message (the broker must
//! not redeliver it forever: it will never be accepted until someone registers the device),
//! counts it in `starling_ingest_rejected_total{reason="unknown_device"}` and explains it on
//! `devices/{id}/errors`; a gRPC publish answers FAILED_PRECONDITION.
//!
//! What this does not do: validate payloads (ingest did), store anything, or cache the
//! registry (each message reads the applied table: one redb read transaction).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tokio::sync::OnceCell;

use crate::ingest::{PointSink, SinkError};
use crate::metrics_names::DEVICES_PROVISIONED;
use crate::model::{DeviceKey, Sample};
use crate::raft::ControlPlane;
use crate::raft::command::{ControlCommand, ControlResponse};
use crate::raft::registry::DeviceCommand;

type Pending = Arc<OnceCell<Result<(), SinkError>>>;

/// A [`PointSink`] that lets only registered (or newly provisioned) devices through.
pub struct ProvisionSink {
    inner: Arc<dyn PointSink>,
    control: ControlPlane,
    /// Register unknown devices on their first telemetry (`dev`: on; `serve`: off by default).
    auto_provision: bool,
    /// Registrations in flight, so concurrent messages of a new device write once.
    pending: Mutex<HashMap<DeviceKey, Pending>>,
}

impl ProvisionSink {
    pub fn new(inner: Arc<dyn PointSink>, control: ControlPlane, auto_provision: bool) -> Self {
        Self {
            inner,
            control,
            auto_provision,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Registers `device` through Raft, sharing the write with concurrent callers.
    async fn provision(&self, device: &DeviceKey) -> Result<(), SinkError> {
        let cell = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(device.clone())
            .or_default()
            .clone();
        let result = cell
            .get_or_init(|| register(&self.control, device))
            .await
            .clone();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.get(device).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            pending.remove(device);
        }
        result
    }
}

/// One `AutoRegister` entry; already registered is fine.
async fn register(control: &ControlPlane, device: &DeviceKey) -> Result<(), SinkError> {
    let cmd = ControlCommand::Device(DeviceCommand::AutoRegister {
        device: device.clone(),
        at_ms: crate::api::now_ms(),
    });
    // Committed is enough: the message goes on to the device's owner, and this node may be
    // one that never applies it (removed from the membership but still subscribed).
    match control.write_committed(cmd).await {
        Ok(ControlResponse::Device(Some(_))) => {
            metrics::counter!(DEVICES_PROVISIONED).increment(1);
            tracing::info!(%device, "device auto-provisioned");
            Ok(())
        }
        Ok(ControlResponse::Unchanged) => Ok(()),
        // Every failure is retried: a refusal here would acknowledge the message to the
        // broker and drop points the device was already told were delivered. The message
        // stays un-acknowledged (and the broker keeps it) until provisioning succeeds.
        Ok(other) => {
            tracing::error!(%device, answer = ?other, "auto-provisioning: unexpected answer; retrying");
            Err(SinkError::retryable(format!(
                "auto-provisioning {device}: unexpected answer {other:?}"
            )))
        }
        Err(e) => {
            if !e.is_retryable() {
                tracing::error!(%device, error = %e, "auto-provisioning failed; retrying");
            }
            Err(SinkError::retryable(format!(
                "auto-provisioning {device}: {e}"
            )))
        }
    }
}

#[async_trait]
impl PointSink for ProvisionSink {
    async fn ingest(
        &self,
        device: DeviceKey,
        samples: Arc<[Sample]>,
        received_at_ms: i64,
    ) -> Result<(), SinkError> {
        let known = self
            .control
            .device(&device)
            .map_err(|e| SinkError::retryable(format!("reading the device registry: {e}")))?
            .is_some();
        if !known {
            if !self.auto_provision {
                return Err(SinkError::unknown_device(format!(
                    "device {} is not registered and auto-provisioning is off: register it \
                     with `starling devices register {}` or set ingest.auto_provision = true",
                    device, device.device
                )));
            }
            self.provision(&device).await?;
        }
        self.inner.ingest(device, samples, received_at_ms).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tempfile::TempDir;

    use super::*;
    use crate::ingest::UNKNOWN_DEVICE;

    /// Counts what reaches it.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl PointSink for Counting {
        async fn ingest(&self, _: DeviceKey, _: Arc<[Sample]>, _: i64) -> Result<(), SinkError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    async fn control(dir: &TempDir) -> ControlPlane {
        match ControlPlane::open_single(dir.path(), 1, "127.0.0.1:7001", 16).await {
            Ok(cp) => cp,
            Err(e) => panic!("open_single: {e}"),
        }
    }

    fn applied(cp: &ControlPlane) -> u64 {
        cp.applied_index_on_disk().expect("applied index")
    }

    #[tokio::test]
    async fn unknown_devices_are_refused_when_auto_provisioning_is_off() {
        let dir = TempDir::new().expect("dir");
        let cp = control(&dir).await;
        let inner = Arc::new(Counting::default());
        let sink = ProvisionSink::new(inner.clone(), cp.clone(), false);
        let d = DeviceKey::default_tenant("stranger");
        let err = sink
            .ingest(d.clone(), Arc::from(Vec::new()), 0)
            .await
            .expect_err("refused");
        assert_eq!((err.retryable, err.reason), (false, UNKNOWN_DEVICE));
        assert!(
            err.message.contains("starling devices register stranger"),
            "{}",
            err.message
        );
        assert_eq!(inner.0.load(Ordering::SeqCst), 0);
        assert!(cp.device(&d).expect("read").is_none(), "nothing registered");

        // Once an operator registers it, its telemetry passes.
        let cmd = ControlCommand::Device(DeviceCommand::Register {
            device: d.clone(),
            device_type: Some("meter".into()),
            labels: Default::default(),
            at_ms: 1,
        });
        cp.write(cmd).await.expect("register");
        sink.ingest(d, Arc::from(Vec::new()), 0)
            .await
            .expect("stored");
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        cp.shutdown().await;
    }

    #[tokio::test]
    async fn a_new_device_is_provisioned_with_one_write_for_many_messages() {
        let dir = TempDir::new().expect("dir");
        let cp = control(&dir).await;
        let inner = Arc::new(Counting::default());
        let sink = Arc::new(ProvisionSink::new(inner.clone(), cp.clone(), true));
        let d = DeviceKey::default_tenant("newcomer");
        let before = applied(&cp);
        let calls = (0..20).map(|_| {
            let sink = sink.clone();
            let d = d.clone();
            tokio::spawn(async move { sink.ingest(d, Arc::from(Vec::new()), 0).await })
        });
        for call in futures::future::join_all(calls).await {
            call.expect("task").expect("stored");
        }
        assert_eq!(inner.0.load(Ordering::SeqCst), 20);
        assert_eq!(
            applied(&cp),
            before + 1,
            "one registry entry for 20 messages"
        );
        let record = cp.device(&d).expect("read").expect("registered");
        assert!(record.auto && record.device_type.is_none());
        // Later messages read the registry and write nothing.
        sink.ingest(d, Arc::from(Vec::new()), 0)
            .await
            .expect("stored");
        assert_eq!(applied(&cp), before + 1);
        cp.shutdown().await;
    }
}
