// The page's shared objects (store, service connection, access rights, dialogs,
// messages) as one React context, and hooks that re-render a component when the part
// it reads changes.

import { createContext, useContext, useEffect, useState, useSyncExternalStore } from "react";

export const AppContext = createContext(null);

export function useApp() {
    return useContext(AppContext);
}

/** Re-renders on every change of the store; returns the store. */
export function useStore() {
    const { store } = useApp();
    useSyncExternalStore(listener => store.subscribe(listener), () => store.version);
    return store;
}

/** Re-renders when the volumes (or pools) change, not for job progress. */
export function useVolumesVersion() {
    const { store } = useApp();
    return useSyncExternalStore(listener => store.subscribe(listener), () => store.volumesVersion);
}

/** Re-renders when `target` (an EventTarget) fires `type`. */
export function useEvent(target, type) {
    const [, setCount] = useState(0);
    useEffect(() => {
        const bump = () => setCount(n => n + 1);
        target.addEventListener(type, bump);
        return () => target.removeEventListener(type, bump);
    }, [target, type]);
}

export function useAccess() {
    const { access } = useApp();
    useEvent(access, "changed");
    return access;
}
