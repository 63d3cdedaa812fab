// What the page says when a run of the CLI it made (an import, an export) ends. The
// CLI's message is written for a terminal: its "qubes-storage: " prefix and its advice
// about --no-interaction (the page always passes it; a page has no terminal to ask a
// password on) are dropped, the service's reason is kept. An export's download cannot
// tell how it ended — cockpit finishes it whatever the process's exit status (see
// transfer.jsx) — so the export's shell leaves a status file: the CLI's exit status on
// its first line, its message after it. And the name an export's download gets.

const PREFIX = "qubes-storage: ";
const TERMINAL_ADVICE = / ?\(run it again without --no-interaction to authenticate\)/g;

/** The CLI's message as the page shows it. */
export function cliMessage(text) {
    return text
            .split("\n")
            .map(line => (line.startsWith(PREFIX) ? line.slice(PREFIX.length) : line))
            .join("\n")
            .replace(TERMINAL_ADVICE, "")
            .trim();
}

/** How an export ended, from its status file: `{ ok, text }`. */
export function exportOutcome(status) {
    const [first, ...rest] = status.split("\n");
    const code = Number(first.trim());
    const text = cliMessage(rest.join("\n"));
    if (first.trim() !== "" && code === 0)
        return { ok: true, text };
    if (text)
        return { ok: false, text };
    if (code > 128)
        return { ok: false, text: `qubes-storage was stopped by signal ${code - 128} (the download was cancelled?).` };
    return { ok: false, text: `qubes-storage exited with status ${first.trim() || "unknown"}.` };
}

/** The name of an export's status directory, made by `mktemp -d` in the temp dir. */
export const EXPORT_DIR_PATTERN = "qubes-storage-export.XXXXXXXXXX";

/** How old an export's status directory must be to count as left behind (a day). */
export const STALE_EXPORT_MINUTES = 24 * 60;

/**
 * The command that deletes the status directories of earlier exports whose page went
 * away before their outcome was read (closed, reloaded, its download refused): this
 * user's, older than [STALE_EXPORT_MINUTES] — no export takes that long, so none
 * still running loses its directory.
 */
export function staleExportCleanup() {
    const script = 'find "${TMPDIR:-/tmp}" -maxdepth 1 -type d -name "$1" -user "$(id -u)" ' +
        '-mmin +"$2" -exec rm -rf -- {} +';
    const pattern = EXPORT_DIR_PATTERN.replace(/X+$/, "*");
    return ["/bin/sh", "-c", script, "sh", pattern, String(STALE_EXPORT_MINUTES)];
}

/**
 * The file an export downloads as: `<pool>+<vid with "+" for "/">.img` — the pool
 * too, since the same vid may live in several pools (a clone keeps its vid in another
 * pool), and the whole vid, since `appvms/fedora/root` and `vm-templates/fedora/root`
 * may share one; `+`, which no pool or volume name holds, so that no two volumes get
 * one name (with `-`, `appvms/foo-bar/root` and `appvms/foo/bar-root` did). Without a
 * pool name (not known yet), the vid alone.
 */
export function exportFilename(poolName, vid) {
    const file = vid.replaceAll("/", "+");
    return poolName ? `${poolName}+${file}.img` : `${file}.img`;
}
