//! Typed access to the plugin's `settings` from its policy entry (a host import), and the
//! `validate-settings` export every world derives from the plugin's settings type.

use serde::de::DeserializeOwned;

/// This plugin's settings as the JSON text the host gave (`{}` when the policy has none).
pub fn settings_raw() -> String {
    crate::host::settings()
}

/// This plugin's settings, deserialized into `T`, as [`parse_settings`] does; the error reads
/// `invalid settings: ...`. The world traits ([`crate`] docs) call this for you and hand the
/// result to each call.
pub fn settings<T: DeserializeOwned>() -> Result<T, String> {
    parse_settings(&settings_raw()).map_err(|e| format!("invalid settings: {e}"))
}

/// Deserializes settings text into `T`: empty text and `null` read as `{}`, so a struct whose
/// fields all have defaults (`#[serde(default)]`) accepts no settings, and one with a required
/// field refuses them (`missing field ...`). Mark the struct `#[serde(deny_unknown_fields)]` to
/// refuse keys it does not know (a typo would otherwise be ignored).
///
/// The error names where the problem is and what is wrong, without a position in the JSON
/// text (the operator wrote YAML): `labels[0]: invalid type: integer `1`, expected a string`.
/// This is the pure half of [`settings`] and of the derived `validate-settings` export, usable
/// in native unit tests.
pub fn parse_settings<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let trimmed = text.trim();
    let text = if trimmed.is_empty() || trimmed == "null" {
        "{}"
    } else {
        trimmed
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = without_position(e.inner());
        if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })?;
    deserializer
        .end()
        .map_err(|e| format!("not JSON: {}", without_position(&e)))?;
    Ok(value)
}

/// What the derived `validate-settings` export runs: [`parse_settings`] into `T`, then the
/// plugin's own `check` of the values (ranges, formats, combinations the type cannot express).
pub fn validate_settings<T: DeserializeOwned>(
    text: &str,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<(), String> {
    check(&parse_settings::<T>(text)?)
}

/// Settings for a plugin that takes none: `{}` (or no `settings:` at all) is accepted; any key
/// is refused as unknown, and anything but a map as the wrong type.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NoSettings {}

impl<'de> serde::Deserialize<'de> for NoSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Empty;

        impl<'de> serde::de::Visitor<'de> for Empty {
            type Value = NoSettings;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("no settings (an empty map)")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<NoSettings, A::Error> {
                match map.next_key::<String>()? {
                    Some(key) => Err(serde::de::Error::custom(format!(
                        "unknown field `{key}`, there are no fields"
                    ))),
                    None => Ok(NoSettings {}),
                }
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<NoSettings, E> {
                Ok(NoSettings {})
            }
        }

        deserializer.deserialize_map(Empty)
    }
}

/// serde_json's message without its ` at line L column C` suffix.
fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    if e.line() == 0 {
        return message;
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    message
        .strip_suffix(&suffix)
        .map(str::to_owned)
        .unwrap_or(message)
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
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Optional {
        count: u32,
    }

    #[test]
    fn empty_and_null_read_as_an_empty_object() {
        for text in ["", "  ", "null", "{}", " { } "] {
            assert_eq!(
                parse_settings::<Optional>(text),
                Ok(Optional::default()),
                "{text:?}"
            );
            assert_eq!(
                parse_settings::<Strict>(text),
                Err("missing field `name`".to_owned()),
                "{text:?}"
            );
        }
        assert_eq!(parse_settings::<NoSettings>(""), Ok(NoSettings {}));
    }

    #[test]
    fn values_deserialize() {
        assert_eq!(
            parse_settings::<Strict>(r#"{"name":"x"}"#),
            Ok(Strict {
                name: "x".into(),
                ..Strict::default()
            })
        );
    }

    #[test]
    fn errors_name_the_field_and_no_json_position() {
        assert_eq!(
            parse_settings::<Strict>(r#"{"name":"x","tags":"team"}"#),
            Err(r#"tags: invalid type: string "team", expected a sequence"#.to_owned())
        );
        assert_eq!(
            parse_settings::<Strict>(r#"{"name":"x","tags":["a",1]}"#),
            Err("tags[1]: invalid type: integer `1`, expected a string".to_owned())
        );
        let unknown = parse_settings::<Strict>(r#"{"nmae":"x"}"#).unwrap_err();
        assert!(
            unknown.ends_with("unknown field `nmae`, expected one of `name`, `count`, `tags`"),
            "{unknown}"
        );
        let none = parse_settings::<NoSettings>(r#"{"x":1}"#).unwrap_err();
        assert!(
            none.ends_with("unknown field `x`, there are no fields"),
            "{none}"
        );
        assert_eq!(
            parse_settings::<NoSettings>("[1]"),
            Err("invalid type: sequence, expected no settings (an empty map)".to_owned())
        );
        let garbage = parse_settings::<Optional>("{").unwrap_err();
        assert!(!garbage.contains(" at line "), "{garbage}");
        let trailing = parse_settings::<Optional>("{} x").unwrap_err();
        assert!(trailing.starts_with("not JSON: "), "{trailing}");
    }

    #[test]
    fn validate_settings_runs_the_check_on_parsed_values() {
        let positive = |o: &Optional| {
            if o.count > 0 {
                Ok(())
            } else {
                Err("count must be more than 0".to_owned())
            }
        };
        assert_eq!(validate_settings(r#"{"count":2}"#, positive), Ok(()));
        assert_eq!(
            validate_settings(r#"{"count":0}"#, positive),
            Err("count must be more than 0".to_owned())
        );
        assert_eq!(
            validate_settings::<Optional>(r#"{"count":"2"}"#, |_| Ok(())),
            Err(r#"count: invalid type: string "2", expected u32"#.to_owned())
        );
    }
}
