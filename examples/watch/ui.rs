//! Drawing the model with ratatui: a title line that says which recipe was
//! recognised, the keys in serving order (holder first, each waiter
//! pointing at the key it watches, leases counting down, keys just gone
//! greyed), and the event log.

#![allow(dead_code)] // the tests use parts the example does not

use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, List, ListItem, Paragraph, Row, Table};

use super::model::{KeyView, Live};

/// The lease column: seconds left, counted down from when they were read.
fn lease_left(key: &KeyView, read_at: Instant, now: Instant) -> String {
    match key.ttl {
        None => "–".to_string(),
        Some(_) if key.gone => "gone".to_string(),
        Some(left) if left < 0 => "expired".to_string(),
        Some(left) => {
            let since = now.saturating_duration_since(read_at).as_secs_f64();
            let left = format!("{:.1} s", (left as f64 - since).max(0.0));
            // A lock's key is its lease; other keys name the lease.
            let lease = format!("{:x}", key.lease);
            if key.key.contains(&lease) {
                left
            } else {
                format!("{lease} {left}")
            }
        }
    }
}

/// The event log pane: the newest lines that fit, oldest first.
fn events(frame: &mut Frame<'_>, area: ratatui::layout::Rect, log: &[String]) {
    let lines = area.height.saturating_sub(1) as usize;
    let shown: Vec<ListItem<'_>> = log[log.len().saturating_sub(lines)..]
        .iter()
        .map(|line| ListItem::new(line.as_str()))
        .collect();
    frame.render_widget(
        List::new(shown)
            .block(Block::default().borders(Borders::TOP).title(" events ")),
        area,
    );
}

/// Draws `live` as of `now`.
pub fn draw(frame: &mut Frame<'_>, live: &Live, now: Instant) {
    let [title, keys, log] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(5),
        Constraint::Length(8),
    ])
    .areas(frame.area());

    let snapshot = &live.now;
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(format!(
                "{}: {:?} (layout {}) at revision {}",
                snapshot.name,
                snapshot.recipe,
                snapshot.recipe.layout(),
                snapshot.revision
            )),
            Line::from("q to quit").style(Style::default().fg(Color::DarkGray)),
        ]),
        title,
    );

    let rows: Vec<Row<'_>> = live
        .rows()
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            let style = if key.gone {
                Style::default()
                    .fg(Color::DarkGray)
                    .add_modifier(Modifier::CROSSED_OUT)
            } else if i == 0 {
                Style::default().add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            Row::new(vec![
                key.role.as_str().to_string(),
                key.key.clone(),
                key.create_revision.to_string(),
                lease_left(&key, snapshot.read_at, now),
                key.watches
                    .as_ref()
                    .map(|w| format!("→ {w}"))
                    .unwrap_or_default(),
                key.value.clone(),
            ])
            .style(style)
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(11),
            Constraint::Fill(2),
            Constraint::Length(8),
            Constraint::Length(24),
            Constraint::Fill(2),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(["role", "key", "created", "lease, left", "watches", "value"])
            .style(Style::default().add_modifier(Modifier::UNDERLINED)),
    )
    .block(Block::default().borders(Borders::TOP).title(" keys "));
    frame.render_widget(table, keys);

    events(frame, log, &live.log);
}

/// A lock as the scripted run leaves it, with fixed leases and times: the
/// book's picture of the view (the same every time, so a test can check
/// the committed picture is current).
pub fn sample() -> Live {
    use super::model::{Recipe, Role, Snapshot};
    let read_at = Instant::now();
    let key =
        |lease: i64, role: Role, revision: i64, ttl: i64, watches: Option<i64>| {
            KeyView {
                key: format!("{lease:x}"),
                role,
                create_revision: revision,
                lease,
                ttl: Some(ttl),
                watches: watches.map(|w| format!("{w:x}")),
                value: String::new(),
                gone: false,
            }
        };
    let (a, b, c, d) = (
        0x694d_9a2e_1c4f_0b07_i64,
        0x694d_9a2e_1c4f_0b0c,
        0x694d_9a2e_1c4f_0b11,
        0x694d_9a2e_1c4f_0afe,
    );
    let mut live = Live::new(Snapshot {
        name: "demo".into(),
        recipe: Recipe::Mutex,
        revision: 1_228,
        keys: vec![
            key(a, Role::Holder, 1_222, 9, None),
            key(b, Role::Waiter, 1_223, 8, Some(a)),
            key(c, Role::Waiter, 1_224, 10, Some(b)),
        ],
        read_at,
    });
    let mut gone = key(d, Role::Holder, 1_219, 0, None);
    gone.gone = true;
    live.gone.push((gone, read_at));
    for line in [
        format!("rev 1219 created {d:x} on lease {d:x}"),
        format!("rev 1222 created {a:x} on lease {a:x}"),
        format!("rev 1223 created {b:x} on lease {b:x}"),
        format!("rev 1224 created {c:x} on lease {c:x}"),
        format!("rev 1228 deleted {d:x} (lease {d:x}, its lease ended)"),
    ] {
        live.event(line);
    }
    live
}

/// `live` drawn on a `width` × `height` test terminal, as an SVG: one
/// text element per word (a run of cells with the same look and no space),
/// each at its column, so that no renderer's handling of spaces can move
/// the columns.
pub fn svg(live: &Live, width: u16, height: u16) -> std::io::Result<String> {
    use ratatui::backend::TestBackend;
    let mut terminal = ratatui::Terminal::new(TestBackend::new(width, height))?;
    let at = live.now.read_at;
    terminal.draw(|frame| draw(frame, live, at))?;
    let buffer = terminal.backend().buffer();
    let (cell_w, cell_h) = (8.4_f64, 18.0_f64);
    let (w, h) = (
        f64::from(width) * cell_w + 16.0,
        f64::from(height) * cell_h + 16.0,
    );
    let mut out = format!(
        "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <rect width=\"{w}\" height=\"{h}\" rx=\"6\" fill=\"#1e1e1e\"/>\n\
         <g font-family=\"DejaVu Sans Mono, monospace\" font-size=\"14\">\n"
    );
    for y in 0..height {
        let mut x = 0;
        while x < width {
            let look = |x: u16| {
                let cell = &buffer[(x, y)];
                (cell.fg, cell.modifier)
            };
            if buffer[(x, y)].symbol().trim().is_empty() {
                x += 1;
                continue;
            }
            let start = x;
            let mut text = String::new();
            while x < width
                && look(x) == look(start)
                && !buffer[(x, y)].symbol().trim().is_empty()
            {
                text.push_str(buffer[(x, y)].symbol());
                x += 1;
            }
            let (fg, modifier) = look(start);
            let fill = match fg {
                Color::DarkGray => "#7a7a7a",
                _ => "#e6e6e6",
            };
            let mut attrs = format!("fill=\"{fill}\"");
            if modifier.contains(Modifier::BOLD) {
                attrs.push_str(" font-weight=\"bold\"");
            }
            if modifier.contains(Modifier::CROSSED_OUT) {
                attrs.push_str(" text-decoration=\"line-through\"");
            }
            let escaped = text
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" {attrs}>{escaped}</text>\n",
                8.0 + f64::from(start) * cell_w,
                8.0 + (f64::from(y) + 0.8) * cell_h
            ));
        }
    }
    out.push_str("</g>\n</svg>\n");
    Ok(out)
}

/// Draws a Redis lock: who holds it and for how long yet, the fencing
/// counter, and the log of takes and published releases.
pub fn draw_redis(
    frame: &mut Frame<'_>,
    live: &super::redis_model::RedisLive,
    now: Instant,
) {
    let [title, state, log] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(4),
        Constraint::Min(4),
    ])
    .areas(frame.area());
    let lock = &live.now;
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(format!(
                "{}: RedisLock (keys {0}, {0}:fence; channel {0}:released)",
                lock.name
            )),
            Line::from("q to quit").style(Style::default().fg(Color::DarkGray)),
        ]),
        title,
    );
    let since = now.saturating_duration_since(live.read_at).as_millis() as i64;
    let holder = match (&lock.holder, lock.left_ms) {
        (Some(token), Some(left)) if left >= 0 => {
            format!("holder   {token}   {} ms left", (left - since).max(0))
        }
        (Some(token), _) => format!("holder   {token}   (no expiry)"),
        _ => "holder   none: the lock is free".to_string(),
    };
    let counter = match lock.fencing_counter {
        Some(counter) => format!("fencing  {counter} (the last token handed out)"),
        None => "fencing  no token handed out yet".to_string(),
    };
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(holder).style(Style::default().add_modifier(Modifier::BOLD)),
            Line::from(counter),
        ])
        .block(Block::default().borders(Borders::TOP).title(" lock ")),
        state,
    );
    events(frame, log, &live.log);
}
