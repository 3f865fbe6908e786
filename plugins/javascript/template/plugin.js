// A wasmgate validator in JavaScript: copy this folder to plugins/javascript/<your-plugin>/ and
// edit `validateSettings` and `validate`. See ../README.md for the types and the build.
import { settings } from 'wasmgate:plugin/host@0.2.0';

// This plugin's settings (the policy entry's `settings` as JSON text, `{}` when none).
function parseSettings(text) {
  let config;
  try {
    config = JSON.parse(text || '{}') ?? {};
  } catch (e) {
    throw `not JSON: ${e.message}`;
  }
  if (typeof config !== 'object' || Array.isArray(config)) throw 'expected a map';
  // Check your settings here: throw 'why' (a string) for a missing key, a wrong type, a key you
  // do not know. The gateway then refuses the policy file (or the reload) with the file, the
  // line of `settings` and your message, before any request.
  return config;
}

// Called once when the policy is loaded (start and every reload): returning is `ok`, throwing a
// string is `err(string)`.
export function validateSettings(text) {
  parseSettings(text);
}

export function validate(request) {
  const config = parseSettings(settings()); // the same text, already checked at load
  if (request.object != null) {
    // the object as JSON text (absent on DELETE)
  }
  // To deny: return { decision: { tag: 'denied', val: { code: 403, reason: 'Forbidden', message: 'why' } }, remarks: ... }
  // To fail (the policy's failurePolicy decides): throw 'why';
  return { decision: { tag: 'allowed' }, remarks: { warnings: [], auditAnnotations: [] } };
}
