//! Offline transfer on the node (PROTOCOL §7): `export` writes the node's unacknowledged
//! packets as `.syncpkt` files to carry by hand; `import` applies the server's packet files in
//! `packet_no` order with exactly the rules of an HTTP answer.

use std::path::{Path, PathBuf};

use super::types::{ExportReport, ExportedFile, ImportProgress, ImportReport, ImportedFile};
use super::{Node, NodeError};
use starsync_protocol::decode_packet_bytes;
use starsync_protocol::files::{
    check_packet_file, is_packet_file, is_regular_file, packet_file_name, parse_packet_file_name,
    read_packet_file, write_atomic,
};

/// The setting that bounds a packet file on the node, named in errors.
const FILE_LIMIT_SETTING: &str = "max_packet_bytes (`starsync-node config max_packet_bytes N`)";

/// `<node_code>-to-<server_code>-<packet_no, 8 digits>.syncpkt`
pub fn node_packet_file_name(node_code: &str, server_code: &str, packet_no: i64) -> String {
    packet_file_name(node_code, server_code, packet_no as u64)
}

/// `<server_code>-to-<node_code>-<packet_no, 8 digits>.syncpkt`
pub fn server_packet_file_name(server_code: &str, node_code: &str, packet_no: i64) -> String {
    packet_file_name(server_code, node_code, packet_no as u64)
}

/// The packet number at the end of a file name (`…-00000042.syncpkt` → 42).
fn packet_no_of(path: &Path) -> Option<u64> {
    parse_packet_file_name(path).map(|(_, no)| no)
}

impl Node {
    /// Writes every packet the server has not acknowledged yet into `out` (numbering packets
    /// for pending changes first, and an empty one when only the acknowledgment has news).
    /// Files are immutable packets: exporting again rewrites the same bytes, and the server
    /// applies each number once. The files are written before the numbering commits: when one
    /// cannot be written (read-only or full disk), nothing is numbered and the files of packets
    /// this call numbered are removed, so a failed export changes nothing.
    pub fn export(&self, out: &Path) -> Result<ExportReport, NodeError> {
        let _one_at_a_time = self.inner.sync_lock.lock();
        let cfg = self.config()?;
        std::fs::create_dir_all(out).map_err(|e| {
            NodeError::Invalid(format!(
                "cannot create output directory {}: {e}",
                out.display()
            ))
        })?;
        let mut report = ExportReport::default();
        let mut new_files = Vec::new();
        let result = self
            .inner
            .store
            .export_packets(&cfg, &mut |p, numbered_now| {
                let path = out.join(node_packet_file_name(
                    &cfg.code,
                    &cfg.server_code,
                    p.packet_no,
                ));
                write_atomic(&path, &p.bytes).map_err(|e| NodeError::Invalid(e.to_string()))?;
                if numbered_now {
                    new_files.push(path.clone());
                }
                report.files.push(ExportedFile {
                    file: path.display().to_string(),
                    packet_no: p.packet_no,
                    changes: p.change_count,
                    bytes: p.bytes.len(),
                });
                Ok(())
            });
        if let Err(e) = result {
            for f in &new_files {
                let _ = std::fs::remove_file(f);
            }
            return Err(e);
        }
        self.emit_status();
        Ok(report)
    }

    /// Applies server packet files (a directory: its `*-to-<this node's code>-*.syncpkt`
    /// regular files) in `packet_no` order. Files already applied are skipped (their
    /// acknowledgment still counts), so importing a folder twice is harmless. Every file must be
    /// a regular file of at most `max_packet_bytes`, checked for all of them before any is
    /// applied: a FIFO or a device given by name is refused rather than read forever.
    pub fn import(
        &self,
        paths: &[PathBuf],
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportReport, NodeError> {
        let _one_at_a_time = self.inner.sync_lock.lock();
        let cfg = self.config()?;
        let wanted = format!("-to-{}-", cfg.code);
        let mut files = Vec::new();
        for p in paths {
            if p.is_dir() {
                let entries = std::fs::read_dir(p)
                    .map_err(|e| NodeError::Invalid(format!("cannot read {}: {e}", p.display())))?;
                for e in entries {
                    let f = e?.path();
                    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if is_packet_file(&f) && name.contains(&wanted) && is_regular_file(&f) {
                        files.push(f);
                    }
                }
            } else if std::fs::symlink_metadata(p).is_ok() {
                files.push(p.clone());
            } else {
                return Err(NodeError::NotFound(format!(
                    "{} does not exist",
                    p.display()
                )));
            }
        }
        if files.is_empty() {
            return Err(NodeError::NotFound(format!(
                "no server packet files for {} (named *{wanted}*.syncpkt) in {}",
                cfg.code,
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        files.sort_by_key(|f| (packet_no_of(f).unwrap_or(u64::MAX), f.clone()));
        files.dedup();
        let limit = cfg.max_packet_bytes.max(0) as u64;
        for f in &files {
            check_packet_file(f, limit, FILE_LIMIT_SETTING)
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
        }
        let total = files.len();
        let mut report = ImportReport::default();
        for (i, f) in files.iter().enumerate() {
            let bytes = read_packet_file(f, limit, FILE_LIMIT_SETTING)
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
            progress(ImportProgress::File {
                index: i + 1,
                total,
                path: f.display().to_string(),
                bytes: bytes.len() as u64,
            });
            let packet = decode_packet_bytes(&bytes, cfg.max_packet_bytes as usize)
                .map_err(|e| NodeError::Invalid(format!("{}: {e}", f.display())))?;
            drop(bytes);
            let before = self.inner.store.state()?.received_packet_no;
            let outcome = self
                .apply_packet(&cfg, &packet, None, &mut |done, total| {
                    progress(ImportProgress::Changes { done, total })
                })
                .map_err(|e| match e {
                    NodeError::Protocol(m) => NodeError::Invalid(format!("{}: {m}", f.display())),
                    other => other,
                })?;
            report.received += outcome.received;
            report.kept_local += outcome.kept_local;
            report.files.push(ImportedFile {
                file: f.display().to_string(),
                packet_no: packet.packet_no,
                skipped: (packet.packet_no as i64) <= before,
                received: outcome.received,
                kept_local: outcome.kept_local,
                acked_packet_no: packet.ack_packet_no,
            });
        }
        self.inner.store.mark_imported()?;
        self.emit_status();
        Ok(report)
    }
}
