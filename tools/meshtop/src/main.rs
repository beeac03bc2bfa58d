//! meshtop: the vpblu mesh in a terminal, live. It polls a controller's
//! dashboard JSON API (the leader's has the per-peer matrix; reach it with
//! `kubectl -n vpblu-system port-forward deploy/vpblu-controller 8082`).
//!
//! Keys: `1`–`5` or Tab switch views (matrix, nodes, policies, rotations,
//! events); `q` or Esc quits.

mod fetch;
mod lists;
mod matrix;

use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use clap::Parser;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs};
use ratatui::{DefaultTerminal, Frame};
use vpblu_view::{LeaseState, MeshView};

use crate::fetch::{Dashboard, Fetched};

/// A view is shown as stale when no fetch succeeded for this long.
const STALE_AFTER: Duration = Duration::from_secs(5);

/// The views, in key order.
const VIEWS: [&str; 5] = ["1 Matrix", "2 Nodes", "3 Policies", "4 Rotations", "5 Events"];

#[derive(Debug, Parser)]
#[command(name = "meshtop", version, about = "The vpblu mesh in a terminal, live")]
struct Args {
    /// The controller's dashboard (its --dashboard-addr).
    #[arg(long, env = "MESHTOP_URL", default_value = "http://127.0.0.1:8082")]
    url: String,
    /// How often to fetch.
    #[arg(long, default_value_t = 1.0)]
    interval_seconds: f64,
}

/// What the screen shows.
#[derive(Debug)]
struct App {
    url: String,
    view: Option<MeshView>,
    fetched_at: Option<Instant>,
    error: Option<String>,
    tab: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dashboard = match Dashboard::parse(&args.url) {
        Ok(dashboard) => dashboard,
        Err(e) => {
            eprintln!("meshtop: {e}");
            return ExitCode::from(2);
        }
    };
    let interval = Duration::try_from_secs_f64(args.interval_seconds)
        .ok()
        .filter(|i| !i.is_zero())
        .unwrap_or(Duration::from_secs(1));
    let (tx, rx) = mpsc::channel();
    let app = App { url: dashboard.url().to_owned(), view: None, fetched_at: None, error: None, tab: 0 };
    fetch::poll(dashboard, interval, tx);
    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(e) => {
            eprintln!("meshtop: cannot take over the terminal: {e} (run it in an interactive terminal)");
            return ExitCode::from(2);
        }
    };
    let outcome = run(&mut terminal, app, &rx);
    ratatui::restore();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshtop: the terminal failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(terminal: &mut DefaultTerminal, mut app: App, rx: &Receiver<Fetched>) -> std::io::Result<()> {
    loop {
        while let Ok(fetched) = rx.try_recv() {
            match fetched.result {
                Ok(view) => {
                    app.view = Some(view);
                    app.fetched_at = Some(fetched.at);
                    app.error = None;
                }
                Err(e) => app.error = Some(e.to_string()),
            }
        }
        terminal.draw(|frame| draw(frame, &app))?;
        if !event::poll(Duration::from_millis(200))? {
            continue;
        }
        if let Event::Key(key) = event::read()?
            && key.kind == KeyEventKind::Press
        {
            match key.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Tab => app.tab = (app.tab + 1) % VIEWS.len(),
                KeyCode::BackTab => app.tab = (app.tab + VIEWS.len() - 1) % VIEWS.len(),
                KeyCode::Char(c @ '1'..='5') => app.tab = usize::from(c as u8 - b'1'),
                _ => {}
            }
        }
    }
}

fn draw(frame: &mut Frame, app: &App) {
    let [header, tabs, body] =
        Layout::vertical([Constraint::Length(3), Constraint::Length(1), Constraint::Min(0)])
            .areas(frame.area());
    draw_header(frame, header, app);
    frame.render_widget(
        Tabs::new(VIEWS).select(app.tab).highlight_style(Style::new().fg(Color::Black).bg(Color::Cyan)),
        tabs,
    );
    let Some(view) = &app.view else {
        let waiting = app.error.clone().unwrap_or_else(|| format!("fetching {} …", app.url));
        frame.render_widget(Paragraph::new(waiting).style(Style::new().fg(Color::Red)), body);
        return;
    };
    match app.tab {
        0 => matrix::draw(frame, body, view),
        1 => lists::nodes(frame, body, view),
        2 => lists::policies(frame, body, view),
        3 => lists::rotations(frame, body, view),
        _ => lists::events(frame, body, view),
    }
}

/// Who serves, who leads, the verdict, and how fresh this is: data that
/// stopped coming is labelled stale, never shown as current.
fn draw_header(frame: &mut Frame, area: Rect, app: &App) {
    let mut lines = Vec::new();
    let age = app.fetched_at.map(|at| at.elapsed());
    let freshness = match (age, &app.error) {
        (Some(age), _) if age <= STALE_AFTER => Span::styled("live", Style::new().fg(Color::Green)),
        (Some(age), error) => Span::styled(
            format!(
                "STALE: last update {} s ago{}",
                age.as_secs(),
                error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
            ),
            Style::new().fg(Color::Red),
        ),
        (None, _) => Span::styled("no data yet", Style::new().fg(Color::Red)),
    };
    lines.push(Line::from(vec![Span::raw(format!("meshtop · {} · ", app.url)), freshness]));
    if let Some(view) = &app.view {
        let role = if view.served.leading { "leader" } else { "STANDBY" };
        let leader = match view.leader.state {
            LeaseState::Held => format!("leader {}", view.leader.holder.as_deref().unwrap_or("?")),
            state => format!("NO LEADER (Lease {state:?})"),
        };
        lines.push(Line::from(format!(
            "served by {} ({role}) · {leader} · {} nodes · {} links up",
            view.served.by.as_deref().unwrap_or("?"),
            view.nodes.len(),
            view.links.iter().filter(|l| l.state == vpblu_view::LinkState::Up && !l.stale).count()
        )));
        let verdict = if view.verdict.healthy {
            Span::styled("healthy", Style::new().fg(Color::Green))
        } else {
            let first = view.verdict.problems.first().cloned().unwrap_or_default();
            Span::styled(format!("DEGRADED: {first}"), Style::new().fg(Color::Red))
        };
        lines.push(Line::from(verdict));
    }
    frame.render_widget(Paragraph::new(lines), area);
}
