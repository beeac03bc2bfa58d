//! `reference/controller-flags.md` and `reference/daemon-flags.md`: every
//! flag of both binaries, from their clap definitions.

use super::banner;
use super::markdown::{cell, code, table};

/// The page of `command`, whose flags are defined in `source`.
pub(super) fn render(mut command: clap::Command, source: &str) -> String {
    command.build();
    let name = command.get_name().to_owned();
    let mut out = banner(source);
    out.push_str(&format!(
        "# `{name}` flags\n\n{}\n\n",
        cell(&command.get_about().map(ToString::to_string).unwrap_or_default())
    ));
    out.push_str("Every flag can also be set through its environment variable.\n\n");
    let mut rows = Vec::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" || long == "version" {
            continue;
        }
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        let values: Vec<String> = arg.get_possible_values().iter().map(|v| v.get_name().to_owned()).collect();
        let mut help = cell(&arg.get_help().map(ToString::to_string).unwrap_or_default());
        if !values.is_empty() {
            help.push_str(&format!(
                " (one of {})",
                values.iter().map(|v| code(v)).collect::<Vec<_>>().join(", ")
            ));
        }
        rows.push(vec![
            code(&format!("--{long}")),
            arg.get_env().map(|e| code(&e.to_string_lossy())).unwrap_or_default(),
            code(&defaults.join(",")),
            help,
        ]);
    }
    out.push_str(&table(&["Flag", "Environment", "Default", "What it does"], &rows));
    out
}
