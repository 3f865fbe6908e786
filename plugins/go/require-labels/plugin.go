// require-labels: a wasmgate validator (world `validator` of wasmgate:plugin@0.1.0).
//
// Behaves exactly like plugins/rust/require-labels (see its README): denies an object whose
// `metadata.labels` lacks any key listed in the settings `{"labels": ["team", "owner"]}` (a
// label counts as present when its value is a string), with 403 Forbidden and
// `missing required labels: team, owner` (the missing keys, in settings order). No settings,
// `{}` or an empty list require nothing. DELETE (no object) is allowed. Invalid settings
// (including an unknown key) and an unparseable object are plugin failures (`err`).
package export_wit_world

import (
	"encoding/json"
	"errors"
	"io"
	"strings"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	host "wit_component/wasmgate_plugin_host"
	types "wit_component/wasmgate_plugin_types"
)

type result = witTypes.Result[types.Verdict, string]

// parseJSON reads exactly one JSON value; numbers stay json.Number.
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

func requiredLabels() ([]string, error) {
	text := host.Settings()
	if strings.TrimSpace(text) == "" {
		return nil, nil
	}
	parsed, err := parseJSON(text)
	if err != nil {
		return nil, errors.New("invalid settings: " + err.Error())
	}
	if parsed == nil { // `null`
		return nil, nil
	}
	settings, ok := parsed.(map[string]any)
	if !ok {
		return nil, errors.New("invalid settings: expected an object")
	}
	for key := range settings {
		if key != "labels" {
			return nil, errors.New("invalid settings: unknown field `" + key + "`, expected `labels`")
		}
	}
	value, present := settings["labels"]
	if !present {
		return nil, nil
	}
	list, ok := value.([]any)
	if !ok {
		return nil, errors.New("invalid settings: `labels` must be a list of strings")
	}
	labels := make([]string, 0, len(list))
	for _, item := range list {
		label, ok := item.(string)
		if !ok {
			return nil, errors.New("invalid settings: `labels` must be a list of strings")
		}
		labels = append(labels, label)
	}
	return labels, nil
}

func Validate(request types.AdmissionRequest) result {
	required, err := requiredLabels()
	if err != nil {
		return witTypes.Err[types.Verdict](err.Error())
	}
	allowed := types.Verdict{Decision: types.MakeDecisionAllowed()}
	if request.Object.IsNone() { // DELETE: nothing to label
		return witTypes.Ok[types.Verdict, string](allowed)
	}
	object, err := parseJSON(request.Object.Some())
	if err != nil {
		return witTypes.Err[types.Verdict]("the request's object is not JSON: " + err.Error())
	}
	var labels map[string]any
	if obj, ok := object.(map[string]any); ok {
		if metadata, ok := obj["metadata"].(map[string]any); ok {
			labels, _ = metadata["labels"].(map[string]any)
		}
	}
	var missing []string
	for _, key := range required {
		if _, ok := labels[key].(string); !ok {
			missing = append(missing, key)
		}
	}
	if len(missing) == 0 {
		return witTypes.Ok[types.Verdict, string](allowed)
	}
	denial := types.Denial{Code: 403, Reason: "Forbidden", Message: "missing required labels: " + strings.Join(missing, ", ")}
	return witTypes.Ok[types.Verdict, string](types.Verdict{Decision: types.MakeDecisionDenied(denial)})
}
