//! Finds the line of a key in a policy file's text, for error messages about values that parsed
//! but do not hold up (a missing module, a pin mismatch). The YAML parser gives locations only
//! for syntax and schema errors.

/// The 1-based line of the first `key:` at any indentation, also after a `- ` list marker.
pub fn key_line(text: &str, key: &str) -> Option<usize> {
    key_line_after(text, Some(0), key)
}

/// The 1-based line of the entry whose `name:` is `name`.
pub fn entry_line(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|line| value_of(line, "name").is_some_and(|v| v == name))
        .map(|i| i + 1)
}

/// The 1-based line of the first `key:` strictly after line `after` (1-based).
pub fn key_line_after(text: &str, after: Option<usize>, key: &str) -> Option<usize> {
    let after = after?;
    text.lines()
        .enumerate()
        .skip(after)
        .find(|(_, line)| value_of(line, key).is_some())
        .map(|(i, _)| i + 1)
}

/// The unquoted value of `key: value` on this line, if the line holds that key.
fn value_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let trimmed = line.trim_start();
    let trimmed = trimmed.strip_prefix("- ").unwrap_or(trimmed).trim_start();
    let rest = trimmed.strip_prefix(key)?.strip_prefix(':')?;
    let value = rest.split(" #").next().unwrap_or("").trim();
    Some(value.trim_matches(|c| c == '"' || c == '\''))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_entries_and_keys() {
        let text = "apiVersion: x\npolicies:\n  - name: a\n    module: a.wasm\n  - name: \"b\"\n    kind: validator\n    module: b.wasm\n";
        assert_eq!(key_line(text, "apiVersion"), Some(1));
        assert_eq!(entry_line(text, "a"), Some(3));
        assert_eq!(entry_line(text, "b"), Some(5));
        assert_eq!(key_line_after(text, Some(5), "module"), Some(7));
        assert_eq!(entry_line(text, "c"), None);
    }
}
