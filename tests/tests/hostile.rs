//! Hostile guests and packages against the sandbox, in process: every attack
//! is refused or trapped with a clear error, and the same activation keeps
//! serving the next call.

use sp2a::node::{ActivateError, LocalService, activate};
use sp2a::package::{SecretKey, pack};
use sp2a::policy::{Refusal, Refusals};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sp2a::sandbox::{InvokeError, Sandbox, SandboxConfig, Tier, Tiering};
use sp2a_tests::{component, manifest, policy, sandbox};

struct Hostile {
    service: LocalService,
    data: tempfile::TempDir,
    /// `<fs-root>/<publisher dir>`: where this publisher's services keep data.
    publisher_root: std::path::PathBuf,
}

const CAPS: &str = "<capabilities><clocks/><dir name=\"sandbox\" path=\"/sandbox\" access=\"read-write\"/></capabilities>";

async fn hostile_with(requirements: &str, capabilities: &str, grants: &str) -> Hostile {
    hostile_on(&sandbox(), requirements, capabilities, grants).await
}

async fn hostile_on(
    sandbox: &Sandbox,
    requirements: &str,
    capabilities: &str,
    grants: &str,
) -> Hostile {
    let key = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let m = manifest(
        "hostile",
        &format!("<requirements>{requirements}</requirements>{capabilities}"),
    );
    let package = pack(component("hostile"), &m, &key).unwrap();
    let policy = policy(&key, data.path(), grants);
    let service = activate(sandbox, &policy, package.into_inner())
        .await
        .unwrap();
    let publisher_root = data.path().join(sp2a::policy::publisher_dir(&key.public()));
    Hostile {
        service,
        data,
        publisher_root,
    }
}

async fn hostile(requirements: &str) -> Hostile {
    hostile_with(requirements, CAPS, "").await
}

impl Hostile {
    async fn call(&self, call: &str) -> Result<String, InvokeError> {
        self.service.activation.invoke(call).await.map(|o| o.value)
    }

    /// The node is healthy: a plain call on the same activation works.
    async fn assert_healthy(&self) {
        assert_eq!(self.call("echo(7)").await.unwrap(), "7");
    }
}

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel() {
    let h =
        hostile("<fuel-per-call>50000000</fuel-per-call><time-per-call>30s</time-per-call>").await;
    let err = h.call("spin()").await.unwrap_err();
    assert!(
        matches!(err, InvokeError::OutOfFuel { limit: 50_000_000 }),
        "{err}"
    );
    assert!(err.to_string().contains("out of fuel"), "{err}");
    h.assert_healthy().await;
}

#[tokio::test]
async fn infinite_loop_hits_the_wall_clock_deadline() {
    // Fuel enough for minutes: only the deadline can stop these (running
    // out of fuel would be `OutOfFuel`).
    let h =
        hostile("<fuel-per-call>9000000000</fuel-per-call><time-per-call>200ms</time-per-call>")
            .await;
    for call in ["spin()", "spin-clock()"] {
        let err = h.call(call).await.unwrap_err();
        assert!(matches!(err, InvokeError::Deadline { .. }), "{call}: {err}");
        assert!(err.to_string().contains("200ms"), "{err}");
    }
    h.assert_healthy().await;
}

/// A big component runs on the baseline compiler's code until its
/// optimised build is ready: fuel, the deadline, the memory limit and the
/// stack bound hold there too.
#[tokio::test]
async fn limits_hold_on_baseline_code_too() {
    let baseline = Sandbox::new(SandboxConfig {
        max_instances: 16,
        tiering: Tiering::BaselineOnly,
        ..SandboxConfig::default()
    })
    .unwrap();
    let h = hostile_on(
        &baseline,
        "<fuel-per-call>50000000</fuel-per-call><time-per-call>30s</time-per-call><max-memory>16 MiB</max-memory>",
        CAPS,
        "",
    )
    .await;
    assert_eq!(h.service.activation.tier(), Tier::Baseline);
    let err = h.call("spin()").await.unwrap_err();
    assert!(
        matches!(err, InvokeError::OutOfFuel { limit: 50_000_000 }),
        "{err}"
    );
    let err = h.call("allocate(1024)").await.unwrap_err();
    assert!(
        matches!(err, InvokeError::Memory { limit, .. } if limit == 16 << 20),
        "{err}"
    );
    let err = h.call("recurse-native(100000000)").await.unwrap_err();
    assert!(matches!(err, InvokeError::StackOverflow), "{err}");
    h.assert_healthy().await;

    let h = hostile_on(
        &baseline,
        "<fuel-per-call>9000000000</fuel-per-call><time-per-call>200ms</time-per-call>",
        CAPS,
        "",
    )
    .await;
    for call in ["spin()", "spin-clock()"] {
        let err = h.call(call).await.unwrap_err();
        assert!(matches!(err, InvokeError::Deadline { .. }), "{call}: {err}");
    }
    h.assert_healthy().await;
    assert_eq!(h.service.activation.tier(), Tier::Baseline);
}

#[tokio::test]
async fn a_guest_blocked_in_the_host_hits_the_deadline_too() {
    // Sleeping runs no wasm, so epochs cannot interrupt it; without the
    // host-side deadline this call would return "60000" after a minute.
    let h = hostile("<time-per-call>300ms</time-per-call>").await;
    let err = h.call("nap(60000)").await.unwrap_err();
    assert!(matches!(err, InvokeError::Deadline { .. }), "{err}");
    assert_eq!(h.call("nap(10)").await.unwrap(), "10");
    h.assert_healthy().await;
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let h = hostile("<max-memory>16 MiB</max-memory>").await;
    let err = h.call("allocate(1024)").await.unwrap_err();
    assert!(
        matches!(err, InvokeError::Memory { limit, .. } if limit == 16 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("memory limit exceeded"), "{err}");
    h.assert_healthy().await;
    // Within the limit, allocation works.
    assert_eq!(h.call("allocate(4)").await.unwrap(), "4");
}

#[tokio::test]
async fn policy_caps_a_larger_memory_request() {
    let h = hostile_with(
        "<max-memory>512 MiB</max-memory>",
        CAPS,
        "[limits]\nmax-memory = \"8 MiB\"\n",
    )
    .await;
    assert_eq!(h.service.activation.grants().limits.max_memory, 8 << 20);
    assert!(h.service.admission.notes[0].contains("lowered"));
    let err = h.call("allocate(64)").await.unwrap_err();
    assert!(
        matches!(err, InvokeError::Memory { limit, .. } if limit == 8 << 20),
        "{err}"
    );
}

#[tokio::test]
async fn deep_recursion_overflows_the_stack_cleanly() {
    let h = hostile("<fuel-per-call>9000000000</fuel-per-call>").await;
    // Frames on the wasm stack: the node's stack bound stops it.
    let err = h.call("recurse-native(100000000)").await.unwrap_err();
    assert!(matches!(err, InvokeError::StackOverflow), "{err}");
    assert!(err.to_string().contains("stack overflow"), "{err}");
    h.assert_healthy().await;
    assert_eq!(h.call("recurse-native(3)").await.unwrap(), "3");
    // Frames in linear memory: the guest's own shadow stack runs out and
    // it faults; a trap like any other, the node carries on.
    let err = h.call("recurse(100000000)").await.unwrap_err();
    assert!(
        matches!(err, InvokeError::Trap { .. } | InvokeError::StackOverflow),
        "{err}"
    );
    h.assert_healthy().await;
    assert_eq!(h.call("recurse(100)").await.unwrap(), "150");
}

#[tokio::test]
async fn file_system_escapes_are_refused() {
    let h = hostile("").await;
    let granted = h.publisher_root.join("hostile/sandbox");
    assert!(granted.is_dir(), "the grant was created");
    assert_eq!(
        h.call("write-file(\"/sandbox/ok\", \"fine\")")
            .await
            .unwrap(),
        "ok"
    );
    assert_eq!(std::fs::read_to_string(granted.join("ok")).unwrap(), "fine");
    assert_eq!(
        h.call("read-file(\"/sandbox/ok\")").await.unwrap(),
        "ok(\"fine\")"
    );

    // A secret next to the grant, and a symlink inside the grant pointing out.
    std::fs::write(h.data.path().join("secret"), "top secret").unwrap();
    std::os::unix::fs::symlink(h.data.path(), granted.join("link")).unwrap();
    for call in [
        "read-file(\"/sandbox/../../secret\")",
        "read-file(\"/sandbox/../hostile/../secret\")",
        "read-file(\"../secret\")",
        "read-file(\"/etc/passwd\")",
        "read-file(\"/sandbox/link/secret\")",
        "write-file(\"/tmp/escaped\", \"x\")",
        "write-file(\"/sandbox/../../escaped\", \"x\")",
        "write-file(\"/sandbox/link/escaped\", \"x\")",
        "list-dir(\"/\")",
        "list-dir(\"/sandbox/..\")",
    ] {
        let value = h.call(call).await.unwrap();
        assert!(value.starts_with("err("), "{call} returned {value}");
        assert!(!value.contains("top secret"), "{call} leaked: {value}");
    }
    assert!(!h.data.path().join("escaped").exists());
    assert!(!std::path::Path::new("/tmp/escaped").exists());
    h.assert_healthy().await;
}

#[tokio::test]
async fn read_only_grant_refuses_writes() {
    let caps = "<capabilities><clocks/><dir name=\"ro\" path=\"/ro\" access=\"read-only\"/></capabilities>";
    let h = hostile_with("", caps, "").await;
    std::fs::write(h.publisher_root.join("hostile/ro/readme"), "hi").unwrap();
    assert_eq!(
        h.call("read-file(\"/ro/readme\")").await.unwrap(),
        "ok(\"hi\")"
    );
    let value = h
        .call("write-file(\"/ro/readme\", \"changed\")")
        .await
        .unwrap();
    assert!(value.starts_with("err("), "{value}");
    assert_eq!(
        std::fs::read_to_string(h.publisher_root.join("hostile/ro/readme")).unwrap(),
        "hi"
    );
}

#[tokio::test]
async fn no_environment_no_network_unless_granted() {
    let h = hostile("").await;
    assert_eq!(h.call("env-var(\"HOME\")").await.unwrap(), "none");
    assert_eq!(h.call("env-var(\"PATH\")").await.unwrap(), "none");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    let value = h.call(&format!("connect(\"{address}\")")).await.unwrap();
    assert!(value.starts_with("err("), "{value}");
    assert!(listener.accept().is_err(), "the guest reached the listener");
    h.assert_healthy().await;
}

#[tokio::test]
async fn granted_environment_and_network_work() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let caps = format!(
        "<capabilities><clocks/><env name=\"GREETING\"/><net host=\"127.0.0.1\" port=\"{port}\"/></capabilities>"
    );
    let grants = format!("env = {{ GREETING = \"hi\" }}\nnet = [\"127.0.0.1:{port}\"]\n");
    let h = hostile_with("", &caps, &grants).await;
    assert_eq!(
        h.call("env-var(\"GREETING\")").await.unwrap(),
        "some(\"hi\")"
    );
    assert_eq!(h.call("env-var(\"HOME\")").await.unwrap(), "none");
    assert_eq!(
        h.call(&format!("connect(\"127.0.0.1:{port}\")"))
            .await
            .unwrap(),
        "ok"
    );
    listener.accept().unwrap();
    // Another port on the same host stays closed.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let value = h
        .call(&format!("connect(\"{}\")", other.local_addr().unwrap()))
        .await
        .unwrap();
    assert!(value.starts_with("err("), "{value}");
}

#[tokio::test]
async fn a_panicking_guest_traps_with_its_message() {
    let h = hostile("").await;
    let err = h.call("crash(\"boom at the guest\")").await.unwrap_err();
    assert!(matches!(err, InvokeError::Trap { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("unreachable"), "{text}");
    assert!(text.contains("boom at the guest"), "{text}");
    h.assert_healthy().await;
}

#[tokio::test]
async fn output_is_only_shown_when_granted_and_bounded() {
    let h = hostile("").await;
    let outcome = h
        .service
        .activation
        .invoke("print(\"hello\")")
        .await
        .unwrap();
    assert!(outcome.stdout.is_empty() && outcome.stderr.is_empty());

    let caps = "<capabilities><clocks/><stdout/></capabilities>";
    let h = hostile_with("", caps, "stdout = true\n").await;
    let outcome = h
        .service
        .activation
        .invoke("print(\"hello\")")
        .await
        .unwrap();
    assert_eq!(outcome.stdout, b"hello\n");
    assert!(outcome.stderr.is_empty(), "stderr was not granted");
    // Up to the buffer's size a call's output is kept whole; beyond it the
    // write fails in the guest (which traps), and the node carries on.
    let limit = sp2a::sandbox::caps::MAX_CAPTURED_OUTPUT;
    let fits = "x".repeat(limit / 2);
    let outcome = h
        .service
        .activation
        .invoke(&format!("print(\"{fits}\")"))
        .await
        .unwrap();
    assert_eq!(outcome.stdout.len(), fits.len() + 1);
    let too_much = "x".repeat(limit);
    let err = h.call(&format!("print(\"{too_much}\")")).await.unwrap_err();
    assert!(matches!(err, InvokeError::Trap { .. }), "{err}");
    h.assert_healthy().await;
}

/// Counts the guest's log records and the host's warnings about them.
#[derive(Clone, Default)]
struct GuestLogs {
    records: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for GuestLogs {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Dropped<'a>(&'a AtomicUsize);
        impl tracing::field::Visit for Dropped<'_> {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "dropped" {
                    self.0.store(value as usize, Ordering::SeqCst);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        if event.metadata().target() == "sp2a::guest" {
            self.records.fetch_add(1, Ordering::SeqCst);
        } else {
            event.record(&mut Dropped(&self.dropped));
        }
    }
}

#[tokio::test]
async fn a_guest_logging_without_end_is_held_to_its_budget() {
    use tracing_subscriber::layer::SubscriberExt;
    let logs = GuestLogs::default();
    let subscriber = tracing_subscriber::registry().with(logs.clone());
    // This test's runtime has one thread: the guest logs on it.
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = hostile("").await;
    assert_eq!(h.call("log-flood(5000)").await.unwrap(), "5000");
    let budget = sp2a::sandbox::caps::MAX_LOG_RECORDS as usize;
    assert_eq!(logs.records.load(Ordering::SeqCst), budget);
    assert_eq!(logs.dropped.load(Ordering::SeqCst), 5000 - budget);
    // The next call has a budget of its own.
    assert_eq!(h.call("log-flood(10)").await.unwrap(), "10");
    assert_eq!(logs.records.load(Ordering::SeqCst), budget + 10);
    h.assert_healthy().await;
}

#[tokio::test]
async fn undeclared_import_is_refused_naming_it() {
    let key = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let m = manifest("hostile", "");
    let package = pack(component("hostile"), &m, &key).unwrap();
    let err = activate(
        &sandbox(),
        &policy(&key, data.path(), ""),
        package.into_inner(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("imports wasi:clocks/"), "{text}");
    assert!(text.contains("does not declare <clocks/>"), "{text}");
}

#[tokio::test]
async fn untrusted_publisher_is_refused_before_compiling() {
    let trusted = SecretKey::generate();
    let stranger = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let package = pack(
        component("hello"),
        &sp2a_tests::service_manifest("hello"),
        &stranger,
    )
    .unwrap();
    let sandbox = sandbox();
    let err = activate(
        &sandbox,
        &policy(&trusted, data.path(), ""),
        package.into_inner(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ActivateError::Refused(Refusals(r)) if matches!(r[..], [Refusal::UntrustedPublisher(_)])),
        "{err}"
    );
    assert_eq!(sandbox.components_in_memory(), 0, "nothing was compiled");
}

#[tokio::test]
async fn failing_self_test_blocks_activation() {
    let key = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let m = manifest(
        "hostile",
        &format!(
            "{CAPS}<self-test><call expect=\"7\">echo(7)</call><call expect=\"2\">echo(1)</call></self-test>"
        ),
    );
    let package = pack(component("hostile"), &m, &key).unwrap();
    let err = activate(
        &sandbox(),
        &policy(&key, data.path(), ""),
        package.into_inner(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ActivateError::SelfTest(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "self-test failed: echo(1) should return 2, but it returned 1"
    );

    // A self-test that traps is a failure too, not a crash.
    let m = manifest(
        "hostile",
        &format!(
            "{CAPS}<requirements><fuel-per-call>1000000</fuel-per-call></requirements><self-test><call expect=\"0\">spin()</call></self-test>"
        ),
    );
    let package = pack(component("hostile"), &m, &key).unwrap();
    let err = activate(
        &sandbox(),
        &policy(&key, data.path(), ""),
        package.into_inner(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("out of fuel"), "{err}");
}

#[tokio::test]
async fn concurrent_calls_and_traps_do_not_interfere() {
    let h = std::sync::Arc::new(hostile("<fuel-per-call>20000000</fuel-per-call>").await);
    let mut tasks = Vec::new();
    for i in 0..24u32 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                let err = h.call("spin()").await.unwrap_err();
                assert!(matches!(err, InvokeError::OutOfFuel { .. }), "{err}");
                None
            } else {
                Some(h.call(&format!("echo({i})")).await.unwrap())
            }
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        if let Some(value) = task.await.unwrap() {
            assert_eq!(value, i.to_string());
        }
    }
}
