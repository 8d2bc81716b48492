//! Activation: every step a package goes through before it may serve a
//! single call (admission, verification, compile, audit, self-test).

use crate::package::{Package, PackageError, VerifiedPackage};
use crate::policy::{Admission, Policy, Refusals};
use crate::sandbox::{Activation, Sandbox, SandboxError, SelfTestFailure};

/// Why a package was not activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("refused by policy: {0}")]
    Refused(Refusals),
    #[error("package integrity: {0}")]
    Integrity(#[from] PackageError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("self-test failed: {0}")]
    SelfTest(#[from] SelfTestFailure),
}

/// An activated service and the decisions behind it.
#[derive(Debug)]
pub struct LocalService {
    pub package: VerifiedPackage,
    pub admission: Admission,
    pub activation: Activation,
}

/// Check policy, verify, compile, audit, self-test, activate: every step a
/// package goes through before it may serve a single call. The admission
/// check needs only the advert, so a refused package costs no hashing.
pub async fn activate(
    sandbox: &Sandbox,
    policy: &Policy,
    package: Package,
) -> Result<LocalService, ActivateError> {
    let admission = policy
        .admit(package.advert())
        .map_err(ActivateError::Refused)?;
    let package = package.verify()?;
    let activation = sandbox.activate(&package, admission.grants.clone()).await?;
    activation
        .self_test(
            &package.manifest().self_tests,
            package.manifest().deterministic,
        )
        .await?;
    tracing::info!(
        service = %package.manifest().name,
        version = %package.manifest().version,
        package = %package.content_id().short(),
        "activated"
    );
    Ok(LocalService {
        package,
        admission,
        activation,
    })
}
