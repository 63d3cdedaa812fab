// Renders the page's React components to HTML in a test (no browser): esbuild — the
// page's own bundler (build.mjs) — bundles the named modules of src/ with React and
// PatternFly into one ES module, which the test imports. Server rendering runs no
// effects and opens no menus or modals: it shows what a component draws first.

import { build } from "esbuild";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");

/**
 * The exports of `modules` together — each a path below src/, or `{ from, names }`
 * for some exports of a package — with `React`, `AppContext` and `html(element)`
 * (react-dom's renderToStaticMarkup).
 */
export async function loadPage(...modules) {
    const line = m => (typeof m === "string"
        ? `export * from ${JSON.stringify(`./src/${m}`)};`
        : `export { ${m.names.join(", ")} } from ${JSON.stringify(m.from)};`);
    const contents = [
        ...modules.map(line),
        'export { default as React } from "react";',
        'export { AppContext } from "./src/context.js";',
        'export { renderToStaticMarkup as html } from "react-dom/server.browser";',
    ].join("\n");
    const result = await build({
        stdin: { contents, resolveDir: ROOT, loader: "js" },
        bundle: true,
        write: false,
        format: "esm",
        platform: "neutral",
        mainFields: ["module", "main"],
        jsx: "automatic",
        loader: { ".js": "jsx", ".css": "empty", ".svg": "dataurl", ".png": "dataurl" },
        define: { "process.env.NODE_ENV": '"production"' },
        logLevel: "silent",
    });
    const dir = await mkdtemp(path.join(tmpdir(), "qs-render-"));
    const file = path.join(dir, "page.mjs");
    await writeFile(file, result.outputFiles[0].text);
    try {
        return await import(pathToFileURL(file));
    } finally {
        await rm(dir, { recursive: true, force: true });
    }
}
