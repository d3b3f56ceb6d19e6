//! Figures: line charts with 95% confidence bands, written as PNG and SVG.
//!
//! Text is rendered by plotters' `ab_glyph` backend from the DejaVu Sans
//! font embedded in the binary (the `dejavu` crate), so figures render on a
//! machine without fontconfig or system fonts. Every number drawn also goes
//! to the experiment's CSV files; a figure never holds data the CSVs lack.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::{Error, Result};

/// One line: points (x, y) with an optional band [low, high] per point.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Same length as `points` if present (NaN bounds: no band there).
    pub band: Option<Vec<(f64, f64)>>,
    pub style: LineKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// A solid line with point markers.
    Solid,
    /// A dashed reference line (e.g. 1/√n, or gen 0's longest plan).
    Reference,
    /// Markers only, no line: a scatter of independent points (batches,
    /// tasks).
    Points,
    /// Bars from 0 (a discrete distribution, e.g. plan lengths); the bar
    /// series of a figure stand side by side in each x slot.
    Bars,
}

/// A chart: title, axis labels (with units), series, axis kinds.
#[derive(Clone, Debug)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub log_x: bool,
    pub log_y: bool,
    /// Bounds of the y axis (e.g. [0, 1] for probabilities): the axis fits
    /// the data but never extends past them, and bands are clipped to them
    /// (a confidence interval of a probability never leaves [0, 1]).
    pub y_bounds: Option<(f64, f64)>,
    /// What the shaded bands are, for the legend (e.g. "shaded: 95% CI
    /// over 5 seeds"); None if no series has a band or it goes unsaid.
    pub band_note: Option<String>,
    /// x takes integer values (generations): integer tick labels.
    pub integer_x: bool,
    /// The y axis exactly, where several figures must share one range
    /// (the per-bucket figures of every arm); `None`: from the data.
    pub y_exact: Option<(f64, f64)>,
    /// Text drawn beside points of the plot, at (x, y) in data units
    /// (e.g. each point's parameter value).
    pub annotations: Vec<(f64, f64, String)>,
    /// Names of the integer y values 0, 1, …, drawn as the y tick labels
    /// (a categorical axis: the frontier's size buckets); None: numbers.
    pub y_ticks: Option<Vec<String>>,
}

#[derive(Clone, Copy)]
enum Axis {
    X,
    Y,
}

const SIZE: (u32, u32) = (1000, 650);
/// Most tick labels on an integer x axis.
const MAX_X_LABELS: usize = 25;
const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TrueType file; failure here would be
        // a build defect, and figures would only lose their text.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// A colour-blind-safe palette (Okabe & Ito 2008).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// Something drawn on a figure's canvas, by any plotters backend.
trait Drawable {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

/// Writes `<stem>.svg` and `<stem>.png` of `what` into `dir`, each
/// atomically.
fn render(what: &impl Drawable, dir: &Path, stem: &str) -> Result<()> {
    register_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        what.draw(&root).map_err(|e| plot_error(dir, stem, e))?;
        root.present().map_err(|e| plot_error(dir, stem, e))?;
    }
    crate::output::write_atomic(&dir.join(format!("{stem}.svg")), svg.as_bytes())?;
    // The PNG encoder picks the format from the extension, so the
    // temporary file keeps `.png`; the rename makes the write atomic.
    let dest = dir.join(format!("{stem}.png"));
    // Created new under an unpredictable name (see `output`), so the
    // encoder writes a file of ours, never a planted link.
    let (tmp, _) = crate::output::create_temp(&dest, ".png").map_err(|e| Error::io(&dest, e))?;
    let drawn = (|| {
        let root = BitMapBackend::new(&tmp, SIZE).into_drawing_area();
        what.draw(&root).map_err(|e| plot_error(dir, stem, e))?;
        root.present().map_err(|e| plot_error(dir, stem, e))?;
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))
    })();
    if drawn.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    drawn
}

/// A grid of values in [0, 1] (rows × columns: sizes × generations),
/// drawn as cells shaded on one fixed scale (white 0 → dark blue 1), each
/// with its value written in it; an undefined (NaN) cell is left blank
/// with "–".
pub struct Heatmap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Column names, left to right.
    pub columns: Vec<String>,
    /// Row names, bottom to top.
    pub rows: Vec<String>,
    /// `cells[row][column]`.
    pub cells: Vec<Vec<f64>>,
    /// What the shading means, shown under the title.
    pub scale_label: String,
}

impl Heatmap {
    /// Writes `<stem>.png` and `<stem>.svg` into `dir`, each atomically.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        render(self, dir, stem)
    }
}

/// The shade of a value in [0, 1]: white to a dark blue.
fn shade(v: f64) -> RGBColor {
    let t = v.clamp(0.0, 1.0);
    let mix = |white: f64, dark: f64| (white + (dark - white) * t).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

impl Drawable for Heatmap {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let mut area = root.clone();
        for line in wrap(&self.title, TITLE_CHARS) {
            area = area.titled(&line, (FONT, 20))?;
        }
        area = area.titled(&self.scale_label, (FONT, 14))?;
        let (nc, nr) = (self.columns.len().max(1), self.rows.len().max(1));
        let mut chart = ChartBuilder::on(&area)
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(110)
            // A segmented 0..n has n + 1 segments (its end included).
            .build_cartesian_2d(
                (0..nc as i32 - 1).into_segmented(),
                (0..nr as i32 - 1).into_segmented(),
            )?;
        let name = |names: &[String], v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(nc)
            .y_labels(nr)
            .x_label_formatter(&|v| name(&self.columns, v))
            .y_label_formatter(&|v| name(&self.rows, v))
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()?;
        for (r, row) in self.cells.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let (c, r) = (c as i32, r as i32);
                let corners = [
                    (SegmentValue::Exact(c), SegmentValue::Exact(r)),
                    (SegmentValue::Exact(c + 1), SegmentValue::Exact(r + 1)),
                ];
                let fill = if v.is_finite() { shade(v) } else { WHITE };
                chart.draw_series(std::iter::once(Rectangle::new(
                    corners.clone(),
                    fill.filled(),
                )))?;
                chart.draw_series(std::iter::once(Rectangle::new(
                    corners,
                    RGBColor(200, 200, 200).stroke_width(1),
                )))?;
                let text = if v.is_finite() {
                    format!("{v:.2}")
                } else {
                    "–".into()
                };
                let ink = if v.is_finite() && v > 0.55 {
                    WHITE
                } else {
                    BLACK
                };
                let style =
                    (FONT, 14)
                        .into_font()
                        .color(&ink)
                        .pos(plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Center,
                        ));
                chart.draw_series(std::iter::once(Text::new(
                    text,
                    (SegmentValue::CenterOf(c), SegmentValue::CenterOf(r)),
                    style,
                )))?;
            }
        }
        Ok(())
    }
}

impl Figure {
    /// Writes `<stem>.png` and `<stem>.svg` into `dir`, each atomically.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        // A figure with no defined value says so in its title rather than
        // showing empty axes that look like a plot of nothing happening.
        let defined = self
            .series
            .iter()
            .any(|s| s.points.iter().any(|p| p.0.is_finite() && p.1.is_finite()));
        if !defined && !self.series.is_empty() {
            let mut noted = self.clone();
            noted.title = format!(
                "{} — nothing to plot: the measure is undefined at every point (e.g. not defined for this policy)",
                self.title
            );
            noted.series.clear();
            return noted.write(dir, stem);
        }
        render(self, dir, stem)
    }
}

impl Drawable for Figure {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let (x0, x1) = self.extent(Axis::X, None, self.log_x);
        let (y0, y1) = self.extent(Axis::Y, self.y_bounds, self.log_y);
        let legend = self.legend_place((x0, x1), (y0, y1));
        // Log axes get 1-2-5 ticks with labels (plotters labels only
        // powers of ten, so 0.34 on a 0.2–8 axis could not be read).
        // A log x axis of a few sample counts is labelled at those counts.
        let lx = || {
            let xs: Vec<f64> = self
                .distinct_xs(|_| true)
                .into_iter()
                .filter(|v| *v > 0.0)
                .collect();
            let ticks = if (2..=12).contains(&xs.len()) {
                xs
            } else {
                log_ticks(x0, x1)
            };
            (x0..x1).log_scale().with_key_points(ticks)
        };
        let ly = || (y0..y1).log_scale().with_key_points(log_ticks(y0, y1));
        match (self.log_x, self.log_y) {
            (false, false) => self.draw_in(root, x0..x1, y0..y1, legend),
            (true, false) => self.draw_in(root, lx(), y0..y1, legend),
            (false, true) => self.draw_in(root, x0..x1, ly(), legend),
            (true, true) => self.draw_in(root, lx(), ly(), legend),
        }
    }
}

impl Figure {
    /// Where the legend covers the fewest plotted points and band edges:
    /// the box's top-left corner as fractions (left, top) of the plotting
    /// area, measured from its top-left. The box is sized from the longest
    /// label and the number of entries; candidates are the left and right
    /// edges at every 5% of the height, corners preferred at equal cover.
    fn legend_place(&self, x: (f64, f64), y: (f64, f64)) -> (f64, f64) {
        let frac = |v: f64, (lo, hi): (f64, f64), log: bool| {
            if log {
                (v.ln() - lo.ln()) / (hi.ln() - lo.ln())
            } else {
                (v - lo) / (hi - lo)
            }
        };
        let entries = self.series.len() + usize::from(self.band_note.is_some());
        let longest = self
            .series
            .iter()
            .map(|s| s.name.chars().count())
            .chain(self.band_note.iter().map(|n| n.chars().count()))
            .max()
            .unwrap_or(0);
        // ~8 px per character at 15 px, plus the swatch, on a plotting
        // area of ~880 × 540 px.
        let width = ((longest as f64 * 8.0 + 50.0) / 880.0).min(0.95);
        let height = ((entries as f64 * 19.0 + 12.0) / 540.0).min(0.95);
        let mut marks: Vec<(f64, f64)> = Vec::new();
        for s in &self.series {
            for (i, &(px, py)) in s.points.iter().enumerate() {
                let fx = frac(px, x, self.log_x);
                // Flipped: fractions from the top, like the box.
                marks.push((fx, 1.0 - frac(py, y, self.log_y)));
                if let Some((l, h)) = s.band.as_ref().and_then(|b| b.get(i)) {
                    marks.push((fx, 1.0 - frac(*l, y, self.log_y)));
                    marks.push((fx, 1.0 - frac(*h, y, self.log_y)));
                }
                // A bar covers the space below its top.
                if s.style == LineKind::Bars {
                    for k in 0..8 {
                        let t = k as f64 / 8.0;
                        marks.push((fx, 1.0 - frac(py * t, y, self.log_y)));
                    }
                }
                // Segments between points cover the space between them.
                if !matches!(s.style, LineKind::Points | LineKind::Bars)
                    && let Some(&(qx, qy)) = s.points.get(i + 1)
                {
                    for k in 1..8 {
                        let t = k as f64 / 8.0;
                        marks.push((
                            frac(px + t * (qx - px), x, self.log_x),
                            1.0 - frac(py + t * (qy - py), y, self.log_y),
                        ));
                    }
                }
            }
        }
        let margin = 0.01;
        let covered = |left: f64, top: f64| {
            marks
                .iter()
                .filter(|(fx, fy)| fx.is_finite() && fy.is_finite())
                .filter(|&&(fx, fy)| {
                    fx >= left - margin
                        && fx <= left + width + margin
                        && fy >= top - margin
                        && fy <= top + height + margin
                })
                .count()
        };
        let lefts = [1.0 - width - margin, margin];
        let bottom = (1.0 - height - margin).max(margin);
        let mut tops = vec![margin, bottom];
        let mut t = 0.05;
        while t < bottom {
            tops.push(t);
            t += 0.05;
        }
        let mut best = (usize::MAX, (lefts[0], margin));
        for &top in &tops {
            for &left in &lefts {
                let n = covered(left, top);
                if n < best.0 {
                    best = (n, (left, top));
                }
            }
        }
        best.1
    }

    /// Data range along one axis (bands included), padded; positive for
    /// log axes.
    fn extent(&self, axis: Axis, fixed: Option<(f64, f64)>, log: bool) -> (f64, f64) {
        if let (Axis::Y, Some(exact)) = (axis, self.y_exact) {
            return exact;
        }
        let mut values: Vec<f64> = Vec::new();
        for s in &self.series {
            match axis {
                // Only where something is drawn: a generation whose value
                // is undefined (KL at generation 0) gets no empty slot.
                Axis::X => values.extend(
                    s.points
                        .iter()
                        .filter(|p| p.1.is_finite() && (!self.log_y || p.1 > 0.0))
                        .map(|p| p.0),
                ),
                Axis::Y => {
                    values.extend(s.points.iter().map(|p| p.1));
                    if let Some(b) = &s.band {
                        values.extend(b.iter().flat_map(|&(l, h)| [l, h]));
                    }
                }
            }
        }
        let finite = values
            .into_iter()
            .filter(|v| v.is_finite() && (!log || *v > 0.0));
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        if !lo.is_finite() {
            // Nothing to draw: a finite default inside the bounds (an
            // unbounded end such as a count's ∞ must never reach the axis,
            // where plotters' tick search would not end).
            let (a, b) = fixed.unwrap_or(if log { (0.1, 10.0) } else { (0.0, 1.0) });
            let a = if a.is_finite() { a } else { 0.0 };
            let b = if b.is_finite() { b } else { a + 1.0 };
            return (a, b);
        }
        let (lo, hi) = if log {
            (lo / 1.5, hi * 1.5)
        } else if matches!(axis, Axis::X) && self.has_bars() {
            // Room for the outer bars' halves.
            let half = self.bar_slot() / 2.0;
            (lo - half, hi + half)
        } else if matches!(axis, Axis::Y) && self.has_bars() {
            // Bars stand on 0.
            let pad = ((hi.max(0.0) - lo.min(0.0)) * 0.05).max(1e-9);
            (lo.min(0.0), hi + pad)
        } else {
            // Flat data (every value equal) gets a visible span around it,
            // so the ticks are distinct values, not one label repeated.
            let flat = hi - lo <= 1e-9 * hi.abs().max(1.0);
            let pad = if flat {
                (0.1 * hi.abs()).max(0.05)
            } else {
                (hi - lo) * 0.05
            };
            (lo - pad, hi + pad)
        };
        match fixed {
            // A probability axis always starts at 0 (a rise from 0.32 must
            // not look like one from 0). Other bounded axes start at the
            // bound when the data come near it; when they do not, the
            // y label says where the axis starts (see `axis_note`).
            Some((a, b)) => {
                let near = 0.25 * (b - a);
                let lo = if (a, b) == (0.0, 1.0) || lo - a < near {
                    a
                } else {
                    lo.max(a)
                };
                let hi = if b - hi < near { b } else { hi.min(b) };
                (lo, hi)
            }
            None => (lo, hi),
        }
    }

    /// The finite x values of the series `keep` selects, sorted, each once.
    fn distinct_xs(&self, keep: impl Fn(&Series) -> bool) -> Vec<f64> {
        let mut xs: Vec<f64> = self
            .series
            .iter()
            .filter(|s| keep(s))
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .filter(|v| v.is_finite())
            .collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        xs
    }

    fn has_bars(&self) -> bool {
        self.series.iter().any(|s| s.style == LineKind::Bars)
    }

    /// The x width one group of bars may take: the smallest gap between
    /// distinct x values of the bar series (1 if there is none).
    fn bar_slot(&self) -> f64 {
        let gap = self
            .distinct_xs(|s| s.style == LineKind::Bars)
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(f64::INFINITY, f64::min);
        if gap.is_finite() && gap > 0.0 {
            gap
        } else {
            1.0
        }
    }

    fn draw_in<DB, X, Y>(
        &self,
        root: &DrawingArea<DB, Shift>,
        x: X,
        y: Y,
        legend: (f64, f64),
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>>
    where
        DB: DrawingBackend,
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        // A long title (a spec title with its smoke-run note) is wrapped
        // at word boundaries rather than cut off at the canvas edge.
        let mut area = root.clone();
        for line in wrap(&self.title, TITLE_CHARS) {
            area = area.titled(&line, (FONT, 20))?;
        }
        let widest_tick = self
            .y_ticks
            .iter()
            .flatten()
            .map(|t| t.chars().count())
            .max()
            .unwrap_or(0);
        let mut chart = ChartBuilder::on(&area)
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(70.max(30 + 9 * widest_tick as u32))
            .build_cartesian_2d(x, y)?;
        let integer = |v: &f64| format!("{v:.0}");
        let mut mesh = chart.configure_mesh();
        if self.integer_x && !self.log_x {
            // One label per integer, up to a readable count (a label per
            // integer of a 4M-wide axis made a 5.4 GB SVG).
            let (lo, hi) = self.extent(Axis::X, None, false);
            mesh.x_labels(((hi - lo).round().max(1.0) as usize + 1).min(MAX_X_LABELS))
                .x_label_formatter(&integer);
        }
        if self.log_x {
            mesh.x_label_formatter(&tick_label);
        }
        // Linear y ticks with the decimals their spacing needs (about ten
        // ticks over the axis): 0.9950 and 0.9955 stay apart, counts read 14.
        let (y_lo, y_hi) = self.extent(Axis::Y, self.y_bounds, self.log_y);
        let y_decimals = span_decimals(y_hi - y_lo);
        let linear_y = |v: &f64| format!("{v:.y_decimals$}");
        // A categorical axis: one label per integer, its name; no label
        // between integers.
        let named = |v: &f64| {
            let names = self.y_ticks.as_deref().unwrap_or_default();
            let i = v.round();
            if (v - i).abs() > 1e-9 || i < 0.0 {
                return String::new();
            }
            names.get(i as usize).cloned().unwrap_or_default()
        };
        if let Some(names) = &self.y_ticks {
            mesh.y_labels(names.len().max(2)).y_label_formatter(&named);
        } else if self.log_y {
            mesh.y_label_formatter(&tick_label);
        } else {
            mesh.y_label_formatter(&linear_y);
        }
        let y_desc = match self.axis_note(y_lo) {
            Some(note) => format!("{} {note}", self.y_label),
            None => self.y_label.clone(),
        };
        mesh.x_desc(&self.x_label)
            .y_desc(&y_desc)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        let ok = |v: &f64| v.is_finite() && (!self.log_y || *v > 0.0);
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            if let Some(band) = &s.band {
                // One polygon per run of points with a finite band.
                let mut run: Vec<(f64, f64, f64)> = Vec::new();
                let mut flush = |run: &mut Vec<(f64, f64, f64)>| -> std::result::Result<
                    (),
                    DrawingAreaErrorKind<DB::ErrorType>,
                > {
                    if run.len() >= 2 {
                        let mut poly: Vec<(f64, f64)> =
                            run.iter().map(|&(x, _, h)| (x, h)).collect();
                        poly.extend(run.iter().rev().map(|&(x, l, _)| (x, l)));
                        chart.draw_series(std::iter::once(Polygon::new(
                            poly,
                            color.mix(0.18).filled(),
                        )))?;
                    }
                    run.clear();
                    Ok(())
                };
                let clip = |v: f64| match self.y_bounds {
                    Some((a, b)) => v.clamp(a, b),
                    None => v,
                };
                for (&(x, _), &(l, h)) in s.points.iter().zip(band) {
                    if ok(&l) && ok(&h) {
                        run.push((x, clip(l), clip(h)));
                    } else {
                        flush(&mut run)?;
                    }
                }
                flush(&mut run)?;
            }
            let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| ok(&p.1)).collect();
            // Curves that coincide (REINFORCE and scaled SFT are equal by
            // P01) stay visible: earlier series are drawn wider, with
            // larger markers of another shape, so a later one on top
            // leaves the earlier one as an outline.
            let later = self.series.len() - 1 - i;
            let width = if later > 0 { 4 } else { 2 };
            let size = 3 + 2 * later.min(2) as i32;
            let style = color.stroke_width(width);
            let shape = i % 4;
            if s.style == LineKind::Bars {
                let bars: Vec<usize> = (0..self.series.len())
                    .filter(|&k| self.series[k].style == LineKind::Bars)
                    .collect();
                let slot = self.bar_slot();
                let k = bars.iter().position(|&b| b == i).unwrap_or(0) as f64;
                let w = 0.8 * slot / bars.len() as f64;
                let fill = color.mix(0.85).filled();
                chart
                    .draw_series(pts.iter().map(|&(x, y)| {
                        let left = x - 0.4 * slot + k * w;
                        Rectangle::new([(left, 0.0), (left + w, y)], fill)
                    }))?
                    .label(&s.name)
                    .legend(move |(x, y)| {
                        Rectangle::new([(x + 4, y - 6), (x + 16, y + 6)], color.mix(0.85).filled())
                    });
                continue;
            }
            match s.style {
                LineKind::Solid | LineKind::Points | LineKind::Bars => {
                    let drawn = if s.style == LineKind::Solid {
                        chart.draw_series(LineSeries::new(pts.clone(), style))?
                    } else {
                        chart.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                    };
                    let line = s.style == LineKind::Solid;
                    drawn.label(&s.name).legend(move |(x, y)| {
                        let mark = marker((x + 10, y), shape, size, color);
                        let path = if line {
                            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
                        } else {
                            PathElement::new(vec![(x + 10, y)], color.stroke_width(1))
                        };
                        EmptyElement::at((0, 0)) + path + mark
                    });
                    chart.draw_series(
                        pts.iter()
                            .map(|&p| EmptyElement::at(p) + marker((0, 0), shape, size, color)),
                    )?;
                }
                LineKind::Reference => {
                    chart
                        .draw_series(DashedLineSeries::new(pts, 8, 6, style))?
                        .label(&s.name)
                        .legend(move |(x, y)| {
                            // A dashed swatch, as drawn.
                            let dash = |a: i32, b: i32| {
                                PathElement::new(
                                    vec![(x + a, y), (x + b, y)],
                                    color.stroke_width(width),
                                )
                            };
                            EmptyElement::at((0, 0)) + dash(0, 8) + dash(13, 21)
                        });
                }
            }
        }
        // Annotations: small text just right of and above each point.
        let finite = |&(x, y, _): &&(f64, f64, String)| x.is_finite() && y.is_finite();
        chart.draw_series(self.annotations.iter().filter(finite).map(|(x, y, t)| {
            EmptyElement::at((*x, *y)) + Text::new(t.clone(), (4, -16), (FONT, 12).into_font())
        }))?;
        // The note only where a band is drawn.
        let banded = self.series.iter().any(|s| {
            s.band
                .as_ref()
                .is_some_and(|b| b.iter().any(|&(l, h)| l.is_finite() && h.is_finite()))
        });
        if let Some(note) = self.band_note.as_ref().filter(|_| banded) {
            // A legend entry for the bands: a grey swatch and what they are.
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                .label(note)
                .legend(|(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 20, y + 5)], BLACK.mix(0.18).filled())
                });
        }
        let (w, h) = chart.plotting_area().dim_in_pixel();
        let at = SeriesLabelPosition::Coordinate(
            (legend.0 * w as f64) as i32,
            (legend.1 * h as f64) as i32,
        );
        chart
            .configure_series_labels()
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(at)
            .draw()?;
        Ok(())
    }
}

/// One of four marker shapes (circle, triangle, square, diamond), centred
/// at `at` in pixels relative to its anchor, of radius `size`.
fn marker<DB: DrawingBackend>(
    at: (i32, i32),
    shape: usize,
    size: i32,
    color: RGBColor,
) -> DynElement<'static, DB, (i32, i32)> {
    let (x, y) = at;
    let fill = color.filled();
    match shape {
        0 => Circle::new(at, size, fill).into_dyn(),
        1 => Polygon::new(
            vec![(x, y - size), (x - size, y + size), (x + size, y + size)],
            fill,
        )
        .into_dyn(),
        2 => Rectangle::new([(x - size, y - size), (x + size, y + size)], fill).into_dyn(),
        _ => Polygon::new(
            vec![
                (x, y - size - 1),
                (x + size + 1, y),
                (x, y + size + 1),
                (x - size - 1, y),
            ],
            fill,
        )
        .into_dyn(),
    }
}

/// Characters of a title line at 20 px on the 1000 px canvas.
const TITLE_CHARS: usize = 95;

/// `text` in lines of at most `width` characters, broken at spaces (a
/// longer word gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Tick positions of a log axis over [lo, hi]: 1, 2, 5 per decade, or
/// every integer multiple when the axis spans less than two of them.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    // A log axis is positive and finite (`extent` makes it so); anything
    // else gets no ticks rather than a loop over every power of ten.
    if !(lo > 0.0 && hi.is_finite() && lo < hi) {
        return Vec::new();
    }
    let pick = |mults: &[f64]| -> Vec<f64> {
        let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        (a..=b)
            .flat_map(|d| mults.iter().map(move |m| m * 10f64.powi(d)))
            .filter(|v| *v >= lo && *v <= hi)
            .collect()
    };
    let ticks = pick(&[1.0, 2.0, 5.0]);
    if ticks.len() >= 3 {
        ticks
    } else {
        pick(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }
}

/// Decimals for ticks about a tenth of `span` apart: 0 for spans of 10 or
/// more, 1 for 1–10, 2 for 0.1–1, and so on (at most 8).
fn span_decimals(span: f64) -> usize {
    if !(span.is_finite() && span > 0.0) {
        return 1;
    }
    (1.0 - span.log10().floor()).clamp(0.0, 8.0) as usize
}

impl Figure {
    /// Where a linear y axis does not start at its measure's finite lower
    /// bound: the note that says so, as a broken axis would.
    fn axis_note(&self, start: f64) -> Option<String> {
        let (a, b) = self.y_bounds?;
        if self.log_y || !a.is_finite() || start <= a + 1e-12 * (b - a).abs().min(1.0) {
            return None;
        }
        let d = span_decimals(start.abs().max(1e-12) / 100.0);
        Some(format!("(axis starts at {start:.d$}, not {a})"))
    }
}

/// A tick label with as many decimals as the value needs: 0.02, 0.5, 2, 50.
fn tick_label(v: &f64) -> String {
    let decimals = (-v.abs().log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

fn plot_error(dir: &Path, stem: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "could not draw figure {}: {e}",
        dir.join(stem).display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_wrap_and_log_axes_get_readable_ticks() {
        let t = "a ".repeat(60);
        let lines = wrap(t.trim(), 95);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.chars().count() <= 95));
        assert_eq!(wrap("short", 95), ["short"]);
        assert_eq!(log_ticks(0.2, 8.0), [0.2, 0.5, 1.0, 2.0, 5.0]);
        // Less than a 1-2-5 span: every multiple.
        assert_eq!(log_ticks(1.5, 4.5), [2.0, 3.0, 4.0]);
        assert!(log_ticks(0.0, 1.0).is_empty() && log_ticks(1.0, f64::INFINITY).is_empty());
        assert_eq!(tick_label(&0.02), "0.02");
        assert_eq!(tick_label(&0.5), "0.5");
        assert_eq!(tick_label(&50.0), "50");
    }

    fn figure(points: Vec<(f64, f64)>, bounds: Option<(f64, f64)>) -> Figure {
        Figure {
            title: "t".into(),
            x_label: "generation".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "s".into(),
                points,
                band: None,
                style: LineKind::Solid,
            }],
            log_x: false,
            log_y: false,
            y_bounds: bounds,
            band_note: None,
            integer_x: true,
            y_exact: None,
            annotations: Vec::new(),
            y_ticks: None,
        }
    }

    /// A categorical y axis labels each integer with its name, and
    /// nothing between them: the frontier figure reads "4 blocks", not 3.0.
    #[test]
    fn a_categorical_y_axis_names_its_integers() {
        let mut fig = figure(vec![(0.0, 1.0), (1.0, 2.4), (2.0, 3.0)], Some((0.0, 3.0)));
        fig.y_exact = Some((0.0, 3.3));
        let names = ["none", "2 blocks", "3 blocks", "4 blocks"].map(String::from);
        fig.y_ticks = Some(names.to_vec());
        let dir = std::env::temp_dir().join(format!("iterdeploy-cat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        fig.write(&dir, "cat").unwrap();
        let svg = std::fs::read_to_string(dir.join("cat.svg")).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let labels: Vec<&str> = svg
            .split("<text")
            .filter(|t| t.contains("text-anchor=\"end\""))
            .filter_map(|t| Some(t.split('>').nth(1)?.split('<').next()?.trim()))
            .collect();
        assert_eq!(labels, names, "{labels:?}");
    }

    /// The y tick labels of a figure's SVG, in order of appearance.
    fn y_ticks(fig: &Figure, name: &str) -> Vec<String> {
        let dir =
            std::env::temp_dir().join(format!("iterdeploy-ticks-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        fig.write(&dir, name).unwrap();
        let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        // Tick labels are right-aligned text ("end" anchor) left of the axis.
        svg.split("<text")
            .filter(|t| t.contains("text-anchor=\"end\""))
            .filter_map(|t| {
                let text = t.split('>').nth(1)?.split('<').next()?;
                Some(text.trim().to_string())
            })
            .filter(|t| t.parse::<f64>().is_ok())
            .collect()
    }

    /// Flat data gets distinct tick labels (constant 14 once read "14.0"
    /// at every tick; constant 0 read "0.0"), a probability axis starts at
    /// 0 even when the data start at 0.32, and an axis that does not start
    /// at its measure's bound says where it starts (issue 27, item 3).
    #[test]
    fn ticks_show_the_values_and_probability_axes_start_at_zero() {
        let flat = figure(
            vec![(0.0, 14.0), (1.0, 14.0), (2.0, 14.0)],
            Some((0.0, f64::INFINITY)),
        );
        let ticks = y_ticks(&flat, "flat");
        let distinct: std::collections::BTreeSet<&String> = ticks.iter().collect();
        assert!(
            distinct.len() >= 3 && distinct.len() == ticks.len(),
            "{ticks:?}"
        );
        let zero = figure(vec![(0.0, 0.0), (1.0, 0.0)], Some((0.0, 1.0)));
        let ticks = y_ticks(&zero, "zero");
        let distinct: std::collections::BTreeSet<&String> = ticks.iter().collect();
        assert!(
            distinct.len() >= 3 && distinct.len() == ticks.len(),
            "{ticks:?}"
        );
        let p = figure(vec![(0.0, 0.32), (1.0, 0.4)], Some((0.0, 1.0)));
        assert_eq!(p.extent(Axis::Y, p.y_bounds, false).0, 0.0);
        assert!(p.axis_note(0.0).is_none());
        let ticks = y_ticks(&p, "prob");
        assert!(
            ticks.iter().any(|t| t.parse::<f64>().unwrap() == 0.0),
            "{ticks:?}"
        );
        // A cosine near 1 keeps its zoom and says so; its ticks differ.
        let c = figure(
            vec![(1.0, 0.9945), (2.0, 0.9990), (3.0, 1.0)],
            Some((-1.0, 1.0)),
        );
        let (lo, _) = c.extent(Axis::Y, c.y_bounds, false);
        assert!(lo > 0.99, "{lo}");
        assert!(
            c.axis_note(lo).unwrap().contains("not -1"),
            "{:?}",
            c.axis_note(lo)
        );
        let ticks = y_ticks(&c, "cos");
        let distinct: std::collections::BTreeSet<&String> = ticks.iter().collect();
        assert!(
            distinct.len() >= 3 && distinct.len() == ticks.len(),
            "{ticks:?}"
        );
        assert_eq!(span_decimals(20.0), 0);
        assert_eq!(span_decimals(0.42), 2);
    }

    /// A figure whose measure is undefined everywhere (all NaN) with an
    /// unbounded axis (counts: [0, ∞)) draws at once on a finite axis; it
    /// once handed plotters an infinite range and never returned.
    #[test]
    fn an_empty_figure_on_an_unbounded_axis_draws() {
        let fig = Figure {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "s".into(),
                points: vec![(0.0, f64::NAN), (1.0, f64::NAN)],
                band: None,
                style: LineKind::Solid,
            }],
            log_x: false,
            log_y: false,
            y_bounds: Some((0.0, f64::INFINITY)),
            band_note: None,
            integer_x: true,
            y_exact: None,
            annotations: Vec::new(),
            y_ticks: None,
        };
        let (lo, hi) = fig.extent(Axis::Y, fig.y_bounds, false);
        assert!(lo.is_finite() && hi.is_finite() && lo < hi, "{lo} {hi}");
        let dir = std::env::temp_dir().join(format!("iterdeploy-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        fig.write(&dir, "empty").unwrap();
        assert!(dir.join("empty.png").is_file());
        std::fs::remove_dir_all(&dir).ok();
    }
}
