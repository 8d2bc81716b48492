//! `sp2a new NAME`: a Rust service that builds and packs on the first try,
//! in any directory. The project carries what it needs: the guest SDK of
//! this sp2a version (`sp2a-guest/`) and the `sp2a:rps` WIT package
//! (`wit/deps/sp2a-rps/`), so nothing points back at sp2a's own sources and
//! only crates from the registry are fetched.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use sp2a::package::is_service_name;

/// The guest SDK's source and the WIT package it binds, as this binary was
/// built with them.
const SDK_LIB: &str = include_str!("../../guest-sdk/src/lib.rs");
const RPS_WIT: &str = include_str!("../../wit/rps.wit");
/// The wit-bindgen the SDK is built against (the workspace's; a test
/// keeps them equal).
const WIT_BINDGEN: &str = "0.63.0";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service's name: 1-63 of a-z, 0-9 and '-', each '-'-separated
    /// part starting with a letter (it is also its WIT package's name).
    name: String,
    /// Where to create the project (default: ./NAME). Must not exist, or
    /// be an empty directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    check_name(name)?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty", dir.display());
    }
    let files = project(name);
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let (build, pack) = commands(name, &dir);
    println!(
        "created {} (a Rust sp2a service, {} files; the guest SDK and the sp2a:rps WIT are in it)",
        dir.display(),
        files.len()
    );
    println!("build: {build}");
    println!("pack:  {pack}");
    Ok(ExitCode::SUCCESS)
}

/// A name is a service name and a WIT identifier.
fn check_name(name: &str) -> anyhow::Result<()> {
    let wit_identifier = name
        .split('-')
        .all(|part| part.starts_with(|c: char| c.is_ascii_lowercase()));
    if !is_service_name(name) || !wit_identifier {
        bail!(
            "{name:?} cannot name a service: use 1-63 of a-z, 0-9 and '-', each '-'-separated part starting with a letter"
        );
    }
    Ok(())
}

/// The commands that build and pack the project made in `dir`.
fn commands(name: &str, dir: &Path) -> (String, String) {
    let wasm = name.replace('-', "_");
    (
        format!(
            "cd {} && cargo build --release --target wasm32-wasip2",
            shell_quoted(&dir.display().to_string())
        ),
        format!(
            "sp2a pack target/wasm32-wasip2/release/{wasm}.wasm --manifest rps.xml --key KEY -o {name}.rps"
        ),
    )
}

/// `text` as one shell word: as it is when only safe characters make it,
/// else in single quotes.
fn shell_quoted(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./+,:@%".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The project's files, relative to its directory.
fn project(name: &str) -> Vec<(&'static str, String)> {
    let version = env!("CARGO_PKG_VERSION");
    let wasm = name.replace('-', "_");
    vec![
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# The guest SDK of sp2a {version}, carried in the project.
sp2a-guest = {{ path = "sp2a-guest" }}

# A project of its own, even inside another Cargo workspace.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
debug = false
"#
            ),
        ),
        (
            "sp2a-guest/Cargo.toml",
            format!(
                r#"[package]
name = "sp2a-guest"
description = "Write sp2a services (WebAssembly components) in Rust"
version = "{version}"
edition = "2024"
license = "Apache-2.0"
publish = false

[dependencies]
wit-bindgen = "{WIT_BINDGEN}"
"#
            ),
        ),
        // The SDK binds `sp2a:rps/service` from `../wit`: the project's
        // `wit/`, whose `deps/` holds the package.
        ("sp2a-guest/src/lib.rs", SDK_LIB.to_owned()),
        ("wit/deps/sp2a-rps/rps.wit", RPS_WIT.to_owned()),
        (
            "wit/service.wit",
            format!(
                r#"package {name}:service@0.1.0;

interface api {{
    /// A greeting for `name`.
    greet: func(name: string) -> string;
}}

world {name} {{
    include sp2a:rps/service@0.1.0;
    export api;
}}
"#
            ),
        ),
        (
            "src/lib.rs",
            format!(
                r#"//! The {name} service.

sp2a_guest::service!({{
    path: "wit",
    world: "{name}:service/{name}",
}});

struct Service;

impl exports::{wasm}::service::api::Guest for Service {{
    fn greet(name: String) -> String {{
        sp2a_guest::info!("greeting {{name}}");
        format!("Hello, {{name}}!")
    }}
}}

export!(Service);
"#
            ),
        ),
        (
            "rps.xml",
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?>
<rps format="1">
  <name>{name}</name>
  <version>0.1.0</version>
  <description>The {name} service.</description>
  <requirements>
    <max-memory>4 MiB</max-memory>
    <fuel-per-call>10000000</fuel-per-call>
    <time-per-call>1s</time-per-call>
  </requirements>
  <!-- Declare here what the service may use (clocks, random, dirs, net,
       env, feeds); `sp2a pack` refuses a component that imports more. -->
  <self-test>
    <call expect='"Hello, sp2a!"'>greet("sp2a")</call>
  </self-test>
  <deterministic>true</deterministic>
</rps>
"#
            ),
        ),
        (
            ".gitignore",
            "/target\n/Cargo.lock\n*.rps\n*.pem\n".to_owned(),
        ),
        (
            "README.md",
            format!(
                r#"# {name}

An sp2a service. Its interface is `wit/service.wit`, its code `src/lib.rs`,
what it needs to run `rps.xml`.

```sh
cargo build --release --target wasm32-wasip2
sp2a keygen -o me.pem                 # once; prints your publisher key
sp2a pack target/wasm32-wasip2/release/{wasm}.wasm --manifest rps.xml --key me.pem -o {name}.rps
printf '[trust]\npublishers = ["%s"]\n' ed25519:... > node.toml   # the key keygen printed
sp2a call {name}.rps 'greet("world")' --policy node.toml
```

`sp2a-guest/` is the guest SDK of sp2a {version} and `wit/deps/sp2a-rps/`
the WIT package every node offers; `sp2a new` put them here.
"#
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_service_names_and_wit_identifiers() {
        for good in ["hello", "hello2", "my-service", "a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Hello", "2go", "my-2nd", "a_b", "a-", "../x", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn printed_paths_survive_the_shell() {
        assert_eq!(shell_quoted("hello2"), "hello2");
        assert_eq!(shell_quoted("my dir/it's"), r"'my dir/it'\''s'");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quoted("a b'c$d")))
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"a b'c$d");
    }

    #[test]
    fn the_sdk_is_built_against_the_workspaces_wit_bindgen() {
        let workspace = include_str!("../../Cargo.toml");
        assert!(
            workspace.contains(&format!("wit-bindgen = \"{WIT_BINDGEN}\"")),
            "update WIT_BINDGEN"
        );
    }

    #[test]
    fn an_existing_directory_with_files_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "mine").unwrap();
        let args = Args {
            name: "hello".into(),
            dir: Some(dir.path().to_owned()),
        };
        assert!(run(args).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
