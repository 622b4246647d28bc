//! A gzip bomb is stopped while inflating: the decoder produces at most `limit + 1` bytes and
//! consumes only the gzip input those bytes need (plus one read-ahead buffer), whatever the
//! whole bomb would expand to. Asserted on the decoder's own counts, not on process memory.
#![allow(clippy::unwrap_used)]

use std::io::Write;

use starsync_protocol::{decode_hex_packet, decode_packet_bytes, CodecError};

const MIB: usize = 1 << 20;

/// `total` bytes of zeros gzipped in a stream (never held in memory).
fn bomb(total_mib: usize) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let chunk = vec![0u8; MIB];
    for _ in 0..total_mib {
        enc.write_all(&chunk).unwrap();
    }
    enc.finish().unwrap()
}

/// What the decoder may read beyond the input the limit needs: flate2's read-ahead buffer
/// (32 KiB) plus slack for the deflate block in progress.
const READ_AHEAD: u64 = 64 * 1024;

fn check_stopped(err: CodecError, limit: usize, gz_len: usize, total: usize) {
    match err {
        CodecError::TooLarge {
            limit: l,
            inflated,
            read,
        } => {
            assert_eq!(l, limit);
            // The decoder stopped one byte past the limit: the rest was never inflated.
            assert_eq!(inflated, limit as u64 + 1, "bytes inflated");
            // Zeros compress evenly, so the input needed for `limit` bytes is proportional.
            let needed = (gz_len as u64 * (limit as u64 + 1)).div_ceil(total as u64);
            assert!(
                read <= needed + READ_AHEAD,
                "read {read} gzip bytes of {gz_len}; the limit needs about {needed}"
            );
            assert!(read < gz_len as u64, "the whole bomb was read");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn a_100_mib_bomb_stops_at_the_limit() {
    let total = 100 * MIB;
    let gz = bomb(100);
    assert!(gz.len() < total / 100, "a bomb: {} gzip bytes", gz.len());
    for limit in [MIB, 16 * MIB, 64 * MIB] {
        let err = decode_packet_bytes(&gz, limit).unwrap_err();
        check_stopped(err, limit, gz.len(), total);
    }
    // The HTTP path (hex envelope) decodes through the same limit.
    let err = decode_hex_packet(&hex::encode(&gz), 64 * MIB).unwrap_err();
    check_stopped(err, 64 * MIB, gz.len(), total);
}

#[test]
fn a_packet_at_the_limit_decodes() {
    // Valid packet JSON padded to just under the limit decodes; one byte less of limit fails.
    let pad = "a".repeat(100_000);
    let json = serde_json::json!({
        "format": 1, "schema_version": "1.0.0",
        "sender_node_id": "n", "receiver_node_id": "s",
        "packet_no": 1, "ack_packet_no": 0, "created_at": "2026-01-01T00:00:00.000000Z",
        "more": false, "changes": [], "pad": pad,
    })
    .to_string();
    let gz = starsync_protocol::codec::gzip_bytes(json.as_bytes());
    let p = decode_packet_bytes(&gz, json.len()).unwrap();
    assert_eq!(p.packet_no, 1);
    match decode_packet_bytes(&gz, json.len() - 1) {
        Err(CodecError::TooLarge { inflated, .. }) => assert_eq!(inflated, json.len() as u64),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
