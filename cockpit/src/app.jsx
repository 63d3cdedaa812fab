// The page: a header, what the page says about itself (service state, access,
// messages), the running copies, then either the overview (pools and the volume list)
// or one volume's page, chosen by Cockpit's location (#/ or #/volume?pool=…&vid=…).

import React, { useState } from "react";
import { Page, PageSection, Stack, StackItem, Text, TextContent, Title } from "@patternfly/react-core";

import { AppContext, useApp, useEvent, useStore } from "./context.js";
import { DialogHost } from "./dialogs.jsx";
import { JobsPanel } from "./jobs.jsx";
import { MessageList } from "./message-list.jsx";
import { PoolList } from "./pools.jsx";
import { AccessBanner, LoadingBanner, ServiceStatus } from "./status.jsx";
import { NO_FILTER, VolumeList } from "./volumes.jsx";
import { VolumePage } from "./volume-page.jsx";

function useLocation() {
    useEvent(cockpit, "locationchanged");
    return cockpit.location;
}

function Header() {
    const store = useStore();
    return (
        <PageSection variant="light" className="qs-header">
            <TextContent>
                <Title headingLevel="h1">VM storage</Title>
                <Text component="small">
                    Pools and volumes of qubes-storaged{store.manager.Version ? ` ${store.manager.Version}` : ""}
                </Text>
            </TextContent>
        </PageSection>
    );
}

function Overview() {
    const [filter, setFilter] = useState(NO_FILTER);
    return (
        <>
            <StackItem><PoolList onFilter={pool => setFilter({ ...NO_FILTER, pool })} /></StackItem>
            <StackItem><VolumeList filter={filter} setFilter={setFilter} /></StackItem>
        </>
    );
}

function Content() {
    const { service } = useApp();
    const location = useLocation();
    useEvent(service, "state");
    if (service.state !== "ready")
        return <StackItem><ServiceStatus /></StackItem>;
    if (location.path[0] === "volume")
        return <StackItem><VolumePage poolName={location.options.pool} vid={location.options.vid} /></StackItem>;
    return <Overview />;
}

export function App({ app }) {
    return (
        <AppContext.Provider value={app}>
            <Page id="qubes-storage" className="no-masthead-sidebar">
                <Header />
                <PageSection>
                    <Stack hasGutter>
                        <StackItem><AccessBanner /></StackItem>
                        <StackItem><LoadingBanner /></StackItem>
                        <StackItem><MessageList /></StackItem>
                        <StackItem><JobsPanel /></StackItem>
                        <Content />
                    </Stack>
                </PageSection>
                <DialogHost />
            </Page>
        </AppContext.Provider>
    );
}
