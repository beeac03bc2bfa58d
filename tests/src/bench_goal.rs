//! The line a bench prints for each goal it measures; `make bench` gathers
//! them from every bench's output into one table (tools/bench/table.sh).

/// Prints `figure`'s goal, what was measured and whether it was met as a
/// `GOAL` line (tab-separated, so figures may hold spaces and commas).
pub fn goal(figure: &str, goal: &str, measured: &str, met: bool) {
    println!("GOAL\t{figure}\t{goal}\t{measured}\t{}", if met { "met" } else { "missed" });
}
