//! The documentation holds together: every relative link and anchor of README.md,
//! ARCHITECTURE.md and docs/*.md resolves, and every citation in the code resolves in
//! docs/: `R§n` (a heading of docs/reference.md, and `R§9.1 item N` an item of that
//! section), "fix N" (an item of the deliberate fixes in docs/dbus-api.md), and every
//! `docs/…` path (with its anchor). No file cites the contract or the notes the
//! project was started from, which are not in the repository.

mod docs_support;

use std::path::{Path, PathBuf};

use docs_support::{anchors, markdown_files, prose_lines, read, repo, slug};

/// Text files of the repository (not the build, not git's), except this test's own
/// support, whose patterns would match themselves.
fn repository_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    walk(repo(), &mut files);
    files.sort();
    files
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.map_while(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" || path.ends_with("tests/docs_links.rs") {
            continue;
        }
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => walk(&path, files),
            Ok(kind) if kind.is_file() => files.push(path),
            _ => {}
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `[text](target)` links of a Markdown text, outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose_lines(text) {
        let outside_code: String = line
            .split('`')
            .enumerate()
            .filter(|(index, _)| index % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = outside_code.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// What is wrong with one link of `file`, if anything.
fn broken(file: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let resolved = match path {
        "" => file.to_owned(),
        path => file.parent().unwrap().join(path),
    };
    if !resolved.exists() {
        return Some(format!("{}: {target}: no such file", relative(file)));
    }
    if anchor.is_empty() {
        return None;
    }
    let text = std::fs::read_to_string(&resolved).unwrap_or_default();
    (!anchors(&text).iter().any(|a| a == anchor))
        .then(|| format!("{}: {target}: no such anchor", relative(file)))
}

#[test]
fn slugs_are_the_anchors_github_makes() {
    assert_eq!(slug("R§3.7 Start"), "r37-start");
    assert_eq!(slug("Volume.Usage"), "volumeusage");
    assert_eq!(
        slug("R§3.19 Import volume (clone)"),
        "r319-import-volume-clone"
    );
    assert_eq!(
        anchors("# A\n## A\n```\n# not a heading\n```\n### `B` c\n"),
        ["a", "a-1", "b-c"]
    );
}

#[test]
fn every_relative_link_and_anchor_of_the_docs_resolves() {
    let mut problems = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        problems.extend(links(&text).iter().filter_map(|link| broken(&file, link)));
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

// ---- citations in the code ----

/// The numbers right after each `marker` in `text` (`R§3.4–3.21` gives 3.4 and
/// 3.21; `fixes 1 and 7` gives 1 and 7), with the rest of the line after them.
fn cited_numbers<'t>(text: &'t str, marker: &str) -> Vec<(String, &'t str)> {
    let mut found = Vec::new();
    for (start, _) in text.match_indices(marker) {
        if text[..start].ends_with(|c: char| c.is_alphanumeric()) {
            continue;
        }
        let mut rest = &text[start + marker.len()..];
        loop {
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let number = rest[..end].trim_end_matches('.');
            if !number.starts_with(|c: char| c.is_ascii_digit()) {
                break;
            }
            rest = &rest[number.len()..];
            found.push((number.to_owned(), rest.lines().next().unwrap_or_default()));
            let next = ["–", ", ", " and "]
                .iter()
                .find_map(|sep| rest.strip_prefix(sep));
            match next {
                Some(after) if after.starts_with(|c: char| c.is_ascii_digit()) => rest = after,
                _ => break,
            }
        }
    }
    found
}

/// The section numbers of docs/reference.md's headings (`R§3.7`, …).
fn reference_sections() -> Vec<String> {
    let text = read("docs/reference.md");
    prose_lines(&text)
        .into_iter()
        .filter(|line| line.starts_with('#'))
        .filter_map(|line| line.split_once("R§"))
        .map(|(_, rest)| rest.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}

/// The numbered items of the section `R§<section>` of docs/reference.md.
fn items_of_section(section: &str) -> Vec<u32> {
    let text = read("docs/reference.md");
    let heading = format!("R§{section} ");
    let body = text
        .split_once(&heading)
        .map(|(_, body)| body)
        .unwrap_or_default();
    let body = body.split("\n#").next().unwrap_or_default();
    numbered_items(body)
}

/// The numbers of a Markdown ordered list (`1. …`) in `text`.
fn numbered_items(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|line| line.split_once(". "))
        .filter_map(|(number, _)| number.parse().ok())
        .collect()
}

/// The numbers of the deliberate fixes in docs/dbus-api.md.
fn fix_numbers() -> Vec<u32> {
    let text = read("docs/dbus-api.md");
    let section = text.split_once("## Deliberate fixes").expect("the fixes").1;
    numbered_items(section.split("\n## ").next().unwrap_or_default())
}

fn problems_of_file(path: &Path, text: &str) -> Vec<String> {
    let file = relative(path);
    let sections = reference_sections();
    let fixes = fix_numbers();
    let mut problems = Vec::new();
    for (section, rest) in cited_numbers(text, "R§") {
        if !sections.contains(&section) {
            problems.push(format!(
                "{file}: R§{section} is not a section of docs/reference.md"
            ));
            continue;
        }
        let item = rest
            .strip_prefix(" item ")
            .and_then(|r| cited_numbers(r, "").first().cloned());
        if let Some((item, _)) = item {
            let number: u32 = item.parse().unwrap_or(0);
            if !items_of_section(&section).contains(&number) {
                problems.push(format!("{file}: R§{section} has no item {item}"));
            }
        }
    }
    for marker in ["fix ", "fixes ", "Fix ", "Fixes "] {
        for (fix, _) in cited_numbers(text, marker) {
            if !fix.parse().is_ok_and(|n: u32| fixes.contains(&n)) {
                problems.push(format!(
                    "{file}: fix {fix} is not a deliberate fix of docs/dbus-api.md"
                ));
            }
        }
    }
    problems.extend(docs_paths(text).into_iter().filter_map(|cited| {
        broken(&repo().join("README.md"), &cited).map(|why| format!("{file}: cites {why}"))
    }));
    for gone in [["spec", "/"], ["notes", "/"]] {
        let prefix = gone.concat();
        for (start, _) in text.match_indices(&prefix) {
            let name: String = text[start..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '`')
                .collect();
            if name.contains(".md") && !text[..start].ends_with("docs/") {
                problems.push(format!(
                    "{file}: cites {name}, which is not in the repository"
                ));
            }
        }
    }
    problems
}

/// `docs/<file>.md` and `docs/<file>.md#anchor` mentioned in a text.
fn docs_paths(text: &str) -> Vec<String> {
    text.match_indices("docs/")
        .filter(|(start, _)| {
            !text[..*start].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '/')
        })
        .filter_map(|(start, _)| {
            let cited: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/._-#".contains(*c))
                .collect();
            let cited = cited.trim_end_matches(['.', ',']).to_owned();
            cited.contains(".md").then_some(cited)
        })
        .collect()
}

#[test]
fn every_citation_in_the_code_resolves_in_docs() {
    let mut problems = Vec::new();
    for path in repository_files() {
        if let Ok(text) = std::fs::read_to_string(&path) {
            problems.extend(problems_of_file(&path, &text));
        }
    }
    assert!(
        problems.is_empty(),
        "citations that do not resolve:\n{}",
        problems.join("\n")
    );
}

#[test]
fn citations_are_found_where_the_code_makes_them() {
    let text = "R§3.4–3.21, R§9.1 item 4; with fixes 1 and 7 (fix 13)";
    let sections: Vec<String> = cited_numbers(text, "R§")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(sections, ["3.4", "3.21", "9.1"]);
    let fixes: Vec<String> = cited_numbers(text, "fixes ")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(fixes, ["1", "7"]);
    let problems = problems_of_file(Path::new("x.rs"), "see R§3.99, fix 99, R§9.1 item 40");
    assert_eq!(problems.len(), 3, "{problems:#?}");
}
