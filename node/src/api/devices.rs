//! `starling.v1.Devices`: the device registry (register, get, list with paging and filters,
//! update labels, delete). Writes are Raft entries; reads answer from this node's applied
//! state, with first/last seen times from this node's store.

use std::sync::Arc;

use starling_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::convert::FieldError;
use super::{ApiError, ApiState, convert, now_ms, page_size};
use crate::model::DeviceKey;
use crate::raft::command::{ControlCommand, ControlResponse, Rejection};
use crate::raft::registry::{self, DeviceCommand, DeviceFilter, DeviceRecord};

pub struct DevicesApi(pub(super) Arc<ApiState>);

impl DevicesApi {
    /// A request's device: the id is required and must be a valid device id.
    fn key(tenant: &str, id: &str) -> Result<DeviceKey, ApiError> {
        let key = convert::device_key(tenant, id).map_err(|e| FieldError {
            field: "id".into(),
            problem: e.problem,
        })?;
        crate::ingest::payload::validate_device_id(&key.device).map_err(|problem| FieldError {
            field: "id".into(),
            problem,
        })?;
        Ok(key)
    }

    /// The record as the API shows it, with seen times from this node's store.
    async fn to_pb(&self, record: &DeviceRecord) -> Result<pb::Device, ApiError> {
        let seen = self.0.store.device(&record.key).await?;
        Ok(convert::device_record_to_pb(record, seen.as_ref()))
    }

    /// Commits a registry entry and returns the record it left (`None` after a delete).
    async fn write(
        &self,
        key: &DeviceKey,
        cmd: DeviceCommand,
    ) -> Result<Option<DeviceRecord>, ApiError> {
        match self.0.control.write(ControlCommand::Device(cmd)).await? {
            ControlResponse::Device(record) => Ok(record),
            ControlResponse::Rejected(Rejection::NoSuchDevice(_)) => Err(ApiError::NotFound(
                format!("device {key} (register it with `starling devices register`)"),
            )),
            other => Err(ApiError::Unexpected(format!("{other:?}"))),
        }
    }
}

fn registry_error(e: registry::RegistryFieldError) -> ApiError {
    ApiError::Field(FieldError {
        field: e.field,
        problem: e.problem,
    })
}

#[tonic::async_trait]
impl pb::devices_server::Devices for DevicesApi {
    async fn get(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let r = req.into_inner();
        let key = Self::key(&r.tenant, &r.id)?;
        match self.0.control.device(&key).map_err(ApiError::from)? {
            Some(record) => Ok(Response::new(self.to_pb(&record).await?)),
            None => Err(ApiError::NotFound(format!("device {key}")).into()),
        }
    }

    async fn list(
        &self,
        req: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let r = req.into_inner();
        let limit = page_size(r.page_size);
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let filter = DeviceFilter {
            device_type: (!r.r#type.is_empty()).then(|| r.r#type.clone()),
            labels: r.labels.into_iter().collect(),
        };
        let records = self
            .0
            .control
            .devices(&convert::tenant(&r.tenant), after, limit, &filter)
            .map_err(ApiError::from)?;
        let next_page_token = if records.len() == limit {
            records
                .last()
                .map(|d| d.key.device.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let mut devices = Vec::with_capacity(records.len());
        for record in &records {
            devices.push(self.to_pb(record).await?);
        }
        Ok(Response::new(pb::ListDevicesResponse {
            devices,
            next_page_token,
        }))
    }

    async fn register(
        &self,
        req: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let r = req.into_inner();
        let key = Self::key(&r.tenant, &r.id)?;
        let device_type = (!r.r#type.is_empty()).then_some(r.r#type);
        let labels = r.labels.into_iter().collect();
        registry::validate(device_type.as_deref(), &labels).map_err(registry_error)?;
        let cmd = DeviceCommand::Register {
            device: key.clone(),
            device_type,
            labels,
            at_ms: now_ms(),
        };
        let record = self.write(&key, cmd).await?.ok_or_else(|| {
            ApiError::Unexpected(format!("device {key} registered but not returned"))
        })?;
        Ok(Response::new(self.to_pb(&record).await?))
    }

    async fn update_labels(
        &self,
        req: Request<pb::UpdateLabelsRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let r = req.into_inner();
        let key = Self::key(&r.tenant, &r.id)?;
        let set = r.set.into_iter().collect();
        registry::validate(None, &set).map_err(registry_error)?;
        if set.is_empty() && r.remove.is_empty() {
            return Err(ApiError::Field(FieldError {
                field: "set".into(),
                problem: "nothing to change: give labels to set or to remove".into(),
            })
            .into());
        }
        let cmd = DeviceCommand::Label {
            device: key.clone(),
            set,
            remove: r.remove,
            at_ms: now_ms(),
        };
        let record = self.write(&key, cmd).await?.ok_or_else(|| {
            ApiError::Unexpected(format!("device {key} relabelled but not returned"))
        })?;
        Ok(Response::new(self.to_pb(&record).await?))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteDeviceRequest>,
    ) -> Result<Response<pb::DeleteDeviceResponse>, Status> {
        let r = req.into_inner();
        let key = Self::key(&r.tenant, &r.id)?;
        self.write(
            &key,
            DeviceCommand::Delete {
                device: key.clone(),
            },
        )
        .await?;
        Ok(Response::new(pb::DeleteDeviceResponse {}))
    }
}
