//! Guest text made safe to show: the guest controls what its console and
//! its answers say, so it must not control the terminal or the formats
//! the runner writes.

/// Guest text as it may be shown on a terminal or put in a file format:
/// control characters other than newline and tab are escaped (`\u{1b}`),
/// so a guest cannot drive the terminal or break the XML.
pub fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
