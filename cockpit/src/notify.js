// What the service says — the ObjectManager's listing, its InterfacesAdded and
// InterfacesRemoved, PropertiesChanged, a GetAll — as the store's notify messages
// ({path: {interface: {property: value} | null}}). Cockpit's channel gives a variant as
// {t, v}; the store takes values, so each property's outer variant is taken off here
// (a nested one, as in UsageDetails, stays: the store reads those itself). A message
// made from InterfacesAdded carries `ANNOUNCED` (a symbol key, so no path): what an
// object says in its first announcement (a Job's Cancelable) means more than what a
// listing says of an object that was there before (job-labels.js).

/** Set (true) on the notify messages of InterfacesAdded. */
export const ANNOUNCED = Symbol("InterfacesAdded");

/** A property's value without its variant. */
export function value(variant) {
    return variant && typeof variant === "object" && "t" in variant && "v" in variant ? variant.v : variant;
}

/** {property: variant} → {property: value}. */
export function values(props) {
    const out = {};
    for (const [name, variant] of Object.entries(props || {}))
        out[name] = value(variant);
    return out;
}

/** {interface: {property: variant}} → {interface: {property: value}}. */
function interfaces(ifaces) {
    const out = {};
    for (const [iface, props] of Object.entries(ifaces || {}))
        out[iface] = values(props);
    return out;
}

/** The reply of GetManagedObjects (a{oa{sa{sv}}}). */
export function fromManagedObjects(objects) {
    const out = {};
    for (const [path, ifaces] of Object.entries(objects || {}))
        out[path] = interfaces(ifaces);
    return out;
}

/** InterfacesAdded (o, a{sa{sv}}). */
export function fromInterfacesAdded([path, ifaces]) {
    return { [path]: interfaces(ifaces), [ANNOUNCED]: true };
}

/** InterfacesRemoved (o, as). */
export function fromInterfacesRemoved([path, names]) {
    return { [path]: Object.fromEntries(names.map(iface => [iface, null])) };
}

/**
 * PropertiesChanged (s, a{sv}, as) of the object at `path`. Invalidated names carry no
 * value: the service invalidates none of the values the store keeps (the two it never
 * announces are marked stale by the store on any change of their object).
 */
export function fromPropertiesChanged(path, [iface, changed]) {
    return { [path]: { [iface]: values(changed) } };
}

/** GetAll's reply (a{sv}) for `iface` of the object at `path`. */
export function fromGetAll(path, iface, [props]) {
    return { [path]: { [iface]: values(props) } };
}

/** The child nodes an Introspect's XML names (`<node name="…"/>`). */
export function childNodes(xml) {
    const names = [];
    for (const match of String(xml).matchAll(/<node\s+name="([^"]+)"\s*\/>/g))
        names.push(match[1]);
    return names;
}
