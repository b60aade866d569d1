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
            format!("{:x} {:.1} s", key.lease, (left as f64 - since).max(0.0))
        }
    }
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
            Constraint::Percentage(30),
            Constraint::Length(9),
            Constraint::Length(22),
            Constraint::Percentage(25),
            Constraint::Percentage(20),
        ],
    )
    .header(
        Row::new(["role", "key", "created", "lease, left", "watches", "value"])
            .style(Style::default().add_modifier(Modifier::UNDERLINED)),
    )
    .block(Block::default().borders(Borders::TOP).title(" keys "));
    frame.render_widget(table, keys);

    let lines = log.height.saturating_sub(1) as usize;
    let events: Vec<ListItem<'_>> = live
        .log
        .iter()
        .rev()
        .take(lines)
        .rev()
        .map(|line| ListItem::new(line.as_str()))
        .collect();
    frame.render_widget(
        List::new(events)
            .block(Block::default().borders(Borders::TOP).title(" events ")),
        log,
    );
}
