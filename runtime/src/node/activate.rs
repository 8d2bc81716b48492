//! Activation: every step a package goes through before it may serve a
//! single call (verify, policy, compile, audit, self-test).

use crate::package::{Package, PackageError, VerifiedPackage};
use crate::policy::{Evaluation, Policy};
use crate::sandbox::{Activation, Sandbox, SandboxError, SelfTestFailure};

/// Why a package was not activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("package integrity: {0}")]
    Integrity(#[from] PackageError),
    #[error("refused by policy: {}", .0.join("; "))]
    Refused(Vec<String>),
    #[error("component is {size} bytes; this node accepts at most {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("self-test failed: {0}")]
    SelfTest(#[from] SelfTestFailure),
}

/// An activated service and the decisions behind it.
#[derive(Debug)]
pub struct LocalService {
    pub package: VerifiedPackage,
    pub evaluation: Evaluation,
    pub activation: Activation,
}

/// Verify, check policy, compile, audit, self-test, activate: every step a
/// package goes through before it may serve a single call.
pub async fn activate(
    sandbox: &Sandbox,
    policy: &Policy,
    package: Package,
) -> Result<LocalService, ActivateError> {
    let size = package.advert().component_len();
    if size > policy.limits.max_component_size {
        return Err(ActivateError::TooLarge {
            size,
            limit: policy.limits.max_component_size,
        });
    }
    let package = package.verify()?;
    let evaluation = policy.evaluate(package.manifest(), &package.advert().publisher());
    if !evaluation.refusals.is_empty() {
        return Err(ActivateError::Refused(evaluation.refusals));
    }
    let activation = sandbox
        .activate(&package, evaluation.grants.clone())
        .await?;
    activation.self_test(&package.manifest().self_tests).await?;
    tracing::info!(
        service = %package.manifest().name,
        version = %package.manifest().version,
        package = %package.content_id().short(),
        "activated"
    );
    Ok(LocalService {
        package,
        evaluation,
        activation,
    })
}
