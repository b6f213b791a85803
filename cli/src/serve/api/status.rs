//! The status page at `/`: one server-rendered HTML page with an inline
//! SVG chart and inline CSS. No JavaScript and nothing fetched from
//! elsewhere, so it works offline and leaks nothing to a third party. It
//! needs a read-only token (header, or `?token=` for a browser) because
//! it names components, hosts and jobs; it shows no secret and no path.

use super::{ApiError, ApiResult, Server, TokenQuery, assess, authorize, blocking, jobs};
use crate::output::bytes;
use crate::serve::auth::Role;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// The chart's size in SVG units.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const MARGIN: f64 = 40.0;
/// Snapshots per component in the growth table.
const GROWTH_ROWS: usize = 8;
/// Line colours, one per component in turn.
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

pub async fn page(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> ApiResult {
    authorize(&server, &headers, query.token.as_deref(), Role::ReadOnly)?;
    let html = blocking(move || Ok::<_, ApiError>(render(&server))).await?;
    Ok(Html(html).into_response())
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Each component's (time in seconds, bytes) points, oldest first, from
/// trusted snapshots.
fn series(health: &super::Health) -> BTreeMap<String, Vec<(i64, u64, String)>> {
    let mut series: BTreeMap<String, Vec<(i64, u64, String)>> = BTreeMap::new();
    for snapshot in health
        .snapshots
        .iter()
        .filter(|snapshot| snapshot.trusted.is_ok())
    {
        let Ok(time) = snapshot.body.time.parse::<jiff::Timestamp>() else {
            continue;
        };
        for component in &snapshot.body.components {
            series.entry(component.name.clone()).or_default().push((
                time.as_second(),
                component.stats.bytes,
                snapshot.id.short(),
            ));
        }
    }
    for points in series.values_mut() {
        points.sort();
    }
    series
}

/// The sizes over time as an inline SVG line chart, one line per
/// component.
fn chart(series: &BTreeMap<String, Vec<(i64, u64, String)>>) -> String {
    let all = series.values().flatten();
    let (Some(first), Some(last)) = (
        all.clone().map(|point| point.0).min(),
        all.clone().map(|point| point.0).max(),
    ) else {
        return "<p>No snapshots yet.</p>".into();
    };
    let top = all.map(|point| point.1).max().unwrap_or(0).max(1);
    let span = (last - first).max(1) as f64;
    let x = |time: i64| MARGIN + (time - first) as f64 / span * (WIDTH - 2.0 * MARGIN);
    let y = |size: u64| HEIGHT - MARGIN - size as f64 / top as f64 * (HEIGHT - 2.0 * MARGIN);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="size-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="component sizes over time">"#
    );
    let _ = write!(
        svg,
        r##"<line x1="{MARGIN}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{b}" stroke="#888"/>"##,
        b = HEIGHT - MARGIN,
        r = WIDTH - MARGIN
    );
    let _ = write!(
        svg,
        r##"<text x="{MARGIN}" y="{t}" font-size="11" fill="#444">{top}</text><text x="{MARGIN}" y="{b}" font-size="11" fill="#444">0</text>"##,
        t = MARGIN - 6.0,
        b = HEIGHT - MARGIN + 14.0,
        top = escape(&bytes(top)),
    );
    for (index, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let coordinates: Vec<String> = points
            .iter()
            .map(|(time, size, _)| format!("{:.1},{:.1}", x(*time), y(*size)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" data-component="{name}" fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>"#,
            name = escape(name),
            points = coordinates.join(" ")
        );
        for (time, size, id) in points {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{} snapshot {}: {}</title></circle>"#,
                x(*time),
                y(*size),
                escape(name),
                escape(id),
                escape(&bytes(*size))
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{lx}" y="{ly}" font-size="12" fill="{colour}">{}</text>"#,
            escape(name),
            lx = WIDTH - MARGIN - 120.0,
            ly = MARGIN + 14.0 * index as f64,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Per component, its newest snapshots with their size and growth over
/// the one before (the nightly growth).
fn growth_table(series: &BTreeMap<String, Vec<(i64, u64, String)>>) -> String {
    let mut html = String::from(
        "<table id=\"growth\"><tr><th>component</th><th>snapshot</th><th>taken (UTC)</th><th>size</th><th>growth</th></tr>",
    );
    for (name, points) in series {
        let start = points.len().saturating_sub(GROWTH_ROWS);
        for (index, (time, size, id)) in points.iter().enumerate().skip(start).rev() {
            let growth = match index.checked_sub(1).map(|before| points[before].1) {
                None => "first".to_string(),
                Some(before) if *size >= before => format!("+{}", bytes(size - before)),
                Some(before) => format!("−{}", bytes(before - size)),
            };
            let taken = jiff::Timestamp::from_second(*time)
                .map(|time| time.strftime("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default();
            let _ = write!(
                html,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(name),
                escape(id),
                escape(&taken),
                escape(&bytes(*size)),
                escape(&growth)
            );
        }
    }
    html.push_str("</table>");
    html
}

/// A history's records, newest first, as table rows.
fn history_table(id: &str, records: &[Value]) -> String {
    if records.is_empty() {
        return format!("<p id=\"{id}\">None recorded yet.</p>");
    }
    let mut html = format!(
        "<table id=\"{id}\"><tr><th>time</th><th>result</th><th>snapshot</th><th>seconds</th></tr>"
    );
    for record in records.iter().rev() {
        let ok = record["ok"] == Value::Bool(true);
        let _ = write!(
            html,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td><code>{}</code></td><td>{:.1}</td></tr>",
            if ok { "ok" } else { "bad" },
            escape(record["time"].as_str().unwrap_or("?")),
            if ok { "passed" } else { "FAILED" },
            escape(
                record["snapshot"]
                    .as_str()
                    .map(|id| id.get(..10).unwrap_or(id))
                    .unwrap_or("—")
            ),
            record["seconds"].as_f64().unwrap_or(0.0)
        );
    }
    html.push_str("</table>");
    html
}

fn render(server: &Server) -> String {
    let health = assess(server);
    let series = series(&health);
    let mut html = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>cairn status</title><style>\
body{font-family:sans-serif;margin:2em;color:#222;max-width:60em}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}\
.ok{color:#186a1c}.bad{color:#b00020;font-weight:bold}code{font-size:.9em}\
</style></head><body><h1>cairn status</h1>",
    );
    let _ = write!(
        html,
        "<section id=\"health\"><h2>Health</h2><p class=\"{}\">{}</p><ul>",
        if health.ok() { "ok" } else { "bad" },
        if health.ok() { "OK" } else { "FAILING" }
    );
    for reason in &health.reasons {
        let _ = write!(html, "<li>{}</li>", escape(reason));
    }
    html.push_str("</ul></section>");
    html.push_str("<section id=\"components\"><h2>Components</h2><table><tr><th>component</th><th>newest snapshot (UTC)</th></tr>");
    for (name, time) in &health.newest {
        let _ = write!(
            html,
            "<tr><td class=\"component\">{}</td><td>{}</td></tr>",
            escape(name),
            escape(time.as_deref().unwrap_or("none yet"))
        );
    }
    html.push_str("</table></section>");
    let _ = write!(
        html,
        "<section id=\"sizes\"><h2>Sizes over time</h2>{}<h3>Growth per snapshot</h3>{}</section>",
        chart(&series),
        growth_table(&series)
    );
    let running = server.jobs.running();
    html.push_str("<section id=\"jobs\"><h2>Running jobs</h2>");
    if running.is_empty() {
        html.push_str("<p>None.</p>");
    } else {
        html.push_str("<ul>");
        for job in &running {
            let _ = write!(
                html,
                "<li>{} job {} since {}</li>",
                job.kind.name(),
                escape(&job.id),
                escape(&job.created)
            );
        }
        html.push_str("</ul>");
    }
    html.push_str("</section>");
    let _ = write!(
        html,
        "<section id=\"checks\"><h2>Verify</h2>{}<h2>Drill</h2>{}</section>",
        history_table(
            "verify-history",
            &jobs::read_history(&server.verify_history)
        ),
        history_table("drill-history", &jobs::read_history(&server.drill_history)),
    );
    let _ = write!(
        html,
        "<footer><p>{} snapshots; page made {}</p></footer></body></html>",
        health.snapshots.len(),
        escape(&jobs::now_rfc3339())
    );
    html
}
