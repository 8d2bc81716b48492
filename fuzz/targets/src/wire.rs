//! Every message of the request-response protocols, decoded the way
//! libp2p's CBOR codec decodes them, then checked the way the node checks
//! them (bitmaps, peer-exchange entries); load reports, receipts and
//! evaluations.

use libp2p::identity::Keypair;
use serde::Serialize;
use serde_bytes::ByteBuf;
use sp2a::net::evidence::{Evaluation, Receipt};
use sp2a::net::protocol::*;

pub(crate) fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), value).expect("a message encodes")
}

/// A receipt of `provider` for `consumer`, and the consumer's evaluation
/// of it (both signed, for fixed keys and times).
pub(crate) fn evidence(provider: &Keypair, consumer: &Keypair) -> (Vec<u8>, Vec<u8>) {
    let (call, result) = Receipt::hashes("greet(\"x\")", "\"x\"");
    let receipt = Receipt {
        service: "hello".into(),
        content_id: [3; 32],
        call,
        result,
        at_ms: crate::evidence::NOW_MS - 1000,
        provider: provider.public().to_peer_id(),
        consumer: consumer.public().to_peer_id(),
    }
    .sign(provider);
    let evaluation = Evaluation {
        receipt: receipt.clone(),
        timeliness: 0.5,
        accurate: Some(true),
        at_ms: crate::evidence::NOW_MS - 500,
    }
    .sign(consumer);
    (receipt, evaluation)
}

pub fn seeds() -> Vec<Vec<u8>> {
    let (provider, consumer) = crate::evidence::keys();
    let peer = PeerInfo::new(
        &provider.public().to_peer_id(),
        &["/ip4/192.0.2.1/tcp/4001".parse().expect("an address")],
    );
    let bitmap = sp2a::blocks::Bitmap::full(20).encode();
    // A receipt and an evaluation, signed by fixed keys.
    let (receipt, evaluation) = evidence(&provider, &consumer);
    vec![
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
    ]
}

/// The wire target: every decoder on `bytes`; the outcome names those that
/// accepted it.
pub fn run(bytes: &[u8]) -> String {
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
        Evaluation::open(bytes, crate::evidence::NOW_MS).is_ok(),
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
