//! Signed evidence of transactions, for reputation-based provider choice
//! (the paper's SAFE): the provider's **receipt** for a remote call and the
//! consumer's **evaluation** of it. Only a consumer holding a receipt that
//! the provider signed can publish an evaluation of that provider, so
//! nobody can slander a provider it never dealt with, and every evaluation
//! names, and is signed by, the consumer it comes from.
//!
//! ## Wire format
//!
//! Each item is CBOR `{ body: bytes, key: bytes, signature: bytes }`:
//! * `body` is the CBOR of a [`Receipt`] or an [`Evaluation`];
//! * `key` is the signer's libp2p public key (protobuf encoding), which
//!   must be the key of the peer id the body names as its signer (the
//!   receipt's provider, the evaluation's consumer);
//! * `signature` is that key's signature of a domain tag
//!   (`sp2a-receipt-v1\0` or `sp2a-evaluation-v1\0`) followed by `body`.
//!
//! A receipt is at most [`MAX_RECEIPT`] bytes and an evaluation (which
//! carries its receipt) at most [`MAX_EVALUATION`]. Opening an item checks
//! its size, the envelope's encoding, the key and the signature, then the
//! body's encoding, then that the signer is the peer the body names, then
//! the ranges (an evaluation opens its receipt the same way first), and
//! says which failed.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};

/// Largest signed receipt accepted.
pub const MAX_RECEIPT: usize = 512;
/// Largest signed evaluation accepted.
pub const MAX_EVALUATION: usize = 1024;
/// How far in the future (by the receiver's clock) a time may be.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

const RECEIPT_DOMAIN: &[u8] = b"sp2a-receipt-v1\0";
const EVALUATION_DOMAIN: &[u8] = b"sp2a-evaluation-v1\0";

/// Why a piece of evidence was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvidenceError {
    #[error("{what} of {size} bytes is larger than the {max} allowed")]
    TooLarge {
        what: &'static str,
        size: usize,
        max: usize,
    },
    #[error("{what} does not decode: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{what} is signed with a key that is not {signer}'s")]
    WrongSigner { what: &'static str, signer: String },
    #[error("{what} has a bad signature")]
    BadSignature { what: &'static str },
    #[error("{what} is out of range: {field}")]
    OutOfRange {
        what: &'static str,
        field: &'static str,
    },
    #[error("the evaluation's consumer {consumer} is not the receipt's {receipt_consumer}")]
    NotTheConsumer {
        consumer: String,
        receipt_consumer: String,
    },
}

/// What a provider signs when it answers a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub service: String,
    /// The package that answered.
    pub content_id: [u8; 32],
    /// BLAKE3 of the call's WAVE text.
    pub call: [u8; 32],
    /// BLAKE3 of the result's WAVE text.
    pub result: [u8; 32],
    /// When it answered (Unix milliseconds, by the provider's clock).
    pub at_ms: u64,
    pub provider: PeerId,
    pub consumer: PeerId,
}

/// What a consumer signs about one transaction: the receipt and how the
/// provider did.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The provider's signed receipt, as received.
    pub receipt: Vec<u8>,
    /// 0 to 1: the answer's latency against the service's QoS target.
    pub timeliness: f64,
    /// Whether the answer was checked and right (`None`: not checked).
    pub accurate: Option<bool>,
    /// When the consumer evaluated (Unix milliseconds).
    pub at_ms: u64,
}

/// An evaluation whose signatures (its own and its receipt's) were checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Opened {
    pub evaluation: Evaluation,
    pub receipt: Receipt,
}

impl Opened {
    /// The consumer who signed it.
    pub fn consumer(&self) -> PeerId {
        self.receipt.consumer
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct ReceiptBody {
    service: String,
    #[serde(with = "serde_bytes")]
    content_id: [u8; 32],
    #[serde(with = "serde_bytes")]
    call: [u8; 32],
    #[serde(with = "serde_bytes")]
    result: [u8; 32],
    at_ms: u64,
    #[serde(with = "serde_bytes")]
    provider: Vec<u8>,
    #[serde(with = "serde_bytes")]
    consumer: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct EvaluationBody {
    #[serde(with = "serde_bytes")]
    receipt: Vec<u8>,
    timeliness: f64,
    accurate: Option<bool>,
    at_ms: u64,
}

fn to_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), value).expect("evidence always encodes")
}

fn seal(key: &Keypair, domain: &[u8], body: Vec<u8>) -> Vec<u8> {
    let signature = key
        .sign(&[domain, &body].concat())
        .expect("an ed25519 or secp256k1 key signs");
    to_cbor(&Envelope {
        body,
        key: key.public().encode_protobuf(),
        signature,
    })
}

/// Opens an envelope of at most `max` bytes: the body and the peer whose
/// key signed it (the signature checked).
fn open(
    bytes: &[u8],
    max: usize,
    domain: &[u8],
    what: &'static str,
) -> Result<(Vec<u8>, PeerId), EvidenceError> {
    if bytes.len() > max {
        return Err(EvidenceError::TooLarge {
            what,
            size: bytes.len(),
            max,
        });
    }
    let envelope: Envelope =
        cbor4ii::serde::from_slice(bytes).map_err(|e| EvidenceError::Malformed {
            what,
            reason: e.to_string(),
        })?;
    let key =
        PublicKey::try_decode_protobuf(&envelope.key).map_err(|e| EvidenceError::Malformed {
            what,
            reason: format!("key: {e}"),
        })?;
    if !key.verify(&[domain, &envelope.body].concat(), &envelope.signature) {
        return Err(EvidenceError::BadSignature { what });
    }
    Ok((envelope.body, key.to_peer_id()))
}

fn peer(bytes: &[u8], what: &'static str, field: &'static str) -> Result<PeerId, EvidenceError> {
    PeerId::from_bytes(bytes).map_err(|_| EvidenceError::OutOfRange { what, field })
}

impl Receipt {
    /// The receipt, signed by `key` (the provider's).
    pub fn sign(&self, key: &Keypair) -> Vec<u8> {
        let body = to_cbor(&ReceiptBody {
            service: self.service.clone(),
            content_id: self.content_id,
            call: self.call,
            result: self.result,
            at_ms: self.at_ms,
            provider: self.provider.to_bytes(),
            consumer: self.consumer.to_bytes(),
        });
        seal(key, RECEIPT_DOMAIN, body)
    }

    /// The signed receipt a provider (`key`) gives `consumer` for answering
    /// `call` to service `service` with `result` from package `content_id`,
    /// dated now.
    pub fn sign_answer(
        key: &Keypair,
        consumer: PeerId,
        service: &str,
        content_id: [u8; 32],
        call: &str,
        result: &str,
    ) -> Vec<u8> {
        let (call, result) = Self::hashes(call, result);
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Receipt {
            service: service.to_owned(),
            content_id,
            call,
            result,
            at_ms,
            provider: key.public().to_peer_id(),
            consumer,
        }
        .sign(key)
    }

    /// A signed receipt, checked: the provider it names signed it.
    pub fn open(bytes: &[u8]) -> Result<Self, EvidenceError> {
        const WHAT: &str = "a receipt";
        let (body, signer) = open(bytes, MAX_RECEIPT, RECEIPT_DOMAIN, WHAT)?;
        let body: ReceiptBody =
            cbor4ii::serde::from_slice(&body).map_err(|e| EvidenceError::Malformed {
                what: WHAT,
                reason: e.to_string(),
            })?;
        if !crate::package::is_service_name(&body.service) {
            return Err(EvidenceError::OutOfRange {
                what: WHAT,
                field: "service",
            });
        }
        let receipt = Receipt {
            service: body.service,
            content_id: body.content_id,
            call: body.call,
            result: body.result,
            at_ms: body.at_ms,
            provider: peer(&body.provider, WHAT, "provider")?,
            consumer: peer(&body.consumer, WHAT, "consumer")?,
        };
        if signer != receipt.provider {
            return Err(EvidenceError::WrongSigner {
                what: WHAT,
                signer: receipt.provider.to_string(),
            });
        }
        Ok(receipt)
    }

    /// Whether this receipt is for the call `call` answered with `result`.
    pub fn covers(&self, call: &str, result: &str) -> bool {
        self.call == *blake3::hash(call.as_bytes()).as_bytes()
            && self.result == *blake3::hash(result.as_bytes()).as_bytes()
    }

    /// The hashes a receipt holds for `call` answered with `result`.
    pub fn hashes(call: &str, result: &str) -> ([u8; 32], [u8; 32]) {
        (
            *blake3::hash(call.as_bytes()).as_bytes(),
            *blake3::hash(result.as_bytes()).as_bytes(),
        )
    }
}

impl Evaluation {
    /// The evaluation, signed by `key` (the consumer's).
    pub fn sign(&self, key: &Keypair) -> Vec<u8> {
        let body = to_cbor(&EvaluationBody {
            receipt: self.receipt.clone(),
            timeliness: self.timeliness,
            accurate: self.accurate,
            at_ms: self.at_ms,
        });
        seal(key, EVALUATION_DOMAIN, body)
    }

    /// A signed evaluation, checked with its receipt: the receipt is signed
    /// by its provider, the evaluation by the receipt's consumer, the
    /// numbers are in range and no time is more than [`MAX_CLOCK_SKEW_MS`]
    /// after `now_ms` (nor the evaluation before its receipt).
    pub fn open(bytes: &[u8], now_ms: u64) -> Result<Opened, EvidenceError> {
        const WHAT: &str = "an evaluation";
        let (body, signer) = open(bytes, MAX_EVALUATION, EVALUATION_DOMAIN, WHAT)?;
        let body: EvaluationBody =
            cbor4ii::serde::from_slice(&body).map_err(|e| EvidenceError::Malformed {
                what: WHAT,
                reason: e.to_string(),
            })?;
        let receipt = Receipt::open(&body.receipt)?;
        if signer != receipt.consumer {
            return Err(EvidenceError::NotTheConsumer {
                consumer: signer.to_string(),
                receipt_consumer: receipt.consumer.to_string(),
            });
        }
        let range = |ok: bool, field| {
            if ok {
                Ok(())
            } else {
                Err(EvidenceError::OutOfRange { what: WHAT, field })
            }
        };
        range(
            body.timeliness.is_finite() && (0.0..=1.0).contains(&body.timeliness),
            "timeliness",
        )?;
        let latest = now_ms.saturating_add(MAX_CLOCK_SKEW_MS);
        range(receipt.at_ms <= latest, "receipt time")?;
        range(
            body.at_ms <= latest && body.at_ms >= receipt.at_ms,
            "evaluation time",
        )?;
        Ok(Opened {
            evaluation: Evaluation {
                receipt: body.receipt,
                timeliness: body.timeliness,
                accurate: body.accurate,
                at_ms: body.at_ms,
            },
            receipt,
        })
    }
}

/// An advisor's answer about `provider`, for `service`, checked whole: each
/// evaluation opens ([`Evaluation::open`]), is about that provider and
/// service, is the advisor's own (it was the receipt's consumer), and no
/// receipt comes twice. The first evaluation that fails spoils the answer.
pub fn check_advice(
    service: &str,
    provider: &PeerId,
    advisor: &PeerId,
    evaluations: &[serde_bytes::ByteBuf],
    now_ms: u64,
) -> Result<Vec<Opened>, String> {
    let mut opened = Vec::with_capacity(evaluations.len());
    let mut seen = std::collections::HashSet::new();
    for bytes in evaluations {
        let one = Evaluation::open(bytes, now_ms).map_err(|e| e.to_string())?;
        let receipt = &one.receipt;
        if receipt.provider != *provider || receipt.service != service {
            return Err("an evaluation of another provider or service".into());
        }
        if one.consumer() != *advisor {
            return Err("an evaluation that is not the advisor's own".into());
        }
        if !seen.insert((receipt.call, receipt.result, receipt.at_ms)) {
            return Err("the same receipt twice".into());
        }
        opened.push(one);
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn receipt(provider: &Keypair, consumer: &Keypair) -> Receipt {
        let (call, result) = Receipt::hashes("greet(\"a\")", "\"hi a\"");
        Receipt {
            service: "hello".into(),
            content_id: [7; 32],
            call,
            result,
            at_ms: NOW - 1000,
            provider: provider.public().to_peer_id(),
            consumer: consumer.public().to_peer_id(),
        }
    }

    fn evaluation(receipt: Vec<u8>) -> Evaluation {
        Evaluation {
            receipt,
            timeliness: 0.75,
            accurate: Some(true),
            at_ms: NOW,
        }
    }

    #[test]
    fn a_receipt_and_an_evaluation_round_trip() {
        let (provider, consumer) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let r = receipt(&provider, &consumer);
        let signed = r.sign(&provider);
        assert!(signed.len() <= MAX_RECEIPT, "{}", signed.len());
        assert_eq!(Receipt::open(&signed).unwrap(), r);
        assert!(r.covers("greet(\"a\")", "\"hi a\""));
        assert!(!r.covers("greet(\"a\")", "\"hi b\""));
        let e = evaluation(signed);
        let bytes = e.sign(&consumer);
        assert!(bytes.len() <= MAX_EVALUATION, "{}", bytes.len());
        let opened = Evaluation::open(&bytes, NOW).unwrap();
        assert_eq!(opened.evaluation, e);
        assert_eq!(opened.receipt, r);
        assert_eq!(opened.consumer(), consumer.public().to_peer_id());
    }

    #[test]
    fn a_receipt_signed_by_anyone_but_its_provider_is_refused() {
        let (provider, consumer) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        // The consumer makes up a receipt in the provider's name.
        let forged = receipt(&provider, &consumer).sign(&consumer);
        assert!(matches!(
            Receipt::open(&forged),
            Err(EvidenceError::WrongSigner { .. })
        ));
        // And cannot evaluate with it.
        let e = evaluation(forged).sign(&consumer);
        assert!(matches!(
            Evaluation::open(&e, NOW),
            Err(EvidenceError::WrongSigner { .. })
        ));
    }

    #[test]
    fn only_the_receipts_consumer_may_evaluate() {
        let (provider, consumer, other) = (
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
        );
        // Someone else's receipt (overheard, or passed on by a colluder).
        let e = evaluation(receipt(&provider, &consumer).sign(&provider)).sign(&other);
        assert!(matches!(
            Evaluation::open(&e, NOW),
            Err(EvidenceError::NotTheConsumer { .. })
        ));
    }

    #[test]
    fn a_tampered_item_fails_its_signature() {
        let (provider, consumer) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let signed = receipt(&provider, &consumer).sign(&provider);
        let bytes = evaluation(signed.clone()).sign(&consumer);
        // Flip each byte of the evaluation in turn: none opens as the
        // original (most fail outright; none may pass with other content).
        let original = Evaluation::open(&bytes, NOW).unwrap();
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            if let Ok(opened) = Evaluation::open(&t, NOW) {
                panic!("byte {i} flipped still opens: {opened:?} (was {original:?})");
            }
        }
        // A receipt's signature over another body.
        let mut envelope: Envelope = cbor4ii::serde::from_slice(&signed).unwrap();
        envelope.body = to_cbor(&ReceiptBody {
            service: "hello".into(),
            content_id: [7; 32],
            call: [0; 32],
            result: [0; 32],
            at_ms: NOW,
            provider: provider.public().to_peer_id().to_bytes(),
            consumer: consumer.public().to_peer_id().to_bytes(),
        });
        assert_eq!(
            Receipt::open(&to_cbor(&envelope)),
            Err(EvidenceError::BadSignature { what: "a receipt" })
        );
    }

    #[test]
    fn hostile_sizes_numbers_and_times_are_refused() {
        let (provider, consumer) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let signed = receipt(&provider, &consumer).sign(&provider);
        assert!(matches!(
            Receipt::open(&vec![0u8; MAX_RECEIPT + 1]),
            Err(EvidenceError::TooLarge { .. })
        ));
        assert!(matches!(
            Evaluation::open(b"\xff\x00garbage", NOW),
            Err(EvidenceError::Malformed { .. })
        ));
        for timeliness in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
            let e = Evaluation {
                timeliness,
                ..evaluation(signed.clone())
            };
            assert!(
                matches!(
                    Evaluation::open(&e.sign(&consumer), NOW),
                    Err(EvidenceError::OutOfRange {
                        field: "timeliness",
                        ..
                    })
                ),
                "{timeliness}"
            );
        }
        // Evaluated before the receipt, or from the far future.
        let early = Evaluation {
            at_ms: NOW - 5000,
            ..evaluation(signed.clone())
        };
        assert!(Evaluation::open(&early.sign(&consumer), NOW).is_err());
        let future = Evaluation {
            at_ms: NOW + MAX_CLOCK_SKEW_MS + 1,
            ..evaluation(signed)
        };
        assert!(Evaluation::open(&future.sign(&consumer), NOW).is_err());
        let mut bad_name = receipt(&provider, &consumer);
        bad_name.service = "../etc".into();
        assert!(matches!(
            Receipt::open(&bad_name.sign(&provider)),
            Err(EvidenceError::OutOfRange {
                field: "service",
                ..
            })
        ));
    }
}
