//! Tidy: the invariants of ARCHITECTURE.md that a machine can check, checked
//! by reading the sources under `host/src` (rust-analyzer keeps its own the
//! same way). Nothing here builds or runs evhost.
//!
//! - only `log/redb/` uses the redb crate;
//! - `anyhow` appears only at the edges: `main.rs` and `cli/`;
//! - no `.unwrap()` / `.expect(` outside tests;
//! - no `panic!`, `unreachable!`, `todo!`, `unimplemented!` or `dbg!`
//!   outside tests.
//!
//! How the sources are read, and its limits: comments and the contents of
//! string and char literals are blanked first (newlines kept, so line numbers
//! stay true), so words in docs, messages or templates (`cli/scaffold.rs`
//! writes a plugin with its own `#[cfg(test)]`) do not count. That lexer knows
//! line, nested block, string, raw string and char literals and tells `'a'`
//! from a lifetime `'a`; it does not expand macros. "Tests" are items written
//! `#[cfg(test)]` exactly (not `cfg(all(test, …))`): an item with a body is
//! skipped to its matching brace, one without (`mod tests;`) up to its `;`,
//! and such a `mod NAME;` makes `NAME.rs` (or `NAME/`) a test-only file;
//! a `#[path]` on it is not followed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One source file of `host/src`.
struct Source {
    /// Relative to `host/src`, with `/`.
    path: String,
    text: String,
    /// `text` with comments and literal contents blanked.
    code: String,
    /// `code` with `#[cfg(test)]` items blanked too; empty for test-only files.
    non_test: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut test_only = BTreeSet::new();
    let mut out: Vec<Source> = files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            let path = file
                .strip_prefix(&root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let code = blank_comments_and_literals(&text);
            let (non_test, test_mods) = blank_cfg_test(&code);
            for name in test_mods {
                test_only.insert(module_dir(&path) + &name);
            }
            Source {
                path,
                text,
                code,
                non_test,
            }
        })
        .collect();
    for s in &mut out {
        let is_test = test_only
            .iter()
            .any(|m| s.path == format!("{m}.rs") || s.path.starts_with(&format!("{m}/")));
        if is_test {
            s.non_test.clear();
        }
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Where the files of `path`'s child modules live: `a/mod.rs` → `a/`,
/// `a/b.rs` → `a/b/`, `lib.rs` → ``.
fn module_dir(path: &str) -> String {
    let (dir, file) = match path.rsplit_once('/') {
        Some((dir, file)) => (format!("{dir}/"), file),
        None => (String::new(), path),
    };
    match file {
        "mod.rs" | "lib.rs" | "main.rs" => dir,
        other => format!("{dir}{}/", other.trim_end_matches(".rs")),
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The source with every comment and the inside of every string and char
/// literal replaced by spaces; newlines stay, so offsets keep their lines.
fn blank_comments_and_literals(text: &str) -> String {
    let s: Vec<char> = text.chars().collect();
    let mut out = s.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut out[from..to.min(s.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            '/' if s.get(i + 1) == Some(&'/') => {
                let end = s[i..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(s.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            '/' if s.get(i + 1) == Some(&'*') => {
                let (mut depth, mut j) = (1, i + 2);
                while j < s.len() && depth > 0 {
                    if s[j] == '/' && s.get(j + 1) == Some(&'*') {
                        depth += 1;
                        j += 2;
                    } else if s[j] == '*' && s.get(j + 1) == Some(&'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            '"' => {
                // A raw string is `r`, `br` or `cr` at the start of a token,
                // then hashes, then the quote.
                let hashes = s[..i].iter().rev().take_while(|&&c| c == '#').count();
                let r = i.checked_sub(hashes + 1);
                let raw = r.is_some_and(|r| {
                    s[r] == 'r'
                        && match r.checked_sub(1).map(|p| s[p]) {
                            None => true,
                            Some('b' | 'c') => r < 2 || !is_ident(s[r - 2]),
                            Some(p) => !is_ident(p),
                        }
                });
                let mut j = i + 1;
                if raw {
                    let close: Vec<char> = std::iter::once('"')
                        .chain(std::iter::repeat_n('#', hashes))
                        .collect();
                    while j < s.len() && !s[j..].starts_with(&close) {
                        j += 1;
                    }
                } else {
                    while j < s.len() && s[j] != '"' {
                        j += if s[j] == '\\' { 2 } else { 1 };
                    }
                }
                blank(&mut out, i + 1, j);
                i = j + 1;
            }
            '\'' => {
                // `'x'` and `'\n'` are chars; `'a` and `'static` are lifetimes.
                if s.get(i + 1) == Some(&'\\') {
                    let mut j = i + 3;
                    while j < s.len() && s[j] != '\'' {
                        j += 1;
                    }
                    blank(&mut out, i + 1, j);
                    i = j + 1;
                } else if s.get(i + 2) == Some(&'\'') {
                    blank(&mut out, i + 1, i + 2);
                    i += 3;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out.into_iter().collect()
}

const CFG_TEST: &str = "#[cfg(test)]";

/// `code` with every `#[cfg(test)]` item blanked, and the names of the
/// modules declared `#[cfg(test)] mod NAME;` (their files are test-only).
fn blank_cfg_test(code: &str) -> (String, Vec<String>) {
    let s: Vec<char> = code.chars().collect();
    let mut out = s.clone();
    let mut mods = Vec::new();
    let attr: Vec<char> = CFG_TEST.chars().collect();
    let mut i = 0;
    while i < s.len() {
        if !s[i..].starts_with(&attr) {
            i += 1;
            continue;
        }
        // The item ends at its body's closing brace, or at `;` (`mod tests;`),
        // `,` (a field) or the enclosing item's end when it has no body.
        let (mut j, mut depth) = (i + attr.len(), 0usize);
        let end = loop {
            match s.get(j) {
                None => break s.len(),
                Some('(' | '[') => depth += 1,
                Some(')' | ']') if depth > 0 => depth -= 1,
                Some('{') if depth == 0 => break matching_brace(&s, j),
                Some(';' | ',') if depth == 0 => break j + 1,
                Some('}' | ')') if depth == 0 => break j,
                _ => {}
            }
            j += 1;
        };
        let item: String = s[i + attr.len()..end.min(s.len())].iter().collect();
        let words: Vec<&str> = item
            .split(|c: char| !is_ident(c))
            .filter(|w| !w.is_empty())
            .collect();
        if item.trim_end().ends_with(';')
            && let Some(at) = words.iter().position(|w| *w == "mod")
            && let Some(name) = words.get(at + 1)
        {
            mods.push((*name).to_owned());
        }
        for c in &mut out[i..end.min(s.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = end;
    }
    (out.into_iter().collect(), mods)
}

/// The offset just past the `}` that closes the `{` at `open`.
fn matching_brace(s: &[char], open: usize) -> usize {
    let mut depth = 0usize;
    for (k, &c) in s.iter().enumerate().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// Offsets where `word` occurs as a whole identifier (or macro name, with `!`).
fn find_word(code: &str, word: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(word) {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            out.push(at);
        }
    }
    out
}

/// Offsets where the redb *crate* is named: a path that starts with `redb::`
/// or `::redb`, or `use redb` / `extern crate redb`. Module paths such as
/// `self::redb::RedbLog` and variables named `redb` do not count.
fn redb_crate_uses(code: &str) -> Vec<usize> {
    find_word(code, "redb")
        .into_iter()
        .filter(|&at| {
            let before = code[..at].trim_end();
            let after = code[at + "redb".len()..].trim_start();
            if let Some(prefix) = before.strip_suffix("::") {
                // `::redb` at the start of a path; `x::redb` is our own module.
                return !prefix.trim_end().ends_with(is_ident);
            }
            after.starts_with("::")
                || ends_with_word(before, "use")
                || ends_with_word(before, "crate")
        })
        .collect()
}

fn ends_with_word(text: &str, word: &str) -> bool {
    text.strip_suffix(word)
        .is_some_and(|rest| !rest.ends_with(is_ident))
}

/// `host/src/path:line: the line`, for a failure message; `offset` is into
/// `scanned` (`code` or `non_test`, which keep the text's newlines).
fn at(src: &Source, scanned: &str, offset: usize) -> String {
    let line = scanned[..offset].matches('\n').count();
    let text = src.text.lines().nth(line).unwrap_or("").trim();
    format!("  host/src/{}:{}: {text}", src.path, line + 1)
}

fn report(what: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{what}:\n{}", found.join("\n"));
}

#[test]
fn only_log_redb_uses_the_redb_crate() {
    let mut found = Vec::new();
    for src in sources()
        .iter()
        .filter(|s| !s.path.starts_with("log/redb/"))
    {
        found.extend(
            redb_crate_uses(&src.code)
                .into_iter()
                .map(|o| at(src, &src.code, o)),
        );
    }
    report(
        "only host/src/log/redb/ may use the redb crate (ARCHITECTURE.md, log/); \
         give the log an operation or a LogError variant instead",
        found,
    );
}

#[test]
fn anyhow_only_at_the_edges() {
    let mut found = Vec::new();
    let edge = |p: &str| p == "main.rs" || p.starts_with("cli/");
    for src in sources().iter().filter(|s| !edge(&s.path)) {
        found.extend(
            find_word(&src.code, "anyhow")
                .into_iter()
                .map(|o| at(src, &src.code, o)),
        );
    }
    report(
        "anyhow belongs to the edges (main.rs, cli/); library code returns its own \
         thiserror enum",
        found,
    );
}

#[test]
fn no_unwrap_or_expect_outside_tests() {
    let mut found = Vec::new();
    for src in &sources() {
        for pattern in [".unwrap()", ".expect("] {
            found.extend(
                src.non_test
                    .match_indices(pattern)
                    .map(|(o, _)| at(src, &src.non_test, o)),
            );
        }
    }
    report(
        "no unwrap/expect in host/src outside #[cfg(test)] (no panics on the daemon's \
         path): return the error, naming what failed",
        found,
    );
}

#[test]
fn no_panicking_or_debugging_macros_outside_tests() {
    let mut found = Vec::new();
    for src in &sources() {
        for mac in ["panic", "unreachable", "todo", "unimplemented", "dbg"] {
            let calls = find_word(&src.non_test, mac)
                .into_iter()
                .filter(|&o| src.non_test[o + mac.len()..].starts_with('!'));
            found.extend(calls.map(|o| at(src, &src.non_test, o)));
        }
    }
    report(
        "panic!/unreachable!/todo!/unimplemented!/dbg! in host/src outside tests \
         (no panics on the daemon's path)",
        found,
    );
}

#[test]
fn the_dispatcher_writes_only_through_commit() {
    // Every write of the log except `commit`: a dispatcher that used one would write
    // outside the fenced, all-or-nothing consumer commit (ARCHITECTURE.md, dispatch/).
    let writes = [
        "set_offset",
        "append",
        "append_to_stream",
        "create_topic",
        "delete_dead_letter",
        "enforce_retention",
    ];
    let mut found = Vec::new();
    for src in sources().iter().filter(|s| s.path.starts_with("dispatch/")) {
        for write in writes {
            let calls = find_word(&src.non_test, write)
                .into_iter()
                .filter(|&o| o > 0 && src.non_test[..o].ends_with('.'))
                .filter(|&o| src.non_test[o + write.len()..].starts_with('('));
            found.extend(calls.map(|o| at(src, &src.non_test, o)));
        }
    }
    report(
        "the dispatcher writes only through EventLog::commit (one fenced transaction)",
        found,
    );
}

#[test]
fn every_consumer_commit_carries_the_consumers_lease() {
    // On a log daemons share, a commit without the lease fence would land even after
    // another daemon took the partition (ARCHITECTURE.md, log/ invariants): every commit a
    // consumer builds starts from `ctx.commit_for()`, which carries it.
    let mut found = Vec::new();
    for src in sources()
        .iter()
        .filter(|s| s.path.starts_with("dispatch/consumer/"))
    {
        let chars: Vec<char> = src.non_test.chars().collect();
        for o in find_word(&src.non_test, "ConsumerCommit") {
            let rest = &src.non_test[o + "ConsumerCommit".len()..];
            let Some(brace) = rest.find(|c: char| !c.is_whitespace()) else {
                continue;
            };
            if !rest[brace..].starts_with('{') {
                continue;
            }
            // Char offsets equal byte offsets here: non_test is ASCII outside literals.
            let open = o + "ConsumerCommit".len() + brace;
            let close = matching_brace(&chars, open);
            let body: String = chars[open..close].iter().collect();
            if !body.contains("ctx.commit_for()") && !body.contains("self.lease") {
                found.push(at(src, &src.non_test, o));
            }
        }
    }
    report(
        "a consumer's ConsumerCommit starts from `..ctx.commit_for()`, so it carries the \
         consumer's group and lease fence",
        found,
    );
}

/// The reader itself: what it must blank and what it must keep.
mod reader {
    use super::*;

    /// A reader that blanked too much would pass every check: in each file
    /// that is not test-only, everything before its first `#[cfg(test)]`
    /// is checked.
    #[test]
    fn all_code_before_the_first_cfg_test_is_checked() {
        for s in sources().iter().filter(|s| !s.non_test.is_empty()) {
            let cut = s.code.find(CFG_TEST).unwrap_or(s.code.len());
            assert!(s.non_test[..cut] == s.code[..cut], "host/src/{}", s.path);
        }
    }

    #[test]
    fn comments_and_literals_are_blanked_and_lines_kept() {
        let code = blank_comments_and_literals(
            "let a = \"x.unwrap() {\"; // y.unwrap()\n/* a /* nested */ .expect( */ b.unwrap();\n\
             let c = '{'; let q = '\"'; let e = '\\''; fn f<'a>(x: &'a str) { x.expect(\"m\") }\n\
             let r = r#\"raw \" {\"#; let s = br\"}\"; z.unwrap();",
        );
        assert_eq!(code.lines().count(), 4, "{code}");
        assert_eq!(code.matches(".unwrap()").count(), 2, "{code}");
        assert_eq!(code.matches(".expect(").count(), 1, "{code}");
        assert_eq!(
            code.matches('{').count(),
            code.matches('}').count(),
            "{code}"
        );
        assert!(code.contains("fn f<'a>(x: &'a str)"), "{code}");
    }

    #[test]
    fn cfg_test_items_are_blanked_and_test_files_named() {
        let src = "fn a() { x.unwrap() }\n\
                   struct S {\n    #[cfg(test)]\n    f: Option<u8>,\n    g: u8,\n}\n\
                   #[cfg(test)]\nmod tests {\n    fn b() { '}'; y.unwrap(); }\n}\n\
                   #[cfg(test)]\nmod more;\nfn c() { z.expect(\"why\") }\n";
        let (non_test, mods) = blank_cfg_test(&blank_comments_and_literals(src));
        assert_eq!(non_test.lines().count(), src.lines().count());
        assert_eq!(non_test.matches(".unwrap()").count(), 1, "{non_test}");
        assert_eq!(non_test.matches(".expect(").count(), 1, "{non_test}");
        assert!(non_test.contains("g: u8"), "{non_test}");
        assert!(!non_test.contains("Option"), "{non_test}");
        assert_eq!(mods, ["more"]);
        assert_eq!(module_dir("log/redb/mod.rs"), "log/redb/");
        assert_eq!(module_dir("log/watch.rs"), "log/watch/");
        assert_eq!(module_dir("lib.rs"), "");
    }

    #[test]
    fn redb_the_crate_is_told_from_our_module_and_variables() {
        let code = "use redb::Database;\npub use self::redb::RedbLog;\nlet redb = open();\n\
                    redb.clone();\nx: ::redb::Error,\nmod redb;\ncrate::log::redb::f();\n\
                    let e: redb :: Error;";
        let lines: Vec<usize> = redb_crate_uses(code)
            .into_iter()
            .map(|o| code[..o].matches('\n').count() + 1)
            .collect();
        assert_eq!(lines, [1, 5, 8]);
        assert!(find_word("RedbLog redbx anyhow_x", "redb").is_empty());
        assert_eq!(find_word("anyhow::Result", "anyhow"), [0]);
    }
}
