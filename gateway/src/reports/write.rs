//! Owns writing the reports to the API server: server-side apply (field manager
//! [`FIELD_MANAGER`]) of a report only when its content differs from what the cluster holds,
//! deletion of wasmgate's reports no scan produces any more. Knows nothing of policies or scans:
//! it is given the reports by namespace.

use std::collections::BTreeMap;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::build::{self, MANAGED_BY, REPORT_NAME};
use crate::telemetry::Metrics;

/// The field manager of the reports' server-side applies.
pub const FIELD_MANAGER: &str = "wasmgate-reports";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "openreports.io".into(),
        version: "v1alpha1".into(),
        api_version: build::API_VERSION.into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Keeps the cluster's wasmgate reports equal to the latest scan's.
pub struct Writer {
    client: kube::Client,
    reports: ApiResource,
    cluster_reports: ApiResource,
    /// What the cluster holds, by namespace (`""`: the cluster report), as last read or written.
    known: BTreeMap<String, Value>,
    /// Whether `known` must be read again from the cluster (at start, after a failed write, at
    /// every full scan).
    stale: bool,
}

impl Writer {
    /// A writer through `client`; it reads the cluster's reports before its first write.
    pub fn new(client: kube::Client) -> Self {
        Writer {
            client,
            reports: resource("Report", "reports"),
            cluster_reports: resource("ClusterReport", "clusterreports"),
            known: BTreeMap::new(),
            stale: true,
        }
    }

    /// Reads the cluster's reports again before the next write (repairing edits made by hand).
    pub fn resync(&mut self) {
        self.stale = true;
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        if namespace.is_empty() {
            Api::all_with(self.client.clone(), &self.cluster_reports)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, &self.reports)
        }
    }

    async fn read(&mut self) -> Result<(), kube::Error> {
        let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        let params = ListParams::default().labels(&selector);
        let mut known = BTreeMap::new();
        for ar in [&self.reports, &self.cluster_reports] {
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), ar);
            for object in api.list(&params).await? {
                if object.metadata.name.as_deref() != Some(REPORT_NAME) {
                    continue;
                }
                let ns = object.metadata.namespace.clone().unwrap_or_default();
                let value = serde_json::to_value(&object).map_err(kube::Error::SerdeError)?;
                known.insert(ns, value);
            }
        }
        self.known = known;
        self.stale = false;
        Ok(())
    }

    /// Makes the cluster hold exactly `desired` (reports by namespace): applies each that
    /// differs from what the cluster holds, deletes wasmgate's reports not in it. Stops at the
    /// first error (and reads the cluster again next time).
    pub async fn sync(
        &mut self,
        desired: &BTreeMap<String, Value>,
        metrics: &Metrics,
    ) -> Result<(), kube::Error> {
        let result = self.sync_inner(desired, metrics).await;
        if result.is_err() {
            metrics.reports.write("failed");
            self.stale = true;
        }
        result
    }

    async fn sync_inner(
        &mut self,
        desired: &BTreeMap<String, Value>,
        metrics: &Metrics,
    ) -> Result<(), kube::Error> {
        if self.stale {
            self.read().await?;
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for (ns, report) in desired {
            if self.known.get(ns).is_some_and(|k| build::same(k, report)) {
                metrics.reports.write("unchanged");
                continue;
            }
            let written = self
                .api(ns)
                .patch(REPORT_NAME, &params, &Patch::Apply(report))
                .await?;
            metrics.reports.write("applied");
            tracing::info!(namespace = %ns, "report written");
            let value = serde_json::to_value(&written).map_err(kube::Error::SerdeError)?;
            self.known.insert(ns.clone(), value);
        }
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|ns| !desired.contains_key(*ns))
            .cloned()
            .collect();
        for ns in gone {
            match self
                .api(&ns)
                .delete(REPORT_NAME, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
            metrics.reports.write("deleted");
            tracing::info!(namespace = %ns, "report deleted: nothing scanned there any more");
            self.known.remove(&ns);
        }
        Ok(())
    }
}
