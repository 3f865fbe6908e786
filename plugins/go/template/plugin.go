// A wasmgate validator in Go: copy this folder to plugins/go/<your-plugin>/ and edit
// ValidateSettings and Validate. See ../README.md for the types and the build.
package export_wit_world

import (
	"encoding/json"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	host "wit_component/wasmgate_plugin_host"
	types "wit_component/wasmgate_plugin_types"
)

// ValidateSettings is called once when the policy is loaded (start and every reload) with the
// policy entry's `settings` as JSON text (`{}` when none). witTypes.Err("why") refuses them:
// the gateway then refuses the policy file (or the reload) with the file, the line of
// `settings` and your message.
func ValidateSettings(settings string) witTypes.Result[witTypes.Unit, string] {
	var parsed map[string]any
	if err := json.Unmarshal([]byte(settings), &parsed); err != nil {
		return witTypes.Err[witTypes.Unit](err.Error())
	}
	// Check your settings here: a missing key, a wrong type, a key you do not know.
	return witTypes.Ok[witTypes.Unit, string](witTypes.Unit{})
}

// Validate decides on one admission request. Return witTypes.Ok with a verdict (allowed, or
// types.MakeDecisionDenied(types.Denial{Code: 403, Reason: "Forbidden", Message: "..."})), or
// witTypes.Err for a plugin failure (the policy's failurePolicy decides).
func Validate(request types.AdmissionRequest) witTypes.Result[types.Verdict, string] {
	_ = host.Settings() // the same settings text, already checked at load
	if request.Object.IsSome() {
		_ = request.Object.Some() // the object as JSON text
	}
	return witTypes.Ok[types.Verdict, string](types.Verdict{Decision: types.MakeDecisionAllowed()})
}
