//! Sandbox behaviour beyond single services: the compile cache, components
//! from other toolchains, and what is not a component at all.

use sp2a::node::activate;
use sp2a::package::{SecretKey, pack};
use sp2a::sandbox::executor::{CompileSource, code_size};
use sp2a::sandbox::{Sandbox, SandboxConfig, Tier, Tiering};
use sp2a_tests::{manifest, policy, service_package};

fn cached_sandbox(dir: &std::path::Path) -> Sandbox {
    Sandbox::new(SandboxConfig {
        max_instances: 8,
        cache_dir: Some(dir.to_path_buf()),
        ..SandboxConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn second_activation_skips_compilation_and_tampered_artifacts_are_discarded() {
    let key = SecretKey::generate();
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let policy = policy(&key, data.path(), "");
    let package = service_package("checksum", &key);

    let first = activate(
        &cached_sandbox(cache.path()),
        &policy,
        package.clone().into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(first.activation.compiled().source, CompileSource::Compiled);
    // A restarted node (fresh sandbox) finds its own artifact.
    let second = activate(
        &cached_sandbox(cache.path()),
        &policy,
        package.clone().into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(
        second.activation.compiled().source,
        CompileSource::DiskCache
    );
    assert_eq!(
        second
            .activation
            .invoke("blake3-text(\"abc\")")
            .await
            .unwrap()
            .value,
        "\"6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85\""
    );

    // Someone rewrites the artifact: its MAC fails, it is deleted and recompiled.
    let artifact = artifact_in(cache.path());
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&artifact, &bytes).unwrap();
    let third = activate(&cached_sandbox(cache.path()), &policy, package.into_inner())
        .await
        .unwrap();
    assert_eq!(third.activation.compiled().source, CompileSource::Compiled);
    assert_eq!(
        third
            .activation
            .invoke("sha256-text(\"\")")
            .await
            .unwrap()
            .value,
        "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\""
    );
}

/// Baseline-first: a component is ready on the baseline compiler's build,
/// answers on it, and moves to the optimised build once the background
/// compile is done; only that build is cached, in memory and on disk.
#[tokio::test]
async fn a_service_starts_on_its_baseline_build_and_moves_to_the_optimised_one() {
    let key = SecretKey::generate();
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let policy = policy(&key, data.path(), "");
    let package = service_package("checksum", &key);
    let tiered = |from| {
        Sandbox::new(SandboxConfig {
            max_instances: 8,
            cache_dir: Some(cache.path().to_path_buf()),
            tiering: Tiering::BaselineFirst { from },
            ..SandboxConfig::default()
        })
        .unwrap()
    };
    let call = "blake3-text(\"abc\")";
    let expected = "\"6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85\"";

    // Smaller than the threshold: the optimising compiler, as ever.
    let small = activate(&tiered(usize::MAX), &policy, package.clone().into_inner())
        .await
        .unwrap();
    assert_eq!(small.activation.compiled().source, CompileSource::Compiled);
    assert_eq!(small.activation.tier(), Tier::Optimised);
    std::fs::remove_dir_all(cache.path()).unwrap();

    let sandbox = tiered(0);
    let service = activate(&sandbox, &policy, package.clone().into_inner())
        .await
        .unwrap();
    let compiled = service.activation.compiled();
    assert_eq!(compiled.source, CompileSource::Baseline);
    assert_eq!(compiled.tier, Tier::Baseline);
    assert!(
        artifacts_in(cache.path()).is_empty(),
        "a baseline build went to the disk cache"
    );
    assert_eq!(
        service.activation.invoke(call).await.unwrap().value,
        expected
    );

    service.activation.optimised().await.unwrap();
    assert_eq!(service.activation.tier(), Tier::Optimised);
    assert_eq!(
        service.activation.invoke(call).await.unwrap().value,
        expected
    );
    // Another activation in this process gets the optimised build from
    // memory; a restarted node from its disk cache.
    let again = activate(&sandbox, &policy, package.clone().into_inner())
        .await
        .unwrap();
    assert_eq!(again.activation.compiled().source, CompileSource::Memory);
    assert_eq!(again.activation.tier(), Tier::Optimised);
    let restarted = activate(&tiered(0), &policy, package.into_inner())
        .await
        .unwrap();
    assert_eq!(
        restarted.activation.compiled().source,
        CompileSource::DiskCache
    );
    assert_eq!(restarted.activation.tier(), Tier::Optimised);
}

/// Tiering goes by the code a component holds, not its data: the stream
/// service carries 2 MiB of data and little code.
#[test]
fn code_size_counts_function_bodies_only() {
    let stream = sp2a_tests::component("stream");
    let code = code_size(&stream);
    assert!(stream.len() > 2 << 20);
    assert!(code > 0 && code < 512 << 10, "{code} bytes of code");
    let hello = sp2a_tests::component("hello");
    assert!(code_size(&hello) > 0 && code_size(&hello) < hello.len());
    assert_eq!(code_size(b"not wasm at all"), 0);
    assert!(code_size(&hello[..hello.len() / 2]) <= code_size(&hello));
}

/// Baseline-only tiering never optimises, and says so when asked to wait.
#[tokio::test]
async fn baseline_only_tiering_stays_on_the_baseline_build() {
    let key = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 4,
        tiering: Tiering::BaselineOnly,
        ..SandboxConfig::default()
    })
    .unwrap();
    let service = activate(
        &sandbox,
        &policy(&key, data.path(), ""),
        service_package("hello", &key).into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(
        service
            .activation
            .invoke("greet(\"sp2a\")")
            .await
            .unwrap()
            .value,
        "\"Hello, sp2a!\""
    );
    let err = service.activation.optimised().await.unwrap_err();
    assert!(err.to_string().contains("baseline build"), "{err}");
    assert_eq!(service.activation.tier(), Tier::Baseline);
    assert_eq!(sandbox.components_in_memory(), 0);
}

/// The compiled artifact in a cache directory.
fn artifact_in(cache: &std::path::Path) -> std::path::PathBuf {
    artifacts_in(cache)
        .into_iter()
        .next()
        .expect("an artifact was written")
}

/// The compiled artifacts in a cache directory.
fn artifacts_in(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap())
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect()
}

#[tokio::test]
async fn an_artifact_made_under_another_nodes_key_is_not_loaded() {
    let key = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let policy = policy(&key, data.path(), "");
    let package = service_package("checksum", &key);
    // Node A compiles into its cache; node B's cache has a key of its own.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    activate(
        &cached_sandbox(a.path()),
        &policy,
        package.clone().into_inner(),
    )
    .await
    .unwrap();
    let b_sandbox = cached_sandbox(b.path());
    let theirs = artifact_in(a.path());
    let ours = b
        .path()
        .join(theirs.parent().unwrap().file_name().unwrap())
        .join(theirs.file_name().unwrap());
    std::fs::create_dir_all(ours.parent().unwrap()).unwrap();
    std::fs::copy(&theirs, &ours).unwrap();
    // B finds an artifact at the right place, under the wrong key: it
    // compiles the component itself and replaces the file.
    let service = activate(&b_sandbox, &policy, package.clone().into_inner())
        .await
        .unwrap();
    assert_eq!(
        service.activation.compiled().source,
        CompileSource::Compiled
    );
    assert_ne!(
        std::fs::read(&ours).unwrap(),
        std::fs::read(&theirs).unwrap()
    );
    // And its own artifact loads next time.
    let again = activate(&cached_sandbox(b.path()), &policy, package.into_inner())
        .await
        .unwrap();
    assert_eq!(again.activation.compiled().source, CompileSource::DiskCache);
}

#[tokio::test]
async fn every_call_gets_a_fresh_instance() {
    let key = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let package = pack(
        sp2a_tests::component("hostile"),
        &manifest("hostile", "<capabilities><clocks/></capabilities>"),
        &key,
    )
    .unwrap();
    let service = activate(
        &sp2a_tests::sandbox(),
        &policy(&key, data.path(), ""),
        package.into_inner(),
    )
    .await
    .unwrap();
    // A counter in the guest's memory starts from zero in every call.
    for _ in 0..3 {
        assert_eq!(
            service.activation.invoke("bump()").await.unwrap().value,
            "1"
        );
    }
    // Within one instance it does count (so the check above can fail).
    let func = service.activation.resolve("bump").unwrap().clone();
    let mut instance = service.activation.instance().unwrap();
    instance.call(&func, &[]).await.unwrap();
    let second = instance.call(&func, &[]).await.unwrap();
    assert_eq!(second, [wasmtime::component::Val::U32(2)]);
}

#[tokio::test]
async fn instances_come_from_a_bounded_pool() {
    let key = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let package = pack(
        sp2a_tests::component("hostile"),
        &manifest(
            "hostile",
            "<requirements><time-per-call>10s</time-per-call></requirements><capabilities><clocks/></capabilities>",
        ),
        &key,
    )
    .unwrap();
    // A pool of one instance: while a call sleeps in it, a second call
    // finds no instance (an on-demand allocator has no such limit).
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 1,
        ..SandboxConfig::default()
    })
    .unwrap();
    let service = std::sync::Arc::new(
        activate(
            &sandbox,
            &policy(&key, data.path(), ""),
            package.into_inner(),
        )
        .await
        .unwrap(),
    );
    let sleeper = {
        let service = service.clone();
        tokio::spawn(async move { service.activation.invoke("nap(5000)").await })
    };
    // Calls succeed until the sleeper holds the one instance.
    let err = loop {
        match service.activation.invoke("echo(1)").await {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    !sleeper.is_finished(),
                    "no call was refused while the pool was taken"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };
    assert!(err.to_string().contains("concurrent"), "{err}");
    assert_eq!(sleeper.await.unwrap().unwrap().value, "5000");
    assert_eq!(
        service.activation.invoke("echo(1)").await.unwrap().value,
        "1"
    );
}

/// A component as another toolchain might emit it: hand-written, importing a
/// newer WASI 0.2 patch release than this runtime implements.
const NEWER_WASI: &str = r#"
(component
  (import "wasi:random/random@0.2.99" (instance $random
    (export "get-random-u64" (func (result u64)))))
  (import "wasi:clocks/monotonic-clock@0.2.42" (instance $clock
    (export "now" (func (result u64)))))
  (core module $m
    (import "host" "rand" (func $rand (result i64)))
    (import "host" "now" (func $now (result i64)))
    (func (export "roll") (result i64) call $rand)
    (func (export "ticking") (result i32)
      call $now
      i64.const 0
      i64.gt_u))
  (core func $rand (canon lower (func $random "get-random-u64")))
  (core func $now (canon lower (func $clock "now")))
  (core instance $i (instantiate $m
    (with "host" (instance (export "rand" (func $rand)) (export "now" (func $now))))))
  (func (export "roll") (result u64) (canon lift (core func $i "roll")))
  (func (export "ticking") (result bool) (canon lift (core func $i "ticking")))
)
"#;

#[tokio::test]
async fn components_importing_newer_wasi_patch_versions_run() {
    let key = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let bytes = wat::parse_str(NEWER_WASI).unwrap();
    let m = manifest(
        "foreign",
        "<capabilities><clocks/><random/></capabilities><self-test><call expect=\"true\">ticking()</call></self-test>",
    );
    let package = pack(bytes, &m, &key).unwrap();
    let service = activate(
        &sp2a_tests::sandbox(),
        &policy(&key, data.path(), ""),
        package.into_inner(),
    )
    .await
    .unwrap();
    let a = service.activation.invoke("roll()").await.unwrap().value;
    let b = service.activation.invoke("roll()").await.unwrap().value;
    assert_ne!(a, b, "random numbers repeat");

    // The same component without <random/> declared is refused, naming the import.
    let m = manifest("foreign", "<capabilities><clocks/></capabilities>");
    let package = pack(wat::parse_str(NEWER_WASI).unwrap(), &m, &key).unwrap();
    let err = activate(
        &sp2a_tests::sandbox(),
        &policy(&key, data.path(), ""),
        package.into_inner(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("imports wasi:random/random@0.2.99"),
        "{err}"
    );
}

#[tokio::test]
async fn unsupported_imports_and_core_modules_are_refused() {
    let key = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let policy = policy(&key, data.path(), "");
    // Outgoing HTTP is linked; serving HTTP is not offered.
    let http = r#"(component
        (import "wasi:http/incoming-handler@0.2.0" (instance (export "handle" (func))))
    )"#;
    let package = pack(wat::parse_str(http).unwrap(), &manifest("http", ""), &key).unwrap();
    let err = activate(&sp2a_tests::sandbox(), &policy, package.into_inner())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "imports wasi:http/incoming-handler@0.2.0: wasi:http/incoming-handler is not offered"
        ),
        "{err}"
    );
    // A linked interface imported with a made-up type does not link.
    let http = r#"(component
        (import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func))))
    )"#;
    let package = pack(wat::parse_str(http).unwrap(), &manifest("http", ""), &key).unwrap();
    let err = activate(&sp2a_tests::sandbox(), &policy, package.into_inner())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot link"), "{err}");

    let core = wat::parse_str("(module (func (export \"f\")))").unwrap();
    let package = pack(core, &manifest("core", ""), &key).unwrap();
    let err = activate(&sp2a_tests::sandbox(), &policy, package.into_inner())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("core wasm module"), "{err}");

    let package = pack(
        b"\0asm\x0d\0\x01\0garbage".to_vec(),
        &manifest("junk", ""),
        &key,
    )
    .unwrap();
    let err = activate(&sp2a_tests::sandbox(), &policy, package.into_inner())
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("cannot compile the component"),
        "{err}"
    );
}

#[test]
fn nodes_sharing_a_compile_cache_compile_once() {
    let key = SecretKey::generate();
    let cache = tempfile::tempdir().unwrap();
    let package = service_package("stream", &key);
    // Four "nodes" (separate sandboxes, as in separate processes) start at
    // the same moment with the same cache directory.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let package = package.clone();
            let dir = cache.path().to_path_buf();
            std::thread::spawn(move || cached_sandbox(&dir).compile(&package).unwrap().source)
        })
        .collect();
    let sources: Vec<CompileSource> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let compiled = sources
        .iter()
        .filter(|s| **s == CompileSource::Compiled)
        .count();
    assert_eq!(compiled, 1, "{sources:?}");
    assert_eq!(
        sources
            .iter()
            .filter(|s| **s == CompileSource::DiskCache)
            .count(),
        3
    );
}

/// The cached artifact of `package` under `cache` (one engine configuration).
fn artifact_of(
    cache: &std::path::Path,
    package: &sp2a::package::VerifiedPackage,
) -> std::path::PathBuf {
    let name = format!("{}.cwasm", package.advert().component_hash().to_hex());
    std::fs::read_dir(cache)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(&name))
        .find(|p| p.exists())
        .expect("an artifact was written")
}

#[tokio::test]
async fn an_artifact_renamed_to_another_components_name_is_recompiled_not_loaded() {
    let key = SecretKey::generate();
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let policy = policy(&key, data.path(), "");
    let checksum = service_package("checksum", &key);
    let hello = service_package("hello", &key);
    for package in [&checksum, &hello] {
        let sandbox = cached_sandbox(cache.path());
        activate(&sandbox, &policy, package.clone().into_inner())
            .await
            .unwrap();
    }
    // Someone who can write to the shared cache puts checksum's machine code
    // (with its valid MAC) under hello's name.
    std::fs::copy(
        artifact_of(cache.path(), &checksum),
        artifact_of(cache.path(), &hello),
    )
    .unwrap();
    let again = activate(&cached_sandbox(cache.path()), &policy, hello.into_inner())
        .await
        .unwrap();
    assert_eq!(again.activation.compiled().source, CompileSource::Compiled);
    assert_eq!(
        again.activation.invoke("greet(\"x\")").await.unwrap().value,
        "\"Hello, x!\""
    );
}

/// Makes `path` belong to another user (`nobody`), which needs root.
fn give_away(path: &std::path::Path) {
    std::os::unix::fs::chown(path, Some(65534), Some(65534))
        .expect("this test makes files another user's, which needs root");
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A compile cache decides what machine code runs: one that another local
/// user could have created or written, or whose key others can read (and
/// so forge artifacts under), is refused when the sandbox starts, before
/// anything is loaded from it; the node's own cache, used again, works.
#[tokio::test]
async fn a_compile_cache_another_user_could_write_or_whose_key_others_read_is_refused() {
    let key = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let policy = policy(&key, data.path(), "");
    let package = service_package("checksum", &key);
    let fresh = || {
        let cache = tempfile::tempdir().unwrap();
        cached_sandbox(cache.path());
        cache
    };
    let refusal = |cache: &std::path::Path| {
        Sandbox::new(SandboxConfig {
            cache_dir: Some(cache.to_path_buf()),
            ..SandboxConfig::default()
        })
        .unwrap_err()
        .to_string()
    };
    let engine_dir = |cache: &std::path::Path| {
        std::fs::read_dir(cache)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.is_dir())
            .expect("the engine's directory")
    };

    // Created by another user ("/var/cache/sp2a", shared), key planted 0644.
    let cache = fresh();
    set_mode(&cache.path().join("key"), 0o644);
    for path in [cache.path().join("key"), engine_dir(cache.path())] {
        give_away(&path);
    }
    give_away(cache.path());
    let refused = refusal(cache.path());
    assert!(refused.contains("owned by uid 65534"), "{refused}");

    // Ours, but the key readable by others.
    let cache = fresh();
    set_mode(&cache.path().join("key"), 0o644);
    assert!(refusal(cache.path()).contains("mode 600"));
    // Ours, but the engine's directory writable by others.
    let cache = fresh();
    set_mode(&engine_dir(cache.path()), 0o777);
    assert!(refusal(cache.path()).contains("chmod 700"));
    // The key a link to someone's file.
    let cache = fresh();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::rename(cache.path().join("key"), elsewhere.path().join("key")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("key"), cache.path().join("key")).unwrap();
    assert!(refusal(cache.path()).contains("symbolic link"));

    // The node's own cache serves it again.
    let cache = fresh();
    activate(
        &cached_sandbox(cache.path()),
        &policy,
        package.clone().into_inner(),
    )
    .await
    .unwrap();
    let again = activate(&cached_sandbox(cache.path()), &policy, package.into_inner())
        .await
        .unwrap();
    assert_eq!(again.activation.compiled().source, CompileSource::DiskCache);
}
