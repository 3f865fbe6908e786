// require-labels: a wasmgate validator (world `validator` of wasmgate:plugin@0.2.0).
//
// Behaves exactly like plugins/rust/require-labels (see its README): denies an object whose
// `metadata.labels` lacks any key listed in the settings `{"labels": ["team", "owner"]}` (a
// label counts as present when its value is a string), with 403 Forbidden and
// `missing required labels: team, owner` (the missing keys, in settings order). An empty list
// requires nothing. DELETE (no object) is allowed. An unparseable object is a plugin failure
// (`err`).
//
// Settings are checked when the policy is loaded (ValidateSettings): `labels` is required and
// must be a list of strings, and any other key is refused, with the Rust plugin's messages
// (serde's wording), e.g. "invalid settings: unknown field `label`, expected `labels`".
package export_wit_world

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
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

// rustString is a string as Rust's `{:?}` shows it (serde and the label checks quote strings
// that way); of the characters Rust escapes, only the control characters are (a rarer one, such
// as a zero-width space, is shown as itself).
func rustString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20 || (c >= 0x7f && c < 0xa0):
			fmt.Fprintf(&b, `\u{%x}`, c)
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// rustFloat is a float as serde_json prints it: the shortest digits that read back, in fixed
// notation for decimal exponents -5..=15 (with `.0` when whole), else as `1.5e+20` or `1e-7`.
func rustFloat(x float64) string {
	if x == 0 {
		if math.Signbit(x) {
			return "-0.0"
		}
		return "0.0"
	}
	sign := ""
	if x < 0 {
		sign, x = "-", -x
	}
	mantissa, exp, _ := strings.Cut(strconv.FormatFloat(x, 'e', -1, 64), "e")
	sig := strings.Replace(mantissa, ".", "", 1)
	e, _ := strconv.Atoi(exp)
	if e >= -5 && e <= 15 {
		if e >= 0 {
			whole := sig
			if len(whole) > e+1 {
				whole = sig[:e+1]
			}
			frac := "0"
			if len(sig) > e+1 {
				frac = sig[e+1:]
			}
			return sign + whole + strings.Repeat("0", e+1-len(whole)) + "." + frac
		}
		return sign + "0." + strings.Repeat("0", -e-1) + sig
	}
	out := sign + sig[:1]
	if len(sig) > 1 {
		out += "." + sig[1:]
	}
	if e >= 0 {
		return out + "e+" + strconv.Itoa(e)
	}
	return out + "e" + strconv.Itoa(e)
}

// unexpected is how serde_json names a JSON value it did not expect. A number is an integer
// when it has no fraction or exponent and fits 64 bits (and is not -0); otherwise a float.
func unexpected(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return fmt.Sprintf("boolean `%t`", v)
	case json.Number:
		text := string(v)
		if !strings.ContainsAny(text, ".eE") {
			if strings.HasPrefix(text, "-") {
				if n, err := strconv.ParseInt(text, 10, 64); err == nil && n != 0 {
					return "integer `" + text + "`"
				}
			} else if _, err := strconv.ParseUint(text, 10, 64); err == nil {
				return "integer `" + text + "`"
			}
		}
		f, _ := strconv.ParseFloat(text, 64)
		return "floating point `" + rustFloat(f) + "`"
	case string:
		return "string " + rustString(v)
	case []any:
		return "sequence"
	default:
		return "map"
	}
}

func invalidType(path string, v any, expected string) error {
	if path != "" {
		path += ": "
	}
	return errors.New(path + "invalid type: " + unexpected(v) + ", expected " + expected)
}

// labelsAt reads `labels` (a list of strings) at path, as serde reads a `Vec<String>`.
func labelsAt(value any, path string) ([]string, error) {
	list, ok := value.([]any)
	if !ok {
		return nil, invalidType(path, value, "a sequence")
	}
	labels := make([]string, 0, len(list))
	for i, item := range list {
		label, ok := item.(string)
		if !ok {
			return nil, invalidType(fmt.Sprintf("%s[%d]", path, i), item, "a string")
		}
		labels = append(labels, label)
	}
	return labels, nil
}

func alnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

func alnumEnds(s string) bool { return s != "" && alnum(s[0]) && alnum(s[len(s)-1]) }

// labelKeyProblem says why key is not a label key the API server accepts (an optional
// lowercase DNS subdomain prefix and `/`, then a name of 1-63 characters of `[A-Za-z0-9._-]`,
// alphanumeric at both ends), or "". Lengths are in bytes, as the Rust plugin counts them.
func labelKeyProblem(key string) string {
	prefix, name, hasPrefix := strings.Cut(key, "/")
	if !hasPrefix {
		name = key
	}
	if name == "" || len(name) > 63 {
		return "is not a label key: the name must be 1-63 characters"
	}
	ok := alnumEnds(name)
	for i := 0; ok && i < len(name); i++ {
		ok = alnum(name[i]) || name[i] == '-' || name[i] == '_' || name[i] == '.'
	}
	if !ok {
		return "is not a label key: the name must be alphanumerics, '-', '_' or '.', alphanumeric at both ends"
	}
	if hasPrefix {
		dns := prefix != "" && len(prefix) <= 253
		for _, part := range strings.Split(prefix, ".") {
			dns = dns && part != "" && len(part) <= 63 && alnumEnds(part)
			for i := 0; dns && i < len(part); i++ {
				c := part[i]
				dns = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'
			}
		}
		if !dns {
			return "is not a label key: the prefix must be a lowercase DNS subdomain"
		}
	}
	return ""
}

// parseSettings returns the required labels, or the Rust plugin's message for settings it
// refuses (serde's, with the path of the bad value; then the label key checks). It walks the
// object's tokens, because serde reads the keys in order and stops at the first bad one (a Go
// map would lose the order and duplicates). The label key checks run only with check, as the
// Rust plugin runs them at load only.
func parseSettings(text string, check bool) ([]string, error) {
	text = strings.TrimSpace(text)
	if text == "" || text == "null" {
		text = "{}"
	}
	whole, err := parseJSON(text)
	if err != nil {
		return nil, errors.New("not JSON: " + err.Error())
	}
	var labels []string
	found := false
	switch whole := whole.(type) {
	case map[string]any:
		dec := json.NewDecoder(strings.NewReader(text))
		dec.UseNumber()
		_, _ = dec.Token() // {
		for dec.More() {
			token, _ := dec.Token()
			key, _ := token.(string)
			var value any
			if err := dec.Decode(&value); err != nil {
				return nil, errors.New("not JSON: " + err.Error())
			}
			if key != "labels" {
				path := ""
				if key != "" {
					path = key + ": "
				}
				return nil, errors.New(path + "unknown field `" + key + "`, expected `labels`")
			}
			if found {
				return nil, errors.New("duplicate field `labels`")
			}
			if labels, err = labelsAt(value, "labels"); err != nil {
				return nil, err
			}
			found = true
		}
		if !found {
			return nil, errors.New("missing field `labels`")
		}
	case []any: // serde also reads a struct from a list of its fields
		if len(whole) == 0 {
			return nil, errors.New("invalid length 0, expected struct Settings with 1 element")
		}
		if labels, err = labelsAt(whole[0], "[0]"); err != nil {
			return nil, err
		}
		if len(whole) > 1 {
			return nil, errors.New("trailing characters")
		}
	default:
		return nil, invalidType("", whole, "struct Settings")
	}
	if !check {
		return labels, nil
	}
	if len(labels) == 0 {
		return nil, errors.New("labels: list at least one label key")
	}
	for i, key := range labels {
		if why := labelKeyProblem(key); why != "" {
			return nil, fmt.Errorf("labels[%d]: %s %s", i, rustString(key), why)
		}
	}
	return labels, nil
}

// ValidateSettings is the world's `validate-settings: func(settings: string) -> result<_, string>`.
func ValidateSettings(settings string) witTypes.Result[witTypes.Unit, string] {
	if _, err := parseSettings(settings, true); err != nil {
		return witTypes.Err[witTypes.Unit](err.Error())
	}
	return witTypes.Ok[witTypes.Unit, string](witTypes.Unit{})
}

func Validate(request types.AdmissionRequest) result {
	required, err := parseSettings(host.Settings(), false)
	if err != nil { // checked at load, so only if the host skipped the check
		return witTypes.Err[types.Verdict]("invalid settings: " + err.Error())
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
