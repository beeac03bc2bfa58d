//! The committed eBPF objects (ebpf-programs/*.bpf.o, embedded by the
//! daemon) must be what their C sources compile to. This recompiles them
//! with the Makefile's flags into a temporary directory and compares.
//!
//! Byte equality is expected: the Makefile keeps the checkout path out of
//! the debug info, and clang's output is otherwise deterministic. A
//! different clang patch release still changes the producer string in the
//! debug info, so when bytes differ the test falls back to what the kernel
//! and aya consume: instructions with their map relocations
//! (`llvm-objdump-19 -d -r`), the BTF types that define the maps
//! (`bpftool btf dump`), and the license. Fails, never skips, when clang-19
//! is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

const OBJECTS: [&str; 2] = ["classify", "deliver"];

fn ebpf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ebpf-programs")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// The `BPF_CFLAGS := …` line of the Makefile: one source of truth.
fn makefile_flags(dir: &Path) -> Vec<String> {
    let makefile = std::fs::read_to_string(dir.join("Makefile")).expect("read ebpf-programs/Makefile");
    let line = makefile
        .lines()
        .find_map(|l| l.strip_prefix("BPF_CFLAGS :="))
        .expect("ebpf-programs/Makefile has a `BPF_CFLAGS := …` line");
    line.split_whitespace().map(str::to_owned).collect()
}

fn output(program: &str, args: &[&str]) -> String {
    let out =
        Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the kernel and aya consume, as text; the first line of objdump
/// output (which names the file) is left out.
fn semantic_dump(object: &Path) -> String {
    let path = object.to_str().expect("UTF-8 path");
    let disassembly = output("llvm-objdump-19", &["-d", "-r", path]);
    let disassembly: String =
        disassembly.lines().filter(|l| !l.contains(path)).collect::<Vec<_>>().join("\n");
    let license = output("llvm-objdump-19", &["-s", "-j", "license", path]);
    let license: String = license.lines().filter(|l| !l.contains(path)).collect::<Vec<_>>().join("\n");
    let btf = output("bpftool", &["btf", "dump", "file", path]);
    format!("{disassembly}\n--- license\n{license}\n--- btf\n{btf}")
}

#[test]
fn committed_objects_match_their_sources() {
    assert!(
        on_path("clang-19"),
        "clang-19 is missing, so the committed eBPF objects cannot be checked against their sources: \
         apt-get install clang-19 libbpf-dev llvm-19 bpftool (or run tools/install-deps.sh)"
    );
    assert!(
        Path::new("/usr/include/bpf/bpf_helpers.h").exists(),
        "/usr/include/bpf/bpf_helpers.h is missing: apt-get install libbpf-dev (or run tools/install-deps.sh)"
    );
    let dir = ebpf_dir();
    let flags = makefile_flags(&dir);
    let tmp = tempfile::tempdir().expect("temporary directory");
    let mut stale = Vec::new();
    for name in OBJECTS {
        let fresh = tmp.path().join(format!("{name}.bpf.o"));
        let status = Command::new("clang-19")
            .current_dir(&dir)
            .args(&flags)
            .args(["-c", &format!("{name}.bpf.c"), "-o"])
            .arg(&fresh)
            .status()
            .expect("run clang-19");
        assert!(status.success(), "clang-19 could not compile ebpf-programs/{name}.bpf.c");
        let committed = dir.join(format!("{name}.bpf.o"));
        let committed_bytes = std::fs::read(&committed)
            .unwrap_or_else(|e| panic!("read {}: {e} (run `make -C ebpf-programs`)", committed.display()));
        if committed_bytes == std::fs::read(&fresh).expect("read the fresh object") {
            continue;
        }
        for tool in ["llvm-objdump-19", "bpftool"] {
            assert!(
                on_path(tool),
                "{name}.bpf.o differs byte for byte from a fresh build; comparing what matters needs {tool}: \
                 apt-get install llvm-19 bpftool (or run tools/install-deps.sh)"
            );
        }
        let (old, new) = (semantic_dump(&committed), semantic_dump(&fresh));
        if old == new {
            println!(
                "{name}.bpf.o: bytes differ from a fresh build (another clang release or a comment), \
                 instructions, relocations, BTF and license are identical"
            );
        } else {
            let first = old.lines().zip(new.lines()).position(|(a, b)| a != b).unwrap_or(0);
            let at = |text: &str| {
                text.lines().skip(first.saturating_sub(2)).take(6).collect::<Vec<_>>().join("\n")
            };
            stale.push(format!(
                "{name}.bpf.o, first difference near:\n committed:\n{}\n fresh:\n{}",
                at(&old),
                at(&new)
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "the committed eBPF objects are stale; run `make -C ebpf-programs` and commit the .o files\n{}",
        stale.join("\n")
    );
}
