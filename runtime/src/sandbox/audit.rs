//! Audit: a component's real imports and exports, read from its type
//! information, compared with the capabilities its manifest declares.
//!
//! Imports fall in four classes:
//! * **linked**: interfaces that grant nothing by themselves. `wasi:io`,
//!   `wasi:cli` (environment has only granted variables, stdio is captured),
//!   `wasi:filesystem` (no directory unless granted), `wasi:sockets` (no
//!   address unless granted), `wasi:http` (no URL unless granted). Most
//!   toolchains' standard libraries import these; JavaScript's always
//!   imports `wasi:http`.
//! * **capability**: the import itself is the capability (`wasi:clocks`,
//!   `wasi:random`, `sp2a:rps/feed`); it must be declared in the manifest.
//! * **host**: the `sp2a:rps` interfaces every node offers.
//! * **unsupported**: anything else (other packages, WASI 0.3, unversioned
//!   names); such a component is refused.

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::wit::{func_text, item_text};
use crate::package::manifest::Capabilities;

/// How an import relates to the capability model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "class", rename_all = "kebab-case")]
pub enum ImportClass {
    /// Linked; grants only what the manifest declares and the policy grants.
    Linked { grants: &'static str },
    /// A capability the manifest must declare.
    Capability {
        capability: &'static str,
        declared: bool,
    },
    /// An `sp2a:rps` host interface.
    Host,
    /// Not provided by this runtime.
    Unsupported { reason: String },
}

/// One imported item.
#[derive(Clone, Debug, Serialize)]
pub struct ImportReport {
    pub name: String,
    #[serde(flatten)]
    pub class: ImportClass,
    /// `(function, signature)` pairs for imported instances and functions.
    pub functions: Vec<(String, String)>,
}

/// One exported item: an interface with its functions, or a function.
#[derive(Clone, Debug, Serialize)]
pub struct ExportReport {
    pub name: String,
    pub functions: Vec<(String, String)>,
}

/// The audit of one component against its manifest.
#[derive(Clone, Debug, Serialize)]
pub struct Audit {
    pub imports: Vec<ImportReport>,
    pub exports: Vec<ExportReport>,
    /// Reasons to refuse the component.
    pub refusals: Vec<String>,
    /// Declared capabilities the component cannot use (harmless, but worth knowing).
    pub notes: Vec<String>,
}

/// Splits `ns:pkg/iface@1.2.3` into (`ns:pkg`, `iface`, `Some("1.2.3")`).
fn split_name(name: &str) -> Option<(&str, &str, Option<&str>)> {
    let (path, version) = match name.split_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (name, None),
    };
    let (package, interface) = path.split_once('/')?;
    Some((package, interface, version))
}

fn classify(name: &str, declared: &Capabilities) -> ImportClass {
    let unsupported = |reason: String| ImportClass::Unsupported { reason };
    let Some((package, interface, version)) = split_name(name) else {
        return unsupported(
            "a bare import name; only interfaces from packages are provided".into(),
        );
    };
    let Some(version) = version else {
        return unsupported(format!(
            "{package} without a version; this runtime provides versioned interfaces"
        ));
    };
    let Ok(version) = semver::Version::parse(version) else {
        return unsupported(format!("bad version {version:?}"));
    };
    let in_range = |major: u64, minor: u64| version.major == major && version.minor == minor;
    match package {
        "wasi:io" | "wasi:cli" | "wasi:filesystem" | "wasi:sockets" | "wasi:http"
        | "wasi:clocks" | "wasi:random"
            if !in_range(0, 2) =>
        {
            unsupported(format!("WASI {version}; this runtime provides WASI 0.2.x"))
        }
        "wasi:io" => ImportClass::Linked {
            grants: "streams and polling only",
        },
        "wasi:cli" => ImportClass::Linked {
            grants: match interface {
                "environment" => "only granted environment variables; no arguments",
                "stdin" => "closed stdin",
                "stdout" | "stderr" => "output captured per call; logged only if granted",
                "exit" => "ends the call",
                _ => "no terminal",
            },
        },
        "wasi:filesystem" => ImportClass::Linked {
            grants: "only granted directories (none unless declared and granted)",
        },
        "wasi:sockets" => ImportClass::Linked {
            grants: "only granted addresses (none unless declared and granted)",
        },
        "wasi:http" if matches!(interface, "types" | "outgoing-handler") => ImportClass::Linked {
            grants: "requests only to granted URLs (none unless declared and granted)",
        },
        "wasi:http" => unsupported(format!(
            "wasi:http/{interface} is not offered by this runtime (outgoing requests only)"
        )),
        "wasi:clocks" => ImportClass::Capability {
            capability: "clocks",
            declared: declared.clocks,
        },
        "wasi:random" => ImportClass::Capability {
            capability: "random",
            declared: declared.random,
        },
        "sp2a:rps" if in_range(0, 1) && matches!(interface, "log" | "host") => ImportClass::Host,
        "sp2a:rps" if in_range(0, 1) && interface == "feed" => ImportClass::Capability {
            capability: "feed",
            declared: !declared.feeds.is_empty(),
        },
        "sp2a:rps" => unsupported(format!(
            "sp2a:rps/{interface}@{version} is not offered by this runtime"
        )),
        _ => unsupported(format!("{package} is not provided by this runtime")),
    }
}

fn functions(engine: &Engine, item: &ComponentItem) -> Vec<(String, String)> {
    match item {
        ComponentItem::ComponentInstance(instance) => instance
            .exports(engine)
            .filter_map(|(name, ext)| match &ext.ty {
                ComponentItem::ComponentFunc(func) => Some((name.to_owned(), func_text(func))),
                ComponentItem::Type(_) | ComponentItem::Resource(_) => None,
                other => Some((name.to_owned(), item_text(other))),
            })
            .collect(),
        ComponentItem::ComponentFunc(func) => vec![(String::new(), func_text(func))],
        other => vec![(String::new(), item_text(other))],
    }
}

/// Audits a compiled component against the manifest's declared capabilities.
pub fn audit(engine: &Engine, component: &Component, declared: &Capabilities) -> Audit {
    let ty = component.component_type();
    let mut imports = Vec::new();
    let mut refusals = Vec::new();
    let mut used = std::collections::HashSet::new();
    for (name, ext) in ty.imports(engine) {
        let class = match &ext.ty {
            ComponentItem::Type(_) | ComponentItem::Resource(_) => continue,
            ComponentItem::ComponentInstance(_) => classify(name, declared),
            _ => ImportClass::Unsupported {
                reason: "only imported interfaces are provided, not bare functions or components"
                    .into(),
            },
        };
        match &class {
            ImportClass::Capability {
                capability,
                declared: false,
            } => refusals.push(format!(
                "imports {name}, but the manifest does not declare <{capability}/>"
            )),
            ImportClass::Capability { capability, .. } => {
                used.insert(*capability);
            }
            ImportClass::Unsupported { reason } => {
                refusals.push(format!("imports {name}: {reason}"))
            }
            ImportClass::Linked { .. } => {
                if name.starts_with("wasi:filesystem/") {
                    used.insert("dir");
                }
                if name.starts_with("wasi:sockets/") {
                    used.insert("net");
                }
                if name.starts_with("wasi:http/outgoing-handler") {
                    used.insert("http");
                }
                if name.starts_with("wasi:cli/environment") {
                    used.insert("env");
                }
                if name.starts_with("wasi:cli/stdout") {
                    used.insert("stdout");
                }
                if name.starts_with("wasi:cli/stderr") {
                    used.insert("stderr");
                }
            }
            ImportClass::Host => {}
        }
        imports.push(ImportReport {
            name: name.to_owned(),
            functions: functions(engine, &ext.ty),
            class,
        });
    }
    let mut notes = Vec::new();
    for (declared_it, capability) in [
        (declared.clocks, "clocks"),
        (declared.random, "random"),
        (declared.stdout, "stdout"),
        (declared.stderr, "stderr"),
        (!declared.dirs.is_empty(), "dir"),
        (!declared.net.is_empty(), "net"),
        (!declared.http.is_empty(), "http"),
        (!declared.env.is_empty(), "env"),
        (!declared.feeds.is_empty(), "feed"),
    ] {
        if declared_it && !used.contains(capability) {
            notes.push(format!(
                "the manifest declares {capability}, but the component imports no interface that could use it"
            ));
        }
    }
    let exports = ty
        .exports(engine)
        .filter(|(_, ext)| !matches!(ext.ty, ComponentItem::Type(_) | ComponentItem::Resource(_)))
        .map(|(name, ext)| ExportReport {
            name: name.to_owned(),
            functions: functions(engine, &ext.ty),
        })
        .collect();
    Audit {
        imports,
        exports,
        refusals,
        notes,
    }
}

/// An `rps.xml` skeleton for a component from its audit (made against no
/// declared capabilities): every capability it imports declared, every
/// linked interface and unsupported import explained in a comment, its
/// exports listed above a self-test to fill in. Defaults elsewhere, each
/// commented. `name` must be a service name; `source` is what the
/// component was read from, named in the header.
pub fn manifest_skeleton(audit: &Audit, name: &str, source: &str) -> String {
    use crate::package::manifest::{
        DEFAULT_FUEL_PER_CALL, DEFAULT_MAX_MEMORY, DEFAULT_TIME_PER_CALL,
    };
    use crate::package::units::{format_duration, format_size};
    use std::fmt::Write;

    // Text from the component goes into comments only, where `--` may not.
    let safe = |text: &str| text.replace("--", "- -");
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(r#"<?xml version="1.0" encoding="UTF-8"?>"#.into());
    line(format!(
        "<!-- Written by `sp2a manifest init` from {} (its imports and exports).\n     Review every line: what this declares is what auditors and nodes see. -->",
        safe(source)
    ));
    line(r#"<rps format="1">"#.into());
    line(format!("  <name>{name}</name>"));
    line("  <version>0.1.0</version>".into());
    line(format!("  <description>{name}</description>"));
    line("  <requirements>".into());
    line("    <!-- The defaults: set them to what one call needs. -->".into());
    line(format!(
        "    <max-memory>{}</max-memory>",
        format_size(DEFAULT_MAX_MEMORY)
    ));
    line(format!(
        "    <fuel-per-call>{DEFAULT_FUEL_PER_CALL}</fuel-per-call>"
    ));
    line(format!(
        "    <time-per-call>{}</time-per-call>",
        format_duration(DEFAULT_TIME_PER_CALL)
    ));
    line("  </requirements>".into());
    line("  <capabilities>".into());
    let mut declared = std::collections::BTreeSet::new();
    let mut shown = std::collections::BTreeSet::new();
    for import in &audit.imports {
        let name = safe(&import.name);
        match &import.class {
            ImportClass::Capability { capability, .. } => {
                if !declared.insert(*capability) {
                    continue;
                }
                match *capability {
                    "feed" => {
                        line(format!(
                            "    <!-- {name}: reads a live feed. Name it and its source's key, or the package is refused:"
                        ));
                        line(r#"    <feed name="FEED" publisher="ed25519:KEY"/> -->"#.into());
                    }
                    capability => {
                        line(format!("    <!-- {name}: imported, so declared. -->"));
                        line(format!("    <{capability}/>"));
                    }
                }
            }
            ImportClass::Linked { grants } => {
                let example = match import.name.split('/').next() {
                    Some("wasi:filesystem") => {
                        Some(r#"<dir name="data" path="/data" access="read-only"/>"#)
                    }
                    Some("wasi:sockets") => {
                        Some(r#"<net host="api.example.org" port="443" protocol="tcp"/>"#)
                    }
                    Some("wasi:http") => Some(r#"<http url="https://api.example.org/"/>"#),
                    _ => match import.name.rsplit_once('@').map(|(path, _)| path) {
                        Some("wasi:cli/stdout") => Some("<stdout/>"),
                        Some("wasi:cli/stderr") => Some("<stderr/>"),
                        Some("wasi:cli/environment") => Some(r#"<env name="LANG"/>"#),
                        _ => None,
                    },
                };
                match example.filter(|example| shown.insert(*example)) {
                    Some(example) => line(format!(
                        "    <!-- {name}: linked; {grants}. To use it: {example} -->"
                    )),
                    None => line(format!("    <!-- {name}: linked; {grants}. -->")),
                }
            }
            ImportClass::Host => line(format!("    <!-- {name}: offered by every node. -->")),
            ImportClass::Unsupported { reason } => line(format!(
                "    <!-- {name}: NOT PROVIDED: {}; nodes refuse this component. -->",
                safe(reason)
            )),
        }
    }
    line("  </capabilities>".into());
    line("  <!-- Calls a node makes before it activates the service, with the answers".into());
    line("       as `sp2a call` prints them. The component exports:".into());
    for export in &audit.exports {
        for (function, signature) in &export.functions {
            let item = match function.is_empty() {
                true => export.name.clone(),
                false => format!("{} {function}", export.name),
            };
            let _ = writeln!(out, "         {}: {}", safe(&item), safe(signature));
        }
    }
    let mut line = |text: &str| {
        out.push_str(text);
        out.push('\n');
    };
    line("  <self-test>");
    line(r#"    <call expect='"ANSWER"'>FUNCTION("ARGUMENT")</call>"#);
    line("  </self-test> -->");
    line("</rps>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(name: &str) -> ImportReport {
        ImportReport {
            name: name.into(),
            class: classify(name, &Capabilities::default()),
            functions: Vec::new(),
        }
    }

    #[test]
    fn a_skeleton_declares_what_the_component_imports_and_parses() {
        let audit = Audit {
            imports: vec![
                import("wasi:clocks/wall-clock@0.2.3"),
                import("wasi:clocks/monotonic-clock@0.2.3"),
                import("wasi:filesystem/preopens@0.2.3"),
                import("wasi:cli/stdout@0.2.3"),
                import("sp2a:rps/log@0.1.0"),
                // A hostile name must not end the comment it is quoted in.
                import("evil:pkg/a--><x/>@1.0.0"),
            ],
            exports: vec![ExportReport {
                name: "greet".into(),
                functions: vec![(String::new(), "func(name: string) -> string".into())],
            }],
            refusals: Vec::new(),
            notes: Vec::new(),
        };
        let xml = manifest_skeleton(&audit, "hello", "hello.wasm");
        let manifest = crate::package::Manifest::parse(xml.as_bytes()).unwrap();
        assert_eq!(manifest.name, "hello");
        let declared = &manifest.capabilities;
        assert!(declared.clocks, "{xml}");
        assert!(!declared.random && !declared.stdout && declared.dirs.is_empty());
        assert_eq!(xml.matches("<clocks/>").count(), 1, "declared once");
        assert!(xml.contains(r#"<dir name="data""#), "{xml}");
        assert!(xml.contains("NOT PROVIDED"), "{xml}");
        assert!(xml.contains("greet: func(name: string) -> string"), "{xml}");
        // Declared as the skeleton says, the component's audit is clean.
        let again = Audit {
            imports: audit
                .imports
                .iter()
                .map(|i| ImportReport {
                    class: classify(&i.name, declared),
                    ..i.clone()
                })
                .collect(),
            ..audit.clone()
        };
        assert!(again.imports.iter().all(|i| !matches!(
            i.class,
            ImportClass::Capability {
                declared: false,
                ..
            }
        )));
    }

    #[test]
    fn classification() {
        let none = Capabilities::default();
        let clocks = Capabilities {
            clocks: true,
            ..Capabilities::default()
        };
        assert!(matches!(
            classify("wasi:io/streams@0.2.6", &none),
            ImportClass::Linked { .. }
        ));
        assert!(matches!(
            classify("wasi:filesystem/preopens@0.2.9", &none),
            ImportClass::Linked { .. }
        ));
        assert_eq!(
            classify("wasi:clocks/wall-clock@0.2.3", &none),
            ImportClass::Capability {
                capability: "clocks",
                declared: false
            }
        );
        assert_eq!(
            classify("wasi:clocks/monotonic-clock@0.2.3", &clocks),
            ImportClass::Capability {
                capability: "clocks",
                declared: true
            }
        );
        assert_eq!(classify("sp2a:rps/log@0.1.0", &none), ImportClass::Host);
        assert_eq!(
            classify("sp2a:rps/feed@0.1.0", &none),
            ImportClass::Capability {
                capability: "feed",
                declared: false
            }
        );
        for name in ["wasi:http/types@0.2.10", "wasi:http/outgoing-handler@0.2.0"] {
            assert!(
                matches!(classify(name, &none), ImportClass::Linked { .. }),
                "{name}"
            );
        }
        for name in [
            "wasi:http/incoming-handler@0.2.0",
            "wasi:http/types@0.3.0",
            "wasi:io/streams@0.3.0",
            "wasi:io/streams",
            "sp2a:rps/admin@0.1.0",
            "evil:pkg/backdoor@1.0.0",
            "plain-function",
        ] {
            assert!(
                matches!(classify(name, &clocks), ImportClass::Unsupported { .. }),
                "{name}"
            );
        }
    }
}
