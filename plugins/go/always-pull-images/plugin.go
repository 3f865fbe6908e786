// always-pull-images: a wasmgate initializer (world `initializer` of wasmgate:plugin@0.2.0).
//
// Behaves exactly like plugins/rust/always-pull-images (see its README): sets
// `imagePullPolicy: "Always"` on every container, init container and ephemeral container of the
// pod spec of a Pod, PodTemplate, ReplicationController, Deployment, StatefulSet, DaemonSet,
// ReplicaSet, Job or CronJob, taken as the request's `kind` says (else `requestKind`, else the
// object's own apiVersion and kind: the object's `kind` is the client's word). Returns
// `unchanged` when nothing changes, else `patched`: one RFC 6902 `add` of `imagePullPolicy:
// "Always"` per container that lacks it, so the whole object is never written back (the host
// applies the operations and computes the JSONPatch). An unparseable object, or a container that is
// not a JSON object, is a plugin failure (`err`).
//
// It takes no settings: ValidateSettings (called when the policy is loaded) accepts none, `{}`
// or `null` and refuses any key, with the Rust plugin's message (`unknown field `x`, there are no
// fields`).
package export_wit_world

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	types "wit_component/wasmgate_plugin_types"
)

type result = witTypes.Result[types.Mutation, string]

var (
	pod            = []string{"spec"}
	podTemplate    = []string{"template", "spec"}
	template       = []string{"spec", "template", "spec"}
	cronJob        = []string{"spec", "jobTemplate", "spec", "template", "spec"}
	containerLists = []string{"containers", "initContainers", "ephemeralContainers"}
)

// podSpecPath tells where the pod spec sits for an object of `group` and `kind` (nil: nowhere).
func podSpecPath(group, kind string) []string {
	switch group {
	case "":
		switch kind {
		case "Pod":
			return pod
		case "PodTemplate":
			return podTemplate
		case "ReplicationController":
			return template
		}
	case "apps", "extensions":
		switch kind {
		case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet":
			return template
		}
	case "batch":
		switch kind {
		case "Job":
			return template
		case "CronJob":
			return cronJob
		}
	}
	return nil
}

// parseJSON reads exactly one JSON value; numbers stay json.Number, so they are written back
// with their exact text.
func parseJSON(text string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing characters after the value")
	}
	return v, nil
}

// kindOf tells the group and kind to treat `object` as: the request's `kind`, else its
// `requestKind` (the API server's word), else the object's own apiVersion and kind (as the Rust
// SDK's `kind_of`).
func kindOf(request types.AdmissionRequest, object any) (string, string) {
	if request.Kind.Kind != "" {
		return request.Kind.Group, request.Kind.Kind
	}
	if request.RequestKind.IsSome() && request.RequestKind.Some().Kind != "" {
		return request.RequestKind.Some().Group, request.RequestKind.Some().Kind
	}
	obj, _ := object.(map[string]any)
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	group := ""
	if i := strings.LastIndexByte(apiVersion, '/'); i >= 0 {
		group = apiVersion[:i]
	}
	return group, kind
}

// operation is one RFC 6902 operation, as JSON.
type operation struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value string `json:"value"`
}

// alwaysPull answers one RFC 6902 `add` of `imagePullPolicy: "Always"` per container of
// `object` taken as a `group`/`kind` whose policy is not `Always` yet (an `add` of a member that
// exists replaces it), in Rust's order; none when nothing needs changing.
func alwaysPull(object any, group, kind string) ([]operation, error) {
	obj, ok := object.(map[string]any)
	if !ok {
		return nil, nil
	}
	path := podSpecPath(group, kind)
	if path == nil {
		return nil, nil
	}
	var node any = obj
	for _, key := range path {
		m, ok := node.(map[string]any)
		if !ok {
			return nil, nil
		}
		node = m[key]
	}
	spec, ok := node.(map[string]any)
	if !ok {
		return nil, nil
	}
	var operations []operation
	for _, field := range containerLists {
		containers, ok := spec[field].([]any)
		if !ok {
			continue
		}
		for index, item := range containers {
			container, ok := item.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s.%s[%d] is not a JSON object", strings.Join(path, "."), field, index)
			}
			if policy, _ := container["imagePullPolicy"].(string); policy != "Always" {
				pointer := fmt.Sprintf("/%s/%s/%d/imagePullPolicy", strings.Join(path, "/"), field, index)
				operations = append(operations, operation{"add", pointer, "Always"})
			}
		}
	}
	return operations, nil
}

// ValidateSettings is the world's `validate-settings: func(settings: string) -> result<_, string>`:
// it refuses any settings, as the Rust plugin's `NoSettings` does.
func ValidateSettings(settings string) witTypes.Result[witTypes.Unit, string] {
	refuse := witTypes.Err[witTypes.Unit, string]
	text := strings.TrimSpace(settings)
	if text == "" || text == "null" {
		return witTypes.Ok[witTypes.Unit, string](witTypes.Unit{})
	}
	value, err := parseJSON(text)
	if err != nil {
		return refuse("not JSON: " + err.Error())
	}
	kind := "sequence"
	switch value := value.(type) {
	case map[string]any:
		if len(value) == 0 {
			return witTypes.Ok[witTypes.Unit, string](witTypes.Unit{})
		}
		dec := json.NewDecoder(strings.NewReader(text)) // the first key, in the text's order
		_, _ = dec.Token()
		token, _ := dec.Token()
		key, _ := token.(string)
		return refuse("unknown field `" + key + "`, there are no fields")
	case string:
		kind = fmt.Sprintf("string %q", value)
	case bool:
		kind = fmt.Sprintf("boolean `%t`", value)
	case json.Number:
		kind = "integer `" + string(value) + "`"
		if strings.ContainsAny(string(value), ".eE") {
			kind = "floating point `" + string(value) + "`"
		}
	}
	return refuse("invalid type: " + kind + ", expected no settings (an empty map)")
}

func Initialize(request types.AdmissionRequest) result {
	unchanged := types.Mutation{Change: types.MakeChangeUnchanged()}
	if request.Object.IsNone() { // DELETE
		return witTypes.Ok[types.Mutation, string](unchanged)
	}
	object, err := parseJSON(request.Object.Some())
	if err != nil {
		return witTypes.Err[types.Mutation]("the request's object is not JSON: " + err.Error())
	}
	group, kind := kindOf(request, object)
	operations, err := alwaysPull(object, group, kind)
	if err != nil {
		return witTypes.Err[types.Mutation](err.Error())
	}
	if len(operations) == 0 {
		return witTypes.Ok[types.Mutation, string](unchanged)
	}
	text, err := json.Marshal(operations)
	if err != nil {
		return witTypes.Err[types.Mutation]("cannot write the patch: " + err.Error())
	}
	return witTypes.Ok[types.Mutation, string](types.Mutation{Change: types.MakeChangePatched(string(text))})
}
