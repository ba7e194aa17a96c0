//! Mutation sites, found with a C parser (tree-sitter-c): the functions
//! of a source file, and the mutants of one function, each one change at
//! one site with a stable operator name and a stable id.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};
use tree_sitter::{Node, Parser, Tree};

/// A mutation operator. Its name (kebab-case) is stable: ids, results and
/// `--operator` use it.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Operator {
    /// `if (c)` -> `if (!(c))`.
    IfNegate,
    /// `if (c)` -> `if (1)`.
    IfTrue,
    /// `if (c)` -> `if (0)`.
    IfFalse,
    /// `==` <-> `!=`, `<` -> `<=`, `<=` -> `<`, `>` -> `>=`, `>=` -> `>`.
    RelSwap,
    /// `&&` <-> `||`.
    LogicSwap,
    /// `a && b` -> `a` and -> `b` (likewise `||`).
    LogicDrop,
    /// The value of a `return` in a function returning int or long ->
    /// `0`, `-EBUSY`, `-EAGAIN`, `-EINVAL`, or another return's value.
    ReturnValue,
    /// A statement that is a call, deleted.
    CallDelete,
    /// A flags assignment (`x |= F`, `x &= ~F`), deleted.
    FlagDelete,
    /// A `true`/`false` argument of a call, flipped.
    BoolFlip,
}

impl Operator {
    pub const ALL: [Operator; 10] = [
        Operator::IfNegate,
        Operator::IfTrue,
        Operator::IfFalse,
        Operator::RelSwap,
        Operator::LogicSwap,
        Operator::LogicDrop,
        Operator::ReturnValue,
        Operator::CallDelete,
        Operator::FlagDelete,
        Operator::BoolFlip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operator::IfNegate => "if-negate",
            Operator::IfTrue => "if-true",
            Operator::IfFalse => "if-false",
            Operator::RelSwap => "rel-swap",
            Operator::LogicSwap => "logic-swap",
            Operator::LogicDrop => "logic-drop",
            Operator::ReturnValue => "return-value",
            Operator::CallDelete => "call-delete",
            Operator::FlagDelete => "flag-delete",
            Operator::BoolFlip => "bool-flip",
        }
    }
}

impl std::fmt::Display for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A function definition in a source file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Function {
    /// The file, relative to the tree (`kernel/bpf/trampoline.c`).
    pub file: String,
    pub name: String,
    /// 1-based, inclusive.
    pub first_line: usize,
    pub last_line: usize,
    #[serde(skip)]
    pub start: usize,
    #[serde(skip)]
    pub end: usize,
}

/// One change at one site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutant {
    /// Stable for the same source and scope: a digest of the file, the
    /// function, the operator, the text replaced, its replacement and
    /// which of the function's equal sites it is.
    pub id: String,
    pub operator: Operator,
    pub file: String,
    pub function: String,
    /// 1-based line and column of the site.
    pub line: usize,
    pub col: usize,
    /// Byte range of the site in the file.
    pub start: usize,
    pub end: usize,
    pub original: String,
    pub replacement: String,
    /// The site's line before and after: `-<line>` / `+<line>`.
    pub diff: String,
}

impl Mutant {
    /// The file's text with this mutant applied. Err: the file is not
    /// the one the mutant was found in (the site's text differs).
    pub fn apply(&self, src: &str) -> Result<String> {
        if src.get(self.start..self.end) != Some(self.original.as_str()) {
            return Err(anyhow!(
                "mutant {}: {}:{}:{} no longer reads `{}` (the source changed since the mutants were listed)",
                self.id,
                self.file,
                self.line,
                self.col,
                self.original
            ));
        }
        Ok(format!(
            "{}{}{}",
            &src[..self.start],
            self.replacement,
            &src[self.end..]
        ))
    }

    /// `id  operator  file:line:col  diff`, one line.
    pub fn list_line(&self) -> String {
        format!(
            "{}  {:<12}  {}:{}:{}  {}",
            self.id,
            self.operator.name(),
            self.file,
            self.line,
            self.col,
            self.diff
        )
    }
}

pub fn parse(src: &str) -> Result<Tree> {
    let mut p = Parser::new();
    p.set_language(&tree_sitter_c::LANGUAGE.into())
        .map_err(|e| anyhow!("cannot load the C grammar: {e}"))?;
    p.parse(src, None)
        .ok_or_else(|| anyhow!("the C parser gave up"))
}

fn text<'a>(n: Node, src: &'a str) -> &'a str {
    &src[n.byte_range()]
}

/// The name a declarator declares (through pointers and parentheses).
fn declared_name<'a>(mut d: Node, src: &'a str) -> Option<&'a str> {
    loop {
        match d.kind() {
            "identifier" => return Some(text(d, src)),
            "function_declarator"
            | "pointer_declarator"
            | "parenthesized_declarator"
            | "attributed_declarator" => {
                d = d.child_by_field_name("declarator").or_else(|| {
                    let mut c = d.walk();
                    let found = d
                        .named_children(&mut c)
                        .find(|n| n.kind().ends_with("declarator") || n.kind() == "identifier");
                    found
                })?;
            }
            _ => return None,
        }
    }
}

/// Every function definition of a file, by name (the first, if a name is
/// defined twice under different `#ifdef`s).
pub fn functions(file: &str, src: &str, tree: &Tree) -> BTreeMap<String, Function> {
    let mut out = BTreeMap::new();
    let mut stack = vec![tree.root_node()];
    while let Some(n) = stack.pop() {
        if n.kind() == "function_definition" {
            if let Some(name) = n
                .child_by_field_name("declarator")
                .and_then(|d| declared_name(d, src))
            {
                out.entry(name.to_string()).or_insert(Function {
                    file: file.to_string(),
                    name: name.to_string(),
                    first_line: n.start_position().row + 1,
                    last_line: n.end_position().row + 1,
                    start: n.start_byte(),
                    end: n.end_byte(),
                });
            }
            continue;
        }
        let mut c = n.walk();
        stack.extend(n.children(&mut c));
    }
    out
}

/// The function's definition node.
fn definition<'t>(tree: &'t Tree, f: &Function) -> Option<Node<'t>> {
    tree.root_node()
        .descendant_for_byte_range(f.start, f.end)
        .and_then(|n| {
            let mut n = Some(n);
            while let Some(x) = n {
                if x.kind() == "function_definition" && x.start_byte() == f.start {
                    return Some(x);
                }
                n = x.parent();
            }
            None
        })
}

/// Whether the function returns an int or a long (not a pointer): the
/// errno-returning functions `return-value` mutates.
fn returns_int(def: Node, src: &str) -> bool {
    let ty = def
        .child_by_field_name("type")
        .map(|t| text(t, src).trim().to_string())
        .unwrap_or_default();
    let pointer = def
        .child_by_field_name("declarator")
        .is_some_and(|d| d.kind() == "pointer_declarator");
    !pointer && matches!(ty.as_str(), "int" | "long" | "ssize_t")
}

const ERRNOS: [&str; 4] = ["0", "-EBUSY", "-EAGAIN", "-EINVAL"];

struct Found {
    op: Operator,
    start: usize,
    end: usize,
    replacement: String,
}

/// The mutants of function `f` (of `file`'s `src`, parsed as `tree`) for
/// the operators `ops`, in source order.
pub fn mutants(src: &str, tree: &Tree, f: &Function, ops: &[Operator]) -> Vec<Mutant> {
    let Some(def) = definition(tree, f) else {
        return Vec::new();
    };
    let Some(body) = def.child_by_field_name("body") else {
        return Vec::new();
    };
    let mut found: Vec<Found> = Vec::new();
    let mut add = |op: Operator, n: Node, replacement: String| {
        if ops.contains(&op) && replacement != text(n, src) {
            found.push(Found {
                op,
                start: n.start_byte(),
                end: n.end_byte(),
                replacement,
            });
        }
    };
    // Every return value of the function, for `return-value`.
    let int_fn = returns_int(def, src);
    let mut returns: Vec<Node> = Vec::new();
    let mut stack = vec![body];
    let mut all = Vec::new();
    while let Some(n) = stack.pop() {
        all.push(n);
        let mut c = n.walk();
        stack.extend(n.children(&mut c));
    }
    all.sort_by_key(|n| (n.start_byte(), std::cmp::Reverse(n.end_byte())));
    for n in &all {
        if n.kind() == "return_statement" {
            if let Some(v) = n.named_child(0) {
                returns.push(v);
            }
        }
    }
    let return_texts: Vec<&str> = {
        let mut v: Vec<&str> = returns.iter().map(|r| text(*r, src)).collect();
        v.sort();
        v.dedup();
        v
    };
    for &n in &all {
        // Sites inside what the parser could not read are left alone.
        if n.has_error() || n.is_error() {
            continue;
        }
        match n.kind() {
            "if_statement" => {
                if let Some(c) = n.child_by_field_name("condition") {
                    let inner = c.named_child(0).map(|i| text(i, src)).unwrap_or("");
                    add(Operator::IfNegate, c, format!("(!({inner}))"));
                    add(Operator::IfTrue, c, "(1)".into());
                    add(Operator::IfFalse, c, "(0)".into());
                }
            }
            "binary_expression" => {
                let Some(op) = n.child_by_field_name("operator") else {
                    continue;
                };
                let (l, r) = match (
                    n.child_by_field_name("left"),
                    n.child_by_field_name("right"),
                ) {
                    (Some(l), Some(r)) => (l, r),
                    _ => continue,
                };
                let swapped = match text(op, src) {
                    "==" => Some("!="),
                    "!=" => Some("=="),
                    "<" => Some("<="),
                    "<=" => Some("<"),
                    ">" => Some(">="),
                    ">=" => Some(">"),
                    _ => None,
                };
                if let Some(s) = swapped {
                    add(Operator::RelSwap, op, s.into());
                }
                let logic = match text(op, src) {
                    "&&" => Some("||"),
                    "||" => Some("&&"),
                    _ => None,
                };
                if let Some(s) = logic {
                    add(Operator::LogicSwap, op, s.into());
                    add(Operator::LogicDrop, n, format!("({})", text(l, src)));
                    add(Operator::LogicDrop, n, format!("({})", text(r, src)));
                }
            }
            "return_statement" if int_fn => {
                if let Some(v) = n.named_child(0) {
                    let here = text(v, src);
                    let mut values: Vec<&str> = ERRNOS.to_vec();
                    values.extend(return_texts.iter().copied());
                    let mut seen = Vec::new();
                    for val in values {
                        if val != here && !seen.contains(&val) {
                            seen.push(val);
                            add(Operator::ReturnValue, v, val.to_string());
                        }
                    }
                }
            }
            "expression_statement" => {
                let Some(e) = n.named_child(0) else { continue };
                match e.kind() {
                    "call_expression" => add(Operator::CallDelete, n, ";".into()),
                    "assignment_expression" => {
                        let op = e
                            .child_by_field_name("operator")
                            .map(|o| text(o, src))
                            .unwrap_or("");
                        if op == "|=" || op == "&=" {
                            add(Operator::FlagDelete, n, ";".into());
                        }
                    }
                    _ => {}
                }
            }
            "argument_list" => {
                let mut c = n.walk();
                for a in n.named_children(&mut c) {
                    match text(a, src) {
                        "true" => add(Operator::BoolFlip, a, "false".into()),
                        "false" => add(Operator::BoolFlip, a, "true".into()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    found.sort_by(|a, b| {
        (a.start, a.end, a.op, &a.replacement).cmp(&(b.start, b.end, b.op, &b.replacement))
    });
    found.dedup_by(|a, b| a.start == b.start && a.end == b.end && a.replacement == b.replacement);
    let mut occurrences: BTreeMap<(Operator, String, String), usize> = BTreeMap::new();
    found
        .into_iter()
        .map(|m| {
            let original = src[m.start..m.end].to_string();
            let nth = occurrences
                .entry((m.op, original.clone(), m.replacement.clone()))
                .and_modify(|k| *k += 1)
                .or_insert(0);
            let (line, col) = position(src, m.start);
            Mutant {
                id: mutant_id(&f.file, &f.name, m.op, &original, &m.replacement, *nth),
                operator: m.op,
                file: f.file.clone(),
                function: f.name.clone(),
                line,
                col,
                diff: one_line_diff(src, m.start, m.end, &m.replacement),
                start: m.start,
                end: m.end,
                original,
                replacement: m.replacement,
            }
        })
        .collect()
}

fn mutant_id(
    file: &str,
    function: &str,
    op: Operator,
    original: &str,
    replacement: &str,
    nth: usize,
) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [file, function, op.name(), original, replacement] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update((nth as u64).to_le_bytes());
    let d = h.finalize();
    format!(
        "m{}",
        d[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// 1-based line and column of byte `at`.
pub fn position(src: &str, at: usize) -> (usize, usize) {
    let before = &src[..at];
    let line = before.matches('\n').count() + 1;
    let col = at - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// The site's first line before and after the change, on one line.
fn one_line_diff(src: &str, start: usize, end: usize, replacement: &str) -> String {
    let ls = src[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let le = src[end..].find('\n').map(|i| end + i).unwrap_or(src.len());
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let old = squash(&src[ls..le]);
    let new = squash(&format!(
        "{}{}{}",
        &src[ls..start],
        replacement,
        &src[end..le]
    ));
    let cut = |s: String| {
        if s.chars().count() > 110 {
            format!("{}…", s.chars().take(110).collect::<String>())
        } else {
            s
        }
    };
    format!("-{} +{}", cut(old), cut(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
static int bpf_tramp_ftrace_ops_func(struct ftrace_ops *ops, enum ftrace_ops_cmd cmd)
{
	struct bpf_trampoline *tr = ops->private;
	int ret = 0;

	if (cmd == FTRACE_OPS_CMD_ENABLE_SHARE_IPMODIFY_SELF) {
		/* comment */
		if (!mutex_trylock(&tr->mutex))
			return -EAGAIN;
	}
	switch (cmd) {
	case FTRACE_OPS_CMD_ENABLE_SHARE_IPMODIFY_PEER:
		tr->flags |= BPF_TRAMP_F_SHARE_IPMODIFY;
		if ((tr->flags & BPF_TRAMP_F_CALL_ORIG) &&
		    !(tr->flags & BPF_TRAMP_F_ORIG_STACK))
			ret = bpf_trampoline_update(tr, false /* lock_direct_mutex */);
		break;
	default:
		ret = -EINVAL;
		break;
	}
	mutex_unlock(&tr->mutex);
	return ret;
}

static struct bpf_trampoline *lookup(u64 key)
{
	return NULL;
}
"#;

    fn all() -> Vec<Mutant> {
        let t = parse(SRC).unwrap();
        let fs = functions("k.c", SRC, &t);
        assert_eq!(
            fs.keys().collect::<Vec<_>>(),
            ["bpf_tramp_ftrace_ops_func", "lookup"]
        );
        let mut v = mutants(SRC, &t, &fs["bpf_tramp_ftrace_ops_func"], &Operator::ALL);
        v.extend(mutants(SRC, &t, &fs["lookup"], &Operator::ALL));
        v
    }

    #[test]
    fn each_operator_finds_its_sites() {
        let v = all();
        let of = |op: Operator| -> Vec<String> {
            v.iter()
                .filter(|m| m.operator == op)
                .map(|m| format!("{} -> {}", m.original, m.replacement))
                .collect()
        };
        assert_eq!(
            of(Operator::IfNegate)[0],
            "(cmd == FTRACE_OPS_CMD_ENABLE_SHARE_IPMODIFY_SELF) -> (!(cmd == FTRACE_OPS_CMD_ENABLE_SHARE_IPMODIFY_SELF))"
        );
        assert_eq!(of(Operator::IfTrue).len(), 3);
        assert!(of(Operator::RelSwap).contains(&"== -> !=".to_string()));
        assert_eq!(of(Operator::LogicSwap), ["&& -> ||"]);
        assert_eq!(of(Operator::LogicDrop).len(), 2);
        // int function: each errno and the other return's value; the
        // pointer-returning `lookup` has none.
        assert_eq!(
            of(Operator::ReturnValue),
            [
                "-EAGAIN -> -EBUSY",
                "-EAGAIN -> -EINVAL",
                "-EAGAIN -> 0",
                "-EAGAIN -> ret",
                "ret -> -EAGAIN",
                "ret -> -EBUSY",
                "ret -> -EINVAL",
                "ret -> 0",
            ]
        );
        assert_eq!(of(Operator::CallDelete), ["mutex_unlock(&tr->mutex); -> ;"]);
        assert_eq!(
            of(Operator::FlagDelete),
            ["tr->flags |= BPF_TRAMP_F_SHARE_IPMODIFY; -> ;"]
        );
        assert_eq!(of(Operator::BoolFlip), ["false -> true"]);
    }

    #[test]
    fn ids_are_unique_and_stable_and_a_mutant_applies() {
        let v = all();
        let mut ids: Vec<&str> = v.iter().map(|m| m.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), v.len());
        // Lines added above the function move it, not its ids.
        let shifted = format!("\n\n/* added */\n{SRC}");
        let t = parse(&shifted).unwrap();
        let fs = functions("k.c", &shifted, &t);
        let w = mutants(
            &shifted,
            &t,
            &fs["bpf_tramp_ftrace_ops_func"],
            &Operator::ALL,
        );
        assert_eq!(
            w.iter().map(|m| &m.id).collect::<Vec<_>>(),
            v.iter()
                .filter(|m| m.function == "bpf_tramp_ftrace_ops_func")
                .map(|m| &m.id)
                .collect::<Vec<_>>()
        );
        assert_eq!(w[0].line, v[0].line + 3);
        let m = v.iter().find(|m| m.operator == Operator::BoolFlip).unwrap();
        let out = m.apply(SRC).unwrap();
        assert!(out.contains("bpf_trampoline_update(tr, true /* lock_direct_mutex */)"));
        assert!(m.diff.starts_with("-ret = bpf_trampoline_update(tr, false"));
        assert!(m.apply(&out).is_err(), "applied twice");
    }
}
