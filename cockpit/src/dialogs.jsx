// The page's dialogs: `DialogHost` renders the one dialog shown (`dialog-slot.js`);
// `ActionDialog` is their common shape: a PatternFly modal whose primary button runs
// the action, stays open while it runs, and shows the service's sentence inside the
// dialog when it fails — until the user changes a field (the sentence was about the
// values sent, not the ones shown). `FieldHelp` and `useTouched` put a field's own
// sentence under it once the user typed in it; `describedBy` links the field to that
// text (aria-describedby), so a screen reader reads it with the field.

import React, { useState } from "react";
import { Alert, Button, Form, FormHelperText, HelperText, HelperTextItem, Modal } from "@patternfly/react-core";

import { useApp, useEvent } from "./context.js";
import { describe } from "./service.js";

export function DialogHost() {
    const { dialogs } = useApp();
    useEvent(dialogs, "changed");
    const entry = dialogs.current;
    return entry ? entry.render(() => dialogs.close(entry)) : null;
}

/**
 * A modal with a form. `onApply` returns a promise; while it runs the buttons are
 * disabled; its failure is shown in the dialog. `applyLabel` names the primary
 * button; `error` is a validation sentence that disables it.
 */
export function ActionDialog({ id, title, applyLabel, applyVariant = "primary", close, onApply, error, children, variant = "small" }) {
    const [busy, setBusy] = useState(false);
    const [failure, setFailure] = useState(null);

    const apply = event => {
        event?.preventDefault();
        if (error || busy)
            return;
        setBusy(true);
        setFailure(null);
        Promise.resolve()
                .then(onApply)
                .then(() => close())
                .catch(e => {
                    setFailure(describe(e));
                    setBusy(false);
                });
    };

    return (
        // While the action runs the dialog stays (Escape and × do nothing): it is where
        // its outcome is shown, and closing it would not stop the call anyway.
        <Modal id={id} isOpen variant={variant} title={title} onClose={() => busy || close()}
               actions={[
                   <Button key="apply" variant={applyVariant} onClick={apply}
                           isDisabled={Boolean(error) || busy} isLoading={busy}>
                       {applyLabel}
                   </Button>,
                   <Button key="cancel" variant="link" onClick={close} isDisabled={busy}>Cancel</Button>,
               ]}>
            {failure && <Alert isInline variant="danger" title={failure} className="qs-dialog-error" />}
            {/* React's change events bubble: any field that changes ends the old failure. */}
            <Form onSubmit={apply} isHorizontal={false} onChange={() => failure && setFailure(null)}>
                {children}
            </Form>
        </Modal>
    );
}

/** The id of the text under the field `field` (its input's id). */
function helpId(field) {
    return `${field}-help`;
}

/**
 * The input's aria-describedby for the text under it (`FieldHelp` with the same
 * `error` and text), or undefined while there is none.
 */
export function describedBy(field, error, text) {
    return error || text ? helpId(field) : undefined;
}

/**
 * The text under the field `field`: its error when there is one, else `children` (if
 * any); its id is the one `describedBy` gives the field.
 */
export function FieldHelp({ field, error, children }) {
    if (!error && !children)
        return null;
    return (
        <FormHelperText id={helpId(field)}>
            <HelperText>
                <HelperTextItem variant={error ? "error" : "default"} className={error ? "qs-field-error" : undefined}>
                    {error || children}
                </HelperTextItem>
            </HelperText>
        </FormHelperText>
    );
}

/** Which fields the user changed: [touched, touch(field)]. */
export function useTouched() {
    const [touched, setTouched] = useState({});
    const touch = field => setTouched(t => (t[field] ? t : { ...t, [field]: true }));
    return [touched, touch];
}
