//! The audit report: everything an operator needs to decide about a
//! package, gathered without running any of its code.

use crate::package::Package;
use crate::policy::{Policy, Refusal};
use crate::sandbox::Sandbox;

/// One reason a package would not be activated on this node.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Objection {
    #[error("signature: {0}")]
    Signature(String),
    #[error("component: {0}")]
    Integrity(String),
    /// The admission check ([`Policy::admit`]) refused it.
    #[error(transparent)]
    Policy(Refusal),
    /// The component imports something its manifest does not declare or
    /// this runtime does not provide.
    #[error("{0}")]
    Imports(String),
    #[error("{0}")]
    Compile(String),
}

impl serde::Serialize for Objection {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let kind = match self {
            Objection::Signature(_) => "signature",
            Objection::Integrity(_) => "integrity",
            Objection::Policy(refusal) => refusal.kind(),
            Objection::Imports(_) => "imports",
            Objection::Compile(_) => "compile",
        };
        crate::policy::serialize_reason(kind, self, serializer)
    }
}

/// Everything an operator needs to decide about a package, gathered without
/// running any of its code.
#[derive(Debug, serde::Serialize)]
pub struct PackageReport {
    pub name: String,
    pub version: String,
    pub description: String,
    pub content_id: String,
    pub publisher: String,
    pub publisher_trusted: bool,
    pub signature: Result<(), String>,
    pub component_hash: String,
    pub component_size: u64,
    pub component_integrity: Result<(), String>,
    pub manifest: ManifestReport,
    /// Present when the package verified and compiled.
    pub audit: Option<crate::sandbox::Audit>,
    pub compile_error: Option<String>,
    /// Limits the service would run with (after the node's caps).
    pub effective_limits: LimitsReport,
    pub notes: Vec<String>,
    /// Every reason this node would refuse to activate the package.
    pub refusals: Vec<Objection>,
}

impl PackageReport {
    /// Whether this node would activate the package (self-tests permitting).
    pub fn would_activate(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// The manifest's requests, as text.
#[derive(Debug, serde::Serialize)]
pub struct ManifestReport {
    pub requirements: Vec<(String, String)>,
    pub capabilities: Vec<String>,
    /// The manifest's `<qos>` and `<replicas>`, and as this node's policy
    /// caps them; `None`: not replicated by load.
    pub replication: Option<String>,
    pub effective_replication: Option<String>,
    pub self_tests: Vec<(String, String)>,
    /// Declared deterministic: callers may check answers by re-running them.
    pub deterministic: bool,
    pub ignored_extensions: Vec<String>,
}

/// Per-call limits, as text.
#[derive(Debug, serde::Serialize)]
pub struct LimitsReport {
    pub max_memory: String,
    pub fuel_per_call: u64,
    pub time_per_call: String,
}

/// Audits a package: integrity, publisher trust, requirements against this
/// node, requested capabilities against the policy, and (only if signature
/// and hash verify) the compiled component's real imports and exports.
pub async fn audit_package(sandbox: &Sandbox, policy: &Policy, package: Package) -> PackageReport {
    use crate::package::units::{format_duration, format_size};
    let manifest = package.manifest().clone();
    let advert = package.advert();
    let integrity = package.integrity();
    let assessment = policy.assess(advert);
    let mut refusals = Vec::new();
    if let Err(e) = &integrity.signature {
        refusals.push(Objection::Signature(e.to_string()));
    }
    if let Err(e) = &integrity.component {
        refusals.push(Objection::Integrity(e.to_string()));
    }
    refusals.extend(assessment.refusals.iter().cloned().map(Objection::Policy));
    let r = &manifest.requirements;
    let res = &policy.resources;
    let requirements = vec![
        (
            "min cpus".into(),
            format!("{} (this node: {})", r.min_cpus, res.cpus),
        ),
        (
            "min free memory".into(),
            format!(
                "{} (this node: {})",
                format_size(r.min_free_memory),
                format_size(res.free_memory)
            ),
        ),
        ("max memory".into(), format_size(r.max_memory)),
        ("fuel per call".into(), r.fuel_per_call.to_string()),
        ("time per call".into(), format_duration(r.time_per_call)),
        (
            "min runtime".into(),
            r.min_runtime_version.as_ref().map_or("any".into(), |v| {
                format!("{v} (this node: {})", crate::runtime_version())
            }),
        ),
        (
            "platforms".into(),
            if r.arch.is_empty() && r.os.is_empty() {
                "any".into()
            } else {
                format!("arch [{}] os [{}]", r.arch.join(", "), r.os.join(", "))
            },
        ),
    ];
    let mut audit = None;
    let mut compile_error = None;
    let component_hash = advert.component_hash().to_hex().to_string();
    let component_size = advert.component_len();
    let content_id = package.content_id().to_string();
    let publisher = advert.publisher();
    let signature = integrity
        .signature
        .as_ref()
        .map(|_| ())
        .map_err(|e| e.to_string());
    let component_integrity = integrity
        .component
        .as_ref()
        .map(|_| ())
        .map_err(|e| e.to_string());
    if integrity.is_ok() {
        let verified = package.verify().expect("integrity checked above");
        let for_compile = sandbox.clone();
        let compiled = tokio::task::spawn_blocking(move || for_compile.compile(&verified)).await;
        match compiled {
            Ok(Ok(compiled)) => {
                let report = sandbox.audit(&compiled.component, &manifest.capabilities);
                refusals.extend(report.refusals.iter().cloned().map(Objection::Imports));
                audit = Some(report);
            }
            Ok(Err(e)) => {
                refusals.push(Objection::Compile(e.to_string()));
                compile_error = Some(e.to_string());
            }
            Err(e) => compile_error = Some(format!("compile task failed: {e}")),
        }
    } else {
        compile_error = Some("not compiled: the package did not verify".into());
    }
    let grants = &assessment.admission.grants;
    let mut notes = assessment.admission.notes.clone();
    if let Some(audit) = &audit {
        notes.extend(audit.notes.iter().cloned());
    }
    PackageReport {
        name: manifest.name.clone(),
        version: manifest.version.to_string(),
        description: manifest.description.clone(),
        content_id,
        publisher: publisher.to_string(),
        publisher_trusted: assessment.trusted,
        signature,
        component_hash,
        component_size,
        component_integrity,
        manifest: ManifestReport {
            requirements,
            capabilities: manifest.capabilities.describe(),
            replication: manifest.replication.as_ref().map(|r| r.describe()),
            effective_replication: policy.replication(&manifest).map(|r| r.describe()),
            self_tests: manifest
                .self_tests
                .iter()
                .map(|t| (t.call.clone(), t.expect.clone()))
                .collect(),
            deterministic: manifest.deterministic,
            ignored_extensions: manifest.ignored_extensions.clone(),
        },
        audit,
        compile_error,
        effective_limits: LimitsReport {
            max_memory: format_size(grants.limits.max_memory),
            fuel_per_call: grants.limits.fuel_per_call,
            time_per_call: format_duration(grants.limits.time_per_call),
        },
        notes,
        refusals,
    }
}
