//! One validation item and its pure check.

use std::collections::HashSet;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// Error code: the node does not exist.
pub const ERR_NODE_NOT_FOUND: &str = "LUCID_ERR_5001";
/// Error code: the PoOT output is not acceptable.
pub const ERR_POOT_VALIDATION: &str = "LUCID_ERR_5005";

/// One item of a batch validation request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidationItem {
    /// Node that produced the output.
    pub node_id: String,
    /// Base64 of the output (at most 1 MiB decoded).
    pub output_data: String,
    /// When the output was produced.
    pub timestamp: DateTime<Utc>,
    /// Client nonce.
    pub nonce: String,
}

/// The outcome of checking one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Valid: the sha256 of the decoded output, hex.
    Valid {
        /// sha256 of the decoded output, lowercase hex.
        output_hash: String,
    },
    /// Invalid, with a `LUCID_ERR_` code and a message.
    Invalid {
        /// Error code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Checks one item against the set of existing node ids.
pub fn check_item(
    item: &ValidationItem,
    known_nodes: &HashSet<String>,
    max_output_bytes: usize,
) -> ItemOutcome {
    if !known_nodes.contains(&item.node_id) {
        return ItemOutcome::Invalid {
            code: ERR_NODE_NOT_FOUND,
            message: format!("node {} not found", item.node_id),
        };
    }
    // Reject before decoding what cannot fit: base64 is 4 chars per 3 bytes.
    if item.output_data.len() / 4 * 3 > max_output_bytes + 3 {
        return too_large(max_output_bytes);
    }
    let decoded =
        match base64::engine::general_purpose::STANDARD.decode(item.output_data.as_bytes()) {
            Ok(d) => d,
            Err(e) => {
                return ItemOutcome::Invalid {
                    code: ERR_POOT_VALIDATION,
                    message: format!("output_data is not valid base64: {e}"),
                };
            }
        };
    if decoded.len() > max_output_bytes {
        return too_large(max_output_bytes);
    }
    ItemOutcome::Valid {
        output_hash: hex::encode(Sha256::digest(&decoded)),
    }
}

fn too_large(max: usize) -> ItemOutcome {
    ItemOutcome::Invalid {
        code: ERR_POOT_VALIDATION,
        message: format!("output_data exceeds {max} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(node: &str, data: &str) -> ValidationItem {
        ValidationItem {
            node_id: node.into(),
            output_data: data.into(),
            timestamp: Utc::now(),
            nonce: "n".into(),
        }
    }

    fn nodes() -> HashSet<String> {
        ["node_a".to_string()].into_iter().collect()
    }

    #[test]
    fn a_valid_item_records_the_sha256_of_its_decoded_output() {
        let out = check_item(&item("node_a", "aGVsbG8="), &nodes(), 1024);
        assert_eq!(
            out,
            ItemOutcome::Valid {
                output_hash: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
                    .into()
            }
        );
    }

    #[test]
    fn an_unknown_node_fails_with_5001() {
        assert!(matches!(
            check_item(&item("node_x", "aGVsbG8="), &nodes(), 1024),
            ItemOutcome::Invalid {
                code: ERR_NODE_NOT_FOUND,
                ..
            }
        ));
    }

    #[test]
    fn bad_base64_and_oversize_fail_with_5005() {
        assert!(matches!(
            check_item(&item("node_a", "%%%"), &nodes(), 1024),
            ItemOutcome::Invalid {
                code: ERR_POOT_VALIDATION,
                ..
            }
        ));
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 1025]);
        assert!(matches!(
            check_item(&item("node_a", &big), &nodes(), 1024),
            ItemOutcome::Invalid {
                code: ERR_POOT_VALIDATION,
                ..
            }
        ));
        let fits = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 1024]);
        assert!(matches!(
            check_item(&item("node_a", &fits), &nodes(), 1024),
            ItemOutcome::Valid { .. }
        ));
    }
}
