//! Packet encoding: JSON → gzip (RFC 1952) → lowercase hex for HTTP, raw gzip for files.
//!
//! Decoding inflates through a hard limit, so a gzip bomb is stopped while inflating: memory
//! never exceeds the configured decompressed size, whatever the compression ratio.

use std::io::Read;

use flate2::read::MultiGzDecoder;
use flate2::Compression;

use super::packet::Packet;

/// Why a packet could not be decoded. Every variant is the client's fault (400/413).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("packet_data is not hex: {0}")]
    NotHex(String),
    #[error("packet is not gzip data: {0}")]
    NotGzip(String),
    /// The packet inflates past `limit`. `inflated` and `read` say where decoding stopped
    /// (bytes produced, gzip bytes consumed), so tests can prove a bomb never fully expands.
    #[error("packet decompresses to more than {limit} bytes")]
    TooLarge {
        limit: usize,
        /// Bytes the decoder produced before it stopped: `limit + 1` at most.
        inflated: u64,
        /// Gzip bytes it consumed by then (the decoder reads ahead one buffer at most).
        read: u64,
    },
    #[error("packet is not valid packet JSON: {0}")]
    NotJson(String),
}

/// Serializes and gzips a packet.
pub fn encode_packet(packet: &Packet) -> Vec<u8> {
    let json = serde_json::to_vec(packet).expect("writing JSON to memory cannot fail");
    gzip_bytes(&json)
}

thread_local! {
    /// One deflate compressor per thread, reset between uses. Building a fresh one allocates and
    /// zeroes several hundred KiB of tables, which cost more than compressing a small packet
    /// (it was the top item of the server's profile).
    static DEFLATE: std::cell::RefCell<Option<flate2::Compress>> =
        const { std::cell::RefCell::new(None) };
}

/// Deflate level of every packet. Level 1 against the gzip default 6, measured with the
/// benchmark (3 runs each, 100,000 entities of ~300 bytes): initial sync 46k vs 38k entities/s,
/// for 85 vs 74 gzip bytes per change. The hub's CPU is shared by every node; 15% more bytes
/// per change is the better trade.
pub const GZIP_LEVEL: u32 = 1;

/// Fixed gzip header (RFC 1952): deflate, no flags, no mtime, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

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
    let mut input = Counted { rest: gz, read: 0 };
    let mut dec = MultiGzDecoder::new(&mut input).take(limit as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| CodecError::NotGzip(e.to_string()))?;
    drop(dec);
    if out.len() > limit {
        return Err(CodecError::TooLarge {
            limit,
            inflated: out.len() as u64,
            read: input.read,
        });
    }
    Ok(out)
}

/// The gzip input, counting what the decoder consumed.
struct Counted<'a> {
    rest: &'a [u8],
    read: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.rest.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Gzips bytes into one gzip member (RFC 1952) at [`GZIP_LEVEL`].
pub fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 3 + 64);
    out.extend_from_slice(&GZIP_HEADER);
    DEFLATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let deflate =
            slot.get_or_insert_with(|| flate2::Compress::new(Compression::new(GZIP_LEVEL), false));
        deflate.reset();
        let mut input = data;
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity().max(4096));
            }
            let before_in = deflate.total_in();
            let status = deflate
                .compress_vec(input, &mut out, flate2::FlushCompress::Finish)
                .expect("deflate into memory cannot fail");
            input = &input[(deflate.total_in() - before_in) as usize..];
            if status == flate2::Status::StreamEnd {
                break;
            }
        }
    });
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
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
            Err(CodecError::TooLarge {
                limit, inflated, ..
            }) => {
                assert_eq!(limit, 1024 * 1024);
                assert_eq!(inflated, limit as u64 + 1);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn gzip_round_trips_and_reuses_the_compressor() {
        for size in [0usize, 1, 300, 70_000, 1_000_000] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let gz = gzip_bytes(&data);
            // Any gzip reader accepts it, and it holds exactly the input.
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "size {size}");
            assert_eq!(inflate_limited(&gz, size.max(1)).unwrap(), data);
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
