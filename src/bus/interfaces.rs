//! The interfaces the service serves, read from the introspection files in `dbus/`
//! (embedded at build time) plus the standard freedesktop interfaces. These files are
//! the single description of the API: the dispatcher checks every call's argument
//! signature against them, the property code checks names, types and access against
//! them (unit tests below), and `Introspect` serves them — re-rendered from the parsed
//! form, so comments and documentation annotations in the files never reach the bus and
//! signal arguments never carry a `direction` (which `busctl` warns about).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::OnceLock;

use zbus_xml::{ArgDirection, Node, PropertyAccess};

pub const MANAGER: &str = "org.qubes.Storage.Manager";
pub const POOL: &str = "org.qubes.Storage.Pool";
pub const VOLUME: &str = "org.qubes.Storage.Volume";
pub const JOB: &str = "org.qubes.Storage.Job";
pub const OBJECT_MANAGER: &str = "org.freedesktop.DBus.ObjectManager";
pub const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
pub const INTROSPECTABLE: &str = "org.freedesktop.DBus.Introspectable";
pub const PEER: &str = "org.freedesktop.DBus.Peer";

/// The annotation that marks how a property announces changes.
const EMITS_CHANGED: &str = "org.freedesktop.DBus.Property.EmitsChangedSignal";

const SERVICE_XML: [&str; 4] = [
    include_str!("../../dbus/org.qubes.Storage.Manager.xml"),
    include_str!("../../dbus/org.qubes.Storage.Pool.xml"),
    include_str!("../../dbus/org.qubes.Storage.Volume.xml"),
    include_str!("../../dbus/org.qubes.Storage.Job.xml"),
];

/// The standard interfaces, as the D-Bus specification defines them.
const STANDARD_XML: &str = r#"<node>
  <interface name="org.freedesktop.DBus.Peer">
    <method name="Ping"/>
    <method name="GetMachineId">
      <arg name="machine_uuid" type="s" direction="out"/>
    </method>
  </interface>
  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect">
      <arg name="xml_data" type="s" direction="out"/>
    </method>
  </interface>
  <interface name="org.freedesktop.DBus.Properties">
    <method name="Get">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="out"/>
    </method>
    <method name="GetAll">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="properties" type="a{sv}" direction="out"/>
    </method>
    <method name="Set">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="in"/>
    </method>
    <signal name="PropertiesChanged">
      <arg name="interface_name" type="s"/>
      <arg name="changed_properties" type="a{sv}"/>
      <arg name="invalidated_properties" type="as"/>
    </signal>
  </interface>
  <interface name="org.freedesktop.DBus.ObjectManager">
    <method name="GetManagedObjects">
      <arg name="objpath_interfaces_and_properties" type="a{oa{sa{sv}}}" direction="out"/>
    </method>
    <signal name="InterfacesAdded">
      <arg name="object_path" type="o"/>
      <arg name="interfaces_and_properties" type="a{sa{sv}}"/>
    </signal>
    <signal name="InterfacesRemoved">
      <arg name="object_path" type="o"/>
      <arg name="interfaces" type="as"/>
    </signal>
  </interface>
</node>"#;

/// How a property announces its changes (the EmitsChangedSignal annotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emits {
    /// PropertiesChanged carrying the new value (the default).
    Value,
    /// Never changes while the object exists.
    Const,
    /// Changes without a signal (read it live).
    Never,
}

#[derive(Debug, Clone)]
pub struct MethodSpec {
    /// The in-arguments' signature as a message carries it (no parentheses).
    pub input: String,
}

#[derive(Debug, Clone)]
pub struct PropertySpec {
    pub signature: String,
    pub writable: bool,
    pub emits: Emits,
}

/// One interface: its members and its rendered introspection fragment.
#[derive(Debug, Clone)]
pub struct InterfaceSpec {
    pub name: String,
    pub methods: BTreeMap<String, MethodSpec>,
    pub properties: BTreeMap<String, PropertySpec>,
    pub signals: BTreeMap<String, String>,
    xml: String,
}

impl InterfaceSpec {
    pub fn xml(&self) -> &str {
        &self.xml
    }
}

/// Every interface the service knows, by name.
pub struct Interfaces {
    by_name: BTreeMap<String, InterfaceSpec>,
}

impl Interfaces {
    pub fn get(&self, name: &str) -> Option<&InterfaceSpec> {
        self.by_name.get(name)
    }

    /// The interface `name`, which the files must define (a programming error otherwise).
    pub fn expect(&self, name: &str) -> &InterfaceSpec {
        self.get(name)
            .unwrap_or_else(|| panic!("interface {name} is not described in dbus/"))
    }
}

/// The interfaces, parsed once.
pub fn interfaces() -> &'static Interfaces {
    static PARSED: OnceLock<Interfaces> = OnceLock::new();
    PARSED.get_or_init(|| {
        let mut by_name = BTreeMap::new();
        for xml in SERVICE_XML.iter().chain([&STANDARD_XML]) {
            let node = Node::try_from(*xml).expect("the embedded introspection XML parses");
            for iface in node.interfaces() {
                let spec = spec_of(iface);
                by_name.insert(spec.name.clone(), spec);
            }
        }
        Interfaces { by_name }
    })
}

fn spec_of(iface: &zbus_xml::Interface<'_>) -> InterfaceSpec {
    let methods = iface
        .methods()
        .map(|m| {
            let input = m
                .args()
                .iter()
                .filter(|a| a.direction() != Some(ArgDirection::Out))
                .map(|a| a.ty().to_string())
                .collect();
            (m.name().to_string(), MethodSpec { input })
        })
        .collect();
    let properties = iface
        .properties()
        .map(|p| {
            let emits = p
                .annotations()
                .iter()
                .find(|a| a.name() == EMITS_CHANGED)
                .map_or(Emits::Value, |a| match a.value() {
                    "const" => Emits::Const,
                    "false" | "invalidates" => Emits::Never,
                    _ => Emits::Value,
                });
            let spec = PropertySpec {
                signature: p.ty().to_string(),
                writable: p.access().write(),
                emits,
            };
            (p.name().to_string(), spec)
        })
        .collect();
    let signals = iface
        .signals()
        .map(|s| {
            let sig = s.args().iter().map(|a| a.ty().to_string()).collect();
            (s.name().to_string(), sig)
        })
        .collect();
    InterfaceSpec {
        name: iface.name().to_string(),
        methods,
        properties,
        signals,
        xml: render(iface),
    }
}

/// The `<interface>` element as `Introspect` serves it: no comments, no documentation
/// annotations, signal arguments without a direction.
fn render(iface: &zbus_xml::Interface<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "  <interface name=\"{}\">", iface.name());
    for method in iface.methods() {
        let args = method.args();
        let notes = annotations(method.annotations(), 6);
        if args.is_empty() && notes.is_empty() {
            let _ = writeln!(out, "    <method name=\"{}\"/>", method.name());
            continue;
        }
        let _ = writeln!(out, "    <method name=\"{}\">", method.name());
        for arg in args {
            let direction = match arg.direction() {
                Some(ArgDirection::Out) => "out",
                _ => "in",
            };
            let _ = writeln!(
                out,
                "      <arg{} type=\"{}\" direction=\"{direction}\"/>",
                arg_name(arg),
                escape(&arg.ty().to_string())
            );
        }
        out.push_str(&notes);
        out.push_str("    </method>\n");
    }
    for signal in iface.signals() {
        let _ = writeln!(out, "    <signal name=\"{}\">", signal.name());
        for arg in signal.args() {
            let _ = writeln!(
                out,
                "      <arg{} type=\"{}\"/>",
                arg_name(arg),
                escape(&arg.ty().to_string())
            );
        }
        out.push_str(&annotations(signal.annotations(), 6));
        out.push_str("    </signal>\n");
    }
    for prop in iface.properties() {
        let access = match prop.access() {
            PropertyAccess::Read => "read",
            PropertyAccess::Write => "write",
            PropertyAccess::ReadWrite => "readwrite",
        };
        let head = format!(
            "    <property name=\"{}\" type=\"{}\" access=\"{access}\"",
            prop.name(),
            escape(&prop.ty().to_string())
        );
        let notes = annotations(prop.annotations(), 6);
        if notes.is_empty() {
            let _ = writeln!(out, "{head}/>");
        } else {
            let _ = writeln!(out, "{head}>\n{notes}    </property>");
        }
    }
    out.push_str(&annotations(
        &iface.annotations().cloned().collect::<Vec<_>>(),
        4,
    ));
    out.push_str("  </interface>\n");
    out
}

fn arg_name(arg: &zbus_xml::Arg<'_>) -> String {
    arg.name()
        .map(|n| format!(" name=\"{}\"", escape(n)))
        .unwrap_or_default()
}

/// The annotations that belong on the bus (documentation strings are left out).
fn annotations(list: &[zbus_xml::Annotation<'_>], indent: usize) -> String {
    let mut out = String::new();
    for note in list.iter().filter(|a| !a.name().contains("DocString")) {
        let _ = writeln!(
            out,
            "{:indent$}<annotation name=\"{}\" value=\"{}\"/>",
            "",
            escape(note.name()),
            escape(note.value())
        );
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_interface_is_described() {
        for name in [MANAGER, POOL, VOLUME, JOB, OBJECT_MANAGER, PROPERTIES, PEER] {
            assert!(interfaces().get(name).is_some(), "{name}");
        }
    }

    #[test]
    fn method_input_signatures_have_no_parentheses() {
        let volume = interfaces().expect(VOLUME);
        assert_eq!(volume.methods["Revert"].input, "sa{sv}");
        assert_eq!(volume.methods["Start"].input, "a{sv}");
        let props = interfaces().expect(PROPERTIES);
        assert_eq!(props.methods["Set"].input, "ssv");
        assert_eq!(interfaces().expect(PEER).methods["Ping"].input, "");
    }

    #[test]
    fn property_annotations_are_read() {
        let volume = interfaces().expect(VOLUME);
        assert_eq!(volume.properties["Usage"].emits, Emits::Never);
        assert_eq!(volume.properties["Size"].emits, Emits::Value);
        assert!(volume.properties["Rw"].writable);
        assert!(!volume.properties["Vid"].writable);
        assert_eq!(
            interfaces().expect(JOB).properties["Operation"].emits,
            Emits::Const
        );
        // What an object is never changes: clients may read it once.
        for name in ["Vid", "Name", "Pool", "SaveOnStop", "SnapOnStart", "Source"] {
            assert_eq!(volume.properties[name].emits, Emits::Const, "Volume.{name}");
        }
        let pool = interfaces().expect(POOL);
        for name in ["Name", "Driver", "DirPath", "SetupCheck"] {
            assert_eq!(pool.properties[name].emits, Emits::Const, "Pool.{name}");
        }
    }

    #[test]
    fn rendered_signals_carry_no_direction() {
        let xml = interfaces().expect(VOLUME).xml();
        let signal = &xml[xml.find("<signal").unwrap()..];
        let signal = &signal[..signal.find("</signal>").unwrap()];
        assert!(!signal.contains("direction"), "{signal}");
        assert!(!xml.contains("<!--"));
    }
}
