//! Checks shared by the project's input files (variants, suites, image
//! recipes): where in a file something is, and the rules for names and
//! numbers. Every error names the file, line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The 1-based line of the first line containing `needle`, for pointing
/// semantic errors (which serde cannot place) at the right spot.
pub fn line_of(text: &str, needle: &str) -> usize {
    find_from(text, 1, needle).map(|p| p.0).unwrap_or(1)
}

/// The 1-based (line, column) of the first `needle` at or after line
/// `from`, outside comment lines.
pub fn find_from(text: &str, from: usize, needle: &str) -> Option<(usize, usize)> {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .filter(|(_, l)| !l.trim_start().starts_with('#'))
        .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, c + 1)))
}

/// `path:line:column` of the first `needle` at or after line `from`
/// (outside comment lines), or `path:from` when it is not there: where an
/// error message points.
pub fn place(path: &Path, text: &str, from: usize, needle: &str) -> String {
    match find_from(text, from, needle) {
        Some((l, c)) => format!("{}:{l}:{c}", path.display()),
        None => format!("{}:{from}", path.display()),
    }
}

/// A serde_yaml error for a mapping key given twice ([`unique_map`])
/// placed at the key's second appearance, which serde cannot point at.
pub fn yaml_error_in(text: &str, path: &Path, e: &serde_yaml::Error) -> anyhow::Error {
    let msg = e.to_string();
    let twice = msg
        .split_once('\'')
        .and_then(|(_, rest)| rest.split_once("' is given twice"))
        .map(|(k, _)| k.to_string());
    if let (Some(k), Some(loc)) = (twice, e.location()) {
        let key = format!("{k}:");
        if let Some((l, _)) = find_from(text, loc.line(), &key) {
            if let Some((l2, c2)) = find_from(text, l + 1, &key) {
                let what = msg.split(" at line ").next().unwrap_or(&msg);
                return anyhow::anyhow!("{}:{l2}:{c2}: {what}", path.display());
            }
        }
    }
    yaml_error(path, e)
}

/// A serde_yaml error as `file:line:column: message`.
pub fn yaml_error(path: &Path, e: &serde_yaml::Error) -> anyhow::Error {
    match e.location() {
        Some(loc) => {
            let msg = e.to_string();
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let msg = msg.strip_suffix(&suffix).unwrap_or(&msg);
            anyhow::anyhow!("{}:{}:{}: {msg}", path.display(), loc.line(), loc.column())
        }
        None => anyhow::anyhow!("{}: {e}", path.display()),
    }
}

/// Names that end up in host paths and report ids (variants, suites,
/// labels, fragments, series): letters, digits, '.', '_', '-'; not empty,
/// not starting with '.' or '-', at most 64 bytes.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} '{name}' is not a valid name: use letters, digits, '.', '_' and '-' \
             (not first), at most 64 characters"
        ))
    }
}

/// Debian package names (Debian Policy 5.6.1): lower-case letters,
/// digits, '+', '-' and '.', at least two, starting with a letter or a
/// digit (`linux-image-6.12.118+deb12-amd64-unsigned`).
pub fn check_debian_package(what: &str, name: &str) -> Result<(), String> {
    let ok = name.len() >= 2
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} '{name}' is not a valid Debian package name: lower-case letters, digits, \
             '+', '-' and '.', starting with a letter or digit"
        ))
    }
}

/// Case names: [`check_name`] parts joined by '/' (a group, e.g.
/// `cmdline/livepatch-then-fentry`), at most 128 bytes.
pub fn check_case_name(name: &str) -> Result<(), String> {
    if name.len() > 128 || name.split('/').any(|p| check_name("case", p).is_err()) {
        return Err(format!(
            "case name '{name}' is not valid: parts of letters, digits, '.', '_' and '-' \
             (not first), joined by '/', at most 128 characters"
        ));
    }
    Ok(())
}

/// Seconds for a timeout or duration: finite, above `min`, at most `max`.
pub fn check_seconds(what: &str, v: f64, min_exclusive: f64, max: f64) -> Result<(), String> {
    if v.is_finite() && v > min_exclusive && v <= max {
        Ok(())
    } else {
        Err(format!(
            "{what} {v} is out of range: a number of seconds above {min_exclusive} and at most {max}"
        ))
    }
}

/// The (at most) `n` names nearest to `word`, nearest first, each once:
/// for an error that says what might have been meant. `word` may be a
/// glob; its wildcards are left out. A name is as near as its edit
/// distance to the word, or (a little farther) as its own start of the
/// word's length is (a prefix typed before a `*`), whichever is nearer.
pub fn nearest<'a>(word: &str, names: impl IntoIterator<Item = &'a str>, n: usize) -> Vec<&'a str> {
    let key: Vec<char> = word
        .chars()
        .filter(|c| !matches!(c, '*' | '?' | '[' | ']' | '!'))
        .collect();
    let mut scored: Vec<(usize, usize, &str)> = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        if scored.iter().any(|(_, _, x)| *x == name) {
            continue;
        }
        let chars: Vec<char> = name.chars().collect();
        let prefix = &chars[..chars.len().min(key.len())];
        // A whole name at the same distance as a name's start is nearer.
        let d = (2 * edit_distance(&key, &chars)).min(2 * edit_distance(&key, prefix) + 1);
        scored.push((d, i, name));
    }
    scored.sort();
    scored.into_iter().take(n).map(|(_, _, x)| x).collect()
}

/// Edit distance: insertions, deletions, substitutions and swaps of two
/// neighbours (a typo's usual kinds) count one each.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    // d[i][j]: the distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let sub = d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut v = sub.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// A YAML mapping into a `BTreeMap` that refuses a key given twice (serde
/// keeps the last one silently). Use with `#[serde(deserialize_with)]`.
pub fn unique_map<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord + fmt::Display,
    V: Deserialize<'de>,
{
    struct M<K, V>(std::marker::PhantomData<(K, V)>);
    impl<'de, K, V> Visitor<'de> for M<K, V>
    where
        K: Deserialize<'de> + Ord + fmt::Display,
        V: Deserialize<'de>,
    {
        type Value = BTreeMap<K, V>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(k) = map.next_key::<K>()? {
                if out.contains_key(&k) {
                    return Err(de::Error::custom(format!("'{k}' is given twice")));
                }
                let v = map.next_value()?;
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(M(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    #[test]
    fn errno_names_are_checked_where_read() {
        assert_eq!(super::Errno::parse("EBUSY").unwrap().as_str(), "EBUSY");
        let e = super::Errno::parse("EBUZY").unwrap_err();
        assert!(
            e.starts_with("unknown errno name 'EBUZY' (known: EPERM,"),
            "{e}"
        );
        let y: Result<super::Errno, _> = serde_yaml::from_str("EBUZY");
        assert!(y.unwrap_err().to_string().contains("unknown errno name"));
        let back: super::Errno = serde_yaml::from_str("EAGAIN").unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), "\"EAGAIN\"");
    }

    use super::*;

    #[test]
    fn names() {
        for good in ["stock", "share-ipmodify", "a.b_c-1"] {
            assert!(check_name("variant", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            ".hidden",
            "a/b",
            "..",
            "a b",
            "x\u{7}",
            &"x".repeat(65),
        ] {
            assert!(check_name("variant", bad).is_err(), "{bad:?}");
        }
        assert!(check_case_name("cmdline/livepatch-then-fentry").is_ok());
        for bad in ["/a", "a/", "a//b", "a/../b", "a/.b"] {
            assert!(check_case_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debian_package_names() {
        for good in [
            "linux-image-6.1.0-57-amd64-unsigned",
            "linux-image-6.12.118+deb12-amd64-unsigned",
            "g++",
            "0ad",
        ] {
            assert!(check_debian_package("p", good).is_ok(), "{good}");
        }
        for bad in ["", "x", "-x", "+x", "Linux", "a b", "a_b", "a/b", "a;b"] {
            assert!(check_debian_package("p", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nearest_names_first() {
        let names = [
            "cmdline/livepatch-then-fentry",
            "cmdline/livepatch-then-fexit",
            "target/livepatch-then-fexit",
            "stress/livepatch-cycles",
            "cmdline/livepatch-then-fexit",
        ];
        assert_eq!(
            nearest("cmdline/livepatch-then-fexti", names, 2),
            [
                "cmdline/livepatch-then-fexit",
                "cmdline/livepatch-then-fentry"
            ]
        );
        // A glob's wildcards are left out; its prefix counts.
        assert_eq!(nearest("strss/*", names, 1), ["stress/livepatch-cycles"]);
        assert_eq!(nearest("x", names, 9).len(), 4, "each name once");
        assert_eq!(edit_distance(&['a', 'b'], &[]), 2);
        assert_eq!(edit_distance(&['a', 'b'], &['b', 'a']), 1);
    }

    #[test]
    fn seconds() {
        assert!(check_seconds("timeout", 60.0, 0.0, 3600.0).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            assert!(check_seconds("timeout", bad, 0.0, 3600.0).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_given_twice_is_refused_with_its_position() {
        #[derive(Deserialize, Debug)]
        struct T {
            #[serde(deserialize_with = "unique_map")]
            m: BTreeMap<String, u32>,
        }
        assert_eq!(
            serde_yaml::from_str::<T>("m: {a: 1, b: 2}")
                .unwrap()
                .m
                .len(),
            2
        );
        let text = "m:\n  a: 1\n  a: 2\n";
        let e = serde_yaml::from_str::<T>(text).unwrap_err();
        assert!(e.to_string().contains("'a' is given twice"), "{e}");
        // Placed at the second 'a', whatever line serde reports.
        let placed = yaml_error_in(text, Path::new("f.yaml"), &e).to_string();
        assert!(placed.starts_with("f.yaml:3:3: "), "{placed}");
    }
}

/// An errno name an expectation may use (`EBUSY`): one of
/// [`Errno::KNOWN`], checked where it is read (suite files, `--good-if`),
/// so suites, step checks and bisect share one list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Errno(String);

impl Errno {
    /// The names the expectations may use.
    pub const KNOWN: &'static [&'static str] = &[
        "EPERM",
        "ENOENT",
        "ESRCH",
        "EINTR",
        "EIO",
        "E2BIG",
        "EBADF",
        "EAGAIN",
        "ENOMEM",
        "EACCES",
        "EFAULT",
        "EBUSY",
        "EEXIST",
        "ENODEV",
        "EINVAL",
        "ENOSPC",
        "ERANGE",
        "EDEADLK",
        "ENOSYS",
        "ELOOP",
        "ENODATA",
        "ETIMEDOUT",
        "EOPNOTSUPP",
        "ENOTSUPP",
        "ENOEXEC",
        "ENOTTY",
    ];

    pub fn parse(name: &str) -> Result<Errno, String> {
        if Self::KNOWN.contains(&name) {
            Ok(Errno(name.to_string()))
        } else {
            Err(format!(
                "unknown errno name '{name}' (known: {})",
                Self::KNOWN.join(", ")
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Errno {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Errno::parse(&s).map_err(serde::de::Error::custom)
    }
}
