//! Human-readable bundle summary for `ner-edge inspect`.

use std::fmt::Write;

use super::reader::Bundle;

/// Multi-line description of `bundle`: name, format version, file size, content id, tensor
/// table (name, dtype, shape, bytes, absolute offset), entity types (prototype row, source,
/// whether active by default), label-memory slots, then the metadata as pretty JSON.
///
/// The text is for people; its layout may change between releases.
pub fn describe(bundle: &Bundle) -> String {
    let meta = bundle.metadata();
    let mut s = String::new();
    let _ = writeln!(s, "bundle:          {}", bundle.name());
    let _ = writeln!(s, "format version:  {}", bundle.version());
    let _ = writeln!(
        s,
        "file size:       {} bytes ({})",
        bundle.file_len(),
        human(bundle.file_len())
    );
    let _ = writeln!(s, "content id:      {}", bundle.content_id());
    let enc = &meta.encoder;
    let _ = writeln!(
        s,
        "encoder:         {} layers={} hidden={} heads={} ffn={} vocab={} max_positions={} \
         type_dim={} weights={}",
        enc.architecture,
        enc.layers,
        enc.hidden,
        enc.heads,
        enc.intermediate,
        enc.vocab_size,
        enc.max_positions,
        enc.type_dim,
        enc.weight_dtype
    );
    let tk = &meta.tokenizer;
    let _ = writeln!(
        s,
        "tokenizer:       {}{}",
        tk.kind,
        match tk.kind.as_str() {
            "unigram" =>
                " (SentencePiece; words: \u{2581}-units, each CJK ideograph and wide punctuation \
                 mark alone)"
                    .to_string(),
            _ => format!(
                " (lowercase={} strip_accents={})",
                tk.lowercase, tk.strip_accents
            ),
        }
    );
    let _ = writeln!(
        s,
        "encoder input:   word pieces{}; windows of at most {} pieces{}",
        enc.shape_scheme
            .as_deref()
            .map(|scheme| format!(" + word shapes ({scheme})"))
            .unwrap_or_default(),
        enc.trained_window
            .unwrap_or(enc.max_positions.saturating_sub(2))
            .min(enc.max_positions.saturating_sub(2)),
        if enc.trained_window.is_some() {
            " (trained window)"
        } else {
            ""
        }
    );
    let gate = match bundle.tensor_info(crate::encoder::fusion::GATE_WEIGHT) {
        Ok(t) if t.shape.first() == Some(&(3 * enc.hidden)) => {
            "learned gate over both encodings and their squared difference \
             (predict --doc-context, jsonl/tsv context)"
        }
        Ok(_) => "learned gate over both encodings (predict --doc-context, jsonl/tsv context)",
        Err(_) => "none (the bundle tags without context)",
    };
    let _ = writeln!(s, "context fusion:  {gate}");
    let memory = crate::associated_memory::AssociatedMemory::from_bundle(
        bundle,
        enc.type_dim,
        meta.labels.types.len(),
    );
    let memory = match memory {
        Ok(Some(m)) => format!(
            "{} sentences, {} words; {} heads × {} key dims (predict --no-memory turns it off)",
            m.bank.sentences(),
            m.bank.words(),
            m.params.heads,
            m.params.key_dim
        ),
        Ok(None) => "none".to_string(),
        Err(e) => format!("unreadable: {e}"),
    };
    let _ = writeln!(s, "assoc. memory:   {memory}");
    let _ = writeln!(s, "encoder source:  {}", meta.provenance.encoder_source);
    let _ = writeln!(s, "created by:      {}", meta.provenance.created_by);

    let tensors = bundle.tensors();
    let _ = writeln!(s, "\ntensors ({}):", tensors.len());
    let width = tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let _ = writeln!(
        s,
        "  {:<width$}  {:<5}  {:<16}  {:>12}  {:>12}",
        "name", "dtype", "shape", "bytes", "offset"
    );
    for t in tensors {
        let shape = format!("{:?}", t.shape);
        let _ = writeln!(
            s,
            "  {:<width$}  {:<5}  {:<16}  {:>12}  {:>12}",
            t.name,
            t.dtype.name(),
            shape,
            t.len,
            t.offset
        );
    }

    let types = &meta.labels.types;
    let _ = writeln!(s, "\nentity types ({}):", types.len());
    let width = types.iter().map(|t| t.name.len()).max().unwrap_or(0).max(4);
    let _ = writeln!(
        s,
        "  {:>4}  {:<width$}  {:<7}  {:<16}  description",
        "row", "name", "default", "source"
    );
    for t in types {
        let active = meta.labels.default_active.iter().any(|a| a == &t.name);
        let _ = writeln!(
            s,
            "  {:>4}  {:<width$}  {:<7}  {:<16}  {}",
            t.prototype_row,
            t.name,
            if active { "active" } else { "-" },
            if t.source.is_empty() { "-" } else { &t.source },
            t.description
        );
    }

    let mem = &meta.label_memory;
    let _ = writeln!(
        s,
        "\nlabel memory: capacity {} rows per slot, {} slots",
        mem.capacity,
        mem.slots.len()
    );
    for slot in &mem.slots {
        let _ = writeln!(
            s,
            "  {:<width$}  {:<16}  rows {}..{} ({})",
            slot.type_name,
            if slot.source.is_empty() {
                "-"
            } else {
                &slot.source
            },
            slot.first_row,
            slot.first_row.saturating_add(slot.rows),
            slot.rows
        );
    }

    let json = serde_json::to_string_pretty(meta).unwrap_or_else(|e| format!("<unprintable: {e}>"));
    let _ = writeln!(s, "\nmetadata:\n{json}");
    s
}

fn human(n: usize) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}
