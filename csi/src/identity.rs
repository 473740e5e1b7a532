//! The CSI Identity service: the plugin's name, what it offers, and whether it is ready.

use tonic::{Request, Response, Status};

use crate::control::ControlClient;
use crate::csi;
use crate::csi::identity_server::Identity;
use crate::csi::plugin_capability::{
    Service, Type as CapType, VolumeExpansion, service, volume_expansion,
};

/// The driver's name (the CSIDriver object's `metadata.name`).
pub const DRIVER_NAME: &str = "io.shoal.csi";

/// Identity, for either mode.
pub struct IdentityService {
    /// The controller's client of `shoal-control`; `None` in node mode.
    pub control: Option<ControlClient>,
}

fn service_cap(t: service::Type) -> csi::PluginCapability {
    csi::PluginCapability {
        r#type: Some(CapType::Service(Service { r#type: t as i32 })),
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _req: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: DRIVER_NAME.into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _req: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        let mut capabilities = vec![
            service_cap(service::Type::VolumeAccessibilityConstraints),
            csi::PluginCapability {
                r#type: Some(CapType::VolumeExpansion(VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                })),
            },
        ];
        if self.control.is_some() {
            capabilities.insert(0, service_cap(service::Type::ControllerService));
        }
        Ok(Response::new(csi::GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _req: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        // Controller: ready while shoal-control answers. Node: ready while the kernel's NVMe
        // over Fabrics host is there (the module creates /dev/nvme-fabrics).
        let ready = match &self.control {
            Some(c) => c.ping().await.is_ok(),
            None => std::path::Path::new("/dev/nvme-fabrics").exists(),
        };
        Ok(Response::new(csi::ProbeResponse { ready: Some(ready) }))
    }
}
