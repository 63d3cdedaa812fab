// One dialog at a time: `dialogs.show(close => <SomeDialog close={close} />)` opens it,
// `close()` ends it — that dialog only: an action that finishes after another dialog
// was opened does not close the newer one. Plain JavaScript, so its unit test runs
// without a browser.

export class Dialogs extends EventTarget {
    constructor() {
        super();
        this.current = null;
    }

    show(render) {
        this.current = { render };
        this.dispatchEvent(new Event("changed"));
    }

    /** Closes `entry` if it is still the dialog shown. */
    close(entry) {
        if (this.current !== entry)
            return;
        this.current = null;
        this.dispatchEvent(new Event("changed"));
    }
}
