// The kebab menu at the end of a pool's or volume's row: PatternFly's ActionsColumn
// with a toggle named for its object ("Actions of appvms/work/private"), not the
// same "Kebab toggle" on every row, so a screen reader (and a test) can tell them
// apart. An item that does not make sense now stays in the menu, aria-disabled, with
// the reason as its description: a line under its title, inside the menu item, so it
// is seen and read out however the menu is reached. (Not a tooltip: ActionsColumn
// puts an item's tooltip around its `li role="none"`, which only a pointer reaches —
// keyboard focus lands on the button inside and its events do not bubble to the
// tooltip — and aria-describedby would land on the `li`.)

import React from "react";
import { MenuToggle } from "@patternfly/react-core";
import { EllipsisVIcon } from "@patternfly/react-icons/dist/esm/icons/ellipsis-v-icon";
import { ActionsColumn } from "@patternfly/react-table";

/** ActionsColumn's items for `items` ([{title, onClick, why}]): `why`, when set, disables the item and says why. */
export function menuEntries(items) {
    return items.map(({ title, onClick, why }) => (why
        ? { title, onClick: () => {}, isAriaDisabled: true, description: why }
        : { title, onClick }));
}

/** `items`: [{title, onClick, why}] (see `menuEntries`). */
export function RowMenu({ name, items }) {
    const toggle = ({ onToggle, isOpen, isDisabled, toggleRef }) => (
        <MenuToggle aria-label={`Actions of ${name}`} ref={toggleRef} onClick={onToggle} isExpanded={isOpen}
                    isDisabled={isDisabled} variant="plain" className="qs-row-menu">
            <EllipsisVIcon />
        </MenuToggle>
    );
    return <ActionsColumn items={menuEntries(items)} actionsToggle={toggle} />;
}
