//! The other views: nodes, policies, rotations (with the timeline), and
//! recent Events.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Block, Borders, Cell, Row, Table};
use vpblu_view::{ConditionView, MeshView};

use crate::matrix::age;

fn seconds(s: Option<i64>) -> String {
    age(s.and_then(|s| u64::try_from(s).ok()))
}

fn condition(c: Option<&ConditionView>) -> Cell<'static> {
    let Some(c) = c else { return Cell::from("-") };
    let colour = match c.status.as_str() {
        "True" => Color::Green,
        "False" => Color::Red,
        _ => Color::Yellow,
    };
    Cell::from(format!("{} {}", c.status, c.reason)).style(Style::new().fg(colour))
}

fn table<'a>(title: &'a str, header: &'a [&'a str], rows: Vec<Row<'a>>, widths: &'a [u16]) -> Table<'a> {
    let header = Row::new(header.iter().copied()).style(Style::new().fg(Color::Cyan));
    Table::new(rows, widths.iter().map(|w| Constraint::Length(*w)))
        .header(header)
        .block(Block::new().borders(Borders::ALL).title(title))
}

/// Nodes: key, generations, peers, conditions; the Ready message below a
/// node that is not Ready.
pub fn nodes(frame: &mut Frame, area: Rect, view: &MeshView) {
    let mut rows = Vec::new();
    for n in &view.nodes {
        let generation = |g: Option<i64>| g.map_or("-".to_owned(), |g| g.to_string());
        rows.push(Row::new(vec![
            Cell::from(n.name.clone()),
            Cell::from(n.short_key.clone().unwrap_or_default()),
            Cell::from(seconds(n.key_age_seconds)),
            Cell::from(format!("{}/{}", generation(n.applied_generation), generation(n.desired_generation))),
            Cell::from(format!("{}/{}", n.peers_up.unwrap_or(0), n.peers.unwrap_or(0))),
            Cell::from(seconds(n.last_handshake_seconds)),
            Cell::from(n.backend.clone().unwrap_or_default()),
            Cell::from(n.version.clone().unwrap_or_default()),
            condition(n.ready.as_ref()),
            condition(n.connected.as_ref()),
            Cell::from(n.rotation_phase.clone().unwrap_or_default()),
        ]));
        if let Some(ready) = n.ready.as_ref().filter(|c| c.status != "True") {
            rows.push(Row::new(vec![Cell::from(""), Cell::from(format!("└ {}", ready.message))]));
        }
    }
    const HEADER: [&str; 11] = [
        "NODE",
        "KEY",
        "KEY AGE",
        "APPLIED",
        "PEERS UP",
        "HANDSHAKE",
        "BACKEND",
        "VERSION",
        "READY",
        "CONNECTED",
        "ROTATION",
    ];
    const WIDTHS: [u16; 11] = [12, 9, 8, 9, 9, 10, 10, 9, 20, 20, 10];
    frame.render_widget(table(" Nodes ", &HEADER, rows, &WIDTHS), area);
}

/// Policies, with what they ask for, their state and their problem.
pub fn policies(frame: &mut Frame, area: Rect, view: &MeshView) {
    let rows = view
        .policies
        .iter()
        .map(|p| {
            Row::new(vec![
                Cell::from(p.kind.clone()),
                Cell::from(p.name.clone()),
                condition(p.state.as_ref()),
                Cell::from(p.summary.clone()),
                Cell::from(p.problem.clone().unwrap_or_default()).style(Style::new().fg(Color::Red)),
            ])
        })
        .collect();
    const HEADER: [&str; 5] = ["KIND", "NAME", "STATE", "WHAT", "PROBLEM"];
    const WIDTHS: [u16; 5] = [15, 20, 22, 40, 60];
    frame.render_widget(table(" Policies ", &HEADER, rows, &WIDTHS), area);
}

/// Rotations per node and the phase changes seen.
pub fn rotations(frame: &mut Frame, area: Rect, view: &MeshView) {
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let rows = view
        .rotations
        .iter()
        .map(|r| {
            let colour = if r.running { Color::Yellow } else { Color::Green };
            Row::new(vec![
                Cell::from(r.node.clone()),
                Cell::from(r.phase.clone()).style(Style::new().fg(colour)),
                Cell::from(if r.running { seconds(r.phase_seconds) } else { "-".to_owned() }),
                Cell::from(r.last_result.clone().unwrap_or_default()),
                Cell::from(r.last_rotated_at.clone().unwrap_or_default()),
                Cell::from(r.message.clone().unwrap_or_default()),
            ])
        })
        .collect();
    const HEADER: [&str; 6] = ["NODE", "PHASE", "IN PHASE", "LAST RESULT", "LAST ROTATED", "MESSAGE"];
    const WIDTHS: [u16; 6] = [12, 12, 9, 24, 26, 50];
    frame.render_widget(table(" Rotations ", &HEADER, rows, &WIDTHS), top);
    let steps = view
        .rotation_history
        .iter()
        .rev()
        .map(|s| {
            Row::new(vec![
                s.at.clone(),
                s.node.clone(),
                s.phase.clone(),
                s.result.clone().unwrap_or_default(),
            ])
        })
        .collect();
    const STEP_HEADER: [&str; 4] = ["SEEN AT", "NODE", "PHASE", "RESULT"];
    const STEP_WIDTHS: [u16; 4] = [32, 12, 12, 40];
    frame.render_widget(table(" Timeline (newest first) ", &STEP_HEADER, steps, &STEP_WIDTHS), bottom);
}

/// Recent Events about vpblu objects.
pub fn events(frame: &mut Frame, area: Rect, view: &MeshView) {
    let rows = view
        .events
        .iter()
        .map(|e| {
            let colour = if e.type_ == "Warning" { Color::Yellow } else { Color::Reset };
            Row::new(vec![
                seconds(e.age_seconds),
                e.type_.clone(),
                e.reason.clone(),
                e.object.clone(),
                e.message.clone(),
            ])
            .style(Style::new().fg(colour))
        })
        .collect();
    const HEADER: [&str; 5] = ["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"];
    const WIDTHS: [u16; 5] = [6, 8, 22, 28, 90];
    frame.render_widget(table(" Recent events ", &HEADER, rows, &WIDTHS), area);
}
