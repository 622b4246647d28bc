//! Offline transfer on the server: `export` and `import` of `.syncpkt` files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

use super::CliResult;
use crate::engine::Engine;
use starsync_protocol::files::{
    is_packet_file, is_regular_file, packet_file_name, parse_packet_file_name, read_packet_file,
    write_atomic,
};
use starsync_protocol::{codec, decode_packet_bytes};

pub fn export(engine: &Engine, node: &str, out: &Path, json_out: bool) -> CliResult {
    let code = engine.find_node(node)?.code;
    std::fs::create_dir_all(out)
        .map_err(|e| format!("cannot create output directory {}: {e}", out.display()))?;
    // The file is written inside the export's transaction: a write that fails (read-only or
    // full disk) rolls the packet number back. `written` covers the rare commit failure after
    // a good write: that file would hold a packet the server never numbered, so it goes too.
    let mut written: Option<(PathBuf, usize)> = None;
    let exported = engine.export_packet(&code, |node, packet| {
        let bytes = codec::encode_packet(packet);
        let path = out.join(packet_file_name(
            engine.server_code(),
            &node.code,
            packet.packet_no,
        ));
        write_atomic(&path, &bytes)?;
        written = Some((path, bytes.len()));
        Ok(())
    });
    let packet = match exported {
        Ok((_, packet)) => packet,
        Err(e) => {
            if let Some((path, _)) = &written {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    let (path, len) = written.ok_or("the export committed without writing its file")?;
    if json_out {
        println!(
            "{}",
            json!({"file": path, "packet_no": packet.packet_no, "changes": packet.changes.len(),
                   "more": packet.more, "bytes": len})
        );
    } else {
        println!(
            "wrote {} (packet {}, {} changes, {} bytes{})",
            path.display(),
            packet.packet_no,
            packet.changes.len(),
            len,
            if packet.more {
                "; more pending: import the node's acknowledgment, then export again, or use --max-changes"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Expands directories into their `.syncpkt` regular files (a FIFO or device named like a
/// packet is not one), ordered by (sender, packet_no). Paths named explicitly stay as given:
/// reading them says what is wrong with them.
pub fn collect_packet_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| is_packet_file(f) && is_regular_file(f))
                .collect();
            files.sort_by_key(|f| file_order_key(f));
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Sort key from the file name: (sender part, packet number), unparsable names last.
fn file_order_key(path: &Path) -> (String, u64, String) {
    let name = path.display().to_string();
    match parse_packet_file_name(path) {
        Some((route, no)) => (route, no, name),
        None => (name.clone(), u64::MAX, name),
    }
}

pub fn import(engine: &Engine, paths: &[PathBuf], json_out: bool) -> CliResult {
    let files = collect_packet_files(paths)?;
    if files.is_empty() {
        return Err("no .syncpkt files found".into());
    }
    let total = files.len();
    let mut failed = 0usize;
    let (mut applied, mut duplicates, mut errors, mut conflicts, mut processed) =
        (0, 0, 0u64, 0u64, 0u64);
    let mut results = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let outcome = (|| -> Result<_, Box<dyn std::error::Error>> {
            // A packet file is at most what HTTP accepts as a body (the hex envelope is larger
            // than the gzip bytes, so every packet that fits HTTP fits here too).
            let bytes = read_packet_file(
                file,
                engine.settings().server.max_body_bytes as u64,
                "server.max_body_bytes, STARSYNC_MAX_BODY_BYTES",
            )?;
            if bytes.len() > 4 * 1024 * 1024 && !json_out {
                eprintln!(
                    "[{}/{}] decoding {} ({:.1} MiB)…",
                    i + 1,
                    total,
                    file.display(),
                    bytes.len() as f64 / 1048576.0
                );
            }
            let packet = decode_packet_bytes(&bytes, engine.settings().server.max_packet_bytes)?;
            let packet_no = packet.packet_no;
            let (code, report) = engine.import_packet(packet)?;
            Ok((code, packet_no, report))
        })();
        match outcome {
            Ok((code, packet_no, r)) => {
                // A duplicate's answer repeats its original errors and conflicts; the totals
                // count what this import applied.
                if r.duplicate {
                    duplicates += 1;
                } else {
                    applied += 1;
                    errors += r.error_count;
                    conflicts += r.conflict_count;
                    processed += r.processed_count;
                }
                if json_out {
                    results.push(json!({"file": file, "node": code, "packet_no": packet_no,
                        "duplicate": r.duplicate, "processed": r.processed_count,
                        "errors": r.errors, "conflicts": r.conflicts}));
                } else {
                    println!(
                        "[{}/{}] {}: node {} packet {}: {}",
                        i + 1,
                        total,
                        file.display(),
                        code,
                        packet_no,
                        if r.duplicate {
                            "duplicate, already applied".to_string()
                        } else {
                            format!(
                                "{} applied, {} rejected, {} conflicts",
                                r.processed_count, r.error_count, r.conflict_count
                            )
                        }
                    );
                    for e in &r.errors {
                        println!(
                            "    rejected {} {}/{}: {}",
                            e.change_id, e.entity_type, e.entity_uuid, e.message
                        );
                    }
                }
            }
            Err(e) => {
                failed += 1;
                if json_out {
                    results.push(json!({"file": file, "error": e.to_string()}));
                } else {
                    println!("[{}/{}] {}: FAILED: {e}", i + 1, total, file.display());
                }
            }
        }
    }
    if json_out {
        println!(
            "{}",
            json!({"files": results, "applied": applied, "duplicates": duplicates,
                   "failed": failed, "processed": processed, "errors": errors, "conflicts": conflicts})
        );
    } else {
        println!(
            "import: {applied} applied, {duplicates} duplicates, {failed} failed; {processed} changes processed, {errors} rejected, {conflicts} conflicts"
        );
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
