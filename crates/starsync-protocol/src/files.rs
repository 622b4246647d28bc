//! Packet files (PROTOCOL §2, §7): a packet that travels by hand is its raw gzip bytes in a file
//! named `<sender_code>-to-<receiver_code>-<packet_no, 8 digits>.syncpkt`. Both the server CLI
//! and the node client name, order and write files with these functions, so the two sides
//! cannot disagree. The only I/O here is [`write_atomic`].

use std::path::Path;

/// Extension of packet files.
pub const PACKET_FILE_EXT: &str = "syncpkt";

/// `<sender_code>-to-<receiver_code>-<packet_no, 8 digits>.syncpkt`
pub fn packet_file_name(sender_code: &str, receiver_code: &str, packet_no: u64) -> String {
    format!("{sender_code}-to-{receiver_code}-{packet_no:08}.{PACKET_FILE_EXT}")
}

/// True for a path ending in `.syncpkt`.
pub fn is_packet_file(path: &Path) -> bool {
    path.extension()
        .map(|x| x == PACKET_FILE_EXT)
        .unwrap_or(false)
}

/// Splits a packet file name into its `<sender>-to-<receiver>` part and its packet number
/// (`A-to-server-00000042.syncpkt` → `("A-to-server", 42)`); `None` for other names.
pub fn parse_packet_file_name(path: &Path) -> Option<(String, u64)> {
    let stem = path.file_stem()?.to_str()?;
    let (route, no) = stem.rsplit_once('-')?;
    Some((route.to_string(), no.parse().ok()?))
}

/// Writes a packet file through a temporary file and a rename, so a crash never leaves half a
/// packet under the final name. The file is private to its owner (0600 on Unix): it holds
/// entity data. A failed write removes its temporary file and names the path in the error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("{PACKET_FILE_EXT}.tmp"));
    let result = write_private(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let name = packet_file_name("DESK-1", "server", 42);
        assert_eq!(name, "DESK-1-to-server-00000042.syncpkt");
        let path = Path::new("/tmp").join(&name);
        assert!(is_packet_file(&path));
        assert_eq!(
            parse_packet_file_name(&path),
            Some(("DESK-1-to-server".to_string(), 42))
        );
        assert_eq!(parse_packet_file_name(Path::new("notes.syncpkt")), None);
    }
}
