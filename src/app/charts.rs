//! Small SVG charts drawn by Leptos components: a scatter plot and horizontal bars. The viewBox
//! is 360 units wide and the SVG scales to its container, so at a 390 px phone width one unit is
//! about one pixel and 11-unit text stays readable.

use leptos::prelude::*;

const WIDTH: f64 = 360.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 40.0;

/// Colours for series, distinguishable in light and dark themes.
pub const PALETTE: [&str; 4] = ["#2f7fd8", "#d8742f", "#2fa36b", "#b04fc4"];

#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
    /// Index into `PALETTE`.
    pub series: usize,
}

/// Round tick values covering 0..=max (about four intervals).
pub fn ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let count = (max / step).ceil() as usize;
    (0..=count).map(|i| i as f64 * step).collect()
}

fn tick_label(v: f64) -> String {
    if v >= 1000.0 {
        let k = v / 1000.0;
        if k.fract() == 0.0 {
            format!("{k:.0}k")
        } else {
            format!("{k:.1}k")
        }
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v < 1.0 {
        // Small values (KL divergences) keep two significant digits.
        let digits = (1.0 - v.log10().floor()).clamp(1.0, 8.0) as usize;
        format!("{v:.digits$}")
    } else {
        format!("{v:.1}")
    }
}

#[component]
pub fn ScatterChart(
    title: &'static str,
    x_label: &'static str,
    y_label: &'static str,
    points: Vec<Point>,
    #[prop(into)] test_id: String,
) -> impl IntoView {
    let height = 220.0;
    let x_ticks = ticks(points.iter().map(|p| p.x).fold(0.0, f64::max) * 1.1);
    let y_ticks = ticks(points.iter().map(|p| p.y).fold(0.0, f64::max) * 1.1);
    let x_max = *x_ticks.last().unwrap_or(&1.0);
    let y_max = *y_ticks.last().unwrap_or(&1.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = height - TOP - BOTTOM;
    let sx = move |x: f64| LEFT + x / x_max * plot_w;
    let sy = move |y: f64| TOP + plot_h - y / y_max * plot_h;
    let grid_y = y_ticks
        .iter()
        .map(|&t| {
            view! {
                <line x1=LEFT x2=WIDTH - RIGHT y1=sy(t) y2=sy(t) class="grid" />
                <text x=LEFT - 4.0 y=sy(t) + 4.0 text-anchor="end" class="tick">{tick_label(t)}</text>
            }
        })
        .collect_view();
    let grid_x = x_ticks
        .iter()
        .map(|&t| {
            view! {
                <line x1=sx(t) x2=sx(t) y1=TOP y2=TOP + plot_h class="grid" />
                <text x=sx(t) y=TOP + plot_h + 14.0 text-anchor="middle" class="tick">{tick_label(t)}</text>
            }
        })
        .collect_view();
    let mut placed: Vec<(f64, f64)> = Vec::new();
    let dots = points
        .iter()
        .map(|p| {
            let (cx, cy) = (sx(p.x), sy(p.y));
            // Labels go left of points in the right half so they stay inside the plot.
            let (lx, anchor) = if cx > LEFT + plot_w * 0.6 {
                (cx - 8.0, "end")
            } else {
                (cx + 8.0, "start")
            };
            // A label that would overprint an earlier one goes under its point instead.
            let above = cy - 7.0;
            let clashes = placed
                .iter()
                .any(|&(x, y)| (x - lx).abs() < 90.0 && (y - above).abs() < 12.0);
            let ly = if clashes { cy + 16.0 } else { above };
            placed.push((lx, ly));
            let colour = PALETTE[p.series % PALETTE.len()];
            view! {
                <circle cx=cx cy=cy r="5" fill=colour class="point">
                    <title>{format!("{}: {:.2}, {:.2}", p.label, p.x, p.y)}</title>
                </circle>
                <text x=lx y=ly text-anchor=anchor class="point-label">{p.label.clone()}</text>
            }
        })
        .collect_view();
    let empty = points.is_empty();
    view! {
        <figure class="chart" data-testid=test_id>
            <figcaption>{title}</figcaption>
            <svg viewBox=format!("0 0 {WIDTH} {height}") role="img" aria-label=title preserveAspectRatio="xMidYMid meet">
                {grid_y}
                {grid_x}
                <text x=LEFT + plot_w / 2.0 y=height - 6.0 text-anchor="middle" class="axis-label">{x_label}</text>
                <text x="12" y=TOP + plot_h / 2.0 text-anchor="middle" class="axis-label" transform=format!("rotate(-90 12 {})", TOP + plot_h / 2.0)>{y_label}</text>
                {dots}
                {empty.then(|| view! { <text x=WIDTH / 2.0 y=height / 2.0 text-anchor="middle" class="tick">"no data"</text> })}
            </svg>
        </figure>
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub group: String,
    pub label: String,
    pub value: f64,
    pub series: usize,
}

/// Horizontal bars, grouped (one group per model), each labelled with its value.
#[component]
pub fn BarChart(
    title: &'static str,
    unit: &'static str,
    bars: Vec<Bar>,
    #[prop(into)] test_id: String,
) -> impl IntoView {
    const ROW: f64 = 18.0;
    const GROUP_GAP: f64 = 18.0;
    let label_w = 96.0;
    let groups: Vec<String> = bars.iter().fold(Vec::new(), |mut g, b| {
        if !g.contains(&b.group) {
            g.push(b.group.clone());
        }
        g
    });
    let max = ticks(bars.iter().map(|b| b.value).fold(0.0, f64::max) * 1.05);
    let max = *max.last().unwrap_or(&1.0);
    let plot_w = WIDTH - label_w - RIGHT - 52.0;
    let mut y = TOP;
    let mut rows = Vec::new();
    for group in &groups {
        y += GROUP_GAP;
        rows.push(
            view! { <text x="4" y=y - 5.0 class="group-label">{group.clone()}</text> }.into_any(),
        );
        for bar in bars.iter().filter(|b| &b.group == group) {
            let w = (bar.value / max * plot_w).max(1.0);
            let colour = PALETTE[bar.series % PALETTE.len()];
            rows.push(
                view! {
                    <text x=label_w - 4.0 y=y + 12.0 text-anchor="end" class="tick">{bar.label.clone()}</text>
                    <rect x=label_w y=y + 2.0 width=w height=ROW - 5.0 fill=colour class="bar">
                        <title>{format!("{} {}: {:.1} {unit}", bar.group, bar.label, bar.value)}</title>
                    </rect>
                    <text x=label_w + w + 4.0 y=y + 12.0 class="tick">{format!("{:.0} {unit}", bar.value)}</text>
                }
                .into_any(),
            );
            y += ROW;
        }
    }
    let height = y + 8.0;
    view! {
        <figure class="chart" data-testid=test_id>
            <figcaption>{title}</figcaption>
            <svg viewBox=format!("0 0 {WIDTH} {height}") role="img" aria-label=title>
                {rows}
            </svg>
        </figure>
    }
}

#[cfg(test)]
mod tests {
    use super::ticks;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(130.0), vec![0.0, 50.0, 100.0, 150.0]);
        assert_eq!(ticks(9.0), vec![0.0, 2.5, 5.0, 7.5, 10.0]);
        assert_eq!(ticks(0.0).len(), 5, "an empty chart still gets an axis");
        assert_eq!(super::tick_label(1500.0), "1.5k");
        assert_eq!(super::tick_label(2000.0), "2k");
        let t = ticks(1234.0);
        assert!(*t.last().unwrap() >= 1234.0 && t.len() <= 6, "{t:?}");
    }
}
