//! The example services of `services/`: their built components and
//! manifests, packed and signed for a demo or a benchmark.

use std::path::Path;

use anyhow::Context;
use sp2a::package::{Manifest, SecretKey, VerifiedPackage};

/// The built component and the manifest of `services/<name>`.
pub fn component_and_manifest(services: &Path, name: &str) -> anyhow::Result<(Vec<u8>, Manifest)> {
    let component_path = services
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    let component = std::fs::read(&component_path).with_context(|| {
        format!(
            "cannot read {} (build the services first: cargo build --release --target wasm32-wasip2 in {})",
            component_path.display(),
            services.display()
        )
    })?;
    let manifest_path = services.join(name).join("rps.xml");
    let manifest = Manifest::parse(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?,
    )
    .with_context(|| manifest_path.display().to_string())?;
    Ok((component, manifest))
}

/// Packs `services/<name>` with `key` into `<out>/<name>.rps`.
pub fn pack(
    services: &Path,
    name: &str,
    key: &SecretKey,
    out: &Path,
) -> anyhow::Result<VerifiedPackage> {
    let (component, manifest) = component_and_manifest(services, name)?;
    let package = sp2a::package::pack(component, &manifest, key)?;
    std::fs::write(out.join(format!("{name}.rps")), package.to_bytes())?;
    Ok(package)
}
