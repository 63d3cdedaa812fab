// The kebab menu at the end of a pool's or volume's row: PatternFly's ActionsColumn
// with a toggle named for its object ("Actions of appvms/work/private"), not the
// same "Kebab toggle" on every row, so a screen reader (and a test) can tell them
// apart. An item that does not make sense now stays in the menu, aria-disabled, with
// the reason as its tooltip.

import React from "react";
import { MenuToggle } from "@patternfly/react-core";
import { EllipsisVIcon } from "@patternfly/react-icons/dist/esm/icons/ellipsis-v-icon";
import { ActionsColumn } from "@patternfly/react-table";

/** `items`: [{title, onClick, why}] — `why`, when set, disables the item and says why. */
export function RowMenu({ name, items }) {
    const entries = items.map(({ title, onClick, why }) => (why
        ? { title, onClick: () => {}, isAriaDisabled: true, tooltipProps: { content: why, position: "left" } }
        : { title, onClick }));
    const toggle = ({ onToggle, isOpen, isDisabled, toggleRef }) => (
        <MenuToggle aria-label={`Actions of ${name}`} ref={toggleRef} onClick={onToggle} isExpanded={isOpen}
                    isDisabled={isDisabled} variant="plain" className="qs-row-menu">
            <EllipsisVIcon />
        </MenuToggle>
    );
    return <ActionsColumn items={entries} actionsToggle={toggle} />;
}
