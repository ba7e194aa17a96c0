//! Kconfig fragments: parsing, merging checks and validation of the final
//! `.config` (what `merge_config.sh` only warns about, this makes an error).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The value a fragment asks for, or a `.config` holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `# CONFIG_X is not set`, or absent from `.config`.
    Unset,
    /// `CONFIG_X=<raw>` (`y`, `m`, a number, or a quoted string, kept as written).
    Set(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Unset => f.write_str("is not set"),
            Value::Set(v) => write!(f, "={v}"),
        }
    }
}

/// One `CONFIG_` line of a fragment, with where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub option: String,
    pub value: Value,
    pub line: usize,
}

/// A config fragment file.
#[derive(Clone, Debug)]
pub struct Fragment {
    pub name: String,
    pub path: PathBuf,
    pub requests: Vec<Request>,
    /// The file's bytes, for cache keys.
    pub contents: Vec<u8>,
}

impl Fragment {
    pub fn load(name: &str, path: &Path) -> Result<Fragment> {
        let contents = std::fs::read(path)
            .with_context(|| format!("config fragment '{name}': cannot read {}", path.display()))?;
        let text = String::from_utf8(contents.clone())
            .with_context(|| format!("{}: not UTF-8 text", path.display()))?;
        let requests = parse_fragment(&text)
            .map_err(|(line, msg)| anyhow::anyhow!("{}:{line}: {msg}", path.display()))?;
        Ok(Fragment {
            name: name.to_string(),
            path: path.to_path_buf(),
            requests,
            contents,
        })
    }
}

fn valid_option(name: &str) -> bool {
    name.len() > "CONFIG_".len()
        && name.starts_with("CONFIG_")
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Parses fragment text. Errors carry the 1-based line number.
pub fn parse_fragment(text: &str) -> std::result::Result<Vec<Request>, (usize, String)> {
    let mut out: Vec<Request> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let l = raw.trim();
        if l.is_empty() {
            continue;
        }
        let (option, value) = if let Some(rest) = l.strip_prefix("# ") {
            match rest.strip_suffix(" is not set") {
                Some(opt) if opt.starts_with("CONFIG_") => (opt.trim().to_string(), Value::Unset),
                _ => continue, // an ordinary comment
            }
        } else if l.starts_with('#') {
            continue;
        } else if let Some((opt, val)) = l.split_once('=') {
            let val = val.trim();
            if val.is_empty() {
                return Err((line, format!("'{l}': no value after '='")));
            }
            if val == "n" {
                (opt.trim().to_string(), Value::Unset)
            } else {
                (opt.trim().to_string(), Value::Set(val.to_string()))
            }
        } else {
            return Err((
                line,
                format!("'{l}': expected CONFIG_NAME=value or '# CONFIG_NAME is not set'"),
            ));
        };
        if !valid_option(&option) {
            return Err((line, format!("'{option}' is not a CONFIG_ option name")));
        }
        if let Some(prev) = out.iter().find(|r| r.option == option) {
            return Err((
                line,
                format!(
                    "{option} is already set on line {} of this fragment",
                    prev.line
                ),
            ));
        }
        out.push(Request {
            option,
            value,
            line,
        });
    }
    Ok(out)
}

/// Parses a full `.config` into option -> value. Options that are absent are
/// `Unset` by Kconfig semantics, so only set ones and explicit "is not set"
/// lines are stored.
pub fn parse_dotconfig(text: &str) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for l in text.lines() {
        let l = l.trim();
        if let Some(rest) = l.strip_prefix("# ") {
            if let Some(opt) = rest.strip_suffix(" is not set") {
                if valid_option(opt) {
                    map.insert(opt.to_string(), Value::Unset);
                }
            }
        } else if let Some((opt, val)) = l.split_once('=') {
            if valid_option(opt) {
                map.insert(opt.to_string(), Value::Set(val.to_string()));
            }
        }
    }
    map
}

/// Two fragments of one variant asking different values for one option is a
/// configuration error: the result would depend on their order.
pub fn check_conflicts(fragments: &[Fragment]) -> Result<()> {
    let mut seen: BTreeMap<&str, (&Fragment, &Request)> = BTreeMap::new();
    for f in fragments {
        for r in &f.requests {
            if let Some((pf, pr)) = seen.get(r.option.as_str()) {
                if pr.value != r.value {
                    bail!(
                        "config fragments disagree on {}: {}:{} asks '{}', {}:{} asks '{}'",
                        r.option,
                        pf.path.display(),
                        pr.line,
                        show(&r.option, &pr.value),
                        f.path.display(),
                        r.line,
                        show(&r.option, &r.value)
                    );
                }
            } else {
                seen.insert(&r.option, (f, r));
            }
        }
    }
    Ok(())
}

/// Renders an option with its value the way `.config` writes it.
pub fn show(option: &str, value: &Value) -> String {
    match value {
        Value::Unset => format!("# {option} is not set"),
        Value::Set(v) => format!("{option}={v}"),
    }
}

/// One option that did not end with the value its fragment asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub option: String,
    pub fragment: PathBuf,
    pub line: usize,
    pub wanted: Value,
    pub got: Value,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let got = match &self.got {
            Value::Unset => {
                "unset (olddefconfig dropped it: a dependency is off or it is not selectable)"
                    .to_string()
            }
            Value::Set(v) => format!("{}={v}", self.option),
        };
        write!(
            f,
            "{}:{}: asks '{}', but the final .config has {}",
            self.fragment.display(),
            self.line,
            show(&self.option, &self.wanted),
            got
        )
    }
}

/// Every option every fragment asks for must hold exactly that value.
pub fn validate(fragments: &[Fragment], dotconfig: &BTreeMap<String, Value>) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for f in fragments {
        for r in &f.requests {
            let got = dotconfig.get(&r.option).cloned().unwrap_or(Value::Unset);
            if got != r.value {
                out.push(Mismatch {
                    option: r.option.clone(),
                    fragment: f.path.clone(),
                    line: r.line,
                    wanted: r.value.clone(),
                    got,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(name: &str, text: &str) -> Fragment {
        Fragment {
            name: name.into(),
            path: PathBuf::from(format!("kernel-config/{name}.config")),
            requests: parse_fragment(text).unwrap(),
            contents: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn parses_set_unset_and_comments() {
        let r = parse_fragment(
            "# a comment\n\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"str\"\nCONFIG_D=n\nCONFIG_E=-1\n",
        )
        .unwrap();
        assert_eq!(r.len(), 5);
        assert_eq!(
            r[0],
            Request {
                option: "CONFIG_A".into(),
                value: Value::Set("y".into()),
                line: 3
            }
        );
        assert_eq!(r[1].value, Value::Unset);
        assert_eq!(r[1].line, 4);
        assert_eq!(r[2].value, Value::Set("\"str\"".into()));
        assert_eq!(r[3].value, Value::Unset);
        assert_eq!(r[4].value, Value::Set("-1".into()));
    }

    #[test]
    fn rejects_bad_lines_with_line_numbers() {
        assert_eq!(parse_fragment("CONFIG_A=y\nfoo bar\n").unwrap_err().0, 2);
        assert_eq!(parse_fragment("\n\nCONFIG_A=\n").unwrap_err().0, 3);
        assert!(parse_fragment("FOO=y\n")
            .unwrap_err()
            .1
            .contains("not a CONFIG_"));
        let dup = parse_fragment("CONFIG_A=y\nCONFIG_A=m\n").unwrap_err();
        assert_eq!(dup.0, 2);
        assert!(dup.1.contains("line 1"));
    }

    #[test]
    fn conflicting_fragments_are_named() {
        let a = frag("a", "CONFIG_X=y\nCONFIG_Y=y\n");
        let b = frag("b", "CONFIG_Y=y\n# CONFIG_X is not set\n");
        let err = check_conflicts(&[a.clone(), b]).unwrap_err().to_string();
        assert!(err.contains("CONFIG_X"), "{err}");
        assert!(
            err.contains("a.config:1") && err.contains("b.config:2"),
            "{err}"
        );
        // Agreement is fine.
        check_conflicts(&[a.clone(), frag("c", "CONFIG_Y=y\n")]).unwrap();
    }

    #[test]
    fn validation_reports_dropped_and_changed_options() {
        let f = frag(
            "lp",
            "CONFIG_LIVEPATCH=y\nCONFIG_SAMPLE_LIVEPATCH=m\n# CONFIG_RTC_CLASS is not set\nCONFIG_NR_CPUS=8\n",
        );
        let cfg = parse_dotconfig(
            "CONFIG_LIVEPATCH=y\n# CONFIG_SAMPLE_LIVEPATCH is not set\nCONFIG_NR_CPUS=64\n",
        );
        let m = validate(&[f], &cfg);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].option, "CONFIG_SAMPLE_LIVEPATCH");
        assert_eq!(m[0].got, Value::Unset);
        assert_eq!(m[0].line, 2);
        let text = m[0].to_string();
        assert!(
            text.contains("lp.config:2") && text.contains("CONFIG_SAMPLE_LIVEPATCH=m"),
            "{text}"
        );
        assert_eq!(m[1].option, "CONFIG_NR_CPUS");
        assert!(m[1].to_string().contains("CONFIG_NR_CPUS=64"));
    }

    #[test]
    fn absent_option_satisfies_not_set() {
        let f = frag("x", "# CONFIG_FOO is not set\n");
        assert!(validate(&[f], &parse_dotconfig("CONFIG_BAR=y\n")).is_empty());
    }

    #[test]
    fn real_fragments_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-config");
        let mut all = Vec::new();
        for name in ["base", "livepatch-bpf", "debug"] {
            let f = Fragment::load(name, &dir.join(format!("{name}.config"))).unwrap();
            assert!(!f.requests.is_empty());
            all.push(f);
        }
        check_conflicts(&all).unwrap();
    }
}
