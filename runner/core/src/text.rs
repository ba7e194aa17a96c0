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

/// `s` cut to about `max` bytes for a message or a terminal line: its
/// head and its tail, with a marker saying how many bytes were left out
/// between them. Text that fits is returned as is.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut h = max / 2;
    while !s.is_char_boundary(h) {
        h -= 1;
    }
    let mut t = s.len() - (max - h);
    while !s.is_char_boundary(t) {
        t += 1;
    }
    format!("{} [... {} bytes ...] {}", &s[..h], t - h, &s[t..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_clipped_to_its_head_and_tail() {
        assert_eq!(clip("short", 10), "short");
        let long = format!("start{}end", "é".repeat(1_000_000));
        let c = clip(&long, 200);
        assert!(c.len() < 250, "{}", c.len());
        assert!(c.starts_with("start") && c.ends_with("end"), "{c}");
        assert!(c.contains(" bytes ...] "), "{c}");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(shown("a\u{1b}[2Jb\n\tc"), "a\\u{1b}[2Jb\n\tc");
    }
}
