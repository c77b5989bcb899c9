//! SVG charts (plotters): latency CDFs and bar charts with confidence intervals.

use std::path::Path;

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::stats::Estimate;

const W: u32 = 900;

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

/// The CDF of each histogram (x: latency in µs, log scale; y: fraction of messages), one line
/// per series, with a legend.
pub fn latency_cdf(path: &Path, title: &str, series: &[(String, Histogram<u64>)]) -> Result<()> {
    let series: Vec<_> = series.iter().filter(|(_, h)| !h.is_empty()).collect();
    if series.is_empty() {
        return Ok(());
    }
    let lo = series
        .iter()
        .map(|(_, h)| h.min() as f64 / 1000.0)
        .fold(f64::INFINITY, f64::min)
        .max(0.1);
    let hi = series
        .iter()
        .map(|(_, h)| h.max() as f64 / 1000.0)
        .fold(0.0, f64::max)
        .max(lo * 10.0);
    let h = 140 + 22 * series.len() as u32;
    let root = SVGBackend::new(path, (W, 420.max(h))).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0f64..1f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .y_desc("fraction of messages")
        .draw()
        .map_err(err)?;
    for (i, (name, h)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut pts: Vec<(f64, f64)> = Vec::new();
        for v in h.iter_recorded() {
            pts.push((
                h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0,
                v.percentile() / 100.0,
            ));
        }
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Horizontal bars: the median of each row, with its confidence interval as a whisker.
pub fn bars(path: &Path, title: &str, unit: &str, rows: &[(String, Estimate)]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len() as u32;
    let xmax = rows
        .iter()
        .map(|(_, e)| e.hi.max(e.median))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.12;
    let root = SVGBackend::new(path, (W, 110 + 34 * n)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let labels: Vec<String> = rows.iter().map(|(l, _)| l.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(130)
        .build_cartesian_2d(0f64..xmax, (0u32..n).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n as usize)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                labels.get(*i as usize).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .x_desc(unit)
        .draw()
        .map_err(err)?;
    for (i, (_, e)) in rows.iter().enumerate() {
        let i = i as u32;
        let color = Palette99::pick(i as usize).to_rgba();
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (e.median, SegmentValue::Exact(i + 1)),
                ],
                color.mix(0.7).filled(),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![
                    (e.lo, SegmentValue::CenterOf(i)),
                    (e.hi, SegmentValue::CenterOf(i)),
                ],
                BLACK.stroke_width(2),
            )))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// One line per series through `(x, y)` points, y on a log scale (p99 latency against loss).
pub fn lines_log_y(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, 0f64, f64::INFINITY, 0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() || !y0.is_finite() {
        return Ok(());
    }
    let (y0, y1) = ((y0 * 0.8).max(0.01), (y1 * 1.25).max(y0 * 2.0));
    let root = SVGBackend::new(path, (W, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0..y1).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    for (i, (name, p)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(p.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(p.iter().map(|&pt| Circle::new(pt, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// A timeline of one run: for each stream (y) every message as a mark at its send time (x,
/// ms), grey when on time and red when it stalled (latency over `stall_ms`); losses as
/// vertical lines (blue: client to server, orange: server to client).
pub fn timeline(
    path: &Path,
    title: &str,
    streams: &[Vec<(f64, f64)>],
    stall_ms: f64,
    losses: [&[f64]; 2],
    window_ms: (f64, f64),
) -> Result<()> {
    let k = streams.len().max(1);
    let root = SVGBackend::new(path, (W, 160 + 30 * k as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(window_ms.0..window_ms.1, -0.5f64..(k as f64 - 0.5))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("send time (ms)")
        .y_desc("stream")
        .y_labels(k)
        .disable_y_mesh()
        .draw()
        .map_err(err)?;
    let in_window = |t: f64| t >= window_ms.0 && t <= window_ms.1;
    for (dir, color) in [(0usize, BLUE.mix(0.6)), (1, RGBColor(230, 120, 0).mix(0.7))] {
        chart
            .draw_series(losses[dir].iter().filter(|t| in_window(**t)).map(|&t| {
                PathElement::new(vec![(t, -0.5), (t, k as f64 - 0.5)], color.stroke_width(1))
            }))
            .map_err(err)?;
    }
    for (s, msgs) in streams.iter().enumerate() {
        let y = s as f64;
        chart
            .draw_series(msgs.iter().filter(|(t, _)| in_window(*t)).map(|&(t, lat)| {
                let stalled = lat > stall_ms;
                let c = if stalled {
                    RED.to_rgba()
                } else {
                    BLACK.mix(0.35)
                };
                let h = if stalled { 0.4 } else { 0.15 };
                PathElement::new(vec![(t, y - h), (t, y + h)], c.stroke_width(2))
            }))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_files_with_their_labels() {
        let dir = std::env::temp_dir().join(format!("wirelab-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = crate::stats::histogram();
        for v in 1..=500u64 {
            h.record(v * 1000).unwrap();
        }
        let cdf = dir.join("cdf.svg");
        latency_cdf(
            &cdf,
            "latency",
            &[("tcp".into(), h.clone()), ("h2 rr".into(), h)],
        )
        .unwrap();
        let text = std::fs::read_to_string(&cdf).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("h2 rr"),
            "{}",
            &text[..200]
        );
        let e = crate::stats::median_ci(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 0.95).unwrap();
        let bar = dir.join("bars.svg");
        bars(
            &bar,
            "msg/s",
            "messages/s",
            &[("quic".into(), e), ("h3 duplex".into(), e)],
        )
        .unwrap();
        let text = std::fs::read_to_string(&bar).unwrap();
        assert!(text.contains("h3 duplex") && text.contains("<rect"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
