//! Packet encoding: JSON → gzip (RFC 1952) → lowercase hex for HTTP, raw gzip for files.
//!
//! Decoding inflates through a hard limit, so a gzip bomb is stopped while inflating: memory
//! never exceeds the configured decompressed size, whatever the compression ratio.

use std::io::{Read, Write};

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

/// Serializes and gzips a packet, streaming: the JSON is compressed as it is written, so only
/// the gzip bytes are ever held in memory (never the JSON text beside them).
pub fn encode_packet(packet: &Packet) -> Vec<u8> {
    with_gzip_sink(|sink| {
        let mut w = std::io::BufWriter::with_capacity(32 * 1024, sink);
        serde_json::to_writer(&mut w, packet).expect("writing JSON to memory cannot fail");
        w.flush().expect("writing to memory cannot fail");
    })
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
    decode_hex_packet_sized(hex_text, max_decompressed).map(|(p, _)| p)
}

/// [`decode_hex_packet`], also returning the packet's decompressed size.
///
/// Streaming, hex → gzip → JSON: the gzip bytes are never held whole, nor the JSON text of a
/// large packet, only the parsed packet (a server decoding many large packets at once holds
/// each once); a small packet's JSON (at most 1 MiB) is parsed from memory.
pub fn decode_hex_packet_sized(
    hex_text: &str,
    max_decompressed: usize,
) -> Result<(Packet, usize), CodecError> {
    let hex_text = hex_text.trim().as_bytes();
    if let Some(i) = hex_text.iter().position(|b| !b.is_ascii_hexdigit()) {
        let c = String::from_utf8_lossy(&hex_text[i..])
            .chars()
            .next()
            .unwrap_or('?');
        return Err(CodecError::NotHex(format!(
            "invalid character {c:?} at position {i}"
        )));
    }
    if !hex_text.len().is_multiple_of(2) {
        return Err(CodecError::NotHex("odd number of digits".into()));
    }
    if hex_text.len() < 4 || !hex_text[..4].eq_ignore_ascii_case(b"1f8b") {
        return Err(CodecError::NotGzip("missing gzip header".into()));
    }
    decode_stream(HexReader { hex: hex_text }, max_decompressed)
}

/// Decodes raw gzip bytes (a `.syncpkt` file, or a decoded envelope).
pub fn decode_packet_bytes(gz: &[u8], max_decompressed: usize) -> Result<Packet, CodecError> {
    if gz.len() < 2 || gz[0] != 0x1f || gz[1] != 0x8b {
        return Err(CodecError::NotGzip("missing gzip header".into()));
    }
    decode_stream(gz, max_decompressed).map(|(p, _)| p)
}

/// Packets whose JSON fits in this many bytes are inflated whole and parsed from memory; larger
/// ones are parsed as they inflate.
///
/// Why: `serde_json::from_reader` reads byte by byte through `io::Read` and copies every raw
/// `data` value out of a scratch buffer — parsing a 100-change packet that way was a fifth of
/// the hub's CPU during an upload; `from_slice` does the same work about twice as fast. Holding
/// the JSON of a small packet beside its parse costs at most this much; a large packet still
/// never has its JSON text held whole.
const PARSE_IN_MEMORY_BYTES: usize = 1024 * 1024;

/// Inflates `gz` through the limit and parses the JSON: from memory when it is small (see
/// [`PARSE_IN_MEMORY_BYTES`]), else as it comes.
fn decode_stream(gz: impl Read, limit: usize) -> Result<(Packet, usize), CodecError> {
    let mut inflated = Limited {
        inner: MultiGzDecoder::new(std::io::BufReader::with_capacity(
            32 * 1024,
            CountingReader { inner: gz, read: 0 },
        )),
        limit,
        count: 0,
        over: false,
    };
    // Up to one byte past the in-memory size: a packet that fits ends before it.
    let mut head = Vec::with_capacity(16 * 1024);
    let small = (&mut inflated)
        .take(PARSE_IN_MEMORY_BYTES as u64 + 1)
        .read_to_end(&mut head);
    let parsed = match small {
        Err(_) if inflated.over => return Err(inflated.too_large()),
        Err(e) => return Err(CodecError::NotGzip(e.to_string())),
        Ok(n) if n <= PARSE_IN_MEMORY_BYTES => serde_json::from_slice(&head),
        Ok(_) => serde_json::from_reader(std::io::BufReader::with_capacity(
            64 * 1024,
            std::io::Cursor::new(std::mem::take(&mut head)).chain(&mut inflated),
        )),
    };
    match parsed {
        Ok(p) => Ok((p, inflated.count)),
        Err(_) if inflated.over => Err(inflated.too_large()),
        Err(e) if e.is_io() => Err(CodecError::NotGzip(e.to_string())),
        Err(e) => {
            // Over the limit is the answer whatever the content (a bomb of zeros is not JSON
            // either): inflate the rest, without keeping it, to tell which.
            let rest = std::io::copy(&mut inflated, &mut std::io::sink());
            if inflated.over {
                Err(inflated.too_large())
            } else if let Err(io) = rest {
                Err(CodecError::NotGzip(io.to_string()))
            } else {
                Err(CodecError::NotJson(e.to_string()))
            }
        }
    }
}

/// Hex text read as the bytes it encodes (validated beforehand).
struct HexReader<'a> {
    hex: &'a [u8],
}

impl Read for HexReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.hex.len() / 2);
        let (now, rest) = self.hex.split_at(n * 2);
        hex::decode_to_slice(now, &mut buf[..n])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.hex = rest;
        Ok(n)
    }
}

/// A reader that fails once more than `limit` bytes came through it.
/// The gzip input of a streaming decode, counting what the decoder consumed.
struct CountingReader<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: Read> Limited<MultiGzDecoder<std::io::BufReader<CountingReader<R>>>> {
    /// The error for a packet over the limit: how far it was inflated (one byte past the
    /// limit at most) and how much gzip was read to get there.
    fn too_large(&self) -> CodecError {
        CodecError::TooLarge {
            limit: self.limit,
            inflated: self.count as u64,
            read: self.inner.get_ref().get_ref().read,
        }
    }
}

struct Limited<R> {
    inner: R,
    limit: usize,
    count: usize,
    over: bool,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Never ask for more than one byte past the limit: a bomb stops expanding here.
        let room = self
            .limit
            .saturating_sub(self.count)
            .saturating_add(1)
            .min(buf.len());
        let n = if self.over {
            0
        } else {
            self.inner.read(&mut buf[..room])?
        };
        self.count += n;
        if self.over || self.count > self.limit {
            self.over = true;
            return Err(std::io::Error::other("decompressed size over the limit"));
        }
        Ok(n)
    }
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
    with_gzip_sink(|sink| sink.write_all(data).expect("writing to memory cannot fail"))
}

/// Runs `write` against a gzip stream (one member, [`GZIP_LEVEL`], this thread's reused
/// compressor) and returns the finished gzip bytes.
fn with_gzip_sink(write: impl FnOnce(&mut GzipSink<'_>)) -> Vec<u8> {
    DEFLATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let deflate =
            slot.get_or_insert_with(|| flate2::Compress::new(Compression::new(GZIP_LEVEL), false));
        deflate.reset();
        let mut sink = GzipSink {
            deflate,
            out: Vec::with_capacity(4096),
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        sink.out.extend_from_slice(&GZIP_HEADER);
        write(&mut sink);
        sink.finish()
    })
}

/// Raw deflate into a growing buffer, with the gzip trailer's CRC and length kept on the way.
struct GzipSink<'a> {
    deflate: &'a mut flate2::Compress,
    out: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u32,
}

impl GzipSink<'_> {
    fn deflate(&mut self, mut input: &[u8], flush: flate2::FlushCompress) -> bool {
        loop {
            if self.out.capacity() - self.out.len() < 1024 {
                self.out.reserve(self.out.capacity().max(4096));
            }
            let before_in = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, &mut self.out, flush)
                .expect("deflate into memory cannot fail");
            input = &input[(self.deflate.total_in() - before_in) as usize..];
            if status == flate2::Status::StreamEnd {
                return true;
            }
            // Without Finish, deflate is done once it took all input and left room unused.
            if flush != flate2::FlushCompress::Finish
                && input.is_empty()
                && self.out.len() < self.out.capacity()
            {
                return false;
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.deflate(&[], flate2::FlushCompress::Finish);
        let crc = self.crc.clone().finalize();
        self.out.extend_from_slice(&crc.to_le_bytes());
        self.out.extend_from_slice(&self.len.to_le_bytes());
        self.out
    }
}

impl Write for GzipSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.crc.update(buf);
        // RFC 1952: ISIZE is the input size modulo 2^32.
        self.len = self.len.wrapping_add(buf.len() as u32);
        self.deflate(buf, flate2::FlushCompress::None);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

    fn packet_json(pad: usize) -> String {
        serde_json::json!({
            "format": 1, "schema_version": "1.0.0",
            "sender_node_id": "a", "receiver_node_id": "b",
            "packet_no": 1, "ack_packet_no": 0, "created_at": "2026-11-22T10:00:00Z",
            "changes": [{"change_id": "c", "entity_type": "T", "entity_uuid": "u",
                "operation": "INSERT", "base_version": 0, "version": null,
                "updated_at": "2026-11-22T10:00:00Z", "data": {"pad": "x".repeat(pad)}}]
        })
        .to_string()
    }

    #[test]
    fn streaming_decode_reports_the_size_and_stops_at_the_limit() {
        let json = packet_json(100_000);
        let hex_text = hex::encode(gzip_bytes(json.as_bytes()));
        let (p, n) = decode_hex_packet_sized(&hex_text, json.len()).unwrap();
        assert_eq!(n, json.len());
        assert_eq!(p.changes[0].data_text().len(), 100_000 + 10);
        // Upper case hex and surrounding whitespace are accepted.
        let upper = format!("  {}\n", hex_text.to_uppercase());
        assert!(decode_hex_packet(&upper, json.len()).is_ok());
        assert!(matches!(
            decode_hex_packet(&hex_text, json.len() - 1),
            Err(CodecError::TooLarge { .. })
        ));
        // Files take the same path.
        let gz = gzip_bytes(json.as_bytes());
        assert!(decode_packet_bytes(&gz, json.len()).is_ok());
        assert!(matches!(
            decode_packet_bytes(&gz, 1000),
            Err(CodecError::TooLarge { limit: 1000, .. })
        ));
    }

    /// Packets around the in-memory size parse the same either way, and the size reported
    /// is the whole packet's (the streaming path re-reads the bytes it already inflated).
    #[test]
    fn small_and_large_packets_decode_alike() {
        let overhead = packet_json(0).len();
        for size in [
            PARSE_IN_MEMORY_BYTES - 1,
            PARSE_IN_MEMORY_BYTES,
            PARSE_IN_MEMORY_BYTES + 1,
            3 * PARSE_IN_MEMORY_BYTES,
        ] {
            let json = packet_json(size - overhead);
            assert_eq!(json.len(), size);
            let gz = gzip_bytes(json.as_bytes());
            let (p, n) = decode_hex_packet_sized(&hex::encode(&gz), 4 << 20).unwrap();
            assert_eq!(n, size);
            assert_eq!(
                serde_json::to_string(&p).unwrap().len(),
                serde_json::to_string(&serde_json::from_str::<Packet>(&json).unwrap())
                    .unwrap()
                    .len()
            );
            let broken = gzip_bytes(&json.as_bytes()[..size - 1]);
            assert!(matches!(
                decode_packet_bytes(&broken, 4 << 20),
                Err(CodecError::NotJson(_))
            ));
        }
    }

    #[test]
    fn a_bomb_is_too_large_even_when_it_is_not_json() {
        let gz = gzip_bytes(&vec![0u8; 3 << 20]);
        assert!(matches!(
            decode_packet_bytes(&gz, 1 << 20),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_packet_bytes(&gz, 4 << 20),
            Err(CodecError::NotJson(_))
        ));
    }

    #[test]
    fn streaming_decode_classifies_bad_input() {
        let json = packet_json(10);
        let mut gz = gzip_bytes(json.as_bytes());
        // A corrupt trailer (CRC) is caught: the stream is read to its end.
        let n = gz.len();
        gz[n - 6] ^= 0xff;
        assert!(matches!(
            decode_hex_packet(&hex::encode(&gz), 1 << 20),
            Err(CodecError::NotGzip(_))
        ));
        let not_json = gzip_bytes(b"{\"format\": 1, oops");
        assert!(matches!(
            decode_hex_packet(&hex::encode(not_json), 1 << 20),
            Err(CodecError::NotJson(_))
        ));
        assert!(matches!(
            decode_hex_packet("1f8", 100),
            Err(CodecError::NotHex(_))
        ));
        assert!(matches!(
            decode_hex_packet(&hex::encode(b"{}"), 100),
            Err(CodecError::NotGzip(_))
        ));
    }

    #[test]
    fn encoded_packets_decode_to_the_same_packet() {
        let json = packet_json(300_000);
        let p: Packet = serde_json::from_str(&json).unwrap();
        let gz = encode_packet(&p);
        let back = decode_packet_bytes(&gz, 1 << 20).unwrap();
        let expected = serde_json::to_string(&p).unwrap();
        assert!(serde_json::to_string(&back).unwrap() == expected);
        // Any gzip reader accepts it.
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .unwrap();
        assert!(text == expected);
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
