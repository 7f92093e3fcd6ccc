//! The device registry in the control plane: commands, records, their pure apply and the
//! validation and filter rules shared by the API and the tests.
//!
//! A device's metadata (type, labels) is control-plane state: every node needs the same answer
//! when a rule selector asks "is this a boiler labelled `site=north`?", and when ingest asks
//! "is this device known?". So registration, relabelling and deletion are Raft entries
//! ([`DeviceCommand`], one [`ControlCommand::Device`](super::command::ControlCommand::Device)
//! variant), applied here without IO; the records live in the `devices` table.
//!
//! What this file does not do: telemetry bookkeeping (first/last seen live in the store),
//! storage, or deciding whether unknown devices are provisioned (`cluster/provision.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::apply::{Applied, ControlState, Outcome};
use super::command::{ControlResponse, Rejection};
use crate::model::{DeviceKey, DeviceMeta, TimestampMs};

/// Most labels a device may carry.
pub const MAX_LABELS: usize = 64;
/// Longest label key and device type, characters.
pub const MAX_KEY_LEN: usize = 63;
/// Longest label value, characters.
pub const MAX_VALUE_LEN: usize = 256;

/// A registered device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub key: DeviceKey,
    /// What kind of device it is (`truck`, `boiler`); rule selectors match on it.
    pub device_type: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Leader's wall clock at registration.
    pub registered_at_ms: TimestampMs,
    /// Leader's wall clock at the last change of type or labels.
    pub updated_at_ms: TimestampMs,
    /// Registered by its first telemetry (auto-provisioning), not by an operator.
    pub auto: bool,
}

impl DeviceRecord {
    /// The metadata rule selectors match on.
    pub fn meta(&self) -> DeviceMeta {
        DeviceMeta {
            device_type: self.device_type.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// Registry entries of the Raft log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DeviceCommand {
    /// Registers a device, or replaces the type and labels of a registered one.
    Register {
        device: DeviceKey,
        device_type: Option<String>,
        labels: BTreeMap<String, String>,
        at_ms: TimestampMs,
    },
    /// Registers a device by its first telemetry: no type, no labels; changes nothing when
    /// the device is already registered.
    AutoRegister {
        device: DeviceKey,
        at_ms: TimestampMs,
    },
    /// Sets and removes labels of a registered device.
    Label {
        device: DeviceKey,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
        at_ms: TimestampMs,
    },
    /// Removes a device from the registry (its stored telemetry stays).
    Delete { device: DeviceKey },
}

/// Applies one registry entry. Answers [`ControlResponse::Device`] with the record after the
/// change (`None` after a delete), `Unchanged`, or `Rejected(NoSuchDevice)`.
pub fn apply_device<S: ControlState>(
    state: &mut S,
    cmd: &DeviceCommand,
) -> Result<Outcome, S::Error> {
    let changed = |record: DeviceRecord| Outcome {
        response: ControlResponse::Device(Some(record.clone())),
        events: vec![Applied::DeviceChanged {
            key: record.key.clone(),
            record: Some(record),
        }],
    };
    match cmd {
        DeviceCommand::Register {
            device,
            device_type,
            labels,
            at_ms,
        } => {
            let old = state.device(device)?;
            let record = DeviceRecord {
                key: device.clone(),
                device_type: device_type.clone(),
                labels: labels.clone(),
                registered_at_ms: old.as_ref().map_or(*at_ms, |o| o.registered_at_ms),
                updated_at_ms: *at_ms,
                auto: false,
            };
            if let Some(old) = old
                && old.device_type == record.device_type
                && old.labels == record.labels
                && !old.auto
            {
                return Ok(Outcome {
                    response: ControlResponse::Device(Some(old)),
                    events: Vec::new(),
                });
            }
            state.put_device(&record)?;
            Ok(changed(record))
        }
        DeviceCommand::AutoRegister { device, at_ms } => {
            if state.device(device)?.is_some() {
                return Ok(quiet(ControlResponse::Unchanged));
            }
            let record = DeviceRecord {
                key: device.clone(),
                device_type: None,
                labels: BTreeMap::new(),
                registered_at_ms: *at_ms,
                updated_at_ms: *at_ms,
                auto: true,
            };
            state.put_device(&record)?;
            Ok(changed(record))
        }
        DeviceCommand::Label {
            device,
            set,
            remove,
            at_ms,
        } => {
            let Some(mut record) = state.device(device)? else {
                return Ok(quiet(ControlResponse::Rejected(Rejection::NoSuchDevice(
                    device.to_string(),
                ))));
            };
            let before = record.labels.clone();
            for key in remove {
                record.labels.remove(key);
            }
            record
                .labels
                .extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            if record.labels == before {
                return Ok(quiet(ControlResponse::Device(Some(record))));
            }
            record.updated_at_ms = *at_ms;
            state.put_device(&record)?;
            Ok(changed(record))
        }
        DeviceCommand::Delete { device } => {
            if state.device(device)?.is_none() {
                return Ok(quiet(ControlResponse::Rejected(Rejection::NoSuchDevice(
                    device.to_string(),
                ))));
            }
            state.remove_device(device)?;
            Ok(Outcome {
                response: ControlResponse::Device(None),
                events: vec![Applied::DeviceChanged {
                    key: device.clone(),
                    record: None,
                }],
            })
        }
    }
}

fn quiet(response: ControlResponse) -> Outcome {
    Outcome {
        response,
        events: Vec::new(),
    }
}

/// What a device listing keeps: every given constraint must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    pub device_type: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl DeviceFilter {
    pub fn matches(&self, record: &DeviceRecord) -> bool {
        self.device_type
            .as_ref()
            .is_none_or(|t| record.device_type.as_ref() == Some(t))
            && self
                .labels
                .iter()
                .all(|(k, v)| record.labels.get(k) == Some(v))
    }
}

/// A problem with a registry request, naming the field (`labels.site`, `type`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct RegistryFieldError {
    pub field: String,
    pub problem: String,
}

fn field_error(field: impl Into<String>, problem: impl Into<String>) -> RegistryFieldError {
    RegistryFieldError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Whether `s` is a type or label key: 1–63 characters of `[A-Za-z0-9_.:/-]`.
fn check_key(field: &str, s: &str) -> Result<(), RegistryFieldError> {
    if s.is_empty() {
        return Err(field_error(field, "must not be empty"));
    }
    if s.chars().count() > MAX_KEY_LEN {
        return Err(field_error(
            field,
            format!("longer than {MAX_KEY_LEN} characters"),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.:/-".contains(*c)))
    {
        return Err(field_error(
            field,
            format!("character {c:?} not allowed: use letters, digits and _ . : / -"),
        ));
    }
    Ok(())
}

/// Checks a device type (when given) and labels to set; errors name the field.
pub fn validate(
    device_type: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Result<(), RegistryFieldError> {
    if let Some(t) = device_type {
        check_key("type", t)?;
    }
    if labels.len() > MAX_LABELS {
        return Err(field_error(
            "labels",
            format!("{} labels; at most {MAX_LABELS}", labels.len()),
        ));
    }
    for (k, v) in labels {
        check_key(&format!("labels.{k}"), k)?;
        if v.chars().count() > MAX_VALUE_LEN {
            return Err(field_error(
                format!("labels.{k}"),
                format!("value longer than {MAX_VALUE_LEN} characters"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
