//! `make bench`'s closing table (tools/bench/table.sh): every GOAL line the
//! benches printed becomes one row, met and missed are counted, and a log
//! without any goal is an error rather than an empty table.

use std::process::{Command, Output};

use vpblu_e2e::bench_goal::goal;
use vpblu_e2e::built_tools::repo_root;

fn table(log: &str) -> Output {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bench.log");
    std::fs::write(&path, log).expect("write the log");
    Command::new("bash")
        .arg(repo_root().join("tools/bench/table.sh"))
        .arg(&path)
        .output()
        .expect("bash runs tools/bench/table.sh")
}

#[test]
fn goal_lines_become_one_table_with_met_and_missed_counted() {
    let log = "Running benches/classify.rs\n\
               GOAL\tclassify slowest path\t< 100 ns\t124 ns\tmissed\n\
               some figure a bench printed\n\
               GOAL\tdaemon RSS, 1000 peers\t< 64 MiB\t18.1 MiB\tmet\n\
               GOAL\ta line with a field missing\t< 1 s\tmet\n";
    let out = table(log);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "table.sh failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains(" ns") || l.contains(" MiB")).collect();
    assert_eq!(rows.len(), 2, "one row per well-formed GOAL line:\n{stdout}");
    assert!(rows[0].starts_with("classify slowest path ") && rows[0].ends_with("missed"), "{stdout}");
    assert!(rows[1].starts_with("daemon RSS, 1000 peers ") && rows[1].ends_with("met"), "{stdout}");
    // Columns line up: the goal column starts at the same place in every row.
    let at = |row: &str, text: &str| row.find(text).expect("the goal is in its row");
    assert_eq!(at(rows[0], "< 100 ns"), at(rows[1], "< 64 MiB"), "{stdout}");
    assert!(stdout.contains("1 met, 1 missed"), "{stdout}");
}

#[test]
fn a_log_without_goals_is_an_error_naming_the_log() {
    let out = table("Running benches/classify.rs\nno goal here\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no GOAL lines"), "{stderr}");
}

#[test]
fn the_benches_line_is_what_the_table_reads() {
    // `goal` prints to stdout; its format is checked through a child that
    // prints it, as a bench does.
    if std::env::var_os("VPBLU_BENCH_GOAL_CHILD").is_some() {
        goal("figure with spaces, commas", "< 1 s", "0.3 s", true);
        return;
    }
    let exe = std::env::current_exe().expect("this test's path");
    let child = Command::new(exe)
        .args(["--exact", "the_benches_line_is_what_the_table_reads", "--nocapture", "--test-threads=1"])
        .env("VPBLU_BENCH_GOAL_CHILD", "1")
        .output()
        .expect("run this test as a child");
    let printed = String::from_utf8_lossy(&child.stdout);
    // libtest prints "test <name> ... " before the test's own output.
    let line = printed
        .lines()
        .find_map(|l| l.find("GOAL\t").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no GOAL line in {printed}"));
    assert_eq!(line, "GOAL\tfigure with spaces, commas\t< 1 s\t0.3 s\tmet");
    let out = table(&format!("{line}\n"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 met, 0 missed"), "{out:?}");
}
