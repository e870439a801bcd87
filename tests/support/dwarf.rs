//! DWARF facts of one relocatable ELF object of a reference archive: the
//! members of a struct, where they are and whether their size may depend
//! on the platform. The DWARF is read by the library
//! (`pyfreeze_obj::dwarf`); what is platform-dependent is judged here.

use pyfreeze_obj::dwarf::{self, Archive, Base, TypeChain, Types};
use std::path::Path;

/// One member of a struct, nested structs and unions flattened.
#[derive(Debug, Clone)]
pub struct Member {
    pub offset: u64,
    /// `ob_base.ob_refcnt`
    pub path: String,
    /// Why its size or layout may differ on Windows (LLP64) or another
    /// platform: C `long`, or a type from the platform's headers; one line
    /// each.
    pub platform: Vec<String>,
    /// A pointer, `Py_ssize_t`, `Py_hash_t` or another typedef that is 8
    /// bytes on LP64 and LLP64 alike.
    pub stable_8: bool,
    /// Its type as C spells it (`Py_ssize_t`, `*struct _object`,
    /// `long int[3]`), and element count for an array.
    pub type_name: String,
    pub count: Option<u64>,
}

/// The types of one archive member.
pub struct Dwarf(Types);

/// Typedefs that are 8 bytes on LP64 and LLP64 alike.
const STABLE_8: &[&str] = &[
    "Py_ssize_t",
    "Py_hash_t",
    "Py_uhash_t",
    "size_t",
    "ssize_t",
    "intptr_t",
    "uintptr_t",
    "int64_t",
    "uint64_t",
    "PY_INT64_T",
    "PY_UINT64_T",
    // C11 <stdatomic.h> (pyenv's gcc build; MSVC builds use volatile
    // uintptr_t): pointer-sized everywhere.
    "atomic_uintptr_t",
    "atomic_intptr_t",
    "atomic_size_t",
];

/// Typedefs of the platform's C library (POSIX) besides `pthread_*`.
const POSIX_TYPES: &[&str] = &[
    "stack_t",
    "sem_t",
    "sigset_t",
    "pid_t",
    "time_t",
    "clockid_t",
    "dev_t",
    "ino_t",
    "off_t",
    "mode_t",
    "uid_t",
    "gid_t",
];

fn stable_8(name: &str) -> bool {
    STABLE_8.contains(&name)
}

fn posix(name: &str) -> bool {
    name.starts_with("pthread_") || POSIX_TYPES.contains(&name)
}

impl Dwarf {
    /// The DWARF of member `member` of the archive at `archive`.
    pub fn of(archive: &Path, member: &str) -> Dwarf {
        let types = Archive::open(archive)
            .and_then(|a| a.member(member))
            .and_then(|m| Types::parse(member, m.bytes()));
        Dwarf(types.unwrap_or_else(|e| panic!("{}: {e}", archive.display())))
    }

    fn chain(&self, m: &dwarf::Member) -> TypeChain {
        self.0.type_chain(m).unwrap()
    }

    /// The members of struct `name` (flattened through nested structs and
    /// unions, not through POSIX types) whose bytes start before `end`.
    pub fn members_before(&self, name: &str, end: u64) -> Vec<Member> {
        let mut out = Vec::new();
        self.walk(self.0.struct_layout(name).unwrap(), name, end, &mut out);
        out
    }

    fn walk(&self, members: Vec<dwarf::Member>, path: &str, end: u64, out: &mut Vec<Member>) {
        for m in members.into_iter().filter(|m| m.offset < end) {
            let p = format!("{path}.{}", segment(&m));
            let c = self.chain(&m);
            if c.base == Base::Composite && !c.typedefs.iter().any(|n| posix(n)) {
                self.walk(self.0.members_in(&m).unwrap(), &p, end, out);
                continue;
            }
            let mut platform = Vec::new();
            self.platform_dependence(&m, &p, &mut platform);
            out.push(Member {
                offset: m.offset,
                path: p,
                platform,
                stable_8: c.base == Base::Pointer
                    || c.typedefs.first().is_some_and(|n| stable_8(n)),
                type_name: self.0.type_name_of(&m).unwrap(),
                count: match c.base {
                    Base::Array(n) => n,
                    _ => None,
                },
            });
        }
    }

    /// Why member `m` (reached as `path`) may have another size or layout
    /// on Windows (LLP64) or another platform: one line per finding.
    fn platform_dependence(&self, m: &dwarf::Member, path: &str, out: &mut Vec<String>) {
        let c = self.chain(m);
        // The outermost typedef decides if it is stable; else any POSIX
        // typedef under it, else any stable one, else what they name.
        let names = &c.typedefs;
        if names.first().is_some_and(|n| stable_8(n)) {
            return;
        }
        if let Some(p) = names.iter().find(|n| posix(n)) {
            let outer = &names[0];
            out.push(if outer == p {
                format!("{path}: {p} (a POSIX type)")
            } else {
                format!("{path}: {outer} ({p}, a POSIX type)")
            });
            return;
        }
        if names.iter().any(|n| stable_8(n)) {
            return;
        }
        match c.base {
            Base::Scalar(n) if n.contains("long") && !n.contains("long long") => {
                out.push(format!("{path}: C {n} (4 bytes on LLP64)"))
            }
            Base::Composite => {
                for x in self.0.members_in(m).unwrap() {
                    self.platform_dependence(&x, &format!("{path}.{}", segment(&x)), out);
                }
            }
            Base::Array(_) => self.platform_dependence(&self.0.element(m).unwrap(), path, out),
            _ => {}
        }
    }
}

fn segment(m: &dwarf::Member) -> &str {
    if m.name.is_empty() {
        "<anon>"
    } else {
        &m.name
    }
}
