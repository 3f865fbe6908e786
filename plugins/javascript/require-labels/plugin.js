// require-labels: a wasmgate validator (world `validator` of wasmgate:plugin@0.2.0).
//
// Behaves exactly like plugins/rust/require-labels (see its README): denies an object whose
// `metadata.labels` lacks any key listed in the settings `{"labels": ["team", "owner"]}` (a
// label counts as present when its value is a string), with 403 Forbidden and
// `missing required labels: team, owner` (the missing keys, in settings order). An empty list
// requires nothing. DELETE (no object) is allowed. An unparseable object is a plugin failure:
// throw a string, which becomes `err`.
//
// Settings are checked when the policy is loaded (`validateSettings`): `labels` is required and
// must be a list of strings, and any other key is refused, with the Rust plugin's messages
// (serde's wording), e.g. "invalid settings: unknown field `label`, expected `labels`".
import { settings } from 'wasmgate:plugin/host@0.2.0';

const NO_REMARKS = { warnings: [], auditAnnotations: [] };
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const has = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key);

// A string as Rust's `{:?}` shows it (serde and the label checks quote strings that way); of the
// characters Rust escapes, only the control characters are (a rarer one, such as a zero-width
// space, is shown as itself).
function rustString(s) {
  let out = '"';
  for (const c of s) {
    const code = c.codePointAt(0);
    if (c === '"' || c === '\\') out += '\\' + c;
    else if (c === '\n') out += '\\n';
    else if (c === '\r') out += '\\r';
    else if (c === '\t') out += '\\t';
    else if (code < 0x20 || (code >= 0x7f && code < 0xa0)) out += `\\u{${code.toString(16)}}`;
    else out += c;
  }
  return out + '"';
}

// A number as serde_json prints an unexpected float: the shortest digits that read back, in
// fixed notation for decimal exponents -5..=15 (with `.0` when whole), else `1.5e+20`, `1e-7`.
function rustFloat(x) {
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mantissa, exp] = Math.abs(x).toExponential().split('e');
  const sig = mantissa.replace('.', '');
  const e = Number(exp);
  const sign = x < 0 ? '-' : '';
  if (e >= -5 && e <= 15) {
    if (e >= 0) return `${sign}${sig.slice(0, e + 1).padEnd(e + 1, '0')}.${sig.slice(e + 1) || '0'}`;
    return `${sign}0.${'0'.repeat(-e - 1)}${sig}`;
  }
  return `${sign}${sig[0]}${sig.length > 1 ? '.' + sig.slice(1) : ''}e${e >= 0 ? '+' : '-'}${Math.abs(e)}`;
}

// How serde_json names a JSON value it did not expect. JSON.parse keeps no difference between
// `1` and `1.0`: a whole number within 2^53 is named an integer.
function unexpected(v) {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return `boolean \`${v}\``;
  if (typeof v === 'number') {
    return Number.isSafeInteger(v) && !Object.is(v, -0) ? `integer \`${v}\`` : `floating point \`${rustFloat(v)}\``;
  }
  if (typeof v === 'string') return `string ${rustString(v)}`;
  return Array.isArray(v) ? 'sequence' : 'map';
}

// The UTF-8 length of a string (the Rust plugin counts bytes).
function utf8Length(s) {
  let n = 0;
  for (const c of s) {
    const code = c.codePointAt(0);
    n += code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
  }
  return n;
}

// Why `key` is not a label key the API server accepts (an optional lowercase DNS subdomain
// prefix and `/`, then a name of 1-63 characters of `[A-Za-z0-9._-]`, alphanumeric at both
// ends), or null.
function labelKeyProblem(key) {
  const slash = key.indexOf('/');
  const prefix = slash < 0 ? null : key.slice(0, slash);
  const name = slash < 0 ? key : key.slice(slash + 1);
  const alnum = (c) => /^[A-Za-z0-9]$/.test(c);
  const alnumEnds = (s) => s.length > 0 && alnum(s[0]) && alnum(s[s.length - 1]);
  if (name.length === 0 || utf8Length(name) > 63) return 'is not a label key: the name must be 1-63 characters';
  if (!alnumEnds(name) || !/^[A-Za-z0-9._-]*$/.test(name)) {
    return "is not a label key: the name must be alphanumerics, '-', '_' or '.', alphanumeric at both ends";
  }
  if (prefix !== null) {
    const dns = prefix !== '' && utf8Length(prefix) <= 253 &&
      prefix.split('.').every((part) => part !== '' && part.length <= 63 && alnumEnds(part) && /^[a-z0-9-]*$/.test(part));
    if (!dns) return 'is not a label key: the prefix must be a lowercase DNS subdomain';
  }
  return null;
}

// `labels` (a list of strings) at `path`, as serde reads a `Vec<String>`.
function labelsAt(value, path) {
  if (!Array.isArray(value)) throw `${path}: invalid type: ${unexpected(value)}, expected a sequence`;
  value.forEach((item, i) => {
    if (typeof item !== 'string') throw `${path}[${i}]: invalid type: ${unexpected(item)}, expected a string`;
  });
  return value;
}

// The required labels; throws (a string) the Rust plugin's message for settings it refuses
// (serde's, with the path of the bad value; then the label key checks). JSON.parse keeps the
// last of duplicate keys, which serde refuses; the host's settings never have any. The label key
// checks run only with `check`, as the Rust plugin runs them at load only.
function parseSettings(text, check = true) {
  text = text.trim();
  if (text === '' || text === 'null') text = '{}';
  let settings;
  try {
    settings = JSON.parse(text);
  } catch (e) {
    throw `not JSON: ${e.message}`;
  }
  let labels;
  if (isObject(settings)) {
    // serde reads the keys in order and stops at the first bad one.
    for (const [key, value] of Object.entries(settings)) {
      if (key !== 'labels') throw `${key ? key + ': ' : ''}unknown field \`${key}\`, expected \`labels\``;
      labels = labelsAt(value, 'labels');
    }
    if (labels === undefined) throw 'missing field `labels`';
  } else if (Array.isArray(settings)) { // serde also reads a struct from a list of its fields
    if (settings.length === 0) throw 'invalid length 0, expected struct Settings with 1 element';
    labels = labelsAt(settings[0], '[0]');
    if (settings.length > 1) throw 'trailing characters';
  } else {
    throw `invalid type: ${unexpected(settings)}, expected struct Settings`;
  }
  if (!check) return labels;
  if (labels.length === 0) throw 'labels: list at least one label key';
  labels.forEach((key, i) => {
    const why = labelKeyProblem(key);
    if (why) throw `labels[${i}]: ${rustString(key)} ${why}`;
  });
  return labels;
}

// `validate-settings: func(settings: string) -> result<_, string>`: returning (nothing) is `ok`,
// throwing a string is `err(string)`.
export function validateSettings(text) {
  parseSettings(text);
}

export function validate(request) {
  let required;
  try {
    required = parseSettings(settings(), false);
  } catch (e) {
    throw `invalid settings: ${e}`; // checked at load, so only if the host skipped the check
  }
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
