//! Architecture rules that a test can hold: the engine stays pure, Redis keys and routing have
//! one home each, and the SMPP protocol never reaches up into the gateway.
//!
//! Nothing under `src/engine` may use tokio, redis, hyper/axum, the clock (`SystemTime`,
//! `Instant`), randomness, or file/network I/O. Comments are ignored; code is not.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/engine") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without `//` comments (doc comments included) and string literals'
/// contents are kept: a forbidden name in a string is suspicious enough to fail.
fn code_without_comments(source: &str) -> String {
    source
        .lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "async runtime"),
    ("redis", "session storage"),
    ("hyper", "HTTP"),
    ("axum", "HTTP"),
    ("reqwest", "HTTP"),
    ("SystemTime", "the clock"),
    ("Instant", "the clock"),
    ("Utc::now", "the clock"),
    ("Local::now", "the clock"),
    ("rand", "randomness"),
    ("getrandom", "randomness"),
    ("thread_rng", "randomness"),
    ("std::fs", "file I/O"),
    ("std::net", "network I/O"),
    ("std::thread", "threads"),
    ("std::env", "the environment"),
    ("async", "async code"),
    ("await", "async code"),
];

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Finds `word` as a whole identifier path segment (so `brand` does not match `rand`).
fn contains_word(code: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = code[from..].find(word) {
        let start = from + i;
        let end = start + word.len();
        let before = code[..start].chars().next_back();
        let after = code[end..].chars().next();
        if !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char) {
            return Some(start);
        }
        from = end;
    }
    None
}

#[test]
fn engine_is_pure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() >= 10,
        "expected the engine's files, found {files:?}"
    );
    let mut violations = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("read engine file");
        let code = code_without_comments(&source);
        for (word, what) in FORBIDDEN {
            if let Some(at) = contains_word(&code, word) {
                let line = code[..at].lines().count();
                violations.push(format!("{}:{line}: `{word}` ({what})", file.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "the engine must stay pure:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_purity_scan_catches_what_it_should() {
    let bad = "use tokio::time;\nlet t = std::time::SystemTime::now(); // fine here\n";
    let code = code_without_comments(bad);
    assert!(contains_word(&code, "tokio").is_some());
    assert!(contains_word(&code, "SystemTime").is_some());
    assert!(contains_word("let brand = 1;", "rand").is_none());
    assert!(
        contains_word("// uses rand", "rand").is_some(),
        "raw text still matches"
    );
    assert!(contains_word(&code_without_comments("// uses rand"), "rand").is_none());
}

#[test]
fn only_the_session_store_knows_redis_keys() {
    // Redis key layout lives in src/session_store; no other module builds `baraza:` keys.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| !f.to_string_lossy().contains("session_store"))
        .filter(|f| {
            let code = code_without_comments(&std::fs::read_to_string(f).unwrap_or_default());
            code.contains("redis::cmd") || code.contains("\"HSET\"") || code.contains("\"GET\"")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "Redis commands outside the session store: {offenders:?}"
    );
}

/// Routing has one home: only `src/routing.rs` reads the config's lists of service codes,
/// called and flashed numbers and keywords (`src/config.rs` declares them; tests build them).
#[test]
fn routing_lists_are_read_only_by_the_routing_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let lists = [
        ".service_codes",
        ".keywords",
        "voice.numbers",
        "missed_call.numbers",
        ".default_flow",
    ];
    let mut offenders = Vec::new();
    for file in files {
        if file.ends_with("routing.rs") || file.ends_with("config.rs") {
            continue;
        }
        let code = code_without_comments(&std::fs::read_to_string(&file).expect("read"));
        // Unit tests inside a file may set them up.
        let code = code.split("#[cfg(test)]").next().unwrap_or("");
        for list in lists {
            if code.contains(list) {
                offenders.push(format!("{} reads `{list}`", file.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "routing outside src/routing.rs:\n{}",
        offenders.join("\n")
    );
}

/// The protocol sits below the gateway: code under `src/smpp` (PDUs, framing, the ESME, the
/// SMSC simulator) uses nothing of the crate but itself and the text encodings. The binds and
/// the outbox, which wire the protocol to the dispatcher and the stores, live in `src/sms`.
#[test]
fn the_smpp_protocol_never_reaches_up_into_the_gateway() {
    let smpp = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/smpp");
    let mut files = Vec::new();
    rust_files(&smpp, &mut files);
    let allowed = ["crate::smpp", "crate::encoding"];
    let mut offenders = Vec::new();
    for file in files {
        let code = code_without_comments(&std::fs::read_to_string(&file).expect("read"));
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at..];
            if !allowed.iter().any(|a| rest.starts_with(a)) {
                let path: String = rest
                    .chars()
                    .take_while(|c| is_ident_char(*c) || *c == ':')
                    .collect();
                offenders.push(format!("{} uses `{path}`", file.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the SMPP protocol reaches up into the gateway:\n{}",
        offenders.join("\n")
    );
}
