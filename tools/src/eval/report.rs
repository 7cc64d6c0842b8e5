//! Markdown reports of [`EvalResult`]s, with their SVG pictures.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ner_edge::bundle::Bundle;

use super::{plots, EvalResult};

/// The bundle's identity and provenance as a Markdown list (DESIGN §7: every report states
/// where the model came from).
pub fn provenance(bundle: &Bundle) -> String {
    let meta = bundle.metadata();
    let p = &meta.provenance;
    let or_none = |s: &str| {
        if s.is_empty() {
            "(none)".to_string()
        } else {
            format!("`{s}`")
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "- bundle: `{}`", bundle.name());
    let _ = writeln!(out, "- content id: `{}`", bundle.content_id());
    let _ = writeln!(
        out,
        "- encoder: {} (sha256 {}), weights {}",
        p.encoder_source,
        or_none(&p.encoder_sha256),
        meta.encoder.weight_dtype
    );
    let corpora = if p.training_corpora.is_empty() {
        "(none recorded)".to_string()
    } else {
        p.training_corpora.join(", ")
    };
    let _ = writeln!(out, "- training corpora: {corpora}");
    let _ = writeln!(
        out,
        "- training data sha256: {}",
        or_none(&p.training_data_sha256)
    );
    let _ = writeln!(out, "- created by: {}", p.created_by);
    if !p.notes.is_empty() {
        let _ = writeln!(out, "- notes: {}", p.notes);
    }
    out
}

/// Where the pictures of results go: a directory, and how the report links into it.
pub struct Pictures<'a> {
    /// Directory the SVG files are written to (created when missing).
    pub dir: &'a Path,
    /// The same directory as the report refers to it (relative to the report).
    pub link: &'a str,
}

/// Writes the pictures of `r` into `pics` and returns `(caption, link)` pairs: per-type F1,
/// precision/recall per type, and, when any span was mistyped, the type confusion grid.
pub fn write_pictures(r: &EvalResult, pics: &Pictures<'_>) -> Result<Vec<(String, String)>> {
    std::fs::create_dir_all(pics.dir)
        .with_context(|| format!("creating {}", pics.dir.display()))?;
    let rows = r.scorer.per_type();
    let mut out = Vec::new();
    let mut put = |suffix: &str, caption: String, svg: String| -> Result<()> {
        let file = format!("{}-{suffix}.svg", r.name);
        let path: PathBuf = pics.dir.join(&file);
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        out.push((
            caption,
            format!("{}/{file}", pics.link.trim_end_matches('/')),
        ));
        Ok(())
    };
    put(
        "f1",
        format!("{}: F1 per type", r.name),
        plots::per_type_f1(&format!("{}: F1 per type (%)", r.name), &rows)?,
    )?;
    put(
        "pr",
        format!("{}: precision and recall per type", r.name),
        plots::precision_recall(&format!("{}: precision / recall (%)", r.name), &rows)?,
    )?;
    if r.confusion.total() > 0 {
        let types: Vec<String> = rows.iter().map(|(t, _)| t.clone()).collect();
        put(
            "confusion",
            format!("{}: type confusions", r.name),
            plots::confusion(
                &format!("{}: exact boundaries, wrong type", r.name),
                &types,
                &r.confusion,
            )?,
        )?;
    }
    Ok(out)
}

fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

/// One result as Markdown: a `###` heading, the data and protocol, the scores, the per-type
/// table, the most frequent type confusions and links to `pictures`.
pub fn result(r: &EvalResult, pictures: &[(String, String)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### {}\n", r.name);
    let _ = writeln!(
        out,
        "- data: `{}` ({} sentences scored, {} words, {:.1} s)",
        r.data, r.sentences, r.words, r.seconds
    );
    let _ = writeln!(out, "- protocol: {}", r.protocol);
    for note in &r.notes {
        let _ = writeln!(out, "- {note}");
    }
    let micro = r.scorer.micro();
    let _ = writeln!(out, "\n| score | value |\n|---|---|");
    let _ = writeln!(
        out,
        "| micro precision / recall / F1 (%) | {} / {} / **{}** |",
        pct(micro.precision),
        pct(micro.recall),
        pct(micro.f1)
    );
    let _ = writeln!(
        out,
        "| entities: gold / predicted / correct | {} / {} / {} |",
        micro.gold, micro.predicted, micro.tp
    );
    if let Some(s) = &r.episodes {
        let _ = writeln!(
            out,
            "| per-episode F1, mean ± std (%) | {} ± {} ({} episodes, {} without entities) |",
            pct(s.mean_f1),
            pct(s.std_f1),
            s.episodes,
            s.empty
        );
    }
    let _ = writeln!(
        out,
        "\n| type | gold | predicted | correct | P (%) | R (%) | F1 (%) |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for (kind, p) in r.scorer.per_type() {
        let _ = writeln!(
            out,
            "| {kind} | {} | {} | {} | {} | {} | {} |",
            p.gold,
            p.predicted,
            p.tp,
            pct(p.precision),
            pct(p.recall),
            pct(p.f1)
        );
    }
    let pairs = r.confusion.pairs();
    if !pairs.is_empty() {
        let _ = writeln!(
            out,
            "\nExact boundaries but wrong type: {} spans; most frequent:\n\n| gold | predicted as | spans |\n|---|---|---:|",
            r.confusion.total()
        );
        for (g, p, n) in pairs.iter().take(10) {
            let _ = writeln!(out, "| {g} | {p} | {n} |");
        }
    }
    if !pictures.is_empty() {
        out.push('\n');
        for (caption, link) in pictures {
            let _ = writeln!(out, "![{caption}]({link})");
        }
    }
    out
}
