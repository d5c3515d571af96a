//! Showcase charts as SVG, drawn with plotters (its SVG backend only) from
//! a [`ReleasedField`]: the very numbers the JSON answer releases, so a
//! chart can show nothing the rules hold back. A suppressed bar is drawn
//! as an empty outline marked `suppressed`, with no height.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use tre_domain::showcase::ReleasedField;

const WIDTH: u32 = 760;
const HEIGHT: u32 = 420;
/// The fill of released bars.
const BAR: RGBColor = RGBColor(46, 110, 158);
/// The outline of suppressed bars.
const HIDDEN: RGBColor = RGBColor(150, 150, 150);

/// The chart of one field, or why it cannot be drawn.
pub fn svg(field: &ReleasedField, version: u32, note: &str) -> Result<String, String> {
    let mut out = String::new();
    draw(&mut out, field, version, note)?;
    Ok(out)
}

fn draw(out: &mut String, field: &ReleasedField, version: u32, note: &str) -> Result<(), String> {
    fn text(e: impl std::fmt::Display) -> String {
        e.to_string()
    }
    let root = SVGBackend::with_string(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(text)?;
    let cells = &field.cells;
    let top = cells
        .iter()
        .filter_map(|c| c.count.count)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}.{} (inventory version {version})",
                field.dataset, field.field
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(56)
        .y_label_area_size(64)
        .build_cartesian_2d((0..cells.len()).into_segmented(), 0u64..top + top / 8 + 1)
        .map_err(text)?;
    let label_of = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => cells.get(*i).map(|c| c.label.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(cells.len())
        .x_label_formatter(&label_of)
        .y_desc("participants")
        .x_desc(note)
        .draw()
        .map_err(text)?;
    // released bars, filled to their released height
    chart
        .draw_series(cells.iter().enumerate().filter_map(|(i, cell)| {
            cell.count.count.map(|n| {
                Rectangle::new(
                    [(SegmentValue::Exact(i), 0), (SegmentValue::Exact(i + 1), n)],
                    BAR.filled(),
                )
            })
        }))
        .map_err(text)?;
    // suppressed bars: an outline of no height and a word, nothing more
    chart
        .draw_series(
            cells
                .iter()
                .enumerate()
                .filter(|(_, cell)| cell.count.suppressed)
                .map(|(i, _)| {
                    Text::new(
                        "suppressed",
                        (SegmentValue::CenterOf(i), top / 20 + 1),
                        ("sans-serif", 12).into_font().color(&HIDDEN),
                    )
                }),
        )
        .map_err(text)?;
    root.present().map_err(text)?;
    Ok(())
}
