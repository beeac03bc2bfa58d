//! The peer matrix: a row per reporting node, a column per peer, each
//! cell the handshake age (coloured by freshness) and the rates both ways.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Row, Table};
use vpblu_view::{LinkState, LinkView, MeshView};

/// WireGuard re-handshakes every 2 minutes on a busy tunnel: a handshake
/// younger than this is fresh.
const FRESH_SECONDS: u64 = 125;

/// Colour of a link: green fresh, yellow ageing, red down, grey stale.
pub fn freshness(link: &LinkView) -> Color {
    if link.stale {
        return Color::DarkGray;
    }
    match (link.state, link.last_handshake_seconds) {
        (LinkState::Up, Some(age)) if age <= FRESH_SECONDS => Color::Green,
        (LinkState::Up, _) => Color::Yellow,
        (LinkState::Down | LinkState::NoHandshake, _) => Color::Red,
    }
}

/// `1.2 MiB/s`, or `-`.
pub fn rate(bytes_per_second: Option<f64>) -> String {
    let Some(mut value) = bytes_per_second else { return "-".to_owned() };
    let units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{value:.0} {}", units[unit]) } else { format!("{value:.1} {}", units[unit]) }
}

/// `12s`, `3m`, `-`.
pub fn age(seconds: Option<u64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) => format!("{}h", s / 3600),
    }
}

fn cell(link: Option<&LinkView>) -> Cell<'static> {
    let Some(link) = link else { return Cell::from("no report").style(Style::new().fg(Color::DarkGray)) };
    let state = match (link.stale, link.state) {
        (true, _) => "stale",
        (false, LinkState::Up) => "up",
        (false, LinkState::Down) => "DOWN",
        (false, LinkState::NoHandshake) => "never",
    };
    let lines = vec![
        Line::from(format!("● {state} {}", age(link.last_handshake_seconds))),
        Line::from(format!("↓{} ↑{}", rate(link.rx_bytes_per_second), rate(link.tx_bytes_per_second))),
    ];
    Cell::from(lines).style(Style::new().fg(freshness(link)))
}

/// Draws the matrix into `area`.
pub fn draw(frame: &mut Frame, area: Rect, view: &MeshView) {
    let block =
        Block::new().borders(Borders::ALL).title(" Peer matrix (row reports column: handshake, rx/tx) ");
    if !view.served.leading {
        let note = ratatui::widgets::Paragraph::new(
            "This controller is the standby: only the leader has the daemons' reports. Point meshtop at the leader.",
        )
        .block(block);
        frame.render_widget(note, area);
        return;
    }
    let names: Vec<&str> = view.nodes.iter().map(|n| n.name.as_str()).collect();
    let header = Row::new(std::iter::once("from \\ to").chain(names.iter().copied()).map(Cell::from))
        .style(Style::new().fg(Color::Cyan));
    let rows = names.iter().map(|from| {
        let cells = names.iter().map(|to| {
            if from == to {
                Cell::from("")
            } else {
                cell(view.links.iter().find(|l| l.from == *from && l.to == *to))
            }
        });
        Row::new(std::iter::once(Cell::from(*from)).chain(cells)).height(2)
    });
    let widths = std::iter::once(Constraint::Length(12)).chain(names.iter().map(|_| Constraint::Length(24)));
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_ages_and_colours() {
        assert_eq!(rate(Some(512.0)), "512 B/s");
        assert_eq!(rate(Some(3.0 * 1024.0 * 1024.0)), "3.0 MiB/s");
        assert_eq!(rate(None), "-");
        assert_eq!(age(Some(7)), "7s");
        assert_eq!(age(Some(600)), "10m");
        let mut link =
            LinkView { state: LinkState::Up, last_handshake_seconds: Some(3), ..LinkView::default() };
        assert_eq!(freshness(&link), Color::Green);
        link.last_handshake_seconds = Some(150);
        assert_eq!(freshness(&link), Color::Yellow);
        link.state = LinkState::Down;
        assert_eq!(freshness(&link), Color::Red);
        link.stale = true;
        assert_eq!(freshness(&link), Color::DarkGray);
    }
}
