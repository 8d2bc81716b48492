//! Fuzz targets for every parser that takes bytes from outside (see
//! `sp2a_tests::fuzz`). `./run test` runs each for 2 s as a smoke test; the
//! long runs are `SP2A_FUZZ_SECS=600 ./run test -p sp2a-tests --test fuzz
//! -- --nocapture --test-threads=1`. Every crash found becomes a regression
//! test below, and a crash fails the target.

use libp2p::identity::Keypair;
use serde::Serialize;
use serde_bytes::ByteBuf;
use sp2a::net::evidence::{Evaluation, Receipt};
use sp2a::net::protocol::*;
use sp2a::node::control::ControlRequest;
use sp2a::node::{LocalService, activate};
use sp2a::package::{Advert, Manifest, Package, SecretKey, pack};
use sp2a_tests::fuzz::{self, Report, class};
use sp2a_tests::{component, manifest, policy, sandbox, service_package};

fn check(report: Report) {
    eprintln!("{report}");
    assert!(report.crashes.is_empty(), "{report}: {:?}", report.crashes);
    assert!(
        report.slowest < fuzz::SLOW * 5,
        "{report}: an input took {:?}",
        report.slowest
    );
}

fn example_manifests() -> Vec<Vec<u8>> {
    let services = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../services");
    let mut seeds: Vec<Vec<u8>> = ["hello", "checksum", "notes", "stream"]
        .iter()
        .map(|name| std::fs::read(services.join(name).join("rps.xml")).unwrap())
        .collect();
    // As packed: with the publisher's <owner> and every section filled in.
    let package = service_package("notes", &SecretKey::generate());
    seeds.push(package.advert().manifest_xml().as_bytes().to_vec());
    seeds
}

#[test]
fn fuzz_manifest_parser() {
    check(fuzz::run("manifest", example_manifests(), |bytes| {
        class(&Manifest::parse(bytes))
    }));
}

#[test]
fn fuzz_package_parser() {
    let key = SecretKey::generate();
    let seeds = vec![service_package("hello", &key).to_bytes()];
    check(fuzz::run("package", seeds, |bytes| {
        match Package::parse(bytes) {
            Ok(package) => class(&package.verify()),
            Err(e) => class::<(), _>(&Err(e)),
        }
    }));
}

#[test]
fn fuzz_advert_parser() {
    let key = SecretKey::generate();
    let package = service_package("checksum", &key);
    let seeds = vec![package.advert().bytes().to_vec()];
    check(fuzz::run("advert", seeds, |bytes| {
        class(&Advert::parse_signed(bytes))
    }));
}

fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), value).unwrap()
}

/// Every message of the four request-response protocols, decoded the way
/// libp2p's CBOR codec decodes them, then checked the way the node checks
/// them (bitmaps, peer-exchange entries).
#[test]
fn fuzz_wire_messages() {
    let peer = PeerInfo::new(
        &sp2a::net::PeerId::random(),
        &["/ip4/192.0.2.1/tcp/4001".parse().unwrap()],
    );
    let bitmap = sp2a::blocks::Bitmap::full(20).encode();
    // A receipt and an evaluation, signed by fixed keys.
    let provider = Keypair::ed25519_from_bytes([1; 32]).unwrap();
    let consumer = Keypair::ed25519_from_bytes([2; 32]).unwrap();
    let (call, result) = Receipt::hashes("greet(\"x\")", "\"x\"");
    let receipt = Receipt {
        service: "hello".into(),
        content_id: [3; 32],
        call,
        result,
        at_ms: 1_800_000_000_000,
        provider: provider.public().to_peer_id(),
        consumer: consumer.public().to_peer_id(),
    }
    .sign(&provider);
    let evaluation = Evaluation {
        receipt: receipt.clone(),
        timeliness: 0.5,
        accurate: Some(true),
        at_ms: 1_800_000_000_000,
    }
    .sign(&consumer);
    let seeds = vec![
        cbor(&AdvertRequest::Name("hello".into())),
        cbor(&AdvertRequest::ContentId([7; 32])),
        cbor(&AdvertResponse::Adverts(vec![ByteBuf::from(vec![1, 2, 3])])),
        cbor(&TransferRequest::Blocks {
            content_id: [1; 32],
            first_block: 3,
            blocks: 4,
            queue_ms: 500,
        }),
        cbor(&TransferRequest::Want {
            content_id: [1; 32],
            wanted: bitmap.clone(),
            blocks: 4,
        }),
        cbor(&TransferRequest::Have {
            content_id: [1; 32],
        }),
        cbor(&TransferRequest::Leave {
            content_id: [1; 32],
        }),
        cbor(&TransferResponse::Data {
            size: 300_000,
            first_block: 0,
            blocks: 1,
            encoded: vec![9; 64],
            bitmap: bitmap.clone(),
            peers: vec![peer.clone()],
        }),
        cbor(&TransferResponse::Have {
            size: 300_000,
            bitmap,
            peers: vec![peer.clone()],
        }),
        cbor(&TransferResponse::Busy { peers: vec![peer] }),
        cbor(&TransferResponse::Queued {
            ahead: 3,
            retry_ms: 1000,
        }),
        cbor(&InvokeRequest {
            service: "hello".into(),
            content_id: Some([2; 32]),
            publisher: Some("0123abcd".into()),
            call: "greet(\"x\")".into(),
        }),
        cbor(&InvokeResponse::Ok {
            value: "\"x\"".into(),
            fuel: 10,
            micros: 5,
            content_id: [3; 32],
            load: Some(0.5),
            receipt: Some(receipt.clone()),
        }),
        cbor(&AdviceRequest {
            service: "hello".into(),
            provider: provider.public().to_peer_id().to_bytes(),
        }),
        cbor(&AdviceResponse::Evaluations(vec![ByteBuf::from(
            evaluation.clone(),
        )])),
        receipt,
        evaluation,
        cbor(&InvokeResponse::Failed {
            kind: "trap".into(),
            message: "m".into(),
        }),
        cbor(&SolicitRequest {
            service: "live".into(),
            content_id: [4; 32],
        }),
        cbor(&SolicitResponse::Refused("not a standby".into())),
        cbor(&SolicitResponse::Accepted),
        LoadReport {
            content_id: [5; 32],
            at_ms: 1_800_000_000_000,
            calls_per_s: 12.5,
            in_flight: 2,
            limit: 8,
            busy_per_s: 0.5,
            p95_us: 40_000,
            upload: 0.1,
            pinned: false,
        }
        .encode(),
    ];
    check(fuzz::run("wire", seeds, decode_wire));
}

/// The wire target: every decoder on `bytes`; the outcome names those that
/// accepted it.
fn decode_wire(bytes: &[u8]) -> String {
    let mut outcome = String::new();
    let mut note = |name: &str, ok: bool| {
        if ok {
            outcome.push_str(name);
            outcome.push(' ');
        }
    };
    note(
        "advert-request",
        cbor4ii::serde::from_slice::<AdvertRequest>(bytes).is_ok(),
    );
    note(
        "advert-response",
        cbor4ii::serde::from_slice::<AdvertResponse>(bytes).is_ok(),
    );
    note(
        "solicit-request",
        cbor4ii::serde::from_slice::<SolicitRequest>(bytes).is_ok(),
    );
    note(
        "solicit-response",
        cbor4ii::serde::from_slice::<SolicitResponse>(bytes).is_ok(),
    );
    note("load-report", LoadReport::decode(bytes).is_ok());
    note(
        "advice-request",
        cbor4ii::serde::from_slice::<AdviceRequest>(bytes).is_ok(),
    );
    note(
        "advice-response",
        cbor4ii::serde::from_slice::<AdviceResponse>(bytes).is_ok(),
    );
    note("receipt", Receipt::open(bytes).is_ok());
    note(
        "evaluation",
        Evaluation::open(bytes, 1_800_000_000_000).is_ok(),
    );
    note(
        "invoke-request",
        cbor4ii::serde::from_slice::<InvokeRequest>(bytes).is_ok(),
    );
    note(
        "invoke-response",
        cbor4ii::serde::from_slice::<InvokeResponse>(bytes).is_ok(),
    );
    note(
        "transfer-request",
        cbor4ii::serde::from_slice::<TransferRequest>(bytes).is_ok(),
    );
    if let Ok(TransferRequest::Want { wanted, .. }) = cbor4ii::serde::from_slice(bytes) {
        note(
            "want-bitmap",
            sp2a::blocks::Bitmap::decode(&wanted, 20).is_some(),
        );
    }
    match cbor4ii::serde::from_slice::<TransferResponse>(bytes) {
        Ok(
            TransferResponse::Data { bitmap, peers, .. }
            | TransferResponse::Have { bitmap, peers, .. },
        ) => {
            note("data-or-have", true);
            note(
                "bitmap",
                sp2a::blocks::Bitmap::decode(&bitmap, 20).is_some(),
            );
            note("peers", peers.iter().all(|p| p.decode().is_some()));
        }
        Ok(TransferResponse::Busy { peers }) => {
            note("busy", peers.iter().all(|p| p.decode().is_some()))
        }
        Ok(_) => note("transfer-response", true),
        Err(_) => {}
    }
    outcome
}

/// A 99-byte `Blocks` request that the 10-minute run reported at 113 ms, while
/// builds were running on both cores: replayed alone it takes microseconds.
#[test]
fn the_slow_report_of_the_long_wire_run_was_the_machine_not_the_input() {
    let input: &[u8] = &[
        0xa1, 0x66, 0x42, 0x6c, 0x6f, 0x63, 0x6b, 0x73, 0xa4, 0x6a, 0x63, 0x6f, 0x6e, 0x74, 0x65,
        0xa1, 0x6e, 0x74, 0x5f, 0x69, 0x64, 0x58, 0x20, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        0x01, 0x01, 0x01, 0x01, 0x01, 0x71, 0xb9, 0xe2, 0x31, 0x4e, 0x70, 0x0b, 0x3e, 0x9a, 0x75,
        0xb9, 0x01, 0x01, 0x01, 0x01, 0x01, 0x6b, 0x66, 0x69, 0x72, 0x73, 0x74, 0x5f, 0x62, 0x6c,
        0x6f, 0x63, 0x6b, 0x03, 0x66, 0x62, 0x6c, 0x6f, 0x63, 0x6b, 0x73, 0x04, 0x68, 0x71, 0x75,
        0x65, 0x75, 0x65, 0x5f, 0x6d, 0x73, 0x19, 0x01, 0xf4,
    ];
    assert_eq!(input.len(), 99);
    let start = std::time::Instant::now();
    for _ in 0..10_000 {
        std::hint::black_box(decode_wire(input));
    }
    let each = start.elapsed() / 10_000;
    eprintln!("the reported input decodes in {each:?}");
    assert!(each < fuzz::SLOW / 100, "{each:?}");
}

fn hostile_service() -> (LocalService, tempfile::TempDir) {
    let key = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let m = manifest(
        "hostile",
        "<requirements/><capabilities><clocks/>\
         <dir name=\"sandbox\" path=\"/sandbox\" access=\"read-write\"/></capabilities>",
    );
    let package = pack(component("hostile"), &m, &key).unwrap();
    let policy = policy(&key, data.path(), "");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let service = runtime
        .block_on(activate(&sandbox(), &policy, package.into_inner()))
        .unwrap();
    (service, data)
}

/// WAVE call text against a real component's exports: parsed, resolved to
/// an export and typed against its parameters (the guest is not run).
#[test]
fn fuzz_wave_calls() {
    use wasmtime::component::Val;
    use wasmtime::component::wasm_wave::untyped::UntypedFuncCall;
    let (service, _data) = hostile_service();
    let activation = &service.activation;
    let seeds = [
        "echo(7)",
        "read-file(\"notes/a.txt\")",
        "write-file(\"a\", \"text with \\\"quotes\\\" and \\u{1f600}\")",
        "list-dir(\".\")",
        "env-var(\"HOME\")",
        "connect(\"192.0.2.1:80\")",
        "nap(4294967295)",
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec();
    check(fuzz::run("wave", seeds, |bytes| {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return "not utf-8".into();
        };
        let call = match UntypedFuncCall::parse(text) {
            Ok(call) => call,
            Err(_) => return "unparsed".into(),
        };
        let func = match activation.resolve(call.name()) {
            Ok(func) => func,
            Err(_) => return "unresolved".into(),
        };
        let typed = call.to_wasm_params::<Val>(func.params.iter().map(|(_, ty)| ty));
        format!("{} {}", func.name, class(&typed))
    }));
}

/// Control-socket requests (one JSON line), decoded as the node decodes them.
#[test]
fn fuzz_control_requests() {
    let seeds = [
        ControlRequest::Find {
            name: "hello".into(),
        },
        ControlRequest::Pull {
            target: "bafkr4i".into(),
        },
        ControlRequest::Call {
            service: "hello".into(),
            call: "greet(\"x\")".into(),
            remote: true,
        },
        ControlRequest::Share {
            path: "hello.rps".into(),
        },
        ControlRequest::Status,
    ]
    .iter()
    .map(|r| serde_json::to_vec(r).unwrap())
    .collect();
    check(fuzz::run("control", seeds, |bytes| {
        let Ok(line) = std::str::from_utf8(bytes) else {
            return "not utf-8".into();
        };
        match serde_json::from_str::<ControlRequest>(line) {
            Ok(ControlRequest::Find { name }) => {
                format!("find {}", sp2a::package::is_service_name(&name))
            }
            Ok(other) => format!("{other:?}")
                .chars()
                .take_while(|c| c.is_alphabetic())
                .collect(),
            Err(e) => format!("err {:?}", e.classify()),
        }
    }));
}
