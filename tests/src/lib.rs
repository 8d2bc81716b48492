//! Helpers for the integration tests: where the built guest components are,
//! the `sp2a` binary, keys and policies.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sp2a::package::{Manifest, SecretKey, VerifiedPackage, pack};
use sp2a::policy::Policy;
use sp2a::sandbox::{Sandbox, SandboxConfig};

/// Directory of the built `.wasm` components (services and test guests).
pub fn guests_dir() -> PathBuf {
    PathBuf::from(env!("SP2A_GUESTS_DIR"))
}

/// The `services/` directory (manifests).
pub fn services_dir() -> PathBuf {
    PathBuf::from(env!("SP2A_SERVICES_DIR"))
}

/// A built component by crate name (`hello`, `checksum`, `notes`, `hostile`).
pub fn component(name: &str) -> Vec<u8> {
    let path = guests_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The manifest of an example service.
pub fn service_manifest(name: &str) -> Manifest {
    let path = services_dir().join(name).join("rps.xml");
    Manifest::parse(&std::fs::read(&path).unwrap()).unwrap()
}

/// Packs an example service with `key`.
pub fn service_package(name: &str, key: &SecretKey) -> VerifiedPackage {
    pack(component(name), &service_manifest(name), key).unwrap()
}

/// A manifest from body text (inside `<rps>`, after name and version).
pub fn manifest(name: &str, body: &str) -> Manifest {
    Manifest::parse(
        format!("<rps><name>{name}</name><version>0.1.0</version>{body}</rps>").as_bytes(),
    )
    .unwrap_or_else(|e| panic!("bad test manifest: {e}"))
}

/// A policy trusting `key`, granting clocks and random and a read-write
/// file-system root at `fs_root`, with `extra` TOML appended to `[grants]`.
pub fn policy(key: &SecretKey, fs_root: &Path, extra: &str) -> Policy {
    let text = format!(
        "[trust]\npublishers = [\"{}\"]\n[grants]\nclocks = true\nrandom = true\nfs-root = \"{}\"\nfs-access = \"read-write\"\n{extra}",
        key.public(),
        fs_root.display()
    );
    Policy::parse(&text, Path::new(".")).unwrap()
}

/// A small sandbox for one test.
pub fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig {
        max_instances: 16,
        ..SandboxConfig::default()
    })
    .unwrap()
}

/// The `sp2a` binary built alongside the tests.
pub fn sp2a_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap()
    } else {
        dir
    };
    let bin = dir.join(format!("sp2a{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p sp2a-runtime` first)",
        bin.display()
    );
    bin
}

/// Runs `sp2a` with `args` in `dir`.
pub fn run_sp2a(dir: &Path, args: &[&str]) -> Output {
    Command::new(sp2a_bin())
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("SP2A_KEY_PASSPHRASE")
        .output()
        .unwrap()
}

/// Stdout and stderr of a command as text, for assertion messages.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub mod fuzz;

pub mod net {
    //! Several nodes in one process on loopback TCP, and misbehaving peers
    //! built from the public network API.

    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use sp2a::blocks::{self, Bitmap};
    use sp2a::net::evidence::Receipt;
    use sp2a::net::protocol::*;
    use sp2a::net::{Client, InboundRequest, Multiaddr, NetConfig, PeerId, keys};
    use sp2a::node::{Node, NodeConfig};
    use sp2a::package::{Package, SecretKey};
    use sp2a::policy::Policy;
    use sp2a::sandbox::Sandbox;

    /// Runs a test body with a deadline, so a hung network fails instead of hanging.
    pub async fn within<T>(seconds: u64, body: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(seconds), body)
            .await
            .expect("the test timed out")
    }

    /// The settings of test nodes.
    pub const TEST_SETTINGS: &str = r#"
        [net]
        listen = ["/ip4/127.0.0.1/tcp/0"]
        local-addresses = true
        request-timeout = "10s"
        [pull]
        attempt-timeout = "800ms"
        advert-timeout = "2s"
        rediscover-delay = "200ms"
        max-rediscover-delay = "2s"
        timeout = "30s"
    "#;

    /// A set of nodes sharing one sandbox and one trusted publisher key.
    pub struct TestNet {
        pub sandbox: Sandbox,
        pub key: SecretKey,
        dirs: Vec<tempfile::TempDir>,
    }

    impl Default for TestNet {
        fn default() -> Self {
            Self::new()
        }
    }

    impl TestNet {
        pub fn new() -> Self {
            Self {
                sandbox: Sandbox::new(sp2a::sandbox::SandboxConfig {
                    max_instances: 64,
                    ..Default::default()
                })
                .unwrap(),
                key: SecretKey::generate(),
                dirs: Vec::new(),
            }
        }

        /// A fresh data directory that lives as long as the net.
        pub fn dir(&mut self) -> std::path::PathBuf {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_path_buf();
            self.dirs.push(dir);
            path
        }

        /// A policy trusting this net's key (clocks, random, a data root).
        pub fn policy(&mut self) -> Policy {
            let root = self.dir();
            super::policy(&self.key, &root, "")
        }

        /// Test-speed node settings (loopback, short timeouts), through
        /// the configuration file format every node uses.
        pub fn config(&mut self, data_dir: std::path::PathBuf) -> NodeConfig {
            let mut config = NodeConfig::from_toml(TEST_SETTINGS, &data_dir).unwrap();
            config.data_dir = data_dir;
            config
        }

        /// Starts a node with `config` and `policy`, connected to `bootstrap`.
        pub async fn start(
            &mut self,
            mut config: NodeConfig,
            policy: Policy,
            bootstrap: &[Multiaddr],
        ) -> Node {
            config.net.bootstrap = bootstrap.to_vec();
            let node = Node::start(config, policy, self.sandbox.clone())
                .await
                .unwrap();
            for address in bootstrap {
                node.dial(address.clone()).await.unwrap();
            }
            node
        }

        /// A node with default test settings.
        pub async fn node(&mut self, bootstrap: &[Multiaddr]) -> Node {
            let dir = self.dir();
            let config = self.config(dir);
            let policy = self.policy();
            self.start(config, policy, bootstrap).await
        }
    }

    /// The first dialable address of a node.
    pub async fn address(node: &Node) -> Multiaddr {
        node.addresses()
            .await
            .into_iter()
            .next()
            .expect("the node listens")
    }

    /// The providers `node` finds for `name`, once they include every peer
    /// in `expected` or after 5 s. Provider records spread through the DHT
    /// after `share`/`pull` return, so a test that checks them waits.
    pub async fn providers_including(
        node: &Node,
        name: &str,
        expected: &HashSet<PeerId>,
    ) -> HashSet<PeerId> {
        let mut found = HashSet::new();
        for _ in 0..50 {
            found = node.find_all(name).await.iter().map(|f| f.peer).collect();
            if found.is_superset(expected) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found
    }

    /// How a [`FakeProvider`] misbehaves.
    #[derive(Clone, Debug)]
    pub enum Misbehaviour {
        /// Answers honestly.
        Honest,
        /// Honest for the first `n` block requests, then flips a byte.
        CorruptAfter(usize),
        /// Honest for the first `n` block requests, then shuts its network down.
        DieAfter(usize),
        /// Never answers block requests.
        Stall,
        /// Declares a component much larger than the advert's.
        LieAboutSize,
        /// Answers every block request with `Busy`.
        Busy,
        /// Claims to hold every block, and sends none.
        Pretend,
        /// Answers every block request `Busy`, naming this peer (peer
        /// exchange) as another one fetching the package.
        BusyNaming(PeerId, Vec<Multiaddr>),
        /// Serves blocks honestly, and answers every call `Ok` with its own
        /// package, whatever service or publisher it was asked for (as a
        /// node that ignores a publisher pin would).
        AnswersEveryCall,
        /// Serves blocks honestly, and answers every call for its service
        /// with a wrong value, with a valid signed receipt (a cheat that
        /// saves itself the work).
        WrongAnswers,
        /// Serves blocks honestly, and answers every call for its service
        /// with the manifest's first self-test's expected value (right for
        /// that call), after this delay, with a valid signed receipt.
        Slow(Duration),
    }

    /// A provider built directly on the network API that announces a real
    /// package and then serves it according to its [`Misbehaviour`].
    pub struct FakeProvider {
        pub client: Client,
        pub address: Multiaddr,
        /// Block requests received.
        pub requests: Arc<AtomicUsize>,
        /// `Have` requests received.
        pub haves: Arc<AtomicUsize>,
    }

    impl FakeProvider {
        pub async fn start(
            package: &Package,
            bootstrap: &Multiaddr,
            behaviour: Misbehaviour,
        ) -> Self {
            let config = NetConfig {
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
                bootstrap: vec![bootstrap.clone()],
                ..NetConfig::default()
            };
            let keypair = sp2a::net::libp2p_identity();
            let signer = keypair.clone();
            let (client, mut inbound) =
                sp2a::net::event_loop::start(keypair, config).await.unwrap();
            client.dial(bootstrap.clone()).await.unwrap();
            let info = client.info().await.unwrap();
            let address = sp2a::net::event_loop::dialable(&info.listen_addrs[0], client.peer_id());
            client
                .start_providing(keys::service_key(&package.manifest().name))
                .await;
            client
                .start_providing(keys::package_key(&package.content_id().0))
                .await;

            let requests = Arc::new(AtomicUsize::new(0));
            let counter = requests.clone();
            let haves = Arc::new(AtomicUsize::new(0));
            let have_counter = haves.clone();
            let advert = package.advert().bytes().to_vec();
            let content_id = package.content_id();
            let component = package.component().to_vec();
            let service = package.manifest().name.clone();
            let expected = package
                .manifest()
                .self_tests
                .first()
                .map(|t| t.expect.clone())
                .unwrap_or_default();
            let outboard = blocks::outboard(&component);
            let size = component.len() as u64;
            let serving = client.clone();
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Some(request) = inbound.recv().await {
                    match request {
                        InboundRequest::Advert { channel, .. } => {
                            let response =
                                AdvertResponse::Adverts(vec![serde_bytes::ByteBuf::from(
                                    advert.clone(),
                                )]);
                            serving.respond_advert(channel, response).await;
                        }
                        InboundRequest::Transfer {
                            request, channel, ..
                        } => {
                            let blocks_total = blocks::block_count(size);
                            let range = match request {
                                TransferRequest::Have { .. } => {
                                    have_counter.fetch_add(1, Ordering::SeqCst);
                                    if matches!(behaviour, Misbehaviour::Stall) {
                                        held.push(channel);
                                        continue;
                                    }
                                    let bitmap = Bitmap::full(blocks_total).encode();
                                    let size = match &behaviour {
                                        Misbehaviour::LieAboutSize => size * 1000,
                                        _ => size,
                                    };
                                    let response = TransferResponse::Have {
                                        size,
                                        bitmap,
                                        peers: Vec::new(),
                                    };
                                    serving.respond_transfer(channel, response).await;
                                    continue;
                                }
                                TransferRequest::Blocks {
                                    first_block,
                                    blocks,
                                    ..
                                } => (first_block, blocks),
                                TransferRequest::Leave { .. } => {
                                    serving
                                        .respond_transfer(channel, TransferResponse::Left)
                                        .await;
                                    continue;
                                }
                                TransferRequest::Want { wanted, blocks, .. } => {
                                    let wanted = Bitmap::decode(&wanted, blocks_total)
                                        .unwrap_or_else(|| Bitmap::empty(blocks_total));
                                    let wants = |b: u64| wanted.contains(b);
                                    let Some(first) = (0..blocks_total).find(|b| wants(*b)) else {
                                        serving
                                            .respond_transfer(channel, TransferResponse::NotFound)
                                            .await;
                                        continue;
                                    };
                                    let count = (first..blocks_total)
                                        .take(blocks as usize)
                                        .take_while(|b| wants(*b))
                                        .count()
                                        as u32;
                                    (first, count)
                                }
                            };
                            let (first_block, blocks) = range;
                            let n = counter.fetch_add(1, Ordering::SeqCst);
                            if matches!(behaviour, Misbehaviour::Pretend) {
                                serving
                                    .respond_transfer(channel, TransferResponse::NotFound)
                                    .await;
                                continue;
                            }
                            let Ok(mut encoded) =
                                blocks::encode(&component, &outboard, first_block, blocks)
                            else {
                                serving
                                    .respond_transfer(channel, TransferResponse::NotFound)
                                    .await;
                                continue;
                            };
                            let data = |size: u64, encoded: Vec<u8>| TransferResponse::Data {
                                size,
                                first_block,
                                blocks,
                                encoded,
                                bitmap: Vec::new(),
                                peers: Vec::new(),
                            };
                            let response = match &behaviour {
                                Misbehaviour::Honest
                                | Misbehaviour::AnswersEveryCall
                                | Misbehaviour::WrongAnswers
                                | Misbehaviour::Slow(_) => data(size, encoded),
                                Misbehaviour::CorruptAfter(k) if n >= *k => {
                                    let last = encoded.len() - 1;
                                    encoded[last] ^= 0x55;
                                    data(size, encoded)
                                }
                                Misbehaviour::CorruptAfter(_) => data(size, encoded),
                                Misbehaviour::DieAfter(k) if n >= *k => {
                                    serving.shutdown().await;
                                    return;
                                }
                                Misbehaviour::DieAfter(_) => data(size, encoded),
                                Misbehaviour::Stall => {
                                    held.push(channel);
                                    continue;
                                }
                                Misbehaviour::LieAboutSize => data(size * 1000, encoded),
                                Misbehaviour::Busy => TransferResponse::Busy { peers: Vec::new() },
                                Misbehaviour::Pretend => TransferResponse::NotFound,
                                Misbehaviour::BusyNaming(peer, addresses) => {
                                    TransferResponse::Busy {
                                        peers: vec![PeerInfo::new(peer, addresses)],
                                    }
                                }
                            };
                            serving.respond_transfer(channel, response).await;
                        }
                        InboundRequest::Invoke {
                            peer,
                            request,
                            channel,
                            ..
                        } => {
                            let answer = |value: String| {
                                let receipt = Receipt::sign_answer(
                                    &signer,
                                    peer,
                                    &request.service,
                                    content_id.0,
                                    &request.call,
                                    &value,
                                );
                                InvokeResponse::Ok {
                                    value,
                                    fuel: 1,
                                    micros: 1,
                                    content_id: content_id.0,
                                    load: Some(0.0),
                                    receipt: Some(receipt),
                                }
                            };
                            let ours = request.service == service;
                            let response = match &behaviour {
                                Misbehaviour::AnswersEveryCall => {
                                    answer("\"from another publisher\"".into())
                                }
                                Misbehaviour::WrongAnswers if ours => answer("\"wrong\"".into()),
                                Misbehaviour::Slow(delay) if ours => {
                                    tokio::time::sleep(*delay).await;
                                    answer(expected.clone())
                                }
                                _ => InvokeResponse::NotFound,
                            };
                            serving.respond_invoke(channel, response).await;
                        }
                        InboundRequest::Advice { channel, .. } => {
                            let none = AdviceResponse::Evaluations(Vec::new());
                            serving.respond_advice(channel, none).await;
                        }
                        InboundRequest::Solicit { channel, .. } => {
                            let refused = SolicitResponse::Refused("not a standby".into());
                            serving.respond_solicit(channel, refused).await;
                        }
                        InboundRequest::Gossip { .. } => {}
                    }
                }
            });
            Self {
                client,
                address,
                requests,
                haves,
            }
        }

        pub fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }

        pub fn haves(&self) -> usize {
            self.haves.load(Ordering::SeqCst)
        }
    }
}

/// A running `sp2a node` process; killed when dropped.
pub struct NodeProcess {
    child: std::process::Child,
    /// The first address it printed, with its `/p2p/<peer id>`.
    pub address: String,
    pub data_dir: PathBuf,
    /// What it printed up to `ready`.
    pub printed: Vec<String>,
}

impl NodeProcess {
    /// A node on loopback (a port the system chooses) with `extra` flags,
    /// its data in `dir/name`; returns once it is ready.
    pub fn start(dir: &Path, name: &str, extra: &[&str]) -> Self {
        Self::spawn(
            Command::new(sp2a_bin()),
            dir,
            name,
            "/ip4/127.0.0.1/tcp/0",
            extra,
        )
    }

    /// The same in the network namespace `netns` (`ip netns exec`),
    /// listening on `listen`.
    pub fn start_in(netns: &str, dir: &Path, name: &str, listen: &str, extra: &[&str]) -> Self {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns]).arg(sp2a_bin());
        Self::spawn(command, dir, name, listen, extra)
    }

    fn spawn(mut command: Command, dir: &Path, name: &str, listen: &str, extra: &[&str]) -> Self {
        use std::io::{BufRead, BufReader};
        let data_dir = dir.join(name);
        command
            .current_dir(dir)
            .args(["node", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen", listen])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        // SP2A_TEST_NODE_LOGS=1 shows the nodes' logs (info and up), or
        // those a filter names (SP2A_TEST_NODE_LOGS=sp2a=debug).
        if std::env::var_os("SP2A_TEST_NODE_LOGS").is_some() {
            command
                .env(
                    "RUST_LOG",
                    std::env::var("SP2A_TEST_NODE_LOGS")
                        .ok()
                        .filter(|v| v.contains("="))
                        .unwrap_or("sp2a=info".into()),
                )
                .stderr(std::process::Stdio::inherit());
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        // Killed when dropped, also if it never becomes ready.
        let mut node = Self {
            child,
            address: String::new(),
            data_dir,
            printed: Vec::new(),
        };
        let (lines_tx, lines_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut address = None;
        loop {
            let line = lines_rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("node {name} did not become ready"));
            if let Some(a) = line.strip_prefix("listening on ") {
                address.get_or_insert_with(|| a.to_owned());
            }
            if line == "ready" {
                break;
            }
            node.printed.push(line);
        }
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || while lines_rx.recv().is_ok() {});
        node.address = address.expect("the node printed its address");
        node
    }

    pub fn data_dir(&self) -> &str {
        self.data_dir.to_str().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, as Ctrl-C; returns the exit status.
    pub fn interrupt(mut self) -> std::process::ExitStatus {
        send_signal(self.child.id() as i32, 2);
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }

    /// SIGKILL, and wait for it to end.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` to process `pid`.
fn send_signal(pid: i32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Writes `hello.rps` and `stream.rps`, signed by a new publisher, and a
/// `policy.toml` that trusts it, into `dir` (for node processes).
pub fn write_packages_and_policy(dir: &Path) {
    let key = SecretKey::generate();
    for name in ["hello", "stream"] {
        let package = service_package(name, &key);
        std::fs::write(dir.join(format!("{name}.rps")), package.to_bytes()).unwrap();
    }
    std::fs::write(
        dir.join("policy.toml"),
        format!("[trust]\npublishers = [\"{}\"]\n", key.public()),
    )
    .unwrap();
}

/// `sp2a ARGS` as an unprivileged user (nobody, no capabilities), from a
/// copy of the binary that user may run.
pub fn run_sp2a_unprivileged(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("sp2a");
    std::fs::copy(sp2a_bin(), &program).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&program)
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("setpriv (util-linux) runs")
}

/// `sp2a keygen -o key.pem` in `dir`; returns the publisher it prints.
pub fn keygen(dir: &Path) -> String {
    let out = run_sp2a(dir, &["keygen", "-o", "key.pem"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("publisher:"))
        .expect("keygen prints the publisher")
        .trim()
        .to_owned()
}

/// The JavaScript test service (`tests/guests/js-web`), built with
/// componentize-js by its build script the first time a test asks (the
/// script installs its pinned npm packages with `npm ci`; it needs Node.js
/// and npm). Returns the component's path.
pub fn js_component() -> PathBuf {
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.as_ref() {
        return path.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = root.join("target/fixtures/js-web.wasm");
    let status = Command::new(root.join("tests/guests/js-web/build"))
        .arg(&out)
        .status()
        .expect("cannot run tests/guests/js-web/build (it needs bash)");
    assert!(
        status.success(),
        "tests/guests/js-web/build failed: it needs Node.js 18 or later and npm (Debian: apt-get install nodejs npm)"
    );
    *built = Some(out.clone());
    out
}
