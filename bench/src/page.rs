//! The page `zmanager bench --report FILE.html` writes: a [`Sweep`] as
//! line charts (inline SVG, no script, nothing fetched) and a table of
//! every figure, in one self-contained HTML file.

use std::fmt::Write as _;

use super::sweep::{Axis, Point, Sweep};

/// The page.
pub fn render(sweep: &Sweep) -> String {
    let m = &sweep.machine;
    let mut out = String::new();
    out.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>zmanager bench report</title>\n<style>\n\
         body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}\n\
         .charts{display:flex;flex-wrap:wrap;gap:1.5em}\n\
         table{border-collapse:collapse;margin-top:1em}\n\
         td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}\n\
         th{background:#f4f4f4}\n</style>\n</head>\n<body>\n",
    );
    let _ = writeln!(out, "<h1>zmanager bench</h1>");
    let _ = writeln!(
        out,
        "<p>Flow {}, {}, {}; journal on: {} (sync {:?}), with \
         acknowledgements. Each point is one run, the journal off then on; \
         at most {} requests a point. Machine: {} CPUs, {}, Linux {}, load \
         average {:.2} at start.</p>",
        escape(&sweep.flow),
        plural(sweep.workers, "worker"),
        plural(sweep.services, "service"),
        sweep.journal_backend,
        sweep.journal_sync,
        thousands(sweep.max_requests),
        m.cpus,
        escape(&m.cpu_model),
        escape(&m.kernel),
        m.load_average,
    );
    let on_axis =
        |axis: Axis| -> Vec<&Point> { sweep.points.iter().filter(|p| p.axis == axis).collect() };
    let by_flight = on_axis(Axis::InFlight);
    let by_size = on_axis(Axis::Payload);
    out.push_str("<div class=\"charts\">\n");
    if !by_flight.is_empty() {
        let x = |p: &Point| p.in_flight as f64;
        out.push_str(&chart(
            "Throughput against requests in flight",
            "requests in flight",
            "requests/s",
            Scale::Linear,
            &journal_series(&by_flight, x, |p| p.throughput_rps),
        ));
        out.push_str(&chart(
            "Latency against requests in flight",
            "requests in flight",
            "µs, send to result",
            Scale::Log,
            &latency_series(&by_flight, x),
        ));
    }
    if !by_size.is_empty() {
        let x = |p: &Point| p.payload_bytes as f64;
        let mut series = journal_series(&by_size, x, |p| p.payload_mb_per_s);
        let raw: Vec<(f64, f64)> = by_size
            .iter()
            .filter_map(|p| p.raw_mb_per_s.map(|r| (x(p), r)))
            .collect();
        if !raw.is_empty() {
            series.push(Series {
                name: "raw ZeroMQ PUSH→PULL".to_owned(),
                color: "#888",
                dashed: true,
                points: raw,
            });
        }
        out.push_str(&chart(
            "Payload bytes per second against payload size",
            "payload bytes",
            "MB/s of request payloads",
            Scale::Log,
            &series,
        ));
        out.push_str(&chart(
            "Latency against payload size",
            "payload bytes",
            "µs, send to result",
            Scale::Log,
            &latency_series(&by_size, x),
        ));
    }
    out.push_str("</div>\n");
    out.push_str(&table(&sweep.points));
    out.push_str("</body>\n</html>\n");
    out
}

/// The figures of every point, as the charts have them.
fn table(points: &[Point]) -> String {
    let mut out = String::from(
        "<table>\n<tr><th>axis</th><th>journal</th><th>in flight</th><th>payload B</th>\
         <th>requests</th><th>requests/s</th><th>MB/s</th><th>raw ZeroMQ MB/s</th>\
         <th>p50 µs</th><th>p99 µs</th><th>CPU µs/request</th><th>errors</th></tr>\n",
    );
    for p in points {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td>\
             <td>{:.1}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.1}</td><td>{}</td></tr>",
            match p.axis {
                Axis::InFlight => "in flight",
                Axis::Payload => "payload",
            },
            if p.journal { "on" } else { "off" },
            p.in_flight,
            p.payload_bytes,
            p.requests,
            p.throughput_rps,
            p.payload_mb_per_s,
            p.raw_mb_per_s
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}")),
            p.latency_us.p50,
            p.latency_us.p99,
            p.cpu_us_per_request,
            p.errors,
        );
    }
    out.push_str("</table>\n");
    out
}

struct Series {
    name: String,
    color: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

const OFF: &str = "#1f77b4";
const ON: &str = "#d62728";

/// Journal off and on, one line each.
fn journal_series(
    points: &[&Point],
    x: impl Fn(&Point) -> f64,
    y: impl Fn(&Point) -> f64,
) -> Vec<Series> {
    [(false, "journal off", OFF), (true, "journal on", ON)]
        .into_iter()
        .map(|(journal, name, color)| Series {
            name: name.to_owned(),
            color,
            dashed: false,
            points: points
                .iter()
                .filter(|p| p.journal == journal)
                .map(|p| (x(p), y(p)))
                .collect(),
        })
        .collect()
}

/// p50 (solid) and p99 (dashed), journal off and on.
fn latency_series(points: &[&Point], x: impl Fn(&Point) -> f64) -> Vec<Series> {
    let mut series = Vec::new();
    for (journal, label, color) in [(false, "off", OFF), (true, "on", ON)] {
        for (p99, which) in [(false, "p50"), (true, "p99")] {
            series.push(Series {
                name: format!("{which}, journal {label}"),
                color,
                dashed: p99,
                points: points
                    .iter()
                    .filter(|p| p.journal == journal)
                    .map(|p| {
                        let l = p.latency_us;
                        (x(p), if p99 { l.p99 } else { l.p50 })
                    })
                    .collect(),
            });
        }
    }
    series
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    Log,
}

const WIDTH: f64 = 520.0;
const HEIGHT: f64 = 330.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 15.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 95.0;

/// A line chart: x on a log scale (in flight and sizes grow tenfold),
/// y on `y_scale`.
fn chart(title: &str, x_label: &str, y_label: &str, y_scale: Scale, series: &[Series]) -> String {
    let all = || series.iter().flat_map(|s| s.points.iter().copied());
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let xs: Vec<f64> = all().map(|(x, _)| x).filter(|&x| positive(x)).collect();
    let ys: Vec<f64> = all()
        .map(|(_, y)| y)
        .filter(|&y| positive(y) || (y_scale == Scale::Linear && y == 0.0))
        .collect();
    let (x_lo, x_hi) = log_range(&xs);
    let (y_lo, y_hi, y_ticks) = match y_scale {
        Scale::Log => {
            let (lo, hi) = log_range(&ys);
            (lo, hi, log_ticks(lo, hi))
        }
        Scale::Linear => {
            let hi = nice_ceiling(ys.iter().copied().fold(0.0, f64::max));
            (0.0, hi, (0..=5).map(|i| hi * f64::from(i) / 5.0).collect())
        }
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x.log10() - x_lo.log10()) / (x_hi.log10() - x_lo.log10()) * plot_w;
    let py = |y: f64| {
        let f = match y_scale {
            Scale::Log => (y.log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10()),
            Scale::Linear => (y - y_lo) / (y_hi - y_lo),
        };
        TOP + plot_h - f * plot_h
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-size=\"11\" role=\"img\"><title>{}</title>",
        escape(title)
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        LEFT,
        escape(title)
    );
    for tick in log_ticks(x_lo, x_hi) {
        let x = px(tick);
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + plot_h,
            TOP + plot_h + 14.0,
            short(tick)
        );
    }
    for tick in y_ticks {
        let y = py(tick);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 5.0,
            y + 4.0,
            short(tick)
        );
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#999\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        LEFT + plot_w / 2.0,
        TOP + plot_h + 30.0,
        escape(x_label),
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let drawn: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|&(x, y)| {
                positive(x) && (positive(y) || (y_scale == Scale::Linear && y == 0.0))
            })
            .map(|(x, y)| (px(x), py(y)))
            .collect();
        let dash = if s.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let path: Vec<String> = drawn
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            s.color,
            path.join(" ")
        );
        for (x, y) in &drawn {
            let _ = writeln!(
                svg,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{}\"/>",
                s.color
            );
        }
        // The legend, under the axis label, two entries a row.
        let (col, row) = ((i % 2) as f64, (i / 2) as f64);
        let lx = LEFT + col * plot_w / 2.0;
        let ly = TOP + plot_h + 50.0 + row * 16.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 24.0,
            s.color,
            lx + 30.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Powers of ten around `values` (1 to 10 when there are none).
fn log_range(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    if !lo.is_finite() || hi <= 0.0 {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil());
    if hi <= lo { (lo, lo * 10.0) } else { (lo, hi) }
}

fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().round() as i32, hi.log10().round() as i32);
    (a..=b).map(|e| 10f64.powi(e)).collect()
}

/// 1, 2 or 5 times a power of ten, at least `v` (1 for nothing).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * power)
}

/// 1,000 as 1k, 1,000,000 as 1M; small values with their decimals.
fn short(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    if v >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if v >= 1e3 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if v >= 1.0 || v == 0.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

/// 300000 as 300,000.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "1 worker", "2 workers".
pub fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Latency;
    use crate::proc_stats::Machine;

    fn point(axis: Axis, journal: bool, in_flight: usize, payload: usize, rps: f64) -> Point {
        Point {
            axis,
            journal,
            in_flight,
            payload_bytes: payload,
            requests: 1000,
            throughput_rps: rps,
            payload_mb_per_s: rps * payload as f64 / 1e6,
            latency_us: Latency {
                p50: 100.0,
                p99: 400.0,
                ..Latency::default()
            },
            cpu_us_per_request: 9.0,
            errors: 0,
            raw_mb_per_s: (axis == Axis::Payload && !journal).then_some(500.0),
        }
    }

    fn sweep() -> Sweep {
        Sweep {
            machine: Machine {
                cpu_model: "A <fast> & cheap CPU".to_owned(),
                ..Machine::default()
            },
            workers: 2,
            services: 1,
            flow: "Echo".to_owned(),
            journal_backend: "sqlite",
            journal_sync: zmanager::journal::SyncMode::Full,
            max_requests: 1000,
            points: vec![
                point(Axis::InFlight, false, 1, 64, 5000.0),
                point(Axis::InFlight, true, 1, 64, 2000.0),
                point(Axis::InFlight, false, 1000, 64, 170_000.0),
                point(Axis::InFlight, true, 1000, 64, 85_000.0),
                point(Axis::Payload, false, 1000, 64, 170_000.0),
                point(Axis::Payload, true, 1000, 64, 85_000.0),
                point(Axis::Payload, false, 1000, 65536, 8000.0),
                point(Axis::Payload, true, 1000, 65536, 4000.0),
            ],
        }
    }

    #[test]
    fn the_page_has_a_chart_per_view_a_line_per_series_and_a_row_per_point() {
        let page = render(&sweep());
        assert_eq!(page.matches("<svg").count(), 4, "{page}");
        // Two journal lines + four latency lines, twice, and the raw line.
        assert_eq!(page.matches("<polyline").count(), 2 + 4 + 3 + 4);
        assert_eq!(page.matches("<circle").count(), 2 * 2 * 6 + 2);
        assert_eq!(page.matches("<tr><td>").count(), 8);
        assert!(page.contains("A &lt;fast&gt; &amp; cheap CPU"), "escaped");
        assert!(!page.contains("NaN") && !page.contains("inf"), "{page}");
    }

    #[test]
    fn a_sweep_of_one_axis_draws_only_its_charts() {
        let mut only = sweep();
        only.points.retain(|p| p.axis == Axis::InFlight);
        let page = render(&only);
        assert_eq!(page.matches("<svg").count(), 2);
        assert!(!page.contains("payload size"));
    }

    #[test]
    fn scales_end_on_round_values() {
        assert_eq!(log_range(&[3.0, 4500.0]), (1.0, 10_000.0));
        assert_eq!(log_range(&[10.0]), (10.0, 100.0));
        assert_eq!(log_range(&[]), (1.0, 10.0));
        assert_eq!(log_ticks(1.0, 1000.0), [1.0, 10.0, 100.0, 1000.0]);
        assert_eq!(nice_ceiling(173_000.0), 200_000.0);
        assert_eq!(nice_ceiling(4.1), 5.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(short(200_000.0), "200k");
        assert_eq!(short(1_500_000.0), "1.5M");
        assert_eq!(short(64.0), "64");
        assert_eq!(short(0.5), "0.5");
        assert_eq!(thousands(300_000), "300,000");
        assert_eq!(thousands(999), "999");
    }
}
