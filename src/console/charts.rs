//! The overview's charts, drawn here as SVG (no chart library in the page): items
//! delivered per minute by destination, watermark lag by site, items waiting by stage
//! and API requests per minute by site, over the samples `pipeline::trends` keeps.

use std::collections::{BTreeMap, BTreeSet};

use maud::{Markup, html};

use crate::pipeline::trends::{Sample, Trends};

/// Points drawn per series at most: longer series are averaged into this many.
const POINTS: usize = 120;
/// The drawing's size, in its own units.
const WIDTH: f64 = 320.0;
const HEIGHT: f64 = 140.0;
/// Room for the axis labels.
const LEFT: f64 = 34.0;
const RIGHT: f64 = 6.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 16.0;
/// Series colours, readable on light and dark backgrounds.
const PALETTE: [&str; 6] = [
    "#3b82f6", "#f97316", "#22c55e", "#a855f7", "#ef4444", "#06b6d4",
];

/// One line: its name and its points (UNIX seconds, value).
type Series = (String, Vec<(i64, f64)>);

/// The four charts, or a word on when they come.
pub(super) fn overview(trends: &Trends) -> Markup {
    let samples = trends.samples();
    let minutes = trends.every.as_secs_f64() / 60.0;
    html! {
        h2 { "The last hours" }
        @if samples.len() < 2 {
            p.muted { "The charts begin after two samples (one every " (super::layout::span(trends.every.as_secs_f64())) ")." }
        } @else {
            div.charts {
                (chart("Delivered per minute, by destination", &rates(&samples, minutes, |s| &s.delivered, true)))
                (chart("Watermark lag (minutes), by site", &levels(&samples, |s| &s.lag, |seconds| seconds / 60.0)))
                (chart("Items waiting, by stage", &levels(&samples, |s| &s.depth, |n| n as f64)))
                (chart("API requests per minute, by site", &rates(&samples, minutes, |s| &s.requests, false)))
            }
        }
    }
}

/// Every name any sample has under `field`.
fn names<'a, V: 'a>(
    samples: &'a [Sample],
    field: impl Fn(&'a Sample) -> &'a BTreeMap<String, V>,
) -> BTreeSet<&'a str> {
    samples
        .iter()
        .flat_map(|s| field(s).keys().map(String::as_str))
        .collect()
}

/// Per minute: the difference between samples of a running count (`cumulative`), or
/// the count each sample holds for its interval.
fn rates<'a>(
    samples: &'a [Sample],
    minutes: f64,
    field: impl Fn(&'a Sample) -> &'a BTreeMap<String, u64> + Copy,
    cumulative: bool,
) -> Vec<Series> {
    names(samples, field)
        .into_iter()
        .map(|name| {
            let value = |s: &'a Sample| field(s).get(name).copied().unwrap_or(0) as f64;
            let points = samples
                .windows(2)
                .map(|pair| {
                    let n = if cumulative {
                        (value(&pair[1]) - value(&pair[0])).max(0.0)
                    } else {
                        value(&pair[1])
                    };
                    (pair[1].at, n / minutes)
                })
                .collect();
            (name.to_string(), points)
        })
        .collect()
}

/// Each sample's value, as `value` makes it a number.
fn levels<'a, V: Copy + 'a>(
    samples: &'a [Sample],
    field: impl Fn(&'a Sample) -> &'a BTreeMap<String, V> + Copy,
    value: impl Fn(V) -> f64 + Copy,
) -> Vec<Series> {
    names(samples, field)
        .into_iter()
        .map(|name| {
            let points = samples
                .iter()
                .filter_map(|s| field(s).get(name).map(|v| (s.at, value(*v))))
                .collect();
            (name.to_string(), points)
        })
        .collect()
}

/// At most [`POINTS`] points: consecutive ones averaged.
fn thin(points: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let per = points.len().div_ceil(POINTS).max(1);
    points
        .chunks(per)
        .map(|c| {
            let n = c.len() as f64;
            let at = c.iter().map(|p| p.0 as f64).sum::<f64>() / n;
            (at as i64, c.iter().map(|p| p.1).sum::<f64>() / n)
        })
        .collect()
}

fn clock(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0).map_or(String::new(), |t| t.format("%H:%M").to_string())
}

/// A value for an axis: `12`, `3.5`, `12k`.
fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn chart(title: &str, series: &[Series]) -> Markup {
    let thinned: Vec<(&str, Vec<(i64, f64)>)> =
        series.iter().map(|(n, p)| (n.as_str(), thin(p))).collect();
    let all = thinned.iter().flat_map(|(_, p)| p.iter());
    let (t0, t1) = all
        .clone()
        .fold((i64::MAX, i64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let top = all.map(|p| p.1).fold(0.0, f64::max).max(1.0);
    // No points at all (nothing delivered yet, no site with a watermark): an empty
    // drawing, whose bounds are still the fold's start.
    let span = if t0 <= t1 { (t1 - t0).max(1) } else { 1 } as f64;
    let x = |t: i64| LEFT + (t - t0) as f64 / span * (WIDTH - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - v / top) * (HEIGHT - TOP - BOTTOM);
    let line = |points: &[(i64, f64)]| {
        points
            .iter()
            .map(|(t, v)| format!("{:.0},{:.0}", x(*t), y(*v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let base = HEIGHT - BOTTOM;
    html! {
        figure {
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(title) {
                line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(base) {}
                line.axis x1=(LEFT) y1=(base) x2=(WIDTH - RIGHT) y2=(base) {}
                text x=(LEFT - 3.0) y=(TOP + 8.0) text-anchor="end" { (short(top)) }
                text x=(LEFT - 3.0) y=(base) text-anchor="end" { "0" }
                @if t0 <= t1 {
                    text x=(LEFT) y=(HEIGHT - 3.0) { (clock(t0)) }
                    text x=(WIDTH - RIGHT) y=(HEIGHT - 3.0) text-anchor="end" { (clock(t1)) }
                }
                @for (i, (_, points)) in thinned.iter().enumerate() {
                    polyline points=(line(points)) fill="none" stroke=(PALETTE[i % PALETTE.len()]) stroke-width="1.5" {}
                }
            }
            figcaption {
                (title)
                @for (i, (name, _)) in thinned.iter().enumerate() {
                    " " span style=(format!("color:{}", PALETTE[i % PALETTE.len()])) { "■" } " " (name)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, delivered: u64, lag: f64) -> Sample {
        Sample {
            at,
            delivered: [("pg".to_string(), delivered)].into(),
            lag: [("main".to_string(), lag)].into(),
            ..Sample::default()
        }
    }

    #[test]
    fn running_counts_become_rates_per_minute_and_levels_stay_levels() {
        let samples = [
            sample(0, 0, 60.0),
            sample(60, 30, 120.0),
            sample(120, 90, 180.0),
        ];
        let per_minute = rates(&samples, 1.0, |s| &s.delivered, true);
        assert_eq!(
            per_minute,
            [("pg".to_string(), vec![(60, 30.0), (120, 60.0)])]
        );
        let lag = levels(&samples, |s| &s.lag, |seconds| seconds / 60.0);
        assert_eq!(lag[0].1, [(0, 1.0), (60, 2.0), (120, 3.0)]);
        // Half-minute samples: the same counts are twice the rate.
        assert_eq!(rates(&samples, 0.5, |s| &s.delivered, true)[0].1[0].1, 60.0);
    }

    #[test]
    fn long_series_are_thinned_and_the_drawing_holds_every_series() {
        let points: Vec<(i64, f64)> = (0..360).map(|i| (i * 60, i as f64)).collect();
        assert_eq!(thin(&points).len(), POINTS);
        let svg = chart("t", &[("a<b>".into(), points)]).into_string();
        assert!(
            svg.contains("<polyline") && svg.contains("a&lt;b&gt;"),
            "{svg}"
        );
        assert_eq!(short(12_345.0), "12k");
        // A chart with nothing to draw yet is an empty drawing, not a failed page.
        for empty in [vec![], vec![("a".to_string(), vec![])]] {
            let svg = chart("t", &empty).into_string();
            assert!(
                svg.contains("<svg") && !svg.contains("<text x=\"34\""),
                "{svg}"
            );
        }
        let trends = Trends::new(std::time::Duration::from_secs(60));
        trends.push(Sample::default());
        trends.push(Sample::default());
        let svg = overview(&trends).into_string();
        assert!(svg.contains("Delivered per minute"), "{svg}");
        assert_eq!(short(3.25), "3.2");
    }
}
