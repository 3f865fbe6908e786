//! Typed access to the plugin's `settings` from its policy entry (a host import).

use serde::de::DeserializeOwned;
use serde_json::Value;

/// This plugin's settings as the JSON text the host gave (`{}` when the policy has none).
pub fn settings_raw() -> String {
    crate::host::settings()
}

/// This plugin's settings, deserialized into `T`.
///
/// Empty text, `null` and `{}` give `T::default()`; anything else must deserialize into `T`.
/// Mark the struct `#[serde(default)]` so that omitted keys keep their defaults. The error reads
/// `invalid settings: ...`; return it from the plugin (a plugin failure, not a denial).
pub fn settings<T: DeserializeOwned + Default>() -> Result<T, String> {
    parse_settings(&settings_raw())
}

/// The parsing half of [`settings`], usable in native unit tests.
pub fn parse_settings<T: DeserializeOwned + Default>(text: &str) -> Result<T, String> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    let invalid = |err: serde_json::Error| format!("invalid settings: {err}");
    match serde_json::from_str::<Value>(text).map_err(invalid)? {
        Value::Null => Ok(T::default()),
        Value::Object(map) if map.is_empty() => Ok(T::default()),
        value => serde_json::from_value(value).map_err(invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        name: String,
        #[serde(default)]
        count: u32,
    }

    #[test]
    fn empty_null_and_empty_object_are_default() {
        for text in ["", "  ", "null", "{}", " { } "] {
            assert_eq!(
                parse_settings::<Strict>(text),
                Ok(Strict::default()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn values_deserialize() {
        assert_eq!(
            parse_settings::<Strict>(r#"{"name":"x"}"#),
            Ok(Strict {
                name: "x".into(),
                count: 0
            })
        );
    }

    #[test]
    fn errors_say_invalid_settings() {
        for text in ["{", r#"{"nmae":"x"}"#, r#"{"name":1}"#] {
            let err = parse_settings::<Strict>(text).unwrap_err();
            assert!(err.starts_with("invalid settings: "), "{err}");
        }
    }
}
