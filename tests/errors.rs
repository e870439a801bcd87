//! Bad input never crashes or damages anything: one test per error kind
//! (asserting the message), an adversarial corpus generated here from real
//! inputs (truncations, flipped bytes, forged lengths and references) that
//! must give only clean errors, and reproducible output for every target.

use pyfreeze_obj::emit::{build_object, read_graph, Options};
use pyfreeze_obj::graph::Graph;
use pyfreeze_obj::input::header;
use pyfreeze_obj::input::{Marshalled, OffsetMap};
use pyfreeze_obj::marshal;
use pyfreeze_obj::target::Target;
use pyfreeze_obj::version::Version;

mod support;
use support::{build, run_ok, BuildId, TARGETS};

/// Marshal bytes of `source` compiled by the reference CPython `id` as
/// `<frozen m>`.
fn compiled(id: BuildId, source: &str) -> Vec<u8> {
    support::compiled(id, source, "m")
}

/// `m` holding `data`, from `origin`.
fn module(data: Vec<u8>, origin: &str) -> Marshalled {
    Marshalled {
        name: "m".into(),
        accessor: "_Py_get_m_toplevel".into(),
        data,
        origin: origin.into(),
        offsets: OffsetMap::Base(0),
    }
}

/// Lay out and write `graph` for `target`, CPython 3.`minor`, either scheme.
fn build_for(
    graph: &Graph,
    target: &str,
    minor: u8,
    lazy: bool,
) -> pyfreeze_obj::error::Result<()> {
    let opts = Options {
        target: Target::parse(target).unwrap(),
        version: Version::get(3, minor).unwrap(),
        inputs: vec![],
        modules_from: None,
        compile_with: None,
        lazy,
        freeze: vec![],
        trace: vec![],
        frozen_tables: false,
        assume_linux_runtime: true,
        stdlib: None,
        paths: vec![],
        include: None,
        verbose: false,
    };
    build_object(&opts, graph, None).map(|_| ())
}

/// The reader's error message for `data`, or None if it reads.
fn read_error(data: &[u8]) -> Option<String> {
    marshal::with_stack(|| {
        let mut g = Graph::new();
        marshal::read_code(data, &mut g)
            .err()
            .map(|e| e.to_string())
    })
}

fn expect_error(data: &[u8], want: &str) {
    let e = read_error(data).unwrap_or_else(|| panic!("{data:02x?} read without error"));
    assert!(e.contains(want), "expected {want:?} in {e:?}");
    assert!(!e.contains('\n'), "{e:?}");
}

#[test]
fn each_error_kind_has_its_message() {
    // Unknown type code, with its offset.
    expect_error(b"\x01", "byte 0: unknown marshal type code 0x01");
    // Truncated: a tuple promising 2 items with 1.
    expect_error(
        b")\x02N",
        "byte 3: truncated: a type code needs 1 bytes, only 0 remain",
    );
    // A length larger than what remains: no allocation.
    expect_error(
        b"s\xff\xff\xff\x7f",
        "byte 1: length 2147483647 of bytes exceeds the 0 bytes that remain",
    );
    expect_error(b"(\x00\x00\x00\x10", "exceeds the 0 bytes that remain");
    expect_error(b"s\xff\xff\xff\xff", "negative length -1 for bytes");
    // Nesting deeper than the limit, no stack overflow.
    let mut deep = b")\x01".repeat(marshal::MAX_DEPTH + 10);
    deep.push(b'N');
    expect_error(&deep, "nesting deeper than 2000 levels");
    // Invalid UTF-8 (a lone continuation byte), at its offset.
    expect_error(b"u\x03\x00\x00\x00ab\x80", "byte 7: invalid UTF-8 in a str");
    // Back-references to objects not yet defined, or still being read.
    expect_error(
        b"r\x00\x00\x00\x00",
        "back-reference 0 to an object not yet defined (0 defined so far)",
    );
    expect_error(
        b"\xa9\x01r\x00\x00\x00\x00",
        "back-reference 0 to an object that is still being read",
    );
    // A top-level object that is not code.
    expect_error(
        b"N",
        "byte 0: expected a code object at the top level, found None",
    );
    // Types that cannot occur in code constants.
    expect_error(
        b"[\x00\x00\x00\x00",
        "a list object cannot occur in code constants",
    );
    expect_error(b"{0", "a dict object cannot occur in code constants");
    expect_error(
        b"<\x00\x00\x00\x00",
        "a set object cannot occur in code constants",
    );
    expect_error(
        b"S",
        "a StopIteration object cannot occur in code constants",
    );
    expect_error(b"0", "NULL object (type code '0') outside a dict");
    // Malformed numbers.
    expect_error(b"l\x01\x00\x00\x00\x00\x80", "long digit out of range");
    expect_error(b"l\x01\x00\x00\x00\x00\x00", "long with a zero top digit");
    expect_error(b"f\x03abc", "malformed float text");
    expect_error(b"a\x01\x00\x00\x00\xff", "non-ASCII byte in an ASCII str");
    // Trailing garbage after a complete object.
    let mut code = compiled(BuildId::Pyenv312, "x = 1\n");
    code.push(b'N');
    expect_error(&code, "1 trailing bytes after the marshalled object");
    // A code object whose fields have the wrong types.
    let good = compiled(BuildId::Pyenv312, "x = 1\n");
    let mut bad = good.clone();
    // co_code is the first object after the 5 int32 header fields.
    let at = 1 + 5 * 4;
    bad[at] = b'N';
    let e = read_error(&bad).expect("must fail");
    assert!(
        e.contains("co_code: expected bytes, found None") || e.contains("trailing"),
        "{e}"
    );
}

#[test]
fn lone_surrogates_encoded_as_cpython_does_are_valid() {
    // '\ud800' as marshal writes it (surrogatepass UTF-8).
    let data = compiled(BuildId::Pyenv312, "x = '\\ud800'\n");
    assert_eq!(read_error(&data), None);
}

/// Deterministic pseudo-random numbers (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Adversarial variants of a real module: every truncation, flipped bytes,
/// forged lengths, forged reference indices and forged type codes.
fn adversarial(seed: &[u8], rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for cut in 0..seed.len() {
        out.push(seed[..cut].to_vec());
    }
    for _ in 0..400 {
        let mut v = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(v.len());
            v[i] ^= 1 << rng.below(8);
        }
        out.push(v);
    }
    for _ in 0..300 {
        let mut v = seed.to_vec();
        let i = rng.below(v.len().saturating_sub(4));
        let forged: [u8; 4] = match rng.below(4) {
            0 => 0x7fff_ffffu32.to_le_bytes(),
            1 => u32::MAX.to_le_bytes(),
            2 => (rng.next() as u32).to_le_bytes(),
            _ => 0x8000_0000u32.to_le_bytes(),
        };
        v[i..i + 4].copy_from_slice(&forged);
        out.push(v);
    }
    for _ in 0..300 {
        let mut v = seed.to_vec();
        let i = rng.below(v.len());
        v[i] = b"NTF.iIlgfyxsutaAzZ()[{<>cr0S?\x80\xa9\xe3\xf2"[rng.below(31)];
        out.push(v);
    }
    out
}

#[test]
fn adversarial_corpus_gives_only_clean_errors() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds = [
        compiled(BuildId::Pyenv312, "def f(a, *b, c=3, **d):\n    return (a, b, c, d, 1.5, 2j, b'x', 'é', '\\U0001f600', 10**30)\nclass C:\n    x = {1, 2}\n"),
        compiled(BuildId::Pyenv311, "async def g():\n    async with x as y:\n        yield [i async for i in y]\nz = lambda: (..., None, True)\n"),
    ];
    let mut n = 0;
    for (si, seed) in seeds.iter().enumerate() {
        let inputs = adversarial(seed, &mut rng);
        for (k, input) in inputs.iter().enumerate() {
            // Through the whole pipeline for every target and version.
            let target = TARGETS[k % 6];
            let version = if k % 2 == 0 { 12 } else { 11 };
            let result = std::panic::catch_unwind(|| {
                match read_graph(&[module(input.clone(), "adversarial")]) {
                    Err(e) => {
                        let text = e.to_string();
                        assert!(text.starts_with("adversarial: "), "{text}");
                        assert!(!text.contains('\n'), "{text}");
                        if !text.contains("(3.11's") {
                            assert!(
                                e.offset.is_some(),
                                "content error without an offset: {text}"
                            );
                            assert!(e.offset.unwrap() <= input.len() as u64, "{text}");
                        }
                    }
                    Ok(graph) => build_for(&graph, target, version, k % 3 == 0)
                        .expect("a graph that reads must lay out"),
                }
            });
            assert!(
                result.is_ok(),
                "seed {si} variant {k} panicked: {input:02x?}"
            );
            n += 1;
        }
    }
    assert!(n > 2000, "only {n} adversarial inputs");
}

#[test]
fn output_is_identical_across_runs_for_every_target() {
    let data = compiled(
        BuildId::Pyenv312,
        "def f():\n    return ('a', 1.0, b'xy', 10**20)\n",
    );
    let dir = std::env::temp_dir().join(format!("pyfreeze-repro-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::create_dir_all(dir.join("b")).unwrap();
    std::fs::write(dir.join("m.marshal"), &data).unwrap();
    for t in TARGETS {
        let mut outs = Vec::new();
        for sub in ["a", "b"] {
            run_ok(
                support::ours()
                    .current_dir(dir.join(sub))
                    .args(["emit", "--python", "3.12", "--target", t, "-o", "out.o"])
                    .args((!t.contains("linux")).then_some("--assume-linux-runtime"))
                    .arg(format!("{}:m", dir.join("m.marshal").display())),
            );
            outs.push(std::fs::read(dir.join(sub).join("out.o")).unwrap());
        }
        assert!(
            outs[0] == outs[1],
            "{t}: two runs from different directories differ"
        );
        let path = dir.display().to_string();
        assert!(
            !outs[0].windows(path.len()).any(|w| w == path.as_bytes()),
            "{t}: the object contains the input's absolute path"
        );
    }
}

/// Inputs the fuzzers once crashed on (fixtures/fuzz/regressions/*), as
/// the fuzz target `emit` sees them: first byte selects target, version and
/// scheme; they must now give clean errors or objects.
#[test]
fn fuzz_regressions_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fuzz/regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let (&sel, body) = data.split_first().unwrap();
        let result = std::panic::catch_unwind(|| {
            if let Ok(graph) = read_graph(&[module(body.to_vec(), "fuzz")]) {
                let target = TARGETS[(sel & 7) as usize % TARGETS.len()];
                build_for(
                    &graph,
                    target,
                    if sel & 8 == 0 { 12 } else { 11 },
                    sel & 16 != 0,
                )
                .unwrap();
            }
        });
        assert!(result.is_ok(), "{} panics again", path.display());
        n += 1;
    }
    assert!(n >= 1, "no regression inputs in {}", dir.display());
}

#[test]
fn negative_counts_in_code_objects_are_rejected() {
    let mut data = compiled(BuildId::Pyenv312, "x = 1\n");
    // co_stacksize is the 4th int32 after the type byte.
    data[1 + 12..1 + 16].copy_from_slice(&(-5i32).to_le_bytes());
    let e = read_error(&data).expect("must fail");
    assert!(
        e.contains("byte 13: co_stacksize is -5; expected 0..=1073741824"),
        "{e}"
    );
}

/// A module nested deeper than a first read on the caller's thread takes
/// (marshal::SHALLOW_DEPTH) is read again on a thread with room for
/// marshal::MAX_DEPTH: the same graph as a read there from the start; and
/// nesting beyond MAX_DEPTH is the same error, at the same offset, either
/// way.
#[test]
fn deep_nesting_is_read_again_with_more_stack() {
    let deep_code = |levels: usize| -> Vec<u8> {
        let script = format!(
            "import sys, marshal\n\
             t = 1\n\
             for _ in range({levels}): t = (t,)\n\
             c = compile('x = 1', '<frozen m>', 'exec')\n\
             c = c.replace(co_consts=c.co_consts + (t,))\n\
             sys.stdout.buffer.write(marshal.dumps(c))\n"
        );
        run_ok(build(BuildId::Pyenv312).host_python().args(["-c", &script])).stdout
    };
    let module = |data: Vec<u8>| module(data, "deep");
    for levels in [
        marshal::SHALLOW_DEPTH / 2,
        marshal::SHALLOW_DEPTH + 50,
        1500,
    ] {
        let data = deep_code(levels);
        let graph = read_graph(&[module(data.clone())]).unwrap();
        let direct = marshal::with_stack(|| {
            let mut g = Graph::new();
            marshal::read_code(&data, &mut g).unwrap();
            g
        });
        assert_eq!(graph.nodes.len(), direct.nodes.len(), "{levels} levels");
        // The tuples are all there: one node per level.
        assert!(graph.nodes.len() > levels, "{levels} levels");
    }
    // Beyond the limit: the error of a direct read, offset included.
    let mut deep = b")\x01".repeat(marshal::MAX_DEPTH + 10);
    deep.push(b'N');
    let Err(e) = read_graph(&[module(deep.clone())]) else {
        panic!("nesting beyond the limit must fail");
    };
    assert_eq!(e.offset, Some(2 * marshal::MAX_DEPTH as u64));
    assert!(
        e.to_string().contains("nesting deeper than 2000 levels"),
        "{e}"
    );
    assert_eq!(
        read_error(&deep).unwrap(),
        "byte 4000: nesting deeper than 2000 levels"
    );
}

// --- the frozen-header parser's block scanner --------------------------

/// The header text before the array's values, and the header for `values`.
const HEAD: &str =
    "/* Auto-generated by Programs/_freeze_module.py */\nconst unsigned char _Py_M__x[] = {\n";

fn header_for(values: &[u8]) -> Vec<u8> {
    let text = support::frozen_header("x", values);
    assert!(text.starts_with(HEAD));
    text.into_bytes()
}

/// A parse's values, or its error's offset and message.
type Parsed = Result<(Vec<u8>, usize), (Option<u64>, String)>;

fn parsed(r: pyfreeze_obj::error::Result<(Vec<u8>, usize)>) -> Parsed {
    r.map_err(|e| (e.offset, e.message))
}

#[test]
fn freezer_output_reads_back() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for len in [1usize, 2, 3, 15, 16, 17, 31, 64, 1000, 4099] {
        let values: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let (data, _) = header::parse(&header_for(&values)).unwrap();
        assert_eq!(data, values, "{len} values");
    }
    // Every value, with one, two and three digits, at every alignment.
    let all: Vec<u8> = (0..=255).collect();
    for skew in 0..16 {
        let mut text = header_for(&all);
        let at = HEAD.len();
        text.splice(at..at, std::iter::repeat_n(b' ', skew));
        assert_eq!(header::parse(&text).unwrap().0, all, "skew {skew}");
    }
    // Spellings the freezer does not write but C accepts.
    let text = format!("{HEAD}  0255 ,\t007,\r\n 12 ,3}}");
    assert_eq!(
        header::parse(text.as_bytes()).unwrap().0,
        vec![255, 7, 12, 3]
    );
    let long = format!("{HEAD}{}1}}", "1 , ".repeat(40));
    assert_eq!(header::parse(long.as_bytes()).unwrap().0, vec![1; 41]);
}

/// The block scanner (x86_64) changes nothing: the same values, or the same
/// error (offset and message), as the byte-by-byte state machine, on
/// well-formed text and on text damaged at random.
#[test]
fn header_block_scanner_agrees_with_the_state_machine() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let pieces: [&[u8]; 14] = [
        b"0", b"7", b"255", b"256", b"999", b"0255", b"1000", b",", b" ", b"\n", b"\r\n", b"\t",
        b"}", b"x",
    ];
    let mut outcomes = [0usize; 2];
    for round in 0..4000 {
        let values: Vec<u8> = (0..rng.below(200) + 1).map(|_| rng.next() as u8).collect();
        let mut text = header_for(&values);
        // Damage: insert, overwrite or delete a few bytes.
        for _ in 0..(round % 4) {
            let at = HEAD.len() + rng.below(text.len() - HEAD.len());
            let piece = pieces[rng.below(pieces.len())];
            match rng.below(3) {
                0 => {
                    text.splice(at..at, piece.iter().copied());
                }
                1 => {
                    let end = (at + piece.len()).min(text.len());
                    text.splice(at..end, piece.iter().copied());
                }
                _ => {
                    text.remove(at);
                }
            }
        }
        let with = parsed(header::parse(&text));
        let without = parsed(header::parse_byte_by_byte(&text));
        assert_eq!(with, without, "{}", String::from_utf8_lossy(&text));
        outcomes[with.is_ok() as usize] += 1;
    }
    // Both outcomes occur often.
    assert!(outcomes.iter().all(|&n| n > 500), "{outcomes:?}");
}
