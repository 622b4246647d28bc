//! Packet files (PROTOCOL §2, §7): a packet that travels by hand is its raw gzip bytes in a file
//! named `<sender_code>-to-<receiver_code>-<packet_no, 8 digits>.syncpkt`. Both the server CLI
//! and the node client name, order and write files with these functions, so the two sides
//! cannot disagree. The only I/O here is writing ([`write_atomic`]) and reading
//! ([`read_packet_file`]) one packet file.

use std::io::Read;
use std::path::{Path, PathBuf};

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

/// Why a packet file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PacketFileError {
    #[error("{path} is {kind}, not a regular file: packet files are regular files")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "{path} is {size} bytes, larger than the limit of {limit} bytes for a packet file \
         ({setting})"
    )]
    TooLarge {
        path: PathBuf,
        /// The size seen (at least `limit + 1` when the file grew while it was read).
        size: u64,
        limit: u64,
        /// The setting that sets `limit`, for the operator who needs a larger one.
        setting: &'static str,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// True for a path that is a regular file, following symbolic links (a link to a packet file
/// is fine; a link to `/dev/zero` is not). Directory walks pick packet files with this.
pub fn is_regular_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Checks, without opening it, that `path` is a regular file of at most `limit` bytes (what
/// [`read_packet_file`] requires), so a command can refuse bad arguments before it applies any.
pub fn check_packet_file(
    path: &Path,
    limit: u64,
    setting: &'static str,
) -> Result<(), PacketFileError> {
    let meta = std::fs::metadata(path).map_err(|source| PacketFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    check_metadata(path, &meta, limit, setting)
}

/// Reads a packet file of at most `limit` bytes. Only regular files are opened, checked before
/// opening (opening a FIFO would block until a writer comes; a device such as `/dev/zero` never
/// ends), and the read stops one byte past `limit` whatever the size said, so no file can make
/// the reader use more memory than the limit. `setting` names the limit in the error.
pub fn read_packet_file(
    path: &Path,
    limit: u64,
    setting: &'static str,
) -> Result<Vec<u8>, PacketFileError> {
    let io = |source| PacketFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    check_packet_file(path, limit, setting)?;
    let file = std::fs::File::open(path).map_err(io)?;
    // The path may have been replaced between the two calls.
    check_metadata(path, &file.metadata().map_err(io)?, limit, setting)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(PacketFileError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit,
            setting,
        });
    }
    Ok(bytes)
}

fn check_metadata(
    path: &Path,
    meta: &std::fs::Metadata,
    limit: u64,
    setting: &'static str,
) -> Result<(), PacketFileError> {
    if !meta.is_file() {
        return Err(PacketFileError::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(&meta.file_type()),
        });
    }
    if meta.len() > limit {
        return Err(PacketFileError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
            setting,
        });
    }
    Ok(())
}

/// What a non-regular file is, for messages.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
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

    #[test]
    fn reading_stops_at_the_limit_and_refuses_devices() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.syncpkt");
        std::fs::write(&f, [7u8; 100]).unwrap();
        assert_eq!(read_packet_file(&f, 100, "x").unwrap().len(), 100);
        let err = read_packet_file(&f, 99, "the_limit").unwrap_err();
        assert!(matches!(
            err,
            PacketFileError::TooLarge {
                size: 100,
                limit: 99,
                ..
            }
        ));
        assert!(err.to_string().contains("the_limit"), "{err}");
        let err = read_packet_file(dir.path(), 99, "x").unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        #[cfg(unix)]
        {
            let err = read_packet_file(Path::new("/dev/zero"), 1 << 20, "x").unwrap_err();
            assert!(err.to_string().contains("character device"), "{err}");
        }
    }
}
