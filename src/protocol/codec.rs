//! Packet encoding: JSON → gzip (RFC 1952) → lowercase hex for HTTP, raw gzip for files.
//!
//! Decoding inflates through a hard limit, so a gzip bomb is stopped while inflating: memory
//! never exceeds the configured decompressed size, whatever the compression ratio.

use std::io::{Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::packet::Packet;

/// Why a packet could not be decoded. Every variant is the client's fault (400/413).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("packet_data is not hex: {0}")]
    NotHex(String),
    #[error("packet is not gzip data: {0}")]
    NotGzip(String),
    #[error("packet decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("packet is not valid packet JSON: {0}")]
    NotJson(String),
}

/// Serializes and gzips a packet.
pub fn encode_packet(packet: &Packet) -> Vec<u8> {
    // Level 6 (the gzip default): entities are repetitive JSON, and the ratio matters more
    // than the few microseconds a faster level would save on a 100-change packet.
    let mut enc = GzEncoder::new(Vec::with_capacity(4096), Compression::default());
    serde_json::to_writer(&mut enc, packet).expect("writing JSON to memory cannot fail");
    enc.finish().expect("gzip into memory cannot fail")
}

/// Encodes a packet as the lowercase hex string of its gzip bytes (the HTTP envelope form).
pub fn encode_packet_hex(packet: &Packet) -> String {
    hex::encode(encode_packet(packet))
}

/// Decodes the hex form used by the HTTP envelope.
pub fn decode_hex_packet(hex_text: &str, max_decompressed: usize) -> Result<Packet, CodecError> {
    let bytes = hex::decode(hex_text.trim()).map_err(|e| CodecError::NotHex(e.to_string()))?;
    decode_packet_bytes(&bytes, max_decompressed)
}

/// Decodes raw gzip bytes (a `.syncpkt` file, or a decoded envelope).
pub fn decode_packet_bytes(gz: &[u8], max_decompressed: usize) -> Result<Packet, CodecError> {
    let json = inflate_limited(gz, max_decompressed)?;
    serde_json::from_slice(&json).map_err(|e| CodecError::NotJson(e.to_string()))
}

/// Inflates at most `limit` bytes; one byte more is an error, so the bomb never fully expands.
pub fn inflate_limited(gz: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    if gz.len() < 2 || gz[0] != 0x1f || gz[1] != 0x8b {
        return Err(CodecError::NotGzip("missing gzip header".into()));
    }
    let mut out = Vec::with_capacity(gz.len().saturating_mul(4).min(limit) + 1);
    let mut dec = MultiGzDecoder::new(gz).take(limit as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| CodecError::NotGzip(e.to_string()))?;
    if out.len() > limit {
        return Err(CodecError::TooLarge { limit });
    }
    Ok(out)
}

/// Gzips arbitrary bytes (used by tests and tools that build packets by hand).
pub fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).expect("gzip into memory cannot fail");
    enc.finish().expect("gzip into memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bomb_is_stopped_at_the_limit() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        let gz = gzip_bytes(&zeros);
        assert!(gz.len() < 100 * 1024);
        match inflate_limited(&gz, 1024 * 1024) {
            Err(CodecError::TooLarge { limit }) => assert_eq!(limit, 1024 * 1024),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_not_gzip() {
        assert!(matches!(
            inflate_limited(b"hello", 100),
            Err(CodecError::NotGzip(_))
        ));
        assert!(matches!(
            decode_hex_packet("zz", 100),
            Err(CodecError::NotHex(_))
        ));
    }
}
