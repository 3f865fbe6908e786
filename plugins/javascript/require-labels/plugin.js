// require-labels: a wasmgate validator (world `validator` of wasmgate:plugin@0.1.0).
//
// Behaves exactly like plugins/rust/require-labels (see its README): denies an object whose
// `metadata.labels` lacks any key listed in the settings `{"labels": ["team", "owner"]}` (a
// label counts as present when its value is a string), with 403 Forbidden and
// `missing required labels: team, owner` (the missing keys, in settings order). No settings,
// `{}` or an empty list require nothing. DELETE (no object) is allowed. Invalid settings
// (including an unknown key) and an unparseable object are plugin failures: throw a string,
// which becomes `err`.
import { settings } from 'wasmgate:plugin/host@0.1.0';

const NO_REMARKS = { warnings: [], auditAnnotations: [] };
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const has = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key);

function requiredLabels() {
  const text = settings();
  if (text.trim() === '') return [];
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw `invalid settings: ${e.message}`;
  }
  if (parsed === null) return [];
  if (!isObject(parsed)) throw 'invalid settings: expected an object';
  for (const key of Object.keys(parsed)) {
    if (key !== 'labels') throw `invalid settings: unknown field \`${key}\`, expected \`labels\``;
  }
  const labels = has(parsed, 'labels') ? parsed.labels : [];
  if (!Array.isArray(labels) || !labels.every((l) => typeof l === 'string')) {
    throw 'invalid settings: `labels` must be a list of strings';
  }
  return labels;
}

export function validate(request) {
  const required = requiredLabels();
  // DELETE: nothing to label. (ComponentizeJS passes `undefined` for `none`, QuickJS `null`.)
  if (request.object == null) return { decision: { tag: 'allowed' }, remarks: NO_REMARKS };
  let obj;
  try {
    obj = JSON.parse(request.object);
  } catch (e) {
    throw `the request's object is not JSON: ${e.message}`;
  }
  const metadata = isObject(obj) && has(obj, 'metadata') ? obj.metadata : undefined;
  const labels = isObject(metadata) && has(metadata, 'labels') && isObject(metadata.labels) ? metadata.labels : {};
  const missing = required.filter((key) => !(has(labels, key) && typeof labels[key] === 'string'));
  if (missing.length === 0) return { decision: { tag: 'allowed' }, remarks: NO_REMARKS };
  return {
    decision: {
      tag: 'denied',
      val: { code: 403, reason: 'Forbidden', message: `missing required labels: ${missing.join(', ')}` },
    },
    remarks: NO_REMARKS,
  };
}
