//! The stub checker: our objects' functions as `llvm-objdump -d -r`
//! disassembles them, in every format (ELF, Mach-O, COFF) and for both
//! architectures, in one spelling:
//!
//! * branch targets inside the function as `@N` (the index of the
//!   instruction they reach), others as `<symbol>`;
//! * `adrp`'s page operand dropped, a call's target dropped (its
//!   relocation names it), a RIP-relative displacement that a relocation
//!   fills in shown as `(%rip)` (the implicit addends are checked
//!   elsewhere, from the object);
//! * each relocation as `[KIND symbol]`, KIND one of `page` (ADRP),
//!   `lo12` (its `:lo12:` half), `call` and `pcrel` (x86_64), the symbol
//!   as in C (no Mach-O underscore, no ELF addend).
//!
//! [`check_stubs`] holds every eager object to the intended instructions
//! and checks what their operands address; [`check_lazy_stubs`] checks
//! the structure a lazy object's stubs must keep.

use super::compare::{accessor_names, module_of, objects_by_type};
use super::objgraph::{Loc, Model, ObjFile};
use super::{find_tool, run_text, STOCK_MODULES};
use object::{Architecture, BinaryFormat};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

/// One instruction.
#[derive(Debug, Clone)]
pub struct Insn {
    pub addr: u64,
    pub mnemonic: String,
    /// Operands, single-spaced, without llvm-objdump's comment.
    pub operands: String,
    /// (kind as llvm-objdump names it, symbol as in C).
    pub relocs: Vec<(String, String)>,
}

pub fn objdump() -> std::path::PathBuf {
    find_tool(
        &["llvm-objdump"],
        "install the Debian package `llvm` (tests/setup/formats.sh and tests/setup/arm64.sh do)",
    )
}

/// Every function of the object's code, by C name, up to and including
/// its last `ret` (the alignment padding after it must be `nop`s or
/// `int3`s).
pub fn disassemble(path: &Path, f: &ObjFile) -> BTreeMap<String, Vec<Insn>> {
    let text = run_text(
        Command::new(objdump())
            .args(["-d", "-r", "--no-show-raw-insn"])
            .arg(path),
    );
    let c_name = |s: &str| -> String {
        let s = s.split(['+', '-']).next().unwrap_or(s);
        match f.format {
            BinaryFormat::MachO => s.strip_prefix('_').unwrap_or(s).to_string(),
            _ => s.to_string(),
        }
    };
    let comment = if f.arch == Architecture::Aarch64 {
        " //"
    } else {
        " #"
    };
    let mut funcs: BTreeMap<String, Vec<Insn>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some((_, name)) = line.strip_suffix(">:").and_then(|l| l.split_once(" <")) {
            // (not section symbols)
            current = (!name.starts_with('.')).then(|| c_name(name));
            funcs.extend(current.clone().map(|n| (n, Vec::new())));
            continue;
        }
        let Some(insns) = current.as_ref().and_then(|n| funcs.get_mut(n)) else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("\t\t") {
            // "0000000000000177:  X86_64_RELOC_SIGNED\t_pyfreeze_data_0"
            let (at, what) = rest.split_once(':').expect("relocation line");
            let (kind, sym) = what.trim().split_once('\t').unwrap_or((what.trim(), ""));
            let at = u64::from_str_radix(at.trim(), 16).unwrap();
            let insn = (insns.iter_mut().rev().find(|i| i.addr <= at))
                .unwrap_or_else(|| panic!("relocation before any instruction: {line}"));
            let a64 = f.arch == Architecture::Aarch64;
            assert!(
                !a64 || insn.addr == at,
                "relocation not at an instruction: {line}"
            );
            insn.relocs.push((kind.to_string(), c_name(sym)));
            continue;
        }
        let Some((at, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(at.trim(), 16) else {
            continue;
        };
        let mut parts = rest.split('\t').map(str::trim).filter(|s| !s.is_empty());
        let Some(mnemonic) = parts.next() else {
            continue;
        };
        let ops = parts.collect::<Vec<_>>().join(" ");
        let ops = ops.split(comment).next().unwrap();
        insns.push(Insn {
            addr,
            mnemonic: mnemonic.to_string(),
            operands: ops.split_whitespace().collect::<Vec<_>>().join(" "),
            relocs: Vec::new(),
        });
    }
    for (name, insns) in funcs.iter_mut() {
        let last_ret = insns.iter().rposition(|i| i.mnemonic.starts_with("ret"));
        let end = last_ret.map_or(0, |r| r + 1);
        assert!(
            insns[end..]
                .iter()
                .all(|i| matches!(i.mnemonic.as_str(), "nop" | "int3")),
            "{name}: code after the last ret: {:?}",
            &insns[end..]
        );
        insns.truncate(end);
    }
    funcs
}

fn is_branch(mnemonic: &str) -> bool {
    let m = mnemonic;
    m.starts_with('j')
        || m == "b"
        || m.starts_with("b.")
        || ["bl", "cbz", "cbnz", "tbz", "tbnz", "callq", "call"].contains(&m)
}

/// A relocation kind in the spelling this module uses.
fn kind(raw: &str, mnemonic: &str) -> &'static str {
    let call = ["bl", "callq", "call", "b", "jmp", "jmpq"].contains(&mnemonic);
    match raw {
        _ if call => "call",
        r if r.contains("PG_HI21") || r.contains("PAGE21") || r.contains("PAGEBASE") => "page",
        r if r.contains("LO12") || r.contains("PAGEOFF") => "lo12",
        r if r.contains("X86_64") || r.contains("AMD64") => "pcrel",
        r => panic!("unexpected code relocation {r} on {mnemonic}"),
    }
}

/// Instructions in this module's spelling (see the module documentation).
pub fn render(insns: &[Insn]) -> Vec<String> {
    let index_of = |addr: u64| insns.iter().position(|i| i.addr == addr);
    insns
        .iter()
        .map(|i| {
            let m = i.mnemonic.as_str();
            let mut ops = i.operands.clone();
            if m == "adrp" {
                ops = ops.split(',').next().unwrap().to_string();
            } else if !i.relocs.is_empty() && is_branch(m) {
                ops.clear();
            } else if is_branch(m) {
                // the last operand is "0x324 <name+0x44>"
                let (head, target) = match ops.split_once(" <") {
                    Some((h, t)) => (h.to_string(), t.trim_end_matches('>')),
                    None => (ops.clone(), ""),
                };
                let (head, addr) = head.rsplit_once(' ').unwrap_or(("", &head));
                let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).ok();
                let to = match addr.and_then(index_of) {
                    Some(k) => format!("@{k}"),
                    None => format!("<{}>", target.split('+').next().unwrap()),
                };
                ops = format!("{head} {to}").trim().to_string();
            } else if !i.relocs.is_empty() {
                if let Some(p) = ops.find("(%rip)") {
                    let start = ops[..p].rfind([' ', ',']).map_or(0, |s| s + 1);
                    ops.replace_range(start..p, "");
                }
            }
            let mut s = format!("{m} {ops}").trim().to_string();
            for (k, sym) in &i.relocs {
                s.push_str(&format!(" [{} {sym}]", kind(k, m)));
            }
            s
        })
        .collect()
}

/// Anchor symbol name of a data offset, and of a table offset, as the
/// writer spells them.
pub fn data_anchor(off: u64) -> String {
    format!("pyfreeze_data_{off:x}")
}
pub fn table_anchor(off: u64) -> String {
    format!("pyfreeze_table_{off:x}")
}

/// One table walk of Init or Fini: the callee, the table's first and end
/// byte offsets, whether a negative result makes the function fail, and
/// the type of the objects listed.
#[derive(Clone, Copy, Debug)]
pub struct Walk {
    pub callee: &'static str,
    pub start: u64,
    pub end: u64,
    pub check: bool,
    pub ty: &'static str,
}

/// The walks of `_Py_Deepfreeze_Init` and `_Py_Deepfreeze_Fini` for `n_code`
/// code objects and `n_str` strings: every code object (Init checks the
/// result), then (3.11 Fini) every string.
pub fn walks(model: &Model, n_code: usize, n_str: usize) -> (Vec<Walk>, Vec<Walk>) {
    let (nc, ns, s) = (4 * n_code as u64, 4 * n_str as u64, &model.l.sym);
    let walk = |(callee, start, end, check, ty)| Walk {
        callee,
        start,
        end,
        check,
        ty,
    };
    let init = vec![walk((model.init_callee(), 0, nc, true, s.code_type))];
    let fini_code = model
        .c
        .code_fini_hook()
        .expect("a per-code-object fini hook");
    let mut fini = vec![walk((fini_code, 0, nc, false, s.code_type))];
    let str_walk = |f| walk((f, nc, nc + ns, false, s.str_type));
    fini.extend(model.str_fini().map(str_walk));
    (init, fini)
}

/// The intended accessor: the address of the code object at `anchor`
/// into the return register, 3.11 increments its refcount, return.
pub fn expected_accessor(arch: Architecture, anchor: &str, incref: bool) -> Vec<String> {
    let v: &[&str] = match (arch == Architecture::Aarch64, incref) {
        (true, false) => &["adrp x0 [page A]", "add x0, x0, #0 [lo12 A]", "ret"],
        // the reference count (at offset 0) through IP0 and IP1
        (true, true) => &[
            "adrp x16 [page A]",
            "add x16, x16, #0 [lo12 A]",
            "ldr x17, [x16]",
            "add x17, x17, #1",
            "str x17, [x16]",
            "adrp x0 [page A]",
            "add x0, x0, #0 [lo12 A]",
            "ret",
        ],
        (false, false) => &["leaq (%rip), %rax [pcrel A]", "retq"],
        (false, true) => &[
            "addq $1, (%rip) [pcrel A]",
            "leaq (%rip), %rax [pcrel A]",
            "retq",
        ],
    };
    v.iter()
        .map(|s| s.replace(" A]", &format!(" {anchor}]")))
        .collect()
}

/// The intended body of Init or Fini between prologue and epilogue, whose
/// first instruction has index `base`: the data base into a register
/// (`x21`, `%r12`), then per walk a loop over a table of 32-bit offsets
/// (cursor `x19`/`%rbx`, end `x20`/`%rbp`) calling `callee(data +
/// offset)`; with `check`, a negative result makes the function return
/// -1. Returns 0. The argument goes in `%rdi`, or `%rcx` on Windows
/// (`win64`).
pub fn expected_walks(arch: Architecture, win64: bool, walks: &[Walk], base: usize) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let a64 = arch == Architecture::Aarch64;
    let (arg32, arg) = if win64 {
        ("%ecx", "%rcx")
    } else {
        ("%edi", "%rdi")
    };
    let data = data_anchor(0);
    if a64 {
        v.push(format!("adrp x21 [page {data}]"));
        v.push(format!("add x21, x21, #0 [lo12 {data}]"));
    } else {
        v.push(format!("leaq (%rip), %r12 [pcrel {data}]"));
    }
    for (k, w) in walks.iter().enumerate() {
        let (s, e) = (table_anchor(w.start), table_anchor(w.end));
        if a64 {
            v.push(format!("adrp x19 [page {s}]"));
            v.push(format!("add x19, x19, #0 [lo12 {s}]"));
            v.push(format!("adrp x20 [page {e}]"));
            v.push(format!("add x20, x20, #0 [lo12 {e}]"));
            v.push(format!("top{k}:"));
            v.push("cmp x19, x20".into());
            v.push(format!("b.hs <next{k}>"));
            v.push("ldr w0, [x19]".into());
            v.push("add x0, x21, x0".into());
            v.push(format!("bl [call {}]", w.callee));
            v.push("add x19, x19, #4".into());
            if w.check {
                v.push("tbnz w0, #31, <fail>".into());
            }
            v.push(format!("b <top{k}>"));
        } else {
            v.push(format!("leaq (%rip), %rbx [pcrel {s}]"));
            v.push(format!("leaq (%rip), %rbp [pcrel {e}]"));
            v.push(format!("top{k}:"));
            v.push("cmpq %rbp, %rbx".into());
            v.push(format!("jae <next{k}>"));
            v.push(format!("movl (%rbx), {arg32}"));
            v.push(format!("addq %r12, {arg}"));
            v.push(format!("callq [call {}]", w.callee));
            v.push("addq $4, %rbx".into());
            if w.check {
                v.push("testl %eax, %eax".into());
                v.push("js <fail>".into());
            }
            v.push(format!("jmp <top{k}>"));
        }
        v.push(format!("next{k}:"));
    }
    v.push(if a64 { "mov w0, #0" } else { "xorl %eax, %eax" }.into());
    if walks.iter().any(|w| w.check) {
        v.push(if a64 { "b <out>" } else { "jmp <out>" }.into());
        v.push("fail:".into());
        v.push(
            if a64 {
                "mov w0, #-1"
            } else {
                "movl $4294967295, %eax"
            }
            .into(),
        );
    }
    v.push("out:".into());
    template(&v, base)
}

/// An expected listing with labels: `name:` lines mark the next
/// instruction; `<name>` in an operand becomes `@index` (counted from
/// `base`).
fn template(lines: &[String], base: usize) -> Vec<String> {
    let mut labels = HashMap::new();
    let mut insns = Vec::new();
    for l in lines {
        match l.strip_suffix(':') {
            Some(name) => {
                labels.insert(name.to_string(), base + insns.len());
            }
            None => insns.push(l.clone()),
        }
    }
    insns
        .into_iter()
        .map(|l| match l.split_once('<') {
            Some((head, label)) => {
                format!("{head}@{}", labels[label.strip_suffix('>').unwrap()])
            }
            None => l,
        })
        .collect()
}

/// Split a function into prologue, body and epilogue, checking the frame
/// against the ABI: AArch64 `stp x29, x30, [sp, #-N]!; mov x29, sp`, then
/// stores of callee-saved registers (x19-x28) to distinct slots inside the
/// frame that the epilogue loads back from the same slots before `ldp x29,
/// x30, [sp], #N; ret`, N a multiple of 16; x86_64 pushes of callee-saved
/// registers (and `subq $N, %rsp`) undone in reverse before `retq`,
/// leaving `%rsp` 16-byte aligned at the calls. `uses`: registers the body
/// uses, which must be among the saved. Returns the body's range.
pub fn split_frame(
    name: &str,
    arch: Architecture,
    insns: &[String],
    uses: &[&str],
) -> std::ops::Range<usize> {
    let fail = |what: &str| -> ! { panic!("{name}: {what}:\n  {}", insns.join("\n  ")) };
    let mut saved: BTreeSet<(String, String)> = BTreeSet::new();
    let (start, end);
    let n_ = insns.len();
    if arch == Architecture::Aarch64 {
        let frame = insns[0]
            .strip_prefix("stp x29, x30, [sp, #-")
            .and_then(|x| x.strip_suffix("]!"))
            .unwrap_or_else(|| fail("no frame record push first"));
        let n: u64 = frame.parse().unwrap();
        assert!(
            n.is_multiple_of(16) && n >= 16,
            "{name}: frame of {n} bytes"
        );
        assert_eq!(insns[1], "mov x29, sp", "{name}");
        // "stp x19, x20, [sp, #16]" -> [("x19", "16"), ("x20", "24")]
        let slot = |s: &str, single: &str, pair: &str| -> Option<Vec<(String, String)>> {
            let (regs, rest) = match s.strip_prefix(single) {
                Some(r) => (1, r),
                None => (2, s.strip_prefix(pair)?),
            };
            let (names, at) = rest.split_once(", [sp, #")?;
            let at: u64 = at.strip_suffix(']')?.parse().ok()?;
            let names: Vec<&str> = names.split(", ").collect();
            (names.len() == regs).then(|| {
                let slots = names.iter().enumerate();
                slots
                    .map(|(i, r)| (r.to_string(), (at + 8 * i as u64).to_string()))
                    .collect()
            })
        };
        let mut i = 2;
        while let Some(v) = slot(&insns[i], "str ", "stp ") {
            saved.extend(v);
            i += 1;
        }
        start = i;
        assert_eq!(insns[n_ - 1], "ret", "{name}");
        assert_eq!(
            insns[n_ - 2],
            format!("ldp x29, x30, [sp], #{n}"),
            "{name}: frame record pop"
        );
        let mut j = n_ - 2;
        let mut restored = BTreeSet::new();
        while let Some(v) = slot(&insns[j - 1], "ldr ", "ldp ") {
            restored.extend(v);
            j -= 1;
        }
        end = j;
        assert_eq!(saved, restored, "{name}: registers saved vs restored");
        let slots: BTreeSet<&String> = saved.iter().map(|x| &x.1).collect();
        assert_eq!(
            slots.len(),
            saved.len(),
            "{name}: two registers in one slot"
        );
        for (r, at) in &saved {
            let k: u32 = r[1..].parse().unwrap();
            assert!(
                (19..=28).contains(&k),
                "{name}: saves {r}, not callee-saved"
            );
            let at: u64 = at.parse().unwrap();
            assert!(
                at >= 16 && at + 8 <= n,
                "{name}: {r} saved outside the frame"
            );
        }
    } else {
        let mut i = 0;
        let mut pushed = Vec::new();
        while let Some(r) = insns[i].strip_prefix("pushq %") {
            pushed.push(r.to_string());
            i += 1;
        }
        let sub: u64 = match insns[i].strip_prefix("subq $") {
            Some(x) => {
                i += 1;
                x.strip_suffix(", %rsp").unwrap().parse().unwrap()
            }
            None => 0,
        };
        start = i;
        assert_eq!(insns[n_ - 1], "retq", "{name}");
        let mut j = n_ - 1;
        let mut popped = Vec::new();
        while let Some(r) = insns[j - 1].strip_prefix("popq %") {
            popped.push(r.to_string());
            j -= 1;
        }
        if sub > 0 {
            assert_eq!(insns[j - 1], format!("addq ${sub}, %rsp"), "{name}");
            j -= 1;
        }
        end = j;
        assert_eq!(pushed, popped, "{name}: pushes undone in reverse");
        for r in &pushed {
            assert!(
                ["rbx", "rbp", "r12", "r13", "r14", "r15"].contains(&r.as_str()),
                "{name}: pushes {r}, not callee-saved"
            );
            saved.insert((r.clone(), String::new()));
        }
        let misaligned = (8 + 8 * pushed.len() as u64 + sub) % 16;
        assert_eq!(misaligned, 0, "{name}: %rsp misaligned at the calls");
    }
    for u in uses {
        assert!(
            saved.iter().any(|(r, _)| r == u),
            "{name}: {u} is used but not saved: {saved:?}"
        );
    }
    start..end
}

/// The co_filename of the code object at `at` is `<frozen NAME>` with
/// NAME mangled as the accessor's.
fn assert_module_code(f: &ObjFile, model: &Model, accessor: &str, at: Loc) {
    let l = model.l;
    let local = |at: Loc, field: u32| match f.reloc_at(at.add(field as i64)).map(|r| &r.target) {
        Some(super::objgraph::Target::Local(l)) => *l,
        t => panic!("{accessor}: field {field} of {at:?} points to {t:?}"),
    };
    let ty = f
        .reloc_at(at.add(l.head.type_.off as i64))
        .map(|r| f.show(&r.target));
    assert_eq!(
        ty.as_deref(),
        Some(l.sym.code_type),
        "{accessor} does not return a code object"
    );
    let s = local(at, l.code.filename.off);
    let len = u64::from_le_bytes(f.bytes(s.add(16), 8).unwrap().try_into().unwrap());
    let name = f.bytes(s.add(l.str_.ascii_size as i64), len).unwrap();
    let name = std::str::from_utf8(name).unwrap();
    let module = name
        .strip_prefix("<frozen ")
        .and_then(|n| n.strip_suffix('>'))
        .unwrap_or_else(|| panic!("{accessor}: co_filename {name:?}"));
    assert_eq!(module.replace('.', "_"), module_of(accessor), "{accessor}");
}

/// The place a defined symbol names.
fn anchor_loc(f: &ObjFile, name: &str) -> Loc {
    let sym = f.symbol(name).unwrap_or_else(|| panic!("no symbol {name}"));
    sym.loc.unwrap()
}

/// Our eager object at `path` (bytes `bytes`, CPython version `model`):
/// each accessor is the intended instructions, loads the anchor of its
/// module's code object (and 3.11 increments its refcount), nothing else;
/// Init and Fini are the intended table walks inside an ABI-conforming
/// frame, and each table lists every object of its type once (the code
/// objects, then the strings, then a 0 sentinel); there are no other
/// functions.
pub fn check_stubs(path: &Path, bytes: &[u8], model: &Model) {
    let f = ObjFile::parse(bytes).unwrap();
    let funcs = disassemble(path, &f);
    let accessors = accessor_names(&f);
    assert_eq!(accessors.len(), STOCK_MODULES, "{accessors:?}");
    let init_fini = ["_Py_Deepfreeze_Init", "_Py_Deepfreeze_Fini"];
    let mut want_funcs = accessors.clone();
    want_funcs.extend(init_fini.map(String::from));
    assert_eq!(
        funcs.keys().cloned().collect::<BTreeSet<_>>(),
        want_funcs,
        "functions"
    );
    for name in &accessors {
        let code = f.accessor_code(name).unwrap();
        let obj = code.returned.unwrap();
        let anchor = data_anchor(obj.offset);
        assert_eq!(anchor_loc(&f, &anchor), obj, "{name}: {anchor}");
        let got = render(&funcs[name]);
        let want = expected_accessor(f.arch, &anchor, !model.immortal());
        assert_eq!(got, want, "{name}");
        let inc = if model.immortal() { vec![] } else { vec![obj] };
        assert_eq!(code.increments, inc, "{name}: {code:?}");
        assert!(code.other.is_empty(), "{name}: {code:?}");
        assert_module_code(&f, model, name, obj);
    }
    let by_type = objects_by_type(&f, model);
    let count = |ty: &str| by_type.get(ty).map_or(0, |s| s.len());
    let (init, fini) = walks(
        model,
        count(model.l.sym.code_type),
        count(model.l.sym.str_type),
    );
    let a64 = f.arch == Architecture::Aarch64;
    let uses: &[&str] = if a64 {
        &["x19", "x20", "x21"]
    } else {
        &["rbx", "rbp", "r12"]
    };
    let data = anchor_loc(&f, &data_anchor(0));
    for (name, walks) in init_fini.iter().zip([init, fini]) {
        let insns = render(&funcs[*name]);
        let body = split_frame(name, f.arch, &insns, uses);
        let win64 = f.format == BinaryFormat::Coff && !a64;
        let want = expected_walks(f.arch, win64, &walks, body.start);
        assert_eq!(
            insns[body.clone()],
            want[..],
            "{name} between prologue and epilogue:\n  got  {}\n  want {}",
            insns[body].join("\n       "),
            want.join("\n       ")
        );
        assert!(f.symbol(name).unwrap().global, "{name} is not global");
        for w in &walks {
            let (t0, t1) = (
                anchor_loc(&f, &table_anchor(w.start)),
                anchor_loc(&f, &table_anchor(w.end)),
            );
            assert!(t0.section == t1.section && t1.offset - t0.offset == w.end - w.start);
            let listed: Vec<Loc> = (f.bytes(t0, w.end - w.start).unwrap().chunks_exact(4))
                .map(|c| data.add(u32::from_le_bytes(c.try_into().unwrap()) as i64))
                .collect();
            let set: BTreeSet<Loc> = listed.iter().copied().collect();
            assert_eq!(set.len(), listed.len(), "{name}: an object listed twice");
            let want = &by_type[w.ty];
            assert!(!want.is_empty());
            assert_eq!(
                &set,
                want,
                "{name}: table of {} lists {} objects, want {}",
                w.callee,
                set.len(),
                want.len()
            );
        }
    }
    // The table section (from `pyfreeze_table_0`): every code object once,
    // then (both versions lay it out; 3.11's Fini walks it) every str once;
    // it ends with a 0 sentinel (other tables may come in between).
    let table = anchor_loc(&f, &table_anchor(0));
    assert_eq!(table.offset, 0, "{}", table_anchor(0));
    let words: Vec<i64> = (f.tail(table).unwrap().chunks_exact(4))
        .map(|w| u32::from_le_bytes(w.try_into().unwrap()) as i64)
        .collect();
    let mut at = 0;
    for ty in [model.l.sym.code_type, model.l.sym.str_type] {
        let n = count(ty);
        let listed: BTreeSet<Loc> = words[at..at + n].iter().map(|&w| data.add(w)).collect();
        assert_eq!(&listed, &by_type[ty], "table of every {ty}");
        at += n;
    }
    assert!(words.len() > at && words.last() == Some(&0), "no sentinel");
}

/// What a lazy object's stubs must keep, however they are written: every
/// accessor and Init and Fini defined, each function disassembles and
/// returns, code relocations only to our own data and tables (the anchors)
/// and to functions: our own, and the runtime's that the lazy scheme calls
/// (the per-code-object init, which something calls, and fini, and
/// frozensets'); each accessor refers to our data.
pub fn check_lazy_stubs(path: &Path, bytes: &[u8], model: &Model) {
    let f = ObjFile::parse(bytes).unwrap();
    let funcs = disassemble(path, &f);
    let accessors = accessor_names(&f);
    assert_eq!(accessors.len(), STOCK_MODULES, "{accessors:?}");
    for name in ["_Py_Deepfreeze_Init", "_Py_Deepfreeze_Fini"] {
        assert!(funcs.contains_key(name), "no {name} in {:?}", funcs.keys());
    }
    let mut allowed: BTreeSet<&str> = model.callees().into_iter().collect();
    allowed.extend(model.lazy_callees());
    allowed.extend(funcs.keys().map(String::as_str));
    let mut called = BTreeSet::new();
    for (name, insns) in &funcs {
        assert!(!insns.is_empty(), "{name}: no instructions");
        for i in insns {
            assert!(
                !i.mnemonic.contains("unknown") && !i.mnemonic.starts_with('.'),
                "{name}: undecodable {i:?}"
            );
            for (k, sym) in &i.relocs {
                if kind(k, &i.mnemonic) == "call" {
                    assert!(allowed.contains(sym.as_str()), "{name} calls {sym}: {i:?}");
                    called.insert(sym.clone());
                } else {
                    let ours = ["pyfreeze_data_", "pyfreeze_table_"]
                        .iter()
                        .any(|p| sym.starts_with(p));
                    assert!(ours, "{name}: relocation to {sym}: {i:?}");
                }
            }
        }
        if accessors.contains(name) {
            let relocs = || insns.iter().flat_map(|i| &i.relocs);
            let data = relocs().any(|r| r.1.starts_with("pyfreeze_data_"));
            assert!(data, "{name} refers to no data: {insns:?}");
        }
    }
    let init = model.init_callee();
    assert!(called.contains(init), "nothing calls {init}: {called:?}");
}
