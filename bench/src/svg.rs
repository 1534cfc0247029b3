//! Grouped bar charts as hand-written SVG, so rendering needs no plotting
//! library.

use std::fmt::Write;

/// A figure: a title, a legend of series, and a grid of panels.
#[derive(Debug, Clone)]
pub struct Chart {
    /// The heading.
    pub title: String,
    /// A smaller line under the heading: machine, settings.
    pub subtitle: String,
    /// One name per series; bar `i` of every group belongs to series `i`.
    pub series: Vec<String>,
    /// Panels per row.
    pub columns: usize,
    /// The panels, row by row.
    pub panels: Vec<Panel>,
}

/// One plot: groups of bars on a linear axis starting at zero.
#[derive(Debug, Clone)]
pub struct Panel {
    /// What the panel shows, with its unit.
    pub title: String,
    /// The groups, left to right.
    pub groups: Vec<Group>,
}

/// Bars side by side, one per series; `None` leaves a gap.
#[derive(Debug, Clone)]
pub struct Group {
    /// The label under the group.
    pub label: String,
    /// One value per series.
    pub values: Vec<Option<f64>>,
}

const PALETTE: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f", "#d62728", "#9467bd",
];
const PANEL_W: f64 = 440.0;
const PANEL_H: f64 = 250.0;
const HEAD_H: f64 = 78.0;
const MARGIN: f64 = 16.0;

/// Renders the chart as a standalone SVG document.
pub fn render(chart: &Chart) -> String {
    let columns = chart.columns.max(1);
    let rows = chart.panels.len().div_ceil(columns);
    let width = MARGIN * 2.0 + PANEL_W * columns as f64;
    let height = HEAD_H + PANEL_H * rows as f64 + MARGIN;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{MARGIN}" y="26" font-size="18" font-weight="bold">{}</text>"#,
        escape(&chart.title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{MARGIN}" y="46" font-size="11" fill="#555">{}</text>"##,
        escape(&chart.subtitle)
    );
    let mut x = MARGIN;
    for (i, name) in chart.series.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="58" width="12" height="12" fill="{}"/><text x="{}" y="69" font-size="12">{}</text>"#,
            PALETTE[i % PALETTE.len()],
            x + 16.0,
            escape(name)
        );
        x += 24.0 + 7.0 * name.len() as f64;
    }
    for (i, panel) in chart.panels.iter().enumerate() {
        let px = MARGIN + PANEL_W * (i % columns) as f64;
        let py = HEAD_H + PANEL_H * (i / columns) as f64;
        panel_svg(&mut s, panel, chart.series.len(), px, py);
    }
    s.push_str("</svg>\n");
    s
}

fn panel_svg(s: &mut String, panel: &Panel, series: usize, px: f64, py: f64) {
    let (left, top, right, bottom) = (
        px + 48.0,
        py + 28.0,
        px + PANEL_W - 14.0,
        py + PANEL_H - 36.0,
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        px + 8.0,
        py + 16.0,
        escape(&panel.title)
    );
    let max = panel
        .groups
        .iter()
        .flat_map(|g| g.values.iter().flatten())
        .fold(0.0f64, |m, v| m.max(*v));
    let top_value = nice_ceiling(max * 1.12);
    let y_of = |v: f64| bottom - (bottom - top) * (v / top_value);
    for tick in 0..=4 {
        let v = top_value * f64::from(tick) / 4.0;
        let y = y_of(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{}</text>"##,
            left - 4.0,
            y + 3.0,
            si(v)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>"##
    );
    let groups = panel.groups.len().max(1);
    let slot = (right - left) / groups as f64;
    let bar = (slot * 0.8 / series.max(1) as f64).min(60.0);
    for (g, group) in panel.groups.iter().enumerate() {
        let center = left + slot * (g as f64 + 0.5);
        let start = center - bar * series as f64 / 2.0;
        for (k, value) in group.values.iter().enumerate() {
            let Some(v) = *value else { continue };
            let x = start + bar * k as f64;
            let y = y_of(v);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
                bar - 2.0,
                bottom - y,
                PALETTE[k % PALETTE.len()],
                si(v)
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                x + bar / 2.0 - 1.0,
                y - 3.0,
                si(v)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{center:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            bottom + 16.0,
            escape(&group.label)
        );
    }
}

/// The value with an SI suffix and three significant digits: 1.23M, 45.6k.
pub fn si(v: f64) -> String {
    let (v, suffix) = if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if v == v.trunc() && suffix.is_empty() {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.0}{suffix}")
    } else if v >= 10.0 {
        format!("{v:.1}{suffix}")
    } else {
        format!("{v:.2}{suffix}")
    }
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_suffixes() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(1.5), "1.50");
        assert_eq!(si(3.0), "3");
        assert_eq!(si(45_600.0), "45.6k");
        assert_eq!(si(1_230_000.0), "1.23M");
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(110.0), 200.0);
        assert_eq!(nice_ceiling(2_400.0), 2_500.0);
    }

    #[test]
    fn renders_well_formed_text() {
        let chart = Chart {
            title: "a < b".into(),
            subtitle: String::new(),
            series: vec!["x".into(), "y".into()],
            columns: 2,
            panels: vec![Panel {
                title: "p".into(),
                groups: vec![Group {
                    label: "g".into(),
                    values: vec![Some(1.0), None],
                }],
            }],
        };
        let svg = render(&chart);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt; b"));
        assert_eq!(svg.matches("<rect x=").count(), 3);
    }
}
