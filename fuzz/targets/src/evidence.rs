//! Evidence and advice as an advisor's answer brings them: the answer
//! decoded as the advice protocol decodes it, then checked whole as the
//! node checks it before counting it ([`sp2a::net::evidence::check_advice`]);
//! the input is also opened as a lone receipt and a lone evaluation.
//!
//! Oracle: advice that passes is the advisor's own and about the provider
//! and service asked, every receipt in it at most once.

use libp2p::identity::Keypair;
use serde_bytes::ByteBuf;
use sp2a::net::evidence::{Evaluation, Receipt, check_advice};
use sp2a::net::protocol::AdviceResponse;

/// The time the target runs at (evidence times are checked against it).
pub const NOW_MS: u64 = 1_800_000_000_000;

/// The provider's and the advisor's fixed keys.
pub fn keys() -> (Keypair, Keypair) {
    let provider = Keypair::ed25519_from_bytes([1; 32]).expect("a key");
    let advisor = Keypair::ed25519_from_bytes([2; 32]).expect("a key");
    (provider, advisor)
}

pub fn seeds() -> Vec<Vec<u8>> {
    let (provider, advisor) = keys();
    let (receipt, evaluation) = crate::wire::evidence(&provider, &advisor);
    // Another call's evaluation, so that an answer holds two receipts.
    let (call, result) = Receipt::hashes("greet(\"y\")", "\"y\"");
    let second = Evaluation {
        receipt: Receipt {
            service: "hello".into(),
            content_id: [3; 32],
            call,
            result,
            at_ms: NOW_MS - 2000,
            provider: provider.public().to_peer_id(),
            consumer: advisor.public().to_peer_id(),
        }
        .sign(&provider),
        timeliness: 1.0,
        accurate: None,
        at_ms: NOW_MS - 1500,
    }
    .sign(&advisor);
    let answer = |evaluations: Vec<Vec<u8>>| {
        crate::wire::cbor(&AdviceResponse::Evaluations(
            evaluations.into_iter().map(ByteBuf::from).collect(),
        ))
    };
    vec![
        answer(vec![evaluation.clone()]),
        answer(vec![evaluation.clone(), second.clone()]),
        answer(vec![evaluation.clone(), evaluation.clone()]),
        answer(Vec::new()),
        crate::wire::cbor(&AdviceResponse::Busy),
        evaluation,
        receipt,
    ]
}

pub fn run(bytes: &[u8]) -> String {
    let (provider, advisor) = keys();
    let (provider, advisor) = (
        provider.public().to_peer_id(),
        advisor.public().to_peer_id(),
    );
    let mut outcome = format!(
        "receipt {} evaluation {} ",
        crate::class(&Receipt::open(bytes)),
        crate::class(&Evaluation::open(bytes, NOW_MS))
    );
    match cbor4ii::serde::from_slice::<AdviceResponse>(bytes) {
        Ok(AdviceResponse::Evaluations(evaluations)) => {
            match check_advice("hello", &provider, &advisor, &evaluations, NOW_MS) {
                Ok(opened) => {
                    let mut receipts = std::collections::HashSet::new();
                    for one in &opened {
                        assert_eq!(one.consumer(), advisor, "advice not the advisor's own");
                        assert_eq!(one.receipt.provider, provider, "advice about another");
                        assert_eq!(one.receipt.service, "hello", "advice about another service");
                        assert!(
                            receipts.insert(blake3::hash(&one.evaluation.receipt)),
                            "a receipt counted twice"
                        );
                    }
                    outcome.push_str(&format!("advice {}", opened.len().min(4)));
                }
                Err(reason) => {
                    let kind: String = reason.chars().take_while(|c| *c != ':').take(40).collect();
                    outcome.push_str(&format!("refused {kind}"));
                }
            }
        }
        Ok(AdviceResponse::Busy) => outcome.push_str("busy"),
        Err(_) => outcome.push_str("undecoded"),
    }
    outcome
}
