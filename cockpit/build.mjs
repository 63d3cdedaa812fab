// Builds the Cockpit package into dist/: manifest.json and index.html copied from
// src/, index.js and index.css bundled by esbuild from src/index.jsx (React and
// PatternFly 5 from node_modules). Cockpit's content security policy forbids inline
// scripts and styles, so everything is a file of its own.
//
// Fonts: PatternFly's stylesheet names its Red Hat fonts; Cockpit serves the same
// files under /cockpit/static/fonts/, so a font that Cockpit ships is referenced there
// (the package stays four files) and any other (variable fonts, the pficon font,
// which the SVG icons make unnecessary) is left out.
//
//   node build.mjs            minified production build
//   node build.mjs --watch    rebuild on change, unminified

import { build, context } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(root, "dist");
const watch = process.argv.includes("--watch");

/** Fonts Cockpit serves from /cockpit/static/fonts (cockpit-ws's own static files). */
const COCKPIT_FONT = /^RedHat(Display|Text|Mono)-(Regular|Italic|Medium|MediumItalic|Bold|BoldItalic)\.woff2$/;

const cockpitFonts = {
    name: "cockpit-fonts",
    setup(b) {
        b.onResolve({ filter: /\.(woff2?|ttf|eot|otf)$/ }, args => {
            const name = path.basename(args.path);
            if (COCKPIT_FONT.test(name))
                return { path: `../../static/fonts/${name}`, external: true };
            // An empty font: no request, the browser moves on to the next face.
            return { path: "data:font/woff2;base64,", external: true };
        });
    },
};

const options = {
    entryPoints: { index: path.join(root, "src/index.jsx") },
    bundle: true,
    outdir: dist,
    format: "iife",
    target: ["es2020"],
    jsx: "automatic",
    loader: { ".js": "jsx", ".svg": "dataurl", ".png": "dataurl" },
    minify: !watch,
    sourcemap: watch ? "inline" : false,
    // The bundled libraries' license notes stay in the files that carry their code.
    legalComments: "eof",
    define: { "process.env.NODE_ENV": watch ? '"development"' : '"production"' },
    plugins: [cockpitFonts],
    logLevel: "warning",
};

async function copyStatic() {
    for (const name of ["manifest.json", "index.html"])
        await copyFile(path.join(root, "src", name), path.join(dist, name));
}

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
await copyStatic();
if (watch) {
    const ctx = await context(options);
    await ctx.watch();
    console.log("watching src/ …");
} else {
    await build(options);
    console.log(`built ${path.relative(process.cwd(), dist)}/`);
}
