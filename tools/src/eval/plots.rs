//! SVG pictures of evaluation results (plotters, SVG backend only).
//!
//! Every function returns the SVG document as a string; callers write it where the report
//! links it. Scores are drawn in percent.

use anyhow::{anyhow, Result};
use ner_edge_corpus::metrics::Prf;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Confusion;

const FONT: &str = "sans-serif";
const ROW: u32 = 22;
const LABEL_W: u32 = 190;
const BAR_W: u32 = 420;
const TOP: u32 = 40;
const BAR_COLOR: RGBColor = RGBColor(66, 110, 180);
const PRECISION_COLOR: RGBColor = RGBColor(66, 110, 180);
const RECALL_COLOR: RGBColor = RGBColor(230, 140, 40);

fn err(what: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing {what}: {e}")
}

fn text_style(size: u32, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).pos(Pos::new(h, v))
}

fn clip_label(s: &str) -> String {
    const MAX: usize = 26;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX - 1).collect();
        t.push('…');
        t
    }
}

/// Horizontal bars of F1 per type (rows in the order given), with the value printed.
pub fn per_type_f1(title: &str, rows: &[(String, Prf)]) -> Result<String> {
    let height = TOP + ROW * rows.len().max(1) as u32 + 30;
    let width = LABEL_W + BAR_W + 70;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(title, e))?;
        draw_title(&root, title)?;
        draw_axis(&root, rows.len())?;
        for (i, (name, prf)) in rows.iter().enumerate() {
            let y = (TOP + ROW * i as u32) as i32;
            label(&root, name, y + ROW as i32 / 2)?;
            let x1 = LABEL_W as i32 + (prf.f1 * f64::from(BAR_W)).round() as i32;
            root.draw(&Rectangle::new(
                [(LABEL_W as i32, y + 3), (x1, y + ROW as i32 - 3)],
                BAR_COLOR.filled(),
            ))
            .map_err(|e| err(title, e))?;
            root.draw(&Text::new(
                format!("{:.1}", 100.0 * prf.f1),
                (x1 + 4, y + ROW as i32 / 2),
                text_style(12, HPos::Left, VPos::Center),
            ))
            .map_err(|e| err(title, e))?;
        }
        root.present().map_err(|e| err(title, e))?;
    }
    Ok(svg)
}

/// Two horizontal bars per type: precision and recall.
pub fn precision_recall(title: &str, rows: &[(String, Prf)]) -> Result<String> {
    let row = ROW + 12;
    let height = TOP + row * rows.len().max(1) as u32 + 50;
    let width = LABEL_W + BAR_W + 70;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(title, e))?;
        draw_title(&root, title)?;
        for (i, (name, prf)) in rows.iter().enumerate() {
            let y = (TOP + row * i as u32) as i32;
            label(&root, name, y + row as i32 / 2)?;
            for (k, (value, color)) in
                [(prf.precision, PRECISION_COLOR), (prf.recall, RECALL_COLOR)]
                    .into_iter()
                    .enumerate()
            {
                let y0 = y + 3 + k as i32 * (row as i32 - 6) / 2;
                let y1 = y0 + (row as i32 - 6) / 2 - 1;
                let x1 = LABEL_W as i32 + (value * f64::from(BAR_W)).round() as i32;
                root.draw(&Rectangle::new(
                    [(LABEL_W as i32, y0), (x1, y1)],
                    color.filled(),
                ))
                .map_err(|e| err(title, e))?;
                root.draw(&Text::new(
                    format!("{:.1}", 100.0 * value),
                    (x1 + 4, (y0 + y1) / 2),
                    text_style(11, HPos::Left, VPos::Center),
                ))
                .map_err(|e| err(title, e))?;
            }
        }
        let ly = (TOP + row * rows.len().max(1) as u32 + 20) as i32;
        for (k, (name, color)) in [("precision", PRECISION_COLOR), ("recall", RECALL_COLOR)]
            .into_iter()
            .enumerate()
        {
            let x = LABEL_W as i32 + 120 * k as i32;
            root.draw(&Rectangle::new(
                [(x, ly - 6), (x + 14, ly + 6)],
                color.filled(),
            ))
            .map_err(|e| err(title, e))?;
            root.draw(&Text::new(
                name,
                (x + 20, ly),
                text_style(12, HPos::Left, VPos::Center),
            ))
            .map_err(|e| err(title, e))?;
        }
        root.present().map_err(|e| err(title, e))?;
    }
    Ok(svg)
}

/// A gold × predicted grid of the exact-boundary, wrong-type spans, shaded by count.
/// `types` orders the rows and columns; pairs with other names are left out.
pub fn confusion(title: &str, types: &[String], c: &Confusion) -> Result<String> {
    let cell: u32 = 34;
    let n = types.len().max(1) as u32;
    let left = LABEL_W;
    let top = TOP + 150;
    let width = left + cell * n + 40;
    let height = top + cell * n + 40;
    let max = types
        .iter()
        .flat_map(|g| types.iter().map(move |p| (g, p)))
        .map(|(g, p)| c.get(g, p))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(title, e))?;
        draw_title(&root, title)?;
        root.draw(&Text::new(
            "rows: gold type; columns: predicted type",
            (10, TOP as i32 - 8),
            text_style(12, HPos::Left, VPos::Center),
        ))
        .map_err(|e| err(title, e))?;
        for (j, name) in types.iter().enumerate() {
            let x = (left + cell * j as u32 + cell / 2) as i32;
            let style = TextStyle::from((FONT, 12).into_font())
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Left, VPos::Center));
            root.draw(&Text::new(clip_label(name), (x, top as i32 - 6), style))
                .map_err(|e| err(title, e))?;
        }
        for (i, gold) in types.iter().enumerate() {
            let y = (top + cell * i as u32) as i32;
            label(&root, gold, y + cell as i32 / 2)?;
            for (j, pred) in types.iter().enumerate() {
                let x = (left + cell * j as u32) as i32;
                let count = if i == j { 0 } else { c.get(gold, pred) };
                let shade = 1.0 - 0.85 * count as f64 / max as f64;
                let fill = if i == j {
                    RGBColor(235, 235, 235)
                } else {
                    RGBColor(
                        (255.0 * shade) as u8,
                        (255.0 * (0.35 + 0.65 * shade)) as u8,
                        255,
                    )
                };
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32 - 1, y + cell as i32 - 1)],
                    fill.filled(),
                ))
                .map_err(|e| err(title, e))?;
                if count > 0 {
                    root.draw(&Text::new(
                        count.to_string(),
                        (x + cell as i32 / 2, y + cell as i32 / 2),
                        text_style(11, HPos::Center, VPos::Center),
                    ))
                    .map_err(|e| err(title, e))?;
                }
            }
        }
        root.present().map_err(|e| err(title, e))?;
    }
    Ok(svg)
}

/// F1 (percent) against the number of shots, one line per named series of `(shots, F1)`
/// points (F1 as a fraction).
pub fn f1_vs_shots(title: &str, series: &[(String, Vec<(usize, f64)>)]) -> Result<String> {
    let max_shots = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(k, _)| k))
        .max()
        .unwrap_or(1)
        .max(1);
    let colors = [
        BAR_COLOR,
        RECALL_COLOR,
        RGBColor(60, 150, 80),
        RGBColor(170, 60, 60),
    ];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(title, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(0.5f64..max_shots as f64 + 0.5, 0f64..100f64)
            .map_err(|e| err(title, e))?;
        chart
            .configure_mesh()
            .x_desc("shots per type (K)")
            .y_desc("F1 (%)")
            .x_labels(max_shots.min(10))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()
            .map_err(|e| err(title, e))?;
        for (i, (name, points)) in series.iter().enumerate() {
            let color = colors[i % colors.len()];
            let pts: Vec<(f64, f64)> = points.iter().map(|&(k, f)| (k as f64, 100.0 * f)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| err(title, e))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
                .map_err(|e| err(title, e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(title, e))?;
        root.present().map_err(|e| err(title, e))?;
    }
    Ok(svg)
}

fn draw_title(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
) -> Result<()> {
    root.draw(&Text::new(
        title.to_string(),
        (10, 16),
        text_style(15, HPos::Left, VPos::Center),
    ))
    .map_err(|e| err(title, e))
}

fn draw_axis(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    rows: usize,
) -> Result<()> {
    let bottom = (TOP + ROW * rows.max(1) as u32) as i32;
    for pct in [0, 25, 50, 75, 100] {
        let x = LABEL_W as i32 + (f64::from(BAR_W) * f64::from(pct) / 100.0) as i32;
        root.draw(&PathElement::new(
            vec![(x, TOP as i32 - 4), (x, bottom)],
            RGBColor(210, 210, 210),
        ))
        .map_err(|e| err("axis", e))?;
        root.draw(&Text::new(
            format!("{pct}"),
            (x, bottom + 12),
            text_style(11, HPos::Center, VPos::Center),
        ))
        .map_err(|e| err("axis", e))?;
    }
    Ok(())
}

fn label(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    name: &str,
    y: i32,
) -> Result<()> {
    root.draw(&Text::new(
        clip_label(name),
        (LABEL_W as i32 - 8, y),
        text_style(12, HPos::Right, VPos::Center),
    ))
    .map_err(|e| err(name, e))
}
