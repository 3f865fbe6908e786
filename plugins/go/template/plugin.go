// A wasmgate validator in Go: copy this folder to plugins/go/<your-plugin>/ and edit Validate.
// See ../README.md for the types and the build.
package export_wit_world

import (
	witTypes "go.bytecodealliance.org/pkg/wit/types"
	host "wit_component/wasmgate_plugin_host"
	types "wit_component/wasmgate_plugin_types"
)

// Validate decides on one admission request. Return witTypes.Ok with a verdict (allowed, or
// types.MakeDecisionDenied(types.Denial{Code: 403, Reason: "Forbidden", Message: "..."})), or
// witTypes.Err for a plugin failure (the policy's failurePolicy decides).
func Validate(request types.AdmissionRequest) witTypes.Result[types.Verdict, string] {
	_ = host.Settings() // this plugin's settings from its policy entry, as JSON text
	if request.Object.IsSome() {
		_ = request.Object.Some() // the object as JSON text
	}
	return witTypes.Ok[types.Verdict, string](types.Verdict{Decision: types.MakeDecisionAllowed()})
}
