//! Work proofs: what a node did in one 120 s slot, signed with its secret.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use utoipa::ToSchema;

/// What kind of work a proof reports, with its measured value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum ProofKind {
    /// Relayed traffic.
    RelayBandwidth {
        /// Bytes relayed.
        bytes: u64,
        /// Sessions relayed.
        sessions: u64,
        /// Total session time, if measured (else one hour per session).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_seconds: Option<u64>,
    },
    /// Storage kept available.
    StorageAvailability {
        /// Gigabytes.
        gb: f64,
        /// Chunks.
        chunks: u64,
    },
    /// Sessions validated.
    ValidationSignature {
        /// Sessions validated.
        validated_sessions: u64,
    },
    /// Time up.
    UptimeBeacon {
        /// Seconds up in the slot (at most the slot length).
        seconds: u64,
    },
}

impl ProofKind {
    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::RelayBandwidth { .. } => "relay_bandwidth",
            Self::StorageAvailability { .. } => "storage_availability",
            Self::ValidationSignature { .. } => "validation_signature",
            Self::UptimeBeacon { .. } => "uptime_beacon",
        }
    }
}

/// A signed proof as submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProofIn {
    /// Slot number: unix seconds / 120.
    pub slot: u64,
    /// Type and value.
    #[serde(flatten)]
    pub kind: ProofKind,
    /// Hex HMAC-SHA256 of [`canonical_json`] with the node's secret.
    pub signature: String,
}

/// JSON with object keys sorted and no whitespace (independent of map order).
pub fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let body: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// The signed content of a proof: `{"slot":…,"type":…,"value":{…}}`, canonical.
pub fn canonical_json(slot: u64, kind: &ProofKind) -> String {
    let mut v = serde_json::to_value(kind).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("slot".into(), Value::from(slot));
    }
    canonical(&v)
}

/// Hex HMAC-SHA256 of `message` with `secret`.
pub fn sign(secret: &str, message: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `proof` is signed with `secret` (constant-time comparison).
pub fn verify(secret: &str, proof: &ProofIn) -> bool {
    let Ok(given) = hex::decode(&proof.signature) else {
        return false;
    };
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return false,
    };
    mac.update(canonical_json(proof.slot, &proof.kind).as_bytes());
    mac.verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":1,"y":2}],"c":"x"}}"#).expect("json");
        assert_eq!(
            canonical(&v),
            r#"{"a":{"c":"x","d":[{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn the_signed_content_is_stable() {
        let kind = ProofKind::UptimeBeacon { seconds: 120 };
        assert_eq!(
            canonical_json(7, &kind),
            r#"{"slot":7,"type":"uptime_beacon","value":{"seconds":120}}"#
        );
    }

    #[test]
    fn a_signature_verifies_only_with_the_right_secret_and_content() {
        let kind = ProofKind::RelayBandwidth {
            bytes: 10,
            sessions: 1,
            duration_seconds: None,
        };
        let signature = sign("s3cret", &canonical_json(42, &kind));
        let proof = ProofIn {
            slot: 42,
            kind: kind.clone(),
            signature,
        };
        assert!(verify("s3cret", &proof));
        assert!(!verify("other", &proof));
        assert!(!verify(
            "s3cret",
            &ProofIn {
                slot: 43,
                ..proof.clone()
            }
        ));
        assert!(!verify(
            "s3cret",
            &ProofIn {
                signature: "zz".into(),
                ..proof
            }
        ));
    }

    #[test]
    fn proofs_parse_from_the_wire_shape() {
        let p: ProofIn = serde_json::from_str(r#"{"slot":1,"type":"storage_availability","value":{"gb":1.5,"chunks":3},"signature":"ab"}"#).expect("parse");
        assert_eq!(
            p.kind,
            ProofKind::StorageAvailability { gb: 1.5, chunks: 3 }
        );
    }
}
