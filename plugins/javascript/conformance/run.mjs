// Conformance harness for wasmgate plugins written in any language.
//
// It transpiles each component with jco (so Node's WebAssembly engine runs it), supplies the
// `wasmgate:plugin/host@0.2.0` import (settings per case, log collected) and the `cluster` one
// (nothing granted: every lookup is `denied`), and checks the verdicts in cases.json and the
// answers of `validate-settings` (the `<plugin>-settings` lists). It does not replace the wasmgate host; it lets plugins be tested
// before (and without) it. WASI imports, if a component has any, come from jco's preview2-shim.
//
//   node --experimental-wasm-extended-const run.mjs --jco PATH/TO/jco --work DIR [--cases cases.json] \
//       [--settings-only] dist/<lang>-<plugin>.wasm ...
//
// --settings-only runs only the validate-settings cases (the Rust plugins pass those exactly;
// on a few request cases they answer err where cases.json expects a verdict, see its `about`).
//
// (Node 20 needs that flag for the extended-const instructions of some components; the work
// directory must sit where node_modules resolves, for WASI imports: see the build script.)
//
// The plugin's behaviour is chosen by the file name's suffix: `require-labels` or
// `always-pull-images`. Exit status 0 when every case passes.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

const args = process.argv.slice(2);
let settingsOnly = false;
let jco = 'jco', work = null, casesPath = join(dirname(fileURLToPath(import.meta.url)), 'cases.json');
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--jco') jco = args[++i];
  else if (args[i] === '--work') work = resolve(args[++i]);
  else if (args[i] === '--cases') casesPath = args[++i];
  else if (args[i] === '--settings-only') settingsOnly = true;
  else files.push(resolve(args[i]));
}
if (!work || files.length === 0) {
  console.error('usage: node run.mjs --jco JCO --work DIR [--cases FILE] COMPONENT.wasm...');
  process.exit(2);
}
const cases = JSON.parse(readFileSync(casesPath, 'utf8'));

const HOST_JS = `
export function settings() { return globalThis.__wasmgate.settings; }
export function log(level, message) { globalThis.__wasmgate.logs.push([level, message]); }
`;
globalThis.__wasmgate = { settings: '{}', logs: [] };

// Nothing is granted to the plugins here; jco turns a thrown { payload } into the `err` case.
const CLUSTER_JS = `
const denied = () => { const e = new Error('denied'); e.payload = { tag: 'denied', val: 'the conformance harness grants no cluster reads' }; throw e; };
export function get() { denied(); }
export { get as list };
`;

function request(c) {
  const kinds = { Deployment: 'apps', StatefulSet: 'apps', DaemonSet: 'apps', ReplicaSet: 'apps', Job: 'batch', CronJob: 'batch' };
  const fromObject = c.object !== null && typeof c.object === 'object' && !Array.isArray(c.object) ? c.object.kind : undefined;
  const kind = c.kind ?? fromObject ?? 'Pod';
  const group = c.group ?? kinds[kind] ?? '';
  const resource = kind.toLowerCase() + 's';
  const text = (v) => (v === null || v === undefined ? undefined : JSON.stringify(v));
  return {
    uid: '705ab4f5-6393-11e8-b7cc-42010a800002',
    kind: { group, version: 'v1', kind },
    resource: { group, version: 'v1', resource },
    subResource: '',
    requestKind: c.requestKind,
    requestResource: undefined,
    requestSubResource: '',
    name: 'example',
    namespace: 'default',
    operation: { tag: c.operation ?? 'create' },
    userInfo: { username: 'admin', uid: '', groups: ['system:authenticated'], extra: [] },
    object: 'objectText' in c ? c.objectText : text(c.object),
    oldObject: text(c.oldObject),
    dryRun: false,
    options: undefined,
  };
}

// RFC 6902 `add`, `replace` and `remove` (all an initializer here may answer) on a copy of `doc`;
// throws where the host would refuse the patch (another op, a path that does not resolve).
function applyPatch(doc, operations) {
  if (!Array.isArray(operations)) throw new Error('not an array of operations');
  for (const { op, path, value } of operations) {
    if (!['add', 'replace', 'remove'].includes(op)) throw new Error(`op ${op} is not expected here`);
    const tokens = path.split('/').slice(1).map((t) => t.replaceAll('~1', '/').replaceAll('~0', '~'));
    if (tokens.length === 0) throw new Error('the whole document is not patched here');
    const key = tokens.pop();
    let parent = doc;
    for (const t of tokens) {
      parent = parent !== null && typeof parent === 'object' && Object.hasOwn(parent, t) ? parent[t] : undefined;
      if (parent === undefined) throw new Error(`${path} does not resolve`);
    }
    if (Array.isArray(parent)) {
      const index = key === '-' ? parent.length : Number(key);
      if (!Number.isInteger(index) || index < 0 || index > parent.length - (op === 'add' ? 0 : 1)) throw new Error(`${path}: no such index`);
      if (op === 'add') parent.splice(index, 0, value);
      else if (op === 'replace') parent[index] = value;
      else parent.splice(index, 1);
    } else if (parent !== null && typeof parent === 'object') {
      if (op !== 'add' && !Object.hasOwn(parent, key)) throw new Error(`${path}: no such member`);
      if (op === 'remove') delete parent[key];
      else parent[key] = value;
    } else throw new Error(`${path}: the parent is not a container`);
  }
  return doc;
}

function outcome(plugin, fn, req) {
  try {
    const r = fn(req);
    const remarks = r.remarks;
    const noRemarks = remarks.warnings.length === 0 && remarks.auditAnnotations.length === 0;
    if (plugin === 'require-labels') {
      if (r.decision.tag === 'allowed') return { allowed: true, noRemarks };
      return { denied: r.decision.val, noRemarks };
    }
    if (r.change.tag === 'unchanged') return { unchanged: true, noRemarks };
    if (r.change.tag === 'denied') return { denied: r.change.val, noRemarks };
    let value;
    try { value = JSON.parse(r.change.val); } catch (e) { return { badJson: r.change.val }; }
    if (r.change.tag === 'replaced') return { replaced: value, noRemarks };
    // `patched`: the object the operations make of the request's, as the host would apply them.
    try { return { patched: applyPatch(JSON.parse(req.object), value), noRemarks }; } catch (e) { return { badPatch: String(e), ops: value }; }
  } catch (e) {
    if (e && e.constructor && e.constructor.name === 'ComponentError') return { err: true, message: String(e.payload) };
    return { trap: String(e && e.stack || e) };
  }
}

let passed = 0, failed = 0;
for (const file of files) {
  const name = basename(file, '.wasm');
  const plugin = ['require-labels', 'always-pull-images'].find((p) => name.endsWith(p));
  if (!plugin) { console.error(`${name}: unknown plugin`); failed++; continue; }
  const out = join(work, name);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'host.js'), HOST_JS);
  writeFileSync(join(out, 'cluster.js'), CLUSTER_JS);
  execFileSync(jco, ['transpile', file, '-o', out, '--name', 'component', '--no-typescript', '--quiet',
    '--map', 'wasmgate:plugin/host@0.2.0=./host.js', '--map', 'wasmgate:plugin/host=./host.js',
    '--map', 'wasmgate:plugin/cluster@0.2.0=./cluster.js', '--map', 'wasmgate:plugin/cluster=./cluster.js'], { stdio: 'inherit' });
  const mod = await import(pathToFileURL(join(out, 'component.js')).href);
  const fn = plugin === 'require-labels' ? mod.validate : mod.initialize;
  for (const c of settingsOnly ? [] : cases[plugin]) {
    globalThis.__wasmgate.settings = 'settingsText' in c ? c.settingsText : JSON.stringify(c.settings ?? {});
    const got = outcome(plugin, fn, request(c));
    const exp = c.expect;
    let ok;
    if (exp.err) ok = got.err === true;
    else ok = got.noRemarks === true && isDeepStrictEqual({ ...got, noRemarks: undefined }, { ...exp, noRemarks: undefined });
    if (ok) passed++;
    else {
      failed++;
      console.log(`FAIL ${name}: ${c.name}\n  expected ${JSON.stringify(exp)}\n  got      ${JSON.stringify(got)}`);
    }
  }
  // validate-settings: `ok` returns, `err(why)` throws a ComponentError whose payload is `why`.
  for (const c of cases[`${plugin}-settings`]) {
    let got;
    try {
      mod.validateSettings(c.settingsText);
      got = { ok: true };
    } catch (e) {
      got = e && e.constructor && e.constructor.name === 'ComponentError' ? { refused: String(e.payload) } : { trap: String(e && e.stack || e) };
    }
    if (isDeepStrictEqual(got, c.expect)) passed++;
    else {
      failed++;
      console.log(`FAIL ${name}: validate-settings ${c.settingsText}\n  expected ${JSON.stringify(c.expect)}\n  got      ${JSON.stringify(got)}`);
    }
  }
  console.log(`${name}: ${settingsOnly ? 0 : cases[plugin].length} cases and ${cases[`${plugin}-settings`].length} settings cases run`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
