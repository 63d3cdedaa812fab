//! The API reference cannot drift from the interfaces: the introspection files in
//! `dbus/` document every interface, method, argument, property and signal in
//! gdbus-codegen style comments, and the member part of `docs/dbus-api.md` is generated
//! from them. This test fails when an element lacks its documentation, when a comment
//! documents an argument the element does not have, when the generated part differs
//! from what the XML gives (`QSD_BLESS=1` rewrites it), and when the hand-written part
//! names a member that no interface has.
//!
//! The comment format (as gdbus-codegen reads it): the comment just before an element
//! starts with the element's name and a colon, then `@arg: text` lines (one line
//! each), then, after a blank line, the description.

mod docs_support;

use std::collections::BTreeSet;

use docs_support::{read, repo};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

const XML_FILES: [&str; 4] = [
    "dbus/org.qubes.Storage.Manager.xml",
    "dbus/org.qubes.Storage.Pool.xml",
    "dbus/org.qubes.Storage.Volume.xml",
    "dbus/org.qubes.Storage.Job.xml",
];
const API_DOC: &str = "docs/dbus-api.md";
const BEGIN: &str = "<!-- BEGIN members: generated from dbus/*.xml by tests/docs_api.rs (QSD_BLESS=1 rewrites it) -->";
const END: &str = "<!-- END members -->";

/// A documentation comment, parsed.
#[derive(Debug, Default, Clone)]
struct Doc {
    name: String,
    short: Option<String>,
    params: Vec<(String, String)>,
    body: String,
}

impl Doc {
    fn parse(comment: &str) -> Doc {
        let lines: Vec<&str> = comment.lines().map(str::trim).collect();
        let mut lines = lines.into_iter().skip_while(|line| line.is_empty());
        let first = lines.next().unwrap_or_default();
        let (name, rest) = first.split_once(':').unwrap_or(("", first));
        let mut doc = Doc {
            name: name.trim().to_owned(),
            ..Doc::default()
        };
        let mut body: Vec<&str> = vec![rest.trim()];
        for line in lines {
            match line.strip_prefix('@').and_then(|l| l.split_once(':')) {
                Some(("short_description", text)) => doc.short = Some(text.trim().to_owned()),
                Some((param, text)) if body.iter().all(|l| l.is_empty()) => {
                    doc.params.push((param.to_owned(), text.trim().to_owned()))
                }
                _ => body.push(line),
            }
        }
        doc.body = paragraphs(&body);
        doc
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(param, _)| param == name)
            .map(|(_, text)| text.as_str())
    }
}

/// Lines joined into paragraphs (one line each), separated by blank lines.
fn paragraphs(lines: &[&str]) -> String {
    let text = lines.join("\n");
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[derive(Debug)]
struct Arg {
    name: String,
    ty: String,
    direction: String,
}

#[derive(Debug)]
struct Member {
    kind: &'static str,
    name: String,
    doc: Option<Doc>,
    args: Vec<Arg>,
    ty: String,
    access: String,
    annotations: Vec<(String, String)>,
}

#[derive(Debug)]
struct Interface {
    name: String,
    doc: Option<Doc>,
    members: Vec<Member>,
}

impl Interface {
    /// The interface's short name: `Volume` for org.qubes.Storage.Volume.
    fn short(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Member> {
        self.members.iter().filter(move |m| m.kind == kind)
    }
}

fn attribute(element: &BytesStart<'_>, name: &str) -> String {
    element
        .try_get_attribute(name)
        .ok()
        .flatten()
        .map(|attr| attr.value.to_string())
        .unwrap_or_default()
}

/// The interfaces of one introspection file, with their documentation comments.
fn parse(xml: &str) -> Vec<Interface> {
    let mut reader = Reader::from_str(xml);
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut comment: Option<String> = None;
    loop {
        let event = reader.read_event().expect("well-formed XML");
        match event {
            Event::Eof => break,
            Event::Comment(text) => comment = Some(text.as_ref().to_owned()),
            Event::Start(element) | Event::Empty(element) => {
                let doc = comment.take().map(|c| Doc::parse(&c));
                add(&mut interfaces, &element, doc);
            }
            _ => {}
        }
    }
    interfaces
}

fn add(interfaces: &mut Vec<Interface>, element: &BytesStart<'_>, doc: Option<Doc>) {
    let name = attribute(element, "name");
    let kind: &'static str = match element.name().as_ref() {
        "interface" => {
            interfaces.push(Interface {
                name,
                doc,
                members: Vec::new(),
            });
            return;
        }
        "method" => "method",
        "signal" => "signal",
        "property" => "property",
        "arg" => {
            let member = last_member(interfaces);
            member.args.push(Arg {
                name,
                ty: attribute(element, "type"),
                direction: attribute(element, "direction"),
            });
            return;
        }
        "annotation" => {
            let value = attribute(element, "value");
            last_member(interfaces).annotations.push((name, value));
            return;
        }
        _ => return,
    };
    let interface = interfaces
        .last_mut()
        .expect("a member outside an interface");
    interface.members.push(Member {
        kind,
        name,
        doc,
        args: Vec::new(),
        ty: attribute(element, "type"),
        access: attribute(element, "access"),
        annotations: Vec::new(),
    });
}

fn last_member(interfaces: &mut [Interface]) -> &mut Member {
    interfaces
        .last_mut()
        .and_then(|interface| interface.members.last_mut())
        .expect("an arg or annotation outside a member")
}

fn all_interfaces() -> Vec<Interface> {
    XML_FILES
        .iter()
        .flat_map(|file| parse(&read(file)))
        .collect()
}

/// What is wrong with one element's comment, if anything.
fn doc_problem(what: &str, name: &str, doc: &Option<Doc>) -> Option<String> {
    match doc {
        None => Some(format!("{what}: no documentation comment")),
        Some(doc) if doc.name != name => Some(format!("{what}: its comment is for {:?}", doc.name)),
        Some(doc) if doc.body.is_empty() => Some(format!("{what}: no description")),
        Some(_) => None,
    }
}

/// What is wrong with the documentation of one interface.
fn problems(interface: &Interface) -> Vec<String> {
    let what = format!("interface {}", interface.name);
    let mut problems: Vec<String> = doc_problem(&what, &interface.name, &interface.doc)
        .into_iter()
        .collect();
    for member in &interface.members {
        let what = format!("{} {}.{}", member.kind, interface.short(), member.name);
        problems.extend(doc_problem(&what, &member.name, &member.doc));
        let Some(doc) = &member.doc else { continue };
        for arg in &member.args {
            if doc.param(&arg.name).is_none_or(str::is_empty) {
                problems.push(format!("{what}: argument {} is not documented", arg.name));
            }
        }
        for (param, _) in &doc.params {
            if !member.args.iter().any(|arg| &arg.name == param) {
                problems.push(format!(
                    "{what}: documents @{param}, which it does not have"
                ));
            }
        }
    }
    problems
}

// ---- rendering ----

fn signature(member: &Member) -> String {
    let (ins, outs): (Vec<&Arg>, Vec<&Arg>) =
        member.args.iter().partition(|arg| arg.direction != "out");
    let list = |args: &[&Arg]| {
        args.iter()
            .map(|arg| format!("{} {}", arg.ty, arg.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match member.kind {
        "method" if outs.is_empty() => format!("{}({})", member.name, list(&ins)),
        "method" => format!("{}({}) → ({})", member.name, list(&ins), list(&outs)),
        _ => format!("{}({})", member.name, list(&ins)),
    }
}

fn render_member(out: &mut String, interface: &Interface, member: &Member) {
    let doc = member.doc.clone().unwrap_or_default();
    out.push_str(&format!("#### {}.{}\n\n", interface.short(), member.name));
    match member.kind {
        "property" => {
            let mut line = format!("`{}` `{}`, {}", member.name, member.ty, member.access);
            for (name, value) in &member.annotations {
                line.push_str(&format!("; `{name}` = `{value}`"));
            }
            out.push_str(&format!("{line}\n\n"));
        }
        _ => out.push_str(&format!("```\n{}\n```\n\n", signature(member))),
    }
    out.push_str(&doc.body);
    out.push_str("\n\n");
    if !member.args.is_empty() {
        out.push_str("| argument | type | |\n|---|---|---|\n");
        for arg in &member.args {
            let direction = match (member.kind, arg.direction.as_str()) {
                ("signal", _) => "",
                (_, "out") => " out",
                _ => " in",
            };
            let text = doc.param(&arg.name).unwrap_or_default().replace('|', "\\|");
            out.push_str(&format!(
                "| `{}` | `{}`{direction} | {text} |\n",
                arg.name, arg.ty
            ));
        }
        out.push('\n');
    }
}

fn render(interfaces: &[Interface]) -> String {
    let mut out = String::new();
    for interface in interfaces {
        let doc = interface.doc.clone().unwrap_or_default();
        out.push_str(&format!("### {}\n\n", interface.name));
        if let Some(short) = &doc.short {
            out.push_str(&format!("*{short}*\n\n"));
        }
        out.push_str(&doc.body);
        out.push_str("\n\n");
        for (kind, title) in [
            ("method", "Methods"),
            ("property", "Properties"),
            ("signal", "Signals"),
        ] {
            let members: Vec<&Member> = interface.of_kind(kind).collect();
            if members.is_empty() {
                continue;
            }
            let index: Vec<String> = members
                .iter()
                .map(|m| {
                    format!(
                        "[{}](#{})",
                        m.name,
                        docs_support::slug(&format!("{}.{}", interface.short(), m.name))
                    )
                })
                .collect();
            out.push_str(&format!("{title}: {}\n\n", index.join(" · ")));
            for member in members {
                render_member(&mut out, interface, member);
            }
        }
    }
    out
}

/// The generated part of the API document, and the text around it.
fn split_api_doc() -> (String, String, String) {
    let text = read(API_DOC);
    let (before, rest) = text.split_once(BEGIN).expect("the BEGIN marker");
    let (generated, after) = rest.split_once(END).expect("the END marker");
    (before.to_owned(), generated.to_owned(), after.to_owned())
}

#[test]
fn every_interface_member_and_argument_is_documented() {
    let problems: Vec<String> = all_interfaces().iter().flat_map(problems).collect();
    assert!(problems.is_empty(), "dbus/*.xml:\n{}", problems.join("\n"));
}

#[test]
fn the_member_reference_is_what_the_xml_documents() {
    let generated = format!("\n{}", render(&all_interfaces()));
    let (before, current, after) = split_api_doc();
    if std::env::var_os("QSD_BLESS").is_some() {
        let text = format!("{before}{BEGIN}{generated}{END}{after}");
        std::fs::write(repo().join(API_DOC), text).unwrap();
        return;
    }
    assert!(
        current == generated,
        "{API_DOC} differs from dbus/*.xml (run with QSD_BLESS=1 to rewrite it)"
    );
}

#[test]
fn the_written_part_names_only_members_the_interfaces_have() {
    let interfaces = all_interfaces();
    let mut known: BTreeSet<String> = interfaces
        .iter()
        .flat_map(|i| i.members.iter().map(|m| m.name.clone()))
        .chain(interfaces.iter().map(|i| i.short().to_owned()))
        .collect();
    // Standard D-Bus members and the error names the written part also mentions.
    for name in [
        "GetManagedObjects",
        "InterfacesAdded",
        "InterfacesRemoved",
        "PropertiesChanged",
        "Introspect",
        "Get",
        "GetAll",
        "Set",
        "Failed",
        "NotFound",
        "AlreadyExists",
        "InvalidArgument",
        "Busy",
        "NotSupported",
        "NoSpace",
        "Cancelled",
        "InteractiveAuthorizationRequired",
        "AccessDenied",
        "LimitsExceeded",
    ] {
        known.insert(name.to_owned());
    }
    let (before, _, after) = split_api_doc();
    let mut unknown = Vec::new();
    for word in code_words(&format!("{before}{after}")) {
        let member_like = word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && word.chars().all(|c| c.is_ascii_alphanumeric())
            && word.chars().skip(1).any(|c| c.is_ascii_lowercase());
        if member_like && !known.contains(&word) {
            unknown.push(word);
        }
    }
    assert!(
        unknown.is_empty(),
        "{API_DOC} names members no interface has: {unknown:?}"
    );
}

/// The words in `code` spans and the link texts of a Markdown text.
fn code_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    for line in docs_support::prose_lines(text) {
        for (index, part) in line.split('`').enumerate() {
            if index % 2 == 1 {
                words.push(part.to_owned());
            }
        }
        let mut rest = line;
        while let Some(start) = rest.find('[') {
            let after = &rest[start + 1..];
            let Some(end) = after.find("](") else { break };
            words.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    words
}
