// A wasmgate validator in JavaScript: copy this folder to plugins/javascript/<your-plugin>/ and
// edit `validate`. See ../README.md for the types and the build.
import { settings } from 'wasmgate:plugin/host@0.1.0';

export function validate(request) {
  const config = JSON.parse(settings() || '{}'); // this plugin's settings, `{}` when none
  if (request.object != null) {
    // the object as JSON text (absent on DELETE)
  }
  // To deny: return { decision: { tag: 'denied', val: { code: 403, reason: 'Forbidden', message: 'why' } }, remarks: ... }
  // To fail (the policy's failurePolicy decides): throw 'why';
  return { decision: { tag: 'allowed' }, remarks: { warnings: [], auditAnnotations: [] } };
}
