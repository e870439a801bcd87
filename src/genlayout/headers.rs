//! Macros read from the installed CPython headers: `#define` values, the
//! bodies of initializer macros, and a small evaluator for the integer
//! expressions they are made of (literals, other macros, `UINT_MAX`,
//! `sizeof(T)` answered by DWARF, casts, `+ - * / << >> |`).
//!
//! A macro is looked up in the header the caller names first; one it does
//! not define is looked up in every installed header (the `.h` files
//! under the directory, however they include each other), where its
//! 64-bit definitions must all agree: facts move between headers from one
//! release to the next (3.14 moved `FRAME_SPECIALS_SIZE` to
//! pycore_interpframe.h, the small-int bounds to pycore_runtime_structs.h,
//! `_Py_IMMORTAL_INITIAL_REFCNT` to refcount.h).

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The header directory (`INCLUDEPY`), read on demand.
pub struct Headers {
    pub dir: PathBuf,
    /// Every header's text, by path relative to `dir` (sorted).
    all: OnceCell<BTreeMap<String, String>>,
}

/// One `#define NAME value` line: its value text and the conditional
/// directive it sits directly under (`#if SIZEOF_VOID_P > 4`, `#else`, ...;
/// empty at top level).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Define {
    pub value: String,
    pub guard: String,
}

impl Headers {
    pub fn new(dir: &Path) -> Headers {
        Headers {
            dir: dir.to_owned(),
            all: OnceCell::new(),
        }
    }

    /// Every `.h` file under the directory, by relative path.
    pub fn all(&self) -> &BTreeMap<String, String> {
        self.all.get_or_init(|| {
            let mut out = BTreeMap::new();
            let mut todo = vec![self.dir.clone()];
            while let Some(d) = todo.pop() {
                let Ok(rd) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        todo.push(p);
                    } else if p.extension().is_some_and(|x| x == "h") {
                        if let (Ok(t), Ok(rel)) =
                            (std::fs::read_to_string(&p), p.strip_prefix(&self.dir))
                        {
                            out.insert(rel.to_string_lossy().into_owned(), t);
                        }
                    }
                }
            }
            out
        })
    }

    /// The headers that define `name` (64-bit), with their definitions.
    pub fn defined_in(&self, name: &str) -> Vec<(String, std::result::Result<Define, String>)> {
        let mut out = Vec::new();
        for (rel, text) in self.all() {
            if !text.contains(name) || defines_of(text, name).is_empty() {
                continue;
            }
            out.push((
                rel.clone(),
                define64_of(text, name).map_err(|n| {
                    format!("{rel}: no single 64-bit definition of {name} ({n} definitions)")
                }),
            ));
        }
        out
    }

    /// The one 64-bit definition of `name` in any header: (header, value);
    /// all headers defining it must agree.
    pub fn anywhere(&self, name: &str) -> std::result::Result<(String, String), String> {
        let found = self.defined_in(name);
        let mut vals: Vec<(String, String)> = Vec::new();
        for (rel, d) in found {
            vals.push((rel, d?.value));
        }
        match vals.as_slice() {
            [] => Err(format!(
                "{name} is not defined in any header under {}",
                self.dir.display()
            )),
            [first, rest @ ..] => {
                if let Some(other) = rest.iter().find(|v| norm(&v.1) != norm(&first.1)) {
                    return Err(format!(
                        "{name} is {} in {} but {} in {}",
                        first.1, first.0, other.1, other.0
                    ));
                }
                Ok(first.clone())
            }
        }
    }

    /// The text of header `rel` (e.g. `internal/pycore_code.h`).
    pub fn text(&self, rel: &str) -> Result<String> {
        let p = self.dir.join(rel);
        std::fs::read_to_string(&p).map_err(|e| Error::file(&p, format!("cannot read header: {e}")))
    }

    /// Every definition of object-like macro `name` in header `rel`.
    pub fn defines(&self, rel: &str, name: &str) -> Result<Vec<Define>> {
        Ok(defines_of(&self.text(rel)?, name))
    }

    /// The one definition of `name` in `rel` that a 64-bit build uses: the
    /// only one, or the one directly under `#if SIZEOF_VOID_P > 4`.
    pub fn define64(&self, rel: &str, name: &str) -> Result<Define> {
        define64_of(&self.text(rel)?, name).map_err(|n| {
            Error::file(
                self.dir.join(rel),
                format!("no single 64-bit definition of {name} ({n} definitions)"),
            )
        })
    }

    /// Evaluate `expr` (found in `rel`): names are macros of the headers
    /// `rel` and `more` (each with one 64-bit definition), else of any
    /// header ([`Headers::anywhere`]); `sizeof(T)` asks `sizeof`.
    pub fn eval(
        &self,
        rel: &str,
        more: &[&str],
        expr: &str,
        sizeof: &dyn Fn(&str) -> std::result::Result<u64, String>,
    ) -> Result<i64> {
        let mut files = vec![rel];
        files.extend_from_slice(more);
        let lookup = |name: &str| -> std::result::Result<String, String> {
            for f in &files {
                match self.defines(f, name) {
                    Ok(d) if d.is_empty() => continue,
                    Ok(_) => {
                        return self
                            .define64(f, name)
                            .map(|d| d.value)
                            .map_err(|e| e.message)
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            self.anywhere(name).map(|(_, v)| v)
        };
        let mut p = Parser {
            toks: tokenize(expr).map_err(|e| Error::file(self.dir.join(rel), e))?,
            pos: 0,
            lookup: &lookup,
            sizeof,
            depth: 0,
        };
        let v = p
            .expr()
            .and_then(|v| match p.toks.get(p.pos) {
                None => Ok(v),
                Some(t) => Err(format!("unexpected {t:?}")),
            })
            .map_err(|e| {
                Error::file(self.dir.join(rel), format!("cannot evaluate {expr:?}: {e}"))
            })?;
        Ok(v)
    }
}

/// The one definition of `name` in `text` that a 64-bit build uses: the
/// only one, or the one directly under `#if SIZEOF_VOID_P > 4`; else the
/// number of definitions.
fn define64_of(text: &str, name: &str) -> std::result::Result<Define, usize> {
    let d = defines_of(text, name);
    let pick: Vec<&Define> = match d.as_slice() {
        [one] => vec![one],
        _ => d
            .iter()
            .filter(|d| norm(&d.guard) == "#if SIZEOF_VOID_P > 4")
            .collect(),
    };
    match pick.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(d.len()),
    }
}

fn norm(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `#define NAME value` lines of `text` with their guards.
pub fn defines_of(text: &str, name: &str) -> Vec<Define> {
    let mut guards: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(d) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let d = d.trim_start();
        let word: String = d.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
        match word.as_str() {
            "if" | "ifdef" | "ifndef" => guards.push(norm(&format!("#{d}"))),
            "elif" | "else" => {
                guards.pop();
                guards.push(norm(&format!("#{d}")));
            }
            "endif" => {
                guards.pop();
            }
            "define" => {
                let rest = d["define".len()..].trim_start();
                if let Some(v) = rest.strip_prefix(name) {
                    if v.starts_with([' ', '\t']) {
                        out.push(Define {
                            value: strip_comment(v).trim().to_owned(),
                            guard: guards.last().cloned().unwrap_or_default(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn strip_comment(s: &str) -> &str {
    let end = [s.find("/*"), s.find("//")].into_iter().flatten().min();
    &s[..end.unwrap_or(s.len())]
}

/// The bodies (continuation lines joined) of every definition of the
/// function-like or object-like macro `name` in `text`.
pub fn macro_bodies(text: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(first) = lines.next() {
        let starts = first
            .trim_start()
            .strip_prefix('#')
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix("define"))
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix(name))
            .is_some_and(|r| r.starts_with([' ', '\t', '(']));
        if !starts {
            continue;
        }
        let mut body = first.trim_end().trim_end_matches('\\').to_owned();
        let mut cont = first.trim_end().ends_with('\\');
        while cont {
            let Some(l) = lines.next() else { break };
            body.push('\n');
            body.push_str(l.trim_end().trim_end_matches('\\'));
            cont = l.trim_end().ends_with('\\');
        }
        out.push(body);
    }
    out
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(i64),
    Ident(String),
    Punct(&'static str),
}

fn tokenize(s: &str) -> std::result::Result<Vec<Tok>, String> {
    const PUNCT: [&str; 10] = ["<<", ">>", "(", ")", ",", "*", "/", "+", "-", "|"];
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let lit = s[start..i].trim_end_matches(['u', 'U', 'l', 'L']);
            let v = match lit.strip_prefix("0x").or_else(|| lit.strip_prefix("0X")) {
                Some(h) => i64::from_str_radix(h, 16),
                None => lit.parse(),
            }
            .map_err(|_| format!("bad number {:?}", &s[start..i]))?;
            out.push(Tok::Num(v));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(s[start..i].to_owned()));
        } else if let Some(p) = PUNCT.iter().find(|p| s[i..].starts_with(**p)) {
            out.push(Tok::Punct(p));
            i += p.len();
        } else {
            return Err(format!("unexpected character {:?}", c as char));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    lookup: &'a dyn Fn(&str) -> std::result::Result<String, String>,
    sizeof: &'a dyn Fn(&str) -> std::result::Result<u64, String>,
    depth: u32,
}

type R = std::result::Result<i64, String>;

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn punct(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.pos += 1;
            return true;
        }
        false
    }

    fn expect(&mut self, p: &str) -> std::result::Result<(), String> {
        if self.punct(p) {
            Ok(())
        } else {
            Err(format!("expected {p:?}"))
        }
    }

    /// A type name up to the closing parenthesis or comma: `PyObject *`.
    fn type_name(&mut self) -> std::result::Result<String, String> {
        let mut parts = Vec::new();
        while let Some(t) = self.peek() {
            match t {
                Tok::Ident(n) => parts.push(n.clone()),
                Tok::Punct("*") => parts.push("*".into()),
                _ => break,
            }
            self.pos += 1;
        }
        if parts.is_empty() {
            return Err("expected a type".into());
        }
        Ok(parts.join(" "))
    }

    /// `( TYPE )` followed by the start of an operand: a cast.
    fn is_cast(&self) -> bool {
        let mut i = self.pos + 1;
        let mut any = false;
        while let Some(t) = self.toks.get(i) {
            match t {
                Tok::Ident(_) | Tok::Punct("*") => any = true,
                Tok::Punct(")") => {
                    return any
                        && matches!(
                            self.toks.get(i + 1),
                            Some(Tok::Num(_) | Tok::Ident(_) | Tok::Punct("("))
                        )
                }
                _ => return false,
            }
            i += 1;
        }
        false
    }

    fn expr(&mut self) -> R {
        self.depth += 1;
        if self.depth > 64 {
            return Err("nested too deep".into());
        }
        let mut v = self.shift()?;
        while self.punct("|") {
            v |= self.shift()?;
        }
        self.depth -= 1;
        Ok(v)
    }

    fn shift(&mut self) -> R {
        let mut v = self.additive()?;
        while let Some(Tok::Punct(p @ ("<<" | ">>"))) = self.peek() {
            let left = *p == "<<";
            self.pos += 1;
            let r = self.additive()?;
            let r = u32::try_from(r)
                .ok()
                .filter(|r| *r < 63)
                .ok_or("bad shift")?;
            v = if left { v << r } else { v >> r };
        }
        Ok(v)
    }

    fn additive(&mut self) -> R {
        let mut v = self.multiplicative()?;
        while let Some(Tok::Punct(p @ ("+" | "-"))) = self.peek() {
            let plus = *p == "+";
            self.pos += 1;
            let r = self.multiplicative()?;
            v = if plus {
                v.checked_add(r)
            } else {
                v.checked_sub(r)
            }
            .ok_or("overflow")?;
        }
        Ok(v)
    }

    fn multiplicative(&mut self) -> R {
        let mut v = self.unary()?;
        while let Some(Tok::Punct(p @ ("*" | "/"))) = self.peek() {
            let mul = *p == "*";
            self.pos += 1;
            let r = self.unary()?;
            v = if mul {
                v.checked_mul(r)
            } else {
                v.checked_div(r)
            }
            .ok_or("overflow or division by zero")?;
        }
        Ok(v)
    }

    fn unary(&mut self) -> R {
        match self.peek().cloned() {
            Some(Tok::Punct("-")) => {
                self.pos += 1;
                self.unary()?.checked_neg().ok_or_else(|| "overflow".into())
            }
            Some(Tok::Punct("(")) if self.is_cast() => {
                self.pos += 1;
                self.type_name()?;
                self.expect(")")?;
                self.unary()
            }
            Some(Tok::Punct("(")) => {
                self.pos += 1;
                let v = self.expr()?;
                self.expect(")")?;
                Ok(v)
            }
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(n)
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                match name.as_str() {
                    "sizeof" => {
                        self.expect("(")?;
                        let t = self.type_name()?;
                        self.expect(")")?;
                        let s = (self.sizeof)(&t)?;
                        i64::try_from(s).map_err(|_| "sizeof overflows".into())
                    }
                    // _Py_CAST(type, expr)
                    "_Py_CAST" => {
                        self.expect("(")?;
                        self.type_name()?;
                        self.expect(",")?;
                        let v = self.expr()?;
                        self.expect(")")?;
                        Ok(v)
                    }
                    "UINT_MAX" | "UINT32_MAX" => Ok(i64::from(u32::MAX)),
                    _ => {
                        let text = (self.lookup)(&name)?;
                        let mut inner = Parser {
                            toks: tokenize(&text)?,
                            pos: 0,
                            lookup: self.lookup,
                            sizeof: self.sizeof,
                            depth: self.depth + 1,
                        };
                        let v = inner.expr()?;
                        if inner.pos != inner.toks.len() {
                            return Err(format!("{name}: cannot evaluate {text:?}"));
                        }
                        Ok(v)
                    }
                }
            }
            t => Err(format!("unexpected {t:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, expr: &str) -> std::result::Result<i64, String> {
        let lookup = |n: &str| {
            let d = defines_of(text, n);
            match d.as_slice() {
                [one] => Ok(one.value.clone()),
                _ => Err(format!("{n}: {} definitions", d.len())),
            }
        };
        let sizeof = |t: &str| match t {
            "PyObject *" => Ok(8),
            "_PyInterpreterFrame" => Ok(80),
            _ => Err(format!("no type {t}")),
        };
        let mut p = Parser {
            toks: tokenize(expr)?,
            pos: 0,
            lookup: &lookup,
            sizeof: &sizeof,
            depth: 0,
        };
        let v = p.expr()?;
        assert_eq!(p.pos, p.toks.len(), "{expr}");
        Ok(v)
    }

    #[test]
    fn evaluates_the_macros_cpython_uses() {
        let text = "#define QUICKENING_WARMUP_DELAY 8\n\
                    #define QUICKENING_INITIAL_WARMUP_VALUE (-QUICKENING_WARMUP_DELAY)\n\
                    #define CO_FAST_LOCAL   0x20 /* a comment */\n";
        assert_eq!(eval(text, "QUICKENING_INITIAL_WARMUP_VALUE"), Ok(-8));
        assert_eq!(eval(text, "CO_FAST_LOCAL"), Ok(0x20));
        assert_eq!(eval(text, "(UINT_MAX >> 2)"), Ok(0x3fff_ffff));
        assert_eq!(
            eval(text, "_Py_CAST(Py_ssize_t, UINT_MAX)"),
            Ok(0xffff_ffff)
        );
        assert_eq!(
            eval(
                text,
                "((int)((sizeof(_PyInterpreterFrame)-1)/sizeof(PyObject *)))"
            ),
            Ok(9)
        );
        assert_eq!(eval(text, "2 + 3 * 4 - 1 << 1"), Ok(26));
        assert_eq!(eval(text, "((long)(4 | 1 << 2 | 1))"), Ok(5));
        assert_eq!(eval(text, "(3ULL << 30)"), Ok(0xc000_0000));
        assert!(eval(text, "NOT_DEFINED").is_err());
        assert!(eval(text, "sizeof(struct nope)").is_err());
        assert!(eval(text, "(1").is_err());
        assert!(eval(text, "1 / 0").is_err());
    }

    #[test]
    fn finds_guarded_definitions_and_macro_bodies() {
        let text = "#if SIZEOF_VOID_P > 4\n#define R UINT_MAX\n#else\n#define R (UINT_MAX >> 2)\n\
                    #endif\n#define INIT(type) \\\n  { .ob_refcnt = 7, \\\n  .ob_type = (type) }\n";
        let d = defines_of(text, "R");
        assert_eq!(
            d,
            vec![
                Define {
                    value: "UINT_MAX".into(),
                    guard: "#if SIZEOF_VOID_P > 4".into()
                },
                Define {
                    value: "(UINT_MAX >> 2)".into(),
                    guard: "#else".into()
                }
            ]
        );
        let b = macro_bodies(text, "INIT");
        assert_eq!(b.len(), 1);
        assert!(b[0].contains(".ob_refcnt = 7,") && b[0].contains(".ob_type"));
        assert!(macro_bodies(text, "IN").is_empty());
    }
}
