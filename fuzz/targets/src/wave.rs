//! WAVE call text (`sp2a call`, remote invokes) against a real component's
//! exports: parsed, resolved to an export and typed against its parameters,
//! as the sandbox does before a call (the guest is not run). The component
//! is a small one written here in the component text format, exporting
//! functions whose parameters cover WIT's kinds of types.

use std::sync::OnceLock;

use sp2a::sandbox::Activation;
use wasmtime::component::Val;
use wasmtime::component::wasm_wave::untyped::UntypedFuncCall;

/// The component's manifest.
pub const MANIFEST: &str = "<rps><name>wavey</name><version>0.1.0</version>\
    <description>Exports one function of each kind of parameter.</description>\
    <requirements/><capabilities/></rps>";

const COMPONENT: &str = r#"
(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
    (func (export "one") (param i32) (result i32) local.get 0)
    (func (export "two") (param i32 i32) (result i32) i32.const 0)
    (func (export "three") (param i32 i32 i32) (result i32) i32.const 0)
    (func (export "five") (param i32 i32 i32 i32 i32) (result i32) i32.const 0)
    (func (export "floats") (param f64 f64 i32 i32) (result i32) i32.const 0)
    (func (export "wide") (param i64 f32 i32) (result i32) i32.const 0)
  )
  (core instance $i (instantiate $m))
  (type $point-def (record (field "x" f64) (field "y" f64)))
  (export $point "point" (type $point-def))
  (type $colour-def (enum "red" "green" "blue"))
  (export $colour "colour" (type $colour-def))
  (type $perms-def (flags "read" "write" "exec"))
  (export $perms "perms" (type $perms-def))
  (type $shape-def (variant (case "circle" u32) (case "square" s16) (case "empty")))
  (export $shape "shape" (type $shape-def))
  (func (export "echo") (param "n" u32) (result u32)
    (canon lift (core func $i "one")))
  (func (export "greet") (param "name" string) (result u32)
    (canon lift (core func $i "two") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func (export "sum") (param "xs" (list s64)) (result u32)
    (canon lift (core func $i "two") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func (export "maybe") (param "o" (option u8)) (param "c" char) (result u32)
    (canon lift (core func $i "three")))
  (func (export "either") (param "r" (result string (error u16))) (result u32)
    (canon lift (core func $i "three") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func (export "place") (param "p" $point) (param "c" $colour) (param "f" $perms) (result u32)
    (canon lift (core func $i "floats")))
  (func (export "draw") (param "s" $shape) (param "b" bool) (param "t" (tuple u8 s8)) (result u32)
    (canon lift (core func $i "five")))
  (func (export "mixed") (param "a" s64) (param "b" f32) (param "c" u16) (result u32)
    (canon lift (core func $i "wide")))
)
"#;

/// The component, in binary.
pub fn component() -> Vec<u8> {
    wat::parse_str(COMPONENT).expect("the fixture component is valid text")
}

/// The component, activated once per process (as `sp2a call` activates a
/// package: verified, audited, compiled, pre-instantiated).
fn activation() -> &'static Activation {
    static ACTIVATION: OnceLock<(Activation, tempfile::TempDir)> = OnceLock::new();
    &ACTIVATION
        .get_or_init(|| {
            let key = crate::publisher();
            let data = tempfile::tempdir().expect("a temporary directory");
            let policy = sp2a::policy::Policy::parse(
                &format!("[trust]\npublishers = [\"{}\"]\n", key.public()),
                std::path::Path::new("."),
            )
            .expect("the policy parses");
            let package = crate::package::packed();
            let sandbox = sp2a::sandbox::Sandbox::new(sp2a::sandbox::SandboxConfig {
                max_instances: 1,
                ..sp2a::sandbox::SandboxConfig::default()
            })
            .expect("a sandbox");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let service = runtime
                .block_on(sp2a::node::activate(
                    &sandbox,
                    &policy,
                    package.into_inner(),
                ))
                .expect("the fixture activates");
            (service.activation, data)
        })
        .0
}

pub fn seeds() -> Vec<Vec<u8>> {
    [
        "echo(7)",
        "greet(\"text with \\\"quotes\\\" and \\u{1f600}\")",
        "sum([1, -2, 9223372036854775807])",
        "maybe(some(255), 'x')",
        "maybe(none, '\\u{10ffff}')",
        "either(ok(\"fine\"))",
        "either(err(65535))",
        "place({x: 1.5, y: -0.0}, green, {read, exec})",
        "draw(circle(4294967295), true, (255, -128))",
        "draw(empty, false, (0, 0))",
        "mixed(-9223372036854775808, nan, 65535)",
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec()
}

pub fn run(bytes: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return "not utf-8".into();
    };
    let call = match UntypedFuncCall::parse(text) {
        Ok(call) => call,
        Err(_) => return "unparsed".into(),
    };
    let func = match activation().resolve(call.name()) {
        Ok(func) => func,
        Err(_) => return "unresolved".into(),
    };
    let typed = call.to_wasm_params::<Val>(func.params.iter().map(|(_, ty)| ty));
    format!("{} {}", func.name, crate::class(&typed))
}
