// Builds one wasmgate JavaScript plugin into a component with ComponentizeJS (SpiderMonkey).
//
//   node build.mjs --wit WIT_DIR --world validator|initializer|audit-sink --out OUT.wasm SOURCE.js
//
// scripts/build-polyglot-plugins copies this file next to the pinned node_modules and runs it
// there; run it the same way by hand (see README.md). Every WASI feature of the engine is
// disabled, so the component imports nothing but wasmgate:plugin/host.
import { componentize } from '@bytecodealliance/componentize-js';
import { _setPreopens } from '@bytecodealliance/preview2-shim/filesystem';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';

const args = process.argv.slice(2);
const opt = {};
const rest = [];
for (let i = 0; i < args.length; i++) {
  if (args[i].startsWith('--')) opt[args[i].slice(2)] = args[++i];
  else rest.push(args[i]);
}
if (!opt.wit || !opt.world || !opt.out || rest.length !== 1) {
  console.error('usage: node build.mjs --wit WIT_DIR --world WORLD --out OUT.wasm SOURCE.js');
  process.exit(2);
}
// ComponentizeJS reads the WIT from inside its own wasm build tools, through jco's preview2-shim,
// which since 0.26 preopens no directory at all: grant the build (not the plugin) the file system.
// Without this: `ComponentError: reading file ...: No such file or directory (os error 44)` (the
// same missing preopen breaks `jco componentize`, whose nested preview2-shim we cannot reach).
_setPreopens({ '/': '/' });
const { component } = await componentize({
  sourcePath: resolve(rest[0]),
  witPath: resolve(opt.wit),
  worldName: opt.world,
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(opt.out, component);
