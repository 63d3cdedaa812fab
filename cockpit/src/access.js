// Who may change what, known (as far as polkit tells) before a button is offered.
//
// - With administrative access in Cockpit (`cockpit.permission({ admin: true })`, true
//   for root and for a session that switched to administrative access) the page's
//   D-Bus channel runs as root, which the service always allows: every action.
// - Without it, the calls come from the session's own user and polkit decides each
//   one (the service passes polkit the caller's bus name and the details `pool` and
//   `vid`). The page asks polkit beforehand, for the same process — the bridge, whose
//   pid, start time and uid cockpit's internal bus tells (`/bridge`,
//   `cockpit.Process`) — whether each action is allowed, without interaction. polkit
//   answers an unprivileged caller only without details, so this is the user's right
//   in general: "yes" enables the action everywhere; "yes after an administrator
//   authenticates" is what Cockpit's administrative access is for. A rule that allows
//   the user some pools or volumes only (it looks at `pool` or `vid`) cannot be seen
//   in advance: the read-only page offers to try the actions anyway, and the service
//   then says for each whether it is allowed — its refusal is shown as it words it.
// - Asked again when polkit announces a change of its rules or actions
//   (`Authority.Changed`); never polled.

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
    constructor() {
        super();
        /** null while unknown. */
        this.admin = null;
        this.user = null;
        /** The actions polkit allows the user without details. */
        this.grants = new Set();
        this.probed = false;
        /** The user chose to try actions polkit did not promise. */
        this.trying = false;
        this.generation = 0;
    }

    start() {
        cockpit.user().then(user => {
            this.user = user;
            this.changed();
        });
        this.permission = cockpit.permission({ admin: true });
        this.permission.addEventListener("changed", () => this.update());
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

    /** Offer every action; the service decides each (see the module comment). */
    tryAnyway(on = true) {
        this.trying = on;
        this.changed();
    }

    /** Is `action` (an ACTIONS value) offered? */
    allowed(action) {
        return Boolean(this.admin || this.trying || this.grants.has(action));
    }

    /** Known: not administrator, polkit promises nothing, and not trying. */
    get readOnly() {
        return this.admin === false && this.probed && this.grants.size === 0 && !this.trying;
    }

    /** Known: not administrator, and some actions are promised or tried. */
    get limited() {
        return this.admin === false && this.probed && !this.readOnly;
    }

    async probe() {
        const generation = ++this.generation;
        const grants = new Set();
        try {
            const polkit = this.polkitClient();
            const subject = await this.subject();
            for (const action of Object.values(ACTIONS)) {
                if (await this.check(polkit, subject, action))
                    grants.add(action);
            }
        } catch (error) {
            // polkit unreachable: the service then allows only root, so nothing.
            console.warn("polkit check failed:", error);
        }
        if (generation !== this.generation)
            return;
        this.grants = grants;
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

    async check(polkit, subject, action) {
        const [[authorized]] = await polkit.call(AUTHORITY_PATH, AUTHORITY, "CheckAuthorization",
                                                 [subject, action, {}, NO_INTERACTION, ""],
                                                 { type: "(sa{sv})sa{ss}us" });
        return authorized;
    }
}
