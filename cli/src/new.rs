//! `sp2a new NAME [--lang rust|js|python]`: a service that builds and
//! packs on the first try, in any directory. The project carries what it
//! needs: the `sp2a:rps` WIT package (`wit/deps/sp2a-rps/`) and, in Rust,
//! the guest SDK of this sp2a version (`sp2a-guest/`), so nothing points
//! back at sp2a's own sources. Rust fetches crates from the registry;
//! JavaScript (componentize-js) and Python (componentize-py) projects have
//! a `build` script that installs their pinned toolchain with npm or pip
//! the first time.

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
/// The toolchains other languages' projects pin (the versions this
/// repository's tests build with: `tests/guests/js-web`,
/// `bench/fixtures/python-hello`).
const COMPONENTIZE_JS: &str = "0.23.0";
const PREVIEW2_SHIM: &str = "0.25.0";
const COMPONENTIZE_PY: &str = "0.25.1";

/// The language a new service is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the guest SDK (wit-bindgen).
    Rust,
    /// JavaScript with componentize-js (needs Node.js and npm).
    Js,
    /// Python with componentize-py (needs python3 with venv).
    Python,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service's name: 1-63 of a-z, 0-9 and '-', each '-'-separated
    /// part starting with a letter (it is also its WIT package's name).
    name: String,
    /// Where to create the project (default: ./NAME). Must not exist, or
    /// be an empty directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The language to write it in.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
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
    let files = match args.lang {
        Lang::Rust => rust_project(name),
        Lang::Js => js_project(name),
        Lang::Python => python_project(name),
    };
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    #[cfg(unix)]
    if args.lang != Lang::Rust {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("build");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", script.display()))?;
    }
    let (build, pack) = commands(name, &dir, args.lang);
    let what = match args.lang {
        Lang::Rust => "a Rust sp2a service; the guest SDK and the sp2a:rps WIT are in it",
        Lang::Js => "a JavaScript sp2a service (componentize-js); the sp2a:rps WIT is in it",
        Lang::Python => "a Python sp2a service (componentize-py); the sp2a:rps WIT is in it",
    };
    println!("created {} ({what}, {} files)", dir.display(), files.len());
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
fn commands(name: &str, dir: &Path, lang: Lang) -> (String, String) {
    let dir = shell_quoted(&dir.display().to_string());
    let (build, wasm) = match lang {
        Lang::Rust => (
            "cargo build --release --target wasm32-wasip2".to_owned(),
            format!(
                "target/wasm32-wasip2/release/{}.wasm",
                name.replace('-', "_")
            ),
        ),
        Lang::Js | Lang::Python => ("./build".to_owned(), format!("{name}.wasm")),
    };
    (
        format!("cd {dir} && {build}"),
        format!("sp2a pack {wasm} --manifest rps.xml --key KEY -o {name}.rps"),
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

/// A Rust project's files, relative to its directory.
fn rust_project(name: &str) -> Vec<(&'static str, String)> {
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
        ("rps.xml", manifest(name, Lang::Rust)),
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

/// The `rps.xml` of a new project: the requirements its language's
/// runtime needs, and what it imports declared.
fn manifest(name: &str, lang: Lang) -> String {
    let (requirements, capabilities) = match lang {
        Lang::Rust => (
            "    <max-memory>4 MiB</max-memory>\n    <fuel-per-call>10000000</fuel-per-call>\n    <time-per-call>1s</time-per-call>",
            "",
        ),
        Lang::Js => (
            "    <!-- SpiderMonkey's heap lives in the instance's memory. -->\n    <max-memory>64 MiB</max-memory>\n    <fuel-per-call>2000000000</fuel-per-call>\n    <time-per-call>5s</time-per-call>",
            "    <!-- The JavaScript engine reads the clocks (Date, timers) and random\n         (Math.random, crypto); fetch() reaches only URLs declared as\n         <http url=\"https://api.example.org/\"/> and granted. -->\n    <clocks/>\n    <random/>\n",
        ),
        Lang::Python => (
            "    <max-memory>64 MiB</max-memory>\n    <fuel-per-call>10000000000</fuel-per-call>\n    <time-per-call>10s</time-per-call>",
            "    <!-- The interpreter's start-up reads the clocks and seeds its hashing. -->\n    <clocks/>\n    <random/>\n",
        ),
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<rps format="1">
  <name>{name}</name>
  <version>0.1.0</version>
  <description>The {name} service.</description>
  <requirements>
{requirements}
  </requirements>
  <!-- Declare here what the service may use (clocks, random, dirs, net,
       http, env, feeds); `sp2a pack` refuses a component that imports more. -->
  <capabilities>
{capabilities}  </capabilities>
  <self-test>
    <call expect='"Hello, sp2a!"'>greet("sp2a")</call>
  </self-test>
  <deterministic>true</deterministic>
</rps>
"#
    )
}

/// The WIT world of a JavaScript or Python service: the `sp2a:rps`
/// interfaces imported one by one (these toolchains import every
/// interface of their world).
fn world_importing(name: &str) -> String {
    format!(
        r#"package {name}:service@0.1.0;

interface api {{
    /// A greeting for `name`.
    greet: func(name: string) -> string;
}}

world {name} {{
    import sp2a:rps/log@0.1.0;
    import sp2a:rps/host@0.1.0;
    // import sp2a:rps/feed@0.1.0;  (a live feed: declare it in rps.xml)
    export api;
}}
"#
    )
}

/// A JavaScript or Python project's README.
fn readme(name: &str, lang: &str, code: &str, installs: &str) -> String {
    format!(
        r#"# {name}

An sp2a service in {lang}. Its interface is `wit/service.wit`, its code
`{code}`, what it needs to run `rps.xml`.

```sh
./build                               # {installs} the first time
sp2a keygen -o me.pem                 # once; prints your publisher key
sp2a pack {name}.wasm --manifest rps.xml --key me.pem -o {name}.rps
printf '[trust]\npublishers = ["%s"]\n[grants]\nclocks = true\nrandom = true\n' ed25519:... > node.toml   # the key keygen printed
sp2a call {name}.rps 'greet("world")' --policy node.toml
```

`wit/deps/sp2a-rps/` is the WIT package every node offers; `sp2a new` put
it here.
"#
    )
}

/// A JavaScript project (componentize-js).
fn js_project(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("wit/deps/sp2a-rps/rps.wit", RPS_WIT.to_owned()),
        ("wit/service.wit", world_importing(name)),
        (
            "app.js",
            format!(
                r#"// The {name} service: componentize-js makes this module a component of
// the `{name}` world (wit/service.wit). Exported functions may be async
// (and use fetch()); the component runs the event loop until they settle.
import {{ log }} from 'sp2a:rps/log@0.1.0';

export const api = {{
  greet(name) {{
    log('info', `greeting ${{name}}`, []);
    return `Hello, ${{name}}!`;
  }},
}};
"#
            ),
        ),
        (
            "package.json",
            format!(
                r#"{{
  "name": "{name}",
  "private": true,
  "type": "module",
  "scripts": {{
    "build": "componentize-js app.js --wit wit --world-name {name} -o {name}.wasm"
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS}",
    "@bytecodealliance/preview2-shim": "{PREVIEW2_SHIM}"
  }}
}}
"#
            ),
        ),
        (
            "build",
            format!(
                r#"#!/bin/sh
# Builds {name}.wasm with componentize-js, which npm installs into
# node_modules the first time (Node.js 18 or later).
set -eu
cd "$(dirname "$0")"
[ -x node_modules/.bin/componentize-js ] || npm install --no-audit --no-fund --loglevel=error
node_modules/.bin/componentize-js app.js --wit wit --world-name {name} -o {name}.wasm
"#
            ),
        ),
        ("rps.xml", manifest(name, Lang::Js)),
        (
            ".gitignore",
            "/node_modules\n/package-lock.json\n*.wasm\n*.rps\n*.pem\n".to_owned(),
        ),
        (
            "README.md",
            readme(
                name,
                "JavaScript (componentize-js)",
                "app.js",
                "npm installs componentize-js",
            ),
        ),
    ]
}

/// A Python project (componentize-py).
fn python_project(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("wit/deps/sp2a-rps/rps.wit", RPS_WIT.to_owned()),
        ("wit/service.wit", world_importing(name)),
        (
            "app.py",
            format!(
                r#""""The {name} service: componentize-py makes this module a component of
the `{name}` world (wit/service.wit)."""

from wit_world import exports
from wit_world.imports import log


class Api(exports.Api):
    def greet(self, name: str) -> str:
        log.log(log.Level.INFO, f"greeting {{name}}", [])
        return f"Hello, {{name}}!"
"#
            ),
        ),
        (
            "build",
            format!(
                r#"#!/bin/sh
# Builds {name}.wasm with componentize-py, which pip installs into .venv
# the first time (python3 with venv).
set -eu
cd "$(dirname "$0")"
if [ ! -x .venv/bin/componentize-py ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check componentize-py=={COMPONENTIZE_PY}
fi
PYTHONDONTWRITEBYTECODE=1 .venv/bin/componentize-py -d wit -w {name} componentize app -o {name}.wasm
"#
            ),
        ),
        ("rps.xml", manifest(name, Lang::Python)),
        (
            ".gitignore",
            "/.venv\n__pycache__/\n*.wasm\n*.rps\n*.pem\n".to_owned(),
        ),
        (
            "README.md",
            readme(
                name,
                "Python (componentize-py)",
                "app.py",
                "pip installs componentize-py",
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
    fn other_languages_pin_the_toolchains_the_tests_build_with() {
        let js = include_str!("../../tests/guests/js-web/package.json");
        assert!(js.contains(&format!(
            "\"@bytecodealliance/componentize-js\": \"{COMPONENTIZE_JS}\""
        )));
        assert!(js.contains(&format!(
            "\"@bytecodealliance/preview2-shim\": \"{PREVIEW2_SHIM}\""
        )));
        let python = include_str!("../../bench/fixtures/python-hello/build");
        assert!(python.contains(&format!("version={COMPONENTIZE_PY}\n")));
    }

    #[test]
    fn an_existing_directory_with_files_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "mine").unwrap();
        let args = Args {
            name: "hello".into(),
            dir: Some(dir.path().to_owned()),
            lang: Lang::Rust,
        };
        assert!(run(args).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
