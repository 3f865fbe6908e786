// always-pull-images: a wasmgate initializer (world `initializer` of wasmgate:plugin@0.2.0).
//
// Behaves exactly like plugins/rust/always-pull-images (see its README): sets
// `imagePullPolicy: "Always"` on every container, init container and ephemeral container of the
// pod spec of a Pod, PodTemplate, ReplicationController, Deployment, StatefulSet, DaemonSet,
// ReplicaSet, Job or CronJob, taken as the request's `kind` says (else `requestKind`, else the
// object's own apiVersion and kind: the object's `kind` is the client's word). Returns
// `unchanged` when nothing changes, else `patched`: one RFC 6902 `add` of `imagePullPolicy:
// "Always"` per container that lacks it, so the whole object is never written back (the host
// applies the operations and computes the JSONPatch). An unparseable object, or a container that is not a JSON object, is a plugin
// failure (throw a string: `err`). It takes no settings: `validateSettings` (called when the
// policy is loaded) accepts none, `{}` or `null` and refuses any key, with the Rust plugin's
// message (`unknown field `x`, there are no fields`). Numbers go through JavaScript doubles:
// integers beyond 2^53 would lose precision (Kubernetes objects carry none; quantities are
// strings).

const POD = ['spec'];
const TEMPLATE = ['spec', 'template', 'spec'];
const CRON_JOB = ['spec', 'jobTemplate', 'spec', 'template', 'spec'];
const CONTAINER_LISTS = ['containers', 'initContainers', 'ephemeralContainers'];
const NO_REMARKS = { warnings: [], auditAnnotations: [] };
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const has = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key);
const stringField = (obj, key) => (has(obj, key) && typeof obj[key] === 'string' ? obj[key] : '');

/** Where the pod spec sits for an object of `group` and `kind`, or undefined. */
function podSpecPath(group, kind) {
  if (group === '') {
    if (kind === 'Pod') return POD;
    if (kind === 'PodTemplate') return ['template', 'spec'];
    if (kind === 'ReplicationController') return TEMPLATE;
  } else if (group === 'apps' || group === 'extensions') {
    if (['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet'].includes(kind)) return TEMPLATE;
  } else if (group === 'batch') {
    if (kind === 'Job') return TEMPLATE;
    if (kind === 'CronJob') return CRON_JOB;
  }
  return undefined;
}

/** The group and kind to treat `obj` as: the request's `kind`, else its `requestKind` (the API
 * server's word), else the object's own apiVersion and kind (as the Rust SDK's `kind_of`). */
function kindOf(request, obj) {
  for (const gvk of [request.kind, request.requestKind]) {
    if (gvk != null && gvk.kind !== '') return [gvk.group, gvk.kind];
  }
  const apiVersion = isObject(obj) ? stringField(obj, 'apiVersion') : '';
  const slash = apiVersion.lastIndexOf('/');
  return [slash < 0 ? '' : apiVersion.slice(0, slash), isObject(obj) ? stringField(obj, 'kind') : ''];
}

/** One RFC 6902 `add` of `imagePullPolicy: "Always"` per container of `obj` taken as a
 * `group`/`kind` whose policy is not `Always` yet (an `add` of a member that exists replaces it),
 * in Rust's order; empty when nothing needs changing. */
function alwaysPull(obj, group, kind) {
  if (!isObject(obj)) return [];
  const path = podSpecPath(group, kind);
  if (path === undefined) return [];
  let spec = obj;
  for (const key of path) spec = isObject(spec) && has(spec, key) ? spec[key] : undefined;
  if (!isObject(spec)) return [];
  const operations = [];
  for (const field of CONTAINER_LISTS) {
    const containers = has(spec, field) ? spec[field] : undefined;
    if (!Array.isArray(containers)) continue;
    containers.forEach((container, index) => {
      if (!isObject(container)) throw `${path.join('.')}.${field}[${index}] is not a JSON object`;
      if (container.imagePullPolicy !== 'Always') {
        const pointer = [...path, field, index, 'imagePullPolicy'].map((key) => `/${key}`).join('');
        operations.push({ op: 'add', path: pointer, value: 'Always' });
      }
    });
  }
  return operations;
}

// `validate-settings: func(settings: string) -> result<_, string>`: refuses any settings, as the
// Rust plugin's `NoSettings` does (throwing a string is `err(string)`).
export function validateSettings(text) {
  text = text.trim();
  if (text === '' || text === 'null') return;
  let settings;
  try {
    settings = JSON.parse(text);
  } catch (e) {
    throw `not JSON: ${e.message}`;
  }
  if (settings !== null && typeof settings === 'object' && !Array.isArray(settings)) {
    const keys = Object.keys(settings);
    if (keys.length > 0) throw `unknown field \`${keys[0]}\`, there are no fields`;
    return;
  }
  const kind = Array.isArray(settings) ? 'sequence'
    : typeof settings === 'string' ? `string ${JSON.stringify(settings)}`
    : typeof settings === 'boolean' ? `boolean \`${settings}\``
    : Number.isSafeInteger(settings) ? `integer \`${settings}\`` : `floating point \`${settings}\``;
  throw `invalid type: ${kind}, expected no settings (an empty map)`;
}

export function initialize(request) {
  // DELETE. (ComponentizeJS passes `undefined` for `none`, QuickJS `null`.)
  if (request.object == null) return { change: { tag: 'unchanged' }, remarks: NO_REMARKS };
  let obj;
  try {
    obj = JSON.parse(request.object);
  } catch (e) {
    throw `the request's object is not JSON: ${e.message}`;
  }
  const [group, kind] = kindOf(request, obj);
  const operations = alwaysPull(obj, group, kind);
  if (operations.length === 0) return { change: { tag: 'unchanged' }, remarks: NO_REMARKS };
  return { change: { tag: 'patched', val: JSON.stringify(operations) }, remarks: NO_REMARKS };
}
