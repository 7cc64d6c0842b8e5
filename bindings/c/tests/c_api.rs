//! The C library from C: `examples/tag.c` and `tests/c/api_test.c` are compiled with the system
//! C compiler against `include/ner_edge.h` and the static library cargo built for this test
//! (`target/<profile>/libner_edge_c.a`), then run natively and under valgrind.
//!
//! valgrind: when it is not installed the valgrind checks skip and say so, unless
//! `NER_EDGE_REQUIRE_VALGRIND=1` (set by `.ci/run`), which makes its absence a failure.
#![cfg(target_os = "linux")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use ner_edge::adapt::{
    adapt, read_support, AdaptOptions, SupportFormat, DEFAULT_MAX_SUPPORT_BYTES,
};
use ner_edge::bundle::Bundle;
use ner_edge::pack::write_pack;
use ner_edge::pipeline::Tagger;

/// What the static library needs from the system on Linux
/// (`cargo rustc -p ner-edge-c --crate-type staticlib -- --print native-static-libs`).
const NATIVE_LIBS: [&str; 7] = [
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn repo() -> PathBuf {
    crate_dir().join("../..")
}

fn tiny_bundle() -> PathBuf {
    repo().join("fixtures/bundles/tiny.nerb")
}

fn work_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ner-edge-c");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `target/<profile>/libner_edge_c.a`: this test runs as `target/<profile>/deps/c_api-<hash>`,
/// and cargo puts the library's artifacts (built with every crate type, because the test
/// depends on the library) in `target/<profile>/`.
fn static_library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps");
    // Cargo writes the staticlib into deps/ and copies it up to the profile folder only when
    // the library itself was a requested target (`cargo build`, not `cargo test`); the newer
    // of the two is the one this test was built with.
    let candidates = [
        profile_dir.join("deps").join("libner_edge_c.a"),
        profile_dir.join("libner_edge_c.a"),
    ];
    candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| {
            panic!(
                "libner_edge_c.a not found in {} or its deps/: cargo builds it with the test \
                 (crate-type staticlib in bindings/c/Cargo.toml); is this test run from \
                 target/<profile>/deps?",
                profile_dir.display()
            )
        })
}

/// The compiled C programs.
struct Programs {
    tag: PathBuf,
    api_test: PathBuf,
}

/// The command that compiles `source` into `exe`, linking the static library.
fn compile_command(source: &Path, exe: &Path) -> Command {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(cc);
    cmd.args([
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        "-g",
        "-O1",
    ])
    .arg("-pthread")
    .arg("-I")
    .arg(crate_dir().join("include"))
    .arg(source)
    .arg(static_library())
    // tract's hand-written kernels lack .note.GNU-stack; rustc links with this too.
    .arg("-Wl,-z,noexecstack")
    .args(NATIVE_LIBS)
    .arg("-o")
    .arg(exe);
    cmd
}

fn programs() -> &'static Programs {
    static PROGRAMS: OnceLock<Result<Programs, String>> = OnceLock::new();
    let built = PROGRAMS.get_or_init(|| {
        let dir = work_dir();
        let start = Instant::now();
        let programs = Programs {
            tag: dir.join("tag"),
            api_test: dir.join("api_test"),
        };
        let sources = [
            (crate_dir().join("examples/tag.c"), &programs.tag),
            (crate_dir().join("tests/c/api_test.c"), &programs.api_test),
        ];
        // Both at once: linking the debug static library takes seconds.
        let mut running = Vec::new();
        for (source, exe) in &sources {
            let mut cmd = compile_command(source, exe);
            let child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run the C compiler (set CC): {cmd:?}: {e}"))?;
            running.push((cmd, child));
        }
        for (cmd, child) in running {
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "{cmd:?} failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        eprintln!(
            "compiled and linked tag.c and api_test.c in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        Ok(programs)
    });
    built.as_ref().unwrap_or_else(|e| panic!("{e}"))
}

/// Test files: a damaged copy of the tiny bundle and a label pack (type DRUG) adapted on it.
struct Fixtures {
    corrupt: PathBuf,
    pack: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let dir = work_dir();
        let bytes = std::fs::read(tiny_bundle()).unwrap();
        let corrupt = dir.join("truncated.nerb");
        std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
        let bundle = Bundle::open(&tiny_bundle()).unwrap();
        let support = read_support(
            &repo().join("fixtures/adapt/drugs.txt"),
            SupportFormat::Auto,
            DEFAULT_MAX_SUPPORT_BYTES,
        )
        .unwrap();
        let adapted = adapt(&bundle, Some(&support), &AdaptOptions::default()).unwrap();
        let pack = dir.join("drugs-on-tiny.nerp");
        write_pack(
            &pack,
            &adapted.metadata,
            &adapted.prototypes,
            adapted.heads.as_ref(),
        )
        .unwrap();
        Fixtures { corrupt, pack }
    })
}

/// Runs `cmd` with `stdin` as its input.
fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `valgrind`'s version, or `None` (after saying so) when it is not installed and not required.
fn valgrind() -> Option<String> {
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success());
    match found {
        Some(o) => Some(text(&o.stdout).trim().to_string()),
        None if std::env::var_os("NER_EDGE_REQUIRE_VALGRIND").is_some_and(|v| v == "1") => {
            panic!("valgrind not found, and NER_EDGE_REQUIRE_VALGRIND=1 requires it")
        }
        None => {
            eprintln!(
                "SKIPPED the valgrind run: valgrind is not installed (apt-get install valgrind; \
                 NER_EDGE_REQUIRE_VALGRIND=1 turns this skip into a failure)"
            );
            None
        }
    }
}

/// Exit status valgrind uses when it found errors (leaks included), distinct from the
/// programs' own.
const VALGRIND_ERROR_EXIT: i32 = 99;

/// Runs `args` under valgrind's memcheck; fails on any memory error or any definite, indirect
/// or possible leak, and prints the leak summary (still-reachable and suppressed blocks
/// included; `tests/valgrind.supp` says what is suppressed and why).
fn under_valgrind(name: &str, args: &[&std::ffi::OsStr], stdin: &[u8]) -> Option<Output> {
    let version = valgrind()?;
    let log = work_dir().join(format!("valgrind-{name}.log"));
    let mut cmd = Command::new("valgrind");
    cmd.arg(format!("--error-exitcode={VALGRIND_ERROR_EXIT}"))
        .arg("--leak-check=full")
        .arg("--show-leak-kinds=definite,indirect,possible")
        .arg("--errors-for-leak-kinds=definite,indirect,possible")
        .arg(format!(
            "--suppressions={}",
            crate_dir().join("tests/valgrind.supp").display()
        ))
        .arg(format!("--log-file={}", log.display()))
        .args(args);
    let start = Instant::now();
    let out = run(cmd, stdin);
    let seconds = start.elapsed().as_secs_f64();
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    let summary: Vec<&str> = report
        .lines()
        .filter(|l| {
            [
                "in use at exit",
                "total heap usage",
                "definitely lost",
                "indirectly lost",
                "possibly lost",
                "still reachable",
                "suppressed:",
                "ERROR SUMMARY",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .collect();
    eprintln!(
        "{version}, {name}: {seconds:.1} s, exit status {:?}\n{}",
        out.status.code(),
        summary.join("\n")
    );
    assert_ne!(
        out.status.code(),
        Some(VALGRIND_ERROR_EXIT),
        "valgrind found errors in {name} (full report: {}):\n{report}",
        log.display()
    );
    for kind in ["definitely lost", "indirectly lost", "possibly lost"] {
        if let Some(line) = summary.iter().find(|l| l.contains(kind)) {
            assert!(
                line.contains(": 0 bytes in 0 blocks"),
                "{name}: {line} (report: {})",
                log.display()
            );
        }
    }
    assert!(
        summary
            .iter()
            .any(|l| l.contains("ERROR SUMMARY: 0 errors from 0 contexts")),
        "{name}: no clean ERROR SUMMARY in {}:\n{report}",
        log.display()
    );
    Some(out)
}

/// `tag.c`'s line for each entity of each line of `input`, computed with the Rust [`Tagger`]
/// (one text per call, as the example tags).
fn expected_entity_lines(tagger: &Tagger, input: &str) -> String {
    let mut out = String::new();
    for (i, line) in input.lines().enumerate() {
        let tagged = tagger.tag(&[line], 1).unwrap().remove(0);
        for e in &tagged.entities {
            let (start, end) = (e.span.start, e.span.end);
            out += &format!(
                "{}\t{start}\t{end}\t{}\t{}\t{}\t{:.6}\t{}\n",
                i + 1,
                line[..start].chars().count(),
                line[..end].chars().count(),
                tagger.type_names()[e.type_index],
                f64::from(e.score),
                &line[start..end],
            );
        }
    }
    out
}

/// What `ner-edge predict FILE` prints (runtime/src/main.rs `predict`, default options) for
/// `input`: blocks of segments, tagged together, written by the JSON-lines writer.
fn expected_jsonl(tagger: &Tagger, input: &str) -> String {
    use ner_edge::input::{DocumentMode, SegmentReader, DEFAULT_MAX_SEGMENT_BYTES};
    use ner_edge::output::{DocumentWriter, Format};
    let mut segments = SegmentReader::new(
        input.as_bytes(),
        "input",
        DocumentMode::Lines,
        false,
        DEFAULT_MAX_SEGMENT_BYTES,
    );
    let mut out = Vec::new();
    let mut writer =
        DocumentWriter::new(&mut out, Format::Jsonl, tagger.type_names().to_vec(), false);
    let mut block = Vec::new();
    loop {
        block.clear();
        let mut bytes = 0;
        while bytes < 256 * 1024 && block.len() < 512 {
            match segments.next_segment().unwrap() {
                Some(s) => {
                    bytes += s.text.len() + 1;
                    block.push(s);
                }
                None => break,
            }
        }
        if block.is_empty() {
            break;
        }
        let texts: Vec<&str> = block.iter().map(|s| s.text.as_str()).collect();
        for (s, t) in block.iter().zip(tagger.tag(&texts, 1).unwrap()) {
            writer.write_segment(s, &t).unwrap();
        }
    }
    writer.flush().unwrap();
    drop(writer);
    String::from_utf8(out).unwrap()
}

/// Parsed `tag.c` entity lines: (line, byte start, byte end, char start, char end, type, score,
/// text).
type EntityLine = (usize, usize, usize, usize, usize, String, f64, String);

fn parse_entity_lines(out: &str) -> Vec<EntityLine> {
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(8, '\t').collect();
            assert_eq!(f.len(), 8, "not an entity line: {l:?}");
            let n = |i: usize| f[i].parse::<usize>().unwrap();
            let score = f[6].parse::<f64>().unwrap();
            (
                n(0),
                n(1),
                n(2),
                n(3),
                n(4),
                f[5].into(),
                score,
                f[7].into(),
            )
        })
        .collect()
}

/// Four lines for the valgrind run: ASCII, accents (char offsets differ from byte offsets),
/// invalid UTF-8 (reported and skipped), and CRLF.
const VALGRIND_INPUT: &[u8] = b"Angela Merkel visited Erlangen.\n\
    Zo\xc3\xab Salda\xc3\xb1a flew to Z\xc3\xbcrich.\n\
    Paris \xff Rome\n\
    Tim Cook met investors in New York.\r\n";

#[test]
fn example_on_tiny_bundle_is_clean_under_valgrind_and_matches_native_run() {
    let p = programs();
    let bundle = tiny_bundle();
    let args = [
        p.tag.as_os_str(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        "-".as_ref(),
    ];
    let mut native = Command::new(&p.tag);
    native.args(&args[1..]);
    let native = run(native, VALGRIND_INPUT);
    // Exit status 3: the invalid line was skipped; it is reported with its line and byte.
    assert_eq!(native.status.code(), Some(3), "{}", text(&native.stderr));
    let stderr = text(&native.stderr);
    assert!(
        stderr.contains("line 3: NER_EDGE_STATUS_INVALID_UTF8") && stderr.contains("byte offset 6"),
        "{stderr}"
    );
    let native_lines = parse_entity_lines(&text(&native.stdout));
    assert!(native_lines.iter().all(|e| e.0 != 3));

    let tagger = Tagger::new(&Bundle::open(&bundle).unwrap(), None).unwrap();
    let valid: Vec<u8> = VALGRIND_INPUT
        .split(|&b| b == b'\n')
        .map(|l| String::from_utf8(l.to_vec()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes();
    assert_eq!(
        text(&native.stdout),
        expected_entity_lines(&tagger, &text(&valid)),
        "tag.c and the Rust Tagger disagree on the tiny bundle"
    );

    let Some(checked) = under_valgrind("tag", &args, VALGRIND_INPUT) else {
        return;
    };
    assert_eq!(checked.status.code(), Some(3), "{}", text(&checked.stderr));
    // Under valgrind tract may pick other kernels (valgrind hides AVX-512): same entities,
    // scores within rounding.
    let checked_lines = parse_entity_lines(&text(&checked.stdout));
    assert_eq!(checked_lines.len(), native_lines.len());
    for (a, b) in checked_lines.iter().zip(&native_lines) {
        assert_eq!(
            (a.0, a.1, a.2, a.3, a.4, &a.5),
            (b.0, b.1, b.2, b.3, b.4, &b.5)
        );
        assert!((a.6 - b.6).abs() < 1e-4, "{a:?} vs {b:?}");
    }
}

#[test]
fn api_test_passes_natively_and_under_valgrind() {
    let p = programs();
    let f = fixtures();
    let bundle = tiny_bundle();
    let args = [
        p.api_test.as_os_str(),
        bundle.as_os_str(),
        f.corrupt.as_os_str(),
        f.pack.as_os_str(),
    ];
    let mut native = Command::new(&p.api_test);
    native.args(&args[1..]);
    let out = run(native, b"");
    assert!(
        out.status.success(),
        "api_test failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    if let Some(out) = under_valgrind("api_test", &args, b"") {
        assert!(
            out.status.success(),
            "api_test under valgrind:\n{}",
            text(&out.stderr)
        );
    }
}

#[cfg(feature = "embedded-bundle")]
#[test]
fn example_on_embedded_model_agrees_with_rust_and_cli() {
    let p = programs();
    let news_path = repo().join("fixtures/samples/news.txt");
    let news = std::fs::read_to_string(&news_path).unwrap();
    let tagger = Tagger::new(&ner_edge::bundle::embedded().unwrap().unwrap(), None).unwrap();

    // Lines from a file: the same entities, offsets and scores as the Rust Tagger.
    let mut cmd = Command::new(&p.tag);
    cmd.arg(&news_path);
    let out = run(cmd, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout, expected_entity_lines(&tagger, &news));
    let entities = parse_entity_lines(&stdout);
    let has = |line: usize, kind: &str, name: &str| {
        entities
            .iter()
            .any(|e| e.0 == line && e.5 == kind && e.7 == name)
    };
    assert!(has(1, "PER", "Angela Merkel"), "{stdout}");
    assert!(has(1, "LOC", "Erlangen"), "{stdout}");
    assert!(has(2, "PER", "Tim Cook"), "{stdout}");
    assert!(has(2, "ORG", "Apple"), "{stdout}");

    // --jsonl from stdin: what `ner-edge predict` prints, byte for byte.
    let mut cmd = Command::new(&p.tag);
    cmd.arg("--jsonl");
    let out = run(cmd, news.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected_jsonl(&tagger, &news));
    assert!(text(&out.stdout).starts_with(
        "{\"text\":\"Angela Merkel visited the Siemens plant in Erlangen on Tuesday.\",\
         \"entities\":[{\"start\":0,\"end\":13,\"type\":\"PER\",\"text\":\"Angela Merkel\""
    ));
}

#[test]
fn example_reports_each_error() {
    let p = programs();
    let f = fixtures();
    let bundle = tiny_bundle();
    let tag = |args: &[&std::ffi::OsStr], stdin: &[u8]| {
        let mut cmd = Command::new(&p.tag);
        cmd.args(args);
        let out = run(cmd, stdin);
        (out.status.code(), text(&out.stderr))
    };
    let cases: [(Vec<&std::ffi::OsStr>, i32, &str); 6] = [
        (
            vec!["--bundle".as_ref(), "/nonexistent/model.nerb".as_ref()],
            2,
            "open model: NER_EDGE_STATUS_IO: cannot open bundle /nonexistent/model.nerb",
        ),
        (
            vec!["--bundle".as_ref(), f.corrupt.as_os_str()],
            2,
            "open model: NER_EDGE_STATUS_BAD_BUNDLE: bundle error:",
        ),
        (
            vec![
                "--bundle".as_ref(),
                bundle.as_os_str(),
                "--types".as_ref(),
                "PER,NOPE".as_ref(),
            ],
            2,
            "open model: NER_EDGE_STATUS_USAGE:",
        ),
        (
            vec![
                "--bundle".as_ref(),
                bundle.as_os_str(),
                "--pack".as_ref(),
                bundle.as_os_str(),
            ],
            2,
            "open model: NER_EDGE_STATUS_BAD_BUNDLE:",
        ),
        (
            vec![
                "--bundle".as_ref(),
                bundle.as_os_str(),
                "/nonexistent/input.txt".as_ref(),
            ],
            1,
            "tag: cannot open /nonexistent/input.txt",
        ),
        (vec!["--frobnicate".as_ref()], 1, "usage: tag"),
    ];
    for (args, code, message) in cases {
        let (got, stderr) = tag(&args, b"");
        assert_eq!(got, Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    // Invalid UTF-8 with --jsonl: the whole input is one call, so nothing is printed.
    let (got, stderr) = tag(
        &["--bundle".as_ref(), bundle.as_os_str(), "--jsonl".as_ref()],
        b"fine\nnot \xc3\x28 fine\n",
    );
    assert_eq!(got, Some(3), "{stderr}");
    assert!(
        stderr.contains("NER_EDGE_STATUS_INVALID_UTF8") && stderr.contains("byte offset 9"),
        "{stderr}"
    );
}
