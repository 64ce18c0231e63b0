//! The analysis charts, as SVG files drawn with plotters: bars with their values on them, lines
//! with the spread shown, and a failover timeline. Text is laid out with DejaVu Sans, bundled in
//! the binary (`assets/fonts`), so the charts look the same on every machine.

use plotters::coord::Shift;
use plotters::drawing::DrawingAreaErrorKind;
use plotters::element::{ErrorBar, PathElement, Polygon, Rectangle, Text};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// DejaVu Sans, from Debian's fonts-dejavu-core (license: assets/fonts/DejaVuSans-LICENSE.txt).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// The font family every chart uses.
pub const FAMILY: &str = "sans-serif";

/// One colour per series (algorithm or replica), readable on white.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// The bundled font could not be registered.
    #[error("cannot draw {}: {source}", path.display())]
    Font {
        /// The chart's file.
        path: PathBuf,
        /// Why.
        #[source]
        source: FontError,
    },
    /// Drawing or writing the SVG failed.
    #[error("cannot draw {}: {reason}", path.display())]
    Drawing {
        /// The chart's file.
        path: PathBuf,
        /// plotters' error, as text: it borrows the drawing area, so it cannot be kept.
        reason: String,
    },
}

impl ChartError {
    /// A drawing error of the chart at `path`.
    pub fn drawing(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> ChartError + '_ {
        move |reason| ChartError::Drawing { path: path.to_path_buf(), reason: reason.to_string() }
    }

    /// The font error of the chart at `path`.
    pub fn font(path: &Path) -> impl FnOnce(FontError) -> ChartError + '_ {
        move |source| ChartError::Font { path: path.to_path_buf(), source }
    }
}

/// The bundled font is not a font plotters can use.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the bundled font is not a valid TrueType font")]
pub struct FontError;

/// Registers the bundled font with plotters (once per process).
///
/// # Errors
/// The bundled font cannot be read.
pub fn register_bundled_font() -> Result<(), FontError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).map_err(|_| FontError);
    });
    result
}

/// Runs a drawing into an SVG file, turning plotters' errors into a [`ChartError`].
fn draw(
    path: &Path,
    size: (u32, u32),
    paint: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), DrawingAreaErrorKind<std::io::Error>>,
) -> Result<(), ChartError> {
    register_bundled_font().map_err(ChartError::font(path))?;
    let root = SVGBackend::new(path, size).into_drawing_area();
    paint(&root).map_err(|e| ChartError::drawing(path)(&e))?;
    root.present().map_err(|e| ChartError::drawing(path)(&e))
}

/// One series of a bar chart: its name and one value per category.
pub struct Bars<'a> {
    /// Legend label.
    pub label: &'a str,
    /// One value per category.
    pub values: &'a [u64],
}

/// A bar chart: one group of bars per category, one bar per series, the value written on each.
///
/// # Errors
/// The file cannot be written.
pub fn bar_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    categories: &[String],
    series: &[Bars<'_>],
) -> Result<(), ChartError> {
    let top = series.iter().flat_map(|s| s.values.iter()).copied().max().unwrap_or(1).max(1) as f64 * 1.15;
    let n = categories.len().max(1) as f64;
    draw(path, (900, 520), |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..n, 0.0..top)?;
        let names = categories.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(categories.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor();
                if (x - i - 0.5).abs() < 0.26 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()?;
        let groups = series.len().max(1) as f64;
        let width = 0.8 / groups;
        for (s, bars) in series.iter().enumerate() {
            let colour = PALETTE[s % PALETTE.len()];
            let rects = bars.values.iter().enumerate().map(|(i, v)| {
                let x0 = i as f64 + 0.1 + s as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.92, *v as f64)], colour.filled())
            });
            let drawn = chart.draw_series(rects)?;
            if series.len() > 1 {
                drawn
                    .label(bars.label)
                    .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
            }
            let labels = bars.values.iter().enumerate().map(|(i, v)| {
                let x = i as f64 + 0.1 + s as f64 * width + width * 0.46;
                Text::new(
                    v.to_string(),
                    (x, *v as f64 + top * 0.01),
                    (FAMILY, 13).into_font().color(&BLACK).pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Bottom,
                    )),
                )
            });
            chart.draw_series(labels)?;
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .label_font((FAMILY, 14))
                .draw()?;
        }
        Ok(())
    })
}

/// One line of a line chart: a point per x, with the spread (min, max, standard deviation).
pub struct Line<'a> {
    /// Legend label.
    pub label: &'a str,
    /// (x, mean, min, max, std dev) per point.
    pub points: &'a [(f64, f64, f64, f64, f64)],
}

/// A line chart of means with the min..max band shaded and +-1 standard deviation as error bars.
///
/// # Errors
/// The file cannot be written.
pub fn spread_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[Line<'_>],
) -> Result<(), ChartError> {
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let (x_min, x_max) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let top = lines.iter().flat_map(|l| l.points.iter().map(|p| p.3)).fold(1.0f64, f64::max) * 1.1;
    draw(path, (900, 520), |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((x_min - 0.3)..(x_max + 0.3), 0.0..top)?;
        chart
            .configure_mesh()
            .x_labels(((x_max - x_min) as usize + 1).max(2))
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 { format!("{x:.0}") } else { String::new() }
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()?;
        for (i, line) in lines.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let mut band: Vec<(f64, f64)> = line.points.iter().map(|p| (p.0, p.2)).collect();
            band.extend(line.points.iter().rev().map(|p| (p.0, p.3)));
            chart.draw_series(std::iter::once(Polygon::new(band, colour.mix(0.15).filled())))?;
            chart
                .draw_series(LineSeries::new(line.points.iter().map(|p| (p.0, p.1)), colour.stroke_width(2)))?
                .label(format!("{} (mean; band: min..max; bars: +-1 std dev)", line.label))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
            chart.draw_series(line.points.iter().map(|p| {
                ErrorBar::new_vertical(p.0, (p.1 - p.4).max(0.0), p.1, p.1 + p.4, colour.stroke_width(1), 8)
            }))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()?;
        Ok(())
    })
}

/// A simple line chart (one value per x per series), e.g. imbalance against N.
///
/// # Errors
/// The file cannot be written.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), ChartError> {
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let (x_min, x_max, y_max) =
        all.fold((f64::MAX, f64::MIN, 0.0f64), |(a, b, c), (x, y)| (a.min(*x), b.max(*x), c.max(*y)));
    draw(path, (900, 520), |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((x_min - 0.3)..(x_max + 0.3), 0.0..(y_max * 1.15).max(1.0))?;
        chart
            .configure_mesh()
            .x_labels(((x_max - x_min) as usize + 1).max(2))
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 { format!("{x:.0}") } else { String::new() }
            })
            .y_label_formatter(&|y| format!("{y:.2}"))
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()?;
        for (i, (label, points)) in series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, colour.filled())))?;
            chart.draw_series(points.iter().map(|(x, y)| {
                Text::new(format!("{y:.2}"), (*x, *y), (FAMILY, 12).into_font().color(&colour))
            }))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()?;
        Ok(())
    })
}

/// A vertical marker on the timeline.
pub struct Marker<'a> {
    /// When, in ms from the start.
    pub at_ms: f64,
    /// What happened.
    pub label: &'a str,
}

/// A timeline: answers per time bucket for each replica, with vertical markers for events.
///
/// # Errors
/// The file cannot be written.
pub fn timeline_chart(
    path: &Path,
    title: &str,
    bucket_ms: f64,
    series: &[(String, Vec<(f64, f64)>)],
    markers: &[Marker<'_>],
) -> Result<(), ChartError> {
    let x_max = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).fold(bucket_ms, f64::max);
    let y_max = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).fold(1.0f64, f64::max) * 1.25;
    draw(path, (1000, 520), |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_desc("time since the stream started (ms)")
            .y_desc(format!("answers per {bucket_ms:.0} ms"))
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()?;
        for (i, (label, points)) in series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        }
        for (i, marker) in markers.iter().enumerate() {
            let y_text = y_max * (0.97 - 0.07 * i as f64);
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(marker.at_ms, 0.0), (marker.at_ms, y_max)],
                BLACK.mix(0.6).stroke_width(1),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!(" {} ({:.0} ms)", marker.label, marker.at_ms),
                (marker.at_ms, y_text),
                (FAMILY, 13).into_font().color(&BLACK),
            )))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()?;
        Ok(())
    })
}
