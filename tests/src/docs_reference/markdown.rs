//! Small pieces of Markdown the generated pages share.

/// `text` on one line.
pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` fit for one table cell: one line, pipes escaped, and `<`, `>`
/// shown as themselves rather than taken for HTML tags.
pub(super) fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|").replace('<', "&lt;").replace('>', "&gt;")
}

/// `text` as inline code fit for a table cell.
pub(super) fn code(text: &str) -> String {
    if text.is_empty() { String::new() } else { format!("`{}`", text.replace('|', "\\|")) }
}

/// A table with `header` and `rows`.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_one_line_with_pipes_escaped() {
        assert_eq!(cell("a  b\n c|d"), "a b c\\|d");
        assert_eq!(cell("a <timestamp> > b"), "a &lt;timestamp&gt; &gt; b");
        assert_eq!(code("x|y"), "`x\\|y`");
        assert_eq!(code(""), "");
        assert_eq!(table(&["a", "b"], &[vec!["1".into(), "2".into()]]), "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }
}
