//! Plots of a run, as SVG and PNG (plotters; the PNG encoder is the few lines
//! below, over flate2): percentile distributions, latency against message
//! size, producer rate and time against subscribers.
//!
//! Log axes are drawn as linear axes over log10 of the value, with labels
//! showing the value, which keeps one drawing function for every plot.

use std::io::Write;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::Outcome;
use crate::summary::groups;

/// How an axis maps values.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Axis {
    Linear,
    Log10,
    /// Percentile p in [0, 1) drawn at log10(1 / (1 - p)).
    Percentile,
}

impl Axis {
    fn map(self, v: f64) -> f64 {
        match self {
            Axis::Linear => v,
            Axis::Log10 => v.max(1e-9).log10(),
            Axis::Percentile => (1.0 / (1.0 - v).max(1e-9)).log10(),
        }
    }

    fn label(self, x: f64) -> String {
        match self {
            Axis::Linear => format!("{x:.0}"),
            Axis::Log10 => {
                let v = 10f64.powf(x);
                if v >= 1e6 {
                    format!("{:.0}M", v / 1e6)
                } else if v >= 1e3 {
                    format!("{:.0}k", v / 1e3)
                } else {
                    format!("{v:.0}")
                }
            }
            Axis::Percentile => {
                let p = 100.0 * (1.0 - 10f64.powf(-x));
                format!("{}%", trim(p))
            }
        }
    }
}

fn trim(p: f64) -> String {
    let s = format!("{p:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// One chart: named series of (x, y) points in value space.
#[derive(Debug)]
pub(crate) struct Chart {
    /// The file name, without `.svg` / `.png`.
    pub file: String,
    pub title: String,
    pub x: (Axis, &'static str),
    pub y: (Axis, &'static str),
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Makes the font available to plotters; false (and no plots) without one.
fn register_font() -> bool {
    use std::sync::OnceLock;
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        ];
        for c in candidates {
            if let Ok(bytes) = std::fs::read(c) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Writes every chart the results allow into `dir` as SVG and PNG; returns
/// the files written. Without a TrueType font (Debian: fonts-dejavu-core)
/// there are no plots, and a message says so.
pub fn write_plots(dir: &Path, outcomes: &[Outcome]) -> Result<Vec<PathBuf>, String> {
    write_charts(dir, &charts(outcomes))
}

/// Writes `charts` into `dir` as SVG and PNG; returns the files written
/// (none, with a message, without a font).
pub(crate) fn write_charts(dir: &Path, charts: &[Chart]) -> Result<Vec<PathBuf>, String> {
    if charts.is_empty() {
        return Ok(Vec::new());
    }
    if !register_font() {
        eprintln!(
            "weft-bench: no TrueType font found (Debian: apt install fonts-dejavu-core); plots skipped"
        );
        return Ok(Vec::new());
    }
    let mut written = Vec::new();
    for c in charts {
        let svg = dir.join(format!("{}.svg", c.file));
        {
            let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
            draw(&root, c)?;
        }
        written.push(svg);
        let png = dir.join(format!("{}.png", c.file));
        let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
            draw(&root, c)?;
        }
        write_png(&png, SIZE, &rgb).map_err(|e| format!("{}: {e}", png.display()))?;
        written.push(png);
    }
    Ok(written)
}

const SIZE: (u32, u32) = (960, 600);

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &Chart) -> Result<(), String> {
    let file = c.file.as_str();
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{file}: {e}");
    root.fill(&WHITE).map_err(err)?;
    let pts: Vec<(f64, f64)> = c
        .series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, y)| (c.x.0.map(x), c.y.0.map(y))))
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in &pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    let pad = |a: f64, b: f64| {
        let d = ((b - a) * 0.05).max(0.05);
        (a - d, b + d)
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    let (xa, ya) = (c.x.0, c.y.0);
    // Log axes: about one label per decade, so labels land on round values.
    let labels = |axis: Axis, span: f64, default: usize| match axis {
        Axis::Linear => default,
        Axis::Log10 | Axis::Percentile => (span.ceil() as usize + 1).max(3),
    };
    chart
        .configure_mesh()
        .x_labels(labels(xa, x1 - x0, 10))
        .y_labels(labels(ya, y1 - y0, 10))
        .x_desc(c.x.1)
        .y_desc(c.y.1)
        .x_label_formatter(&|v| xa.label(*v))
        .y_label_formatter(&|v| ya.label(*v))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in c.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mapped: Vec<(f64, f64)> = points
            .iter()
            .map(|&(x, y)| (c.x.0.map(x), c.y.0.map(y)))
            .collect();
        chart
            .draw_series(LineSeries::new(mapped.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        if mapped.len() <= 12 {
            chart
                .draw_series(mapped.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The charts these results support.
fn charts(outcomes: &[Outcome]) -> Vec<Chart> {
    let mut charts = Vec::new();
    // Percentile distributions: every latency row of the default size, all
    // runs merged, one chart per floor.
    for (floor, file, title) in [
        (
            crate::harness::Floor::Shm,
            "percentiles-shm",
            "Round-trip latency by percentile, shared memory",
        ),
        (
            crate::harness::Floor::Udp,
            "percentiles-udp",
            "Round-trip latency by percentile, UDP on loopback",
        ),
    ] {
        let mut series = Vec::new();
        for g in groups(outcomes) {
            let o = g[0];
            if o.probes.map(|p| p.floor) != Some(floor)
                || o.scenario.starts_with("shm-fanout")
                || o.requested.ends_with("-sizes")
            {
                continue;
            }
            let mut merged = crate::report::histogram();
            for r in &g {
                if let Some(h) = &r.histogram {
                    let _ = merged.add(h);
                }
            }
            if merged.is_empty() {
                continue;
            }
            let points: Vec<(f64, f64)> = merged
                .iter_quantiles(5)
                .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64))
                .filter(|(q, _)| *q < 0.99999)
                .collect();
            series.push((format!("{} ({} B)", o.scenario, o.msg_bytes), points));
        }
        if !series.is_empty() {
            charts.push(Chart {
                file: file.into(),
                title: title.into(),
                x: (Axis::Percentile, "percentile"),
                y: (Axis::Log10, "round trip, ns"),
                series,
            });
        }
    }
    // Latency and throughput against message size.
    let by_size = |name: &str, metric: fn(&Outcome) -> Option<f64>| {
        let mut pts: Vec<(f64, f64)> = groups(outcomes)
            .into_iter()
            .filter(|g| g[0].scenario == name)
            .filter_map(|g| {
                let v: Vec<f64> = g.iter().filter_map(|o| metric(o)).collect();
                let s = crate::summary::Spread::of(v)?;
                Some((g[0].msg_bytes as f64, s.median))
            })
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts
    };
    let p50 = |o: &Outcome| o.latency.map(|l| l[0] as f64);
    let p99 = |o: &Outcome| o.latency.map(|l| l[2] as f64);
    let mut series = Vec::new();
    for name in ["shm-pingpong", "udp-pingpong"] {
        for (label, m) in [("p50", p50 as fn(&Outcome) -> Option<f64>), ("p99", p99)] {
            let pts = by_size(name, m);
            if pts.len() >= 2 {
                series.push((format!("{name} {label}"), pts));
            }
        }
    }
    if !series.is_empty() {
        charts.push(Chart {
            file: "latency-vs-size".into(),
            title: "Round trip against message size (medians over runs)".into(),
            x: (Axis::Log10, "message bytes"),
            y: (Axis::Log10, "round trip, ns"),
            series,
        });
    }
    let pts = by_size("shm-throughput", |o| o.msgs_per_s);
    if pts.len() >= 2 {
        let bytes_per_s = pts.iter().map(|&(b, r)| (b, b * r)).collect();
        charts.push(Chart {
            file: "throughput-vs-size".into(),
            title: "shm-throughput against message size (medians over runs)".into(),
            x: (Axis::Log10, "message bytes"),
            y: (Axis::Log10, "messages/s and payload bytes/s"),
            series: vec![
                ("messages/s".into(), pts),
                ("payload bytes/s".into(), bytes_per_s),
            ],
        });
    }
    // Fan-out: producer rate and time per message against subscribers.
    let fan: Vec<(f64, f64, f64)> = {
        let mut v: Vec<(f64, f64, f64)> = groups(outcomes)
            .into_iter()
            .filter(|g| g[0].scenario.starts_with("shm-fanout-"))
            .filter_map(|g| {
                let n = g[0].extra("subscribers")?;
                let rate =
                    crate::summary::Spread::of(g.iter().filter_map(|o| o.msgs_per_s).collect())?;
                let ns = crate::summary::Spread::of(
                    g.iter()
                        .filter_map(|o| o.extra("producer_ns_per_msg"))
                        .collect(),
                )?;
                Some((n, rate.median, ns.median))
            })
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    if fan.len() >= 2 {
        charts.push(Chart {
            file: "fanout-producer".into(),
            title: "shm fan-out: the producer's time per message against subscribers".into(),
            x: (Axis::Linear, "subscriber processes"),
            y: (Axis::Linear, "producer ns per message (median over runs)"),
            series: vec![(
                "producer ns/message".into(),
                fan.iter().map(|&(n, _, ns)| (n, ns)).collect(),
            )],
        });
        charts.push(Chart {
            file: "fanout-rate".into(),
            title: "shm fan-out: the producer's rate against subscribers".into(),
            x: (Axis::Linear, "subscriber processes"),
            y: (Axis::Linear, "messages/s (median over runs)"),
            series: vec![(
                "producer messages/s".into(),
                fan.iter().map(|&(n, r, _)| (n, r)).collect(),
            )],
        });
    }
    charts
}

/// Writes 8-bit RGB pixels as a PNG: signature, IHDR, one zlib IDAT, IEND.
fn write_png(path: &Path, (w, h): (u32, u32), rgb: &[u8]) -> std::io::Result<()> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), deflate, no filter method, no interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let row = (w * 3) as usize;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    for line in rgb.chunks(row).take(h as usize) {
        z.write_all(&[0])?; // filter type: none
        z.write_all(line)?;
    }
    let idat = z.finish()?;
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    std::fs::write(path, out)
}
