// Who may change what, known before a button is offered.
//
// - With administrative access in Cockpit (`cockpit.permission({ admin: true })`, true
//   for root and for a session that switched to administrative access) the page's
//   D-Bus channel runs as root, which the service always allows: every action.
// - Without it, the calls come from the session's own user and polkit decides each
//   one (the service passes polkit the caller's bus name and the details `pool` and
//   `vid`). The page asks polkit the same question beforehand, for the same process —
//   the bridge, whose pid, start time and uid cockpit's internal bus tells
//   (`/bridge`, `cockpit.Process`) — per action and pool, without interaction. Only
//   "yes" enables an action: "yes after authentication" needs an administrator's
//   password, which Cockpit asks for when the user turns on administrative access,
//   not per call. Rules that look at the vid can still refuse one volume; the page
//   then shows the service's sentence.
// - Asked again when polkit announces a change of its rules or actions
//   (`Authority.Changed`) and when the set of pools changes; never polled.

export const ACTIONS = {
    managePools: "org.qubes.storage.manage-pools",
    manageVolumes: "org.qubes.storage.manage-volumes",
    run: "org.qubes.storage.run-volumes",
    import: "org.qubes.storage.import",
    export: "org.qubes.storage.export",
};

const AUTHORITY_PATH = "/org/freedesktop/PolicyKit1/Authority";
const AUTHORITY = "org.freedesktop.PolicyKit1.Authority";
/** Without CheckAuthorizationFlags.AllowUserInteraction: never prompts. */
const NO_INTERACTION = 0;

export class Access extends EventTarget {
    constructor(store) {
        super();
        this.store = store;
        /** null while unknown. */
        this.admin = null;
        this.user = null;
        /** pool path → Set of action ids polkit allows there; "" for no pool. */
        this.grants = new Map();
        this.probed = false;
        this.poolKey = "";
        this.generation = 0;
    }

    start() {
        cockpit.user().then(user => {
            this.user = user;
            this.changed();
        });
        this.permission = cockpit.permission({ admin: true });
        this.permission.addEventListener("changed", () => this.update());
        this.store.subscribe(() => this.poolsMaybeChanged());
        this.update();
    }

    changed() {
        this.dispatchEvent(new Event("changed"));
    }

    update() {
        this.admin = this.permission.allowed;
        if (this.admin === false)
            this.probe();
        this.changed();
    }

    poolsMaybeChanged() {
        const key = [...this.store.pools.keys()].sort().join(" ");
        if (key === this.poolKey)
            return;
        this.poolKey = key;
        if (this.admin === false)
            this.probe();
    }

    /** May the user do `action` (an ACTIONS value) in the pool at `poolPath`? */
    allowed(action, poolPath = "") {
        if (this.admin)
            return true;
        return Boolean(this.grants.get(poolPath)?.has(action));
    }

    /** Known, and nothing at all may be changed. */
    get readOnly() {
        if (this.admin !== false || !this.probed)
            return false;
        return [...this.grants.values()].every(set => set.size === 0);
    }

    /** Known, not administrator, and some things may be changed. */
    get limited() {
        return this.admin === false && this.probed && !this.readOnly;
    }

    async probe() {
        const generation = ++this.generation;
        try {
            const polkit = this.polkitClient();
            const subject = await this.subject();
            const pools = ["", ...this.store.pools.keys()];
            const grants = new Map();
            for (const poolPath of pools) {
                const name = this.store.pools.get(poolPath)?.name;
                const details = name ? { pool: name } : {};
                const set = new Set();
                for (const action of Object.values(ACTIONS)) {
                    if (await this.check(polkit, subject, action, details))
                        set.add(action);
                }
                grants.set(poolPath, set);
            }
            if (generation !== this.generation)
                return;
            this.grants = grants;
        } catch (error) {
            // polkit unreachable: the service then allows only root, so nothing.
            console.warn("polkit check failed:", error);
            if (generation !== this.generation)
                return;
            this.grants = new Map();
        }
        this.probed = true;
        this.changed();
    }

    polkitClient() {
        if (!this.polkit) {
            this.polkit = cockpit.dbus("org.freedesktop.PolicyKit1", { bus: "system" });
            this.polkit.subscribe({ path: AUTHORITY_PATH, interface: AUTHORITY, member: "Changed" },
                                  () => { if (this.admin === false) this.probe() });
        }
        return this.polkit;
    }

    /** polkit's unix-process subject of the bridge process that makes the page's calls. */
    async subject() {
        if (!this.subjectValue) {
            const internal = cockpit.dbus(null, { bus: "internal" });
            const [props] = await internal.call("/bridge", "org.freedesktop.DBus.Properties", "GetAll",
                                                ["cockpit.Process"], { type: "s" });
            this.subjectValue = ["unix-process", {
                pid: { t: "u", v: props.Pid.v },
                "start-time": { t: "t", v: props.StartTime.v },
                uid: { t: "i", v: props.Uid.v },
            }];
        }
        return this.subjectValue;
    }

    async check(polkit, subject, action, details) {
        const [[authorized]] = await polkit.call(AUTHORITY_PATH, AUTHORITY, "CheckAuthorization",
                                                 [subject, action, details, NO_INTERACTION, ""],
                                                 { type: "(sa{sv})sa{ss}us" });
        return authorized;
    }
}
