// Entry point of the Cockpit package: PatternFly's styles, the page's own, and the
// objects that live as long as the page (store, service connection, access rights,
// messages, dialogs), then React renders the App into #app.

import "@patternfly/react-core/dist/styles/base.css";

import React from "react";
import { createRoot } from "react-dom/client";

import { Access } from "./access.js";
import { App } from "./app.jsx";
// After the components, whose own styles come with their modules: the page's rules
// win over PatternFly's at equal specificity.
import "./app.css";
import { Dialogs } from "./dialog-slot.js";
import { reportJobOutcomes } from "./jobs.jsx";
import { Messages } from "./messages.js";
import { Service } from "./service.js";
import { Store } from "./store.js";

function main() {
    const store = new Store();
    const service = new Service(store);
    const access = new Access();
    const app = { store, service, access, messages: new Messages(), dialogs: new Dialogs() };
    // For the browser tests and for looking around in the console.
    window.qubesStorage = app;
    reportJobOutcomes(app);
    createRoot(document.getElementById("app")).render(<App app={app} />);
    service.start();
    access.start();
}

document.addEventListener("DOMContentLoaded", main);
