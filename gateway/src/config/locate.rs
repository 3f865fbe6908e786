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

/// The 1-based line of the list item `- name: NAME` under the top-level key `section:`. Finds
/// the right line when the same name appears elsewhere (a policy, an output of another sink).
pub fn section_entry_line(text: &str, section: &str, name: &str) -> Option<usize> {
    let start = text.lines().position(|line| {
        line.strip_prefix(section)
            .is_some_and(|r| r.starts_with(':'))
    })?;
    let mut indent = None;
    for (i, line) in text.lines().enumerate().skip(start + 1) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let depth = line.len() - trimmed.len();
        if depth == 0 && !trimmed.starts_with('-') {
            return None; // the next top-level key: the section ended
        }
        if !trimmed.starts_with("- ") {
            continue;
        }
        // The first list item sets the indentation of the section's entries.
        if *indent.get_or_insert(depth) == depth
            && value_of(line, "name").is_some_and(|v| v == name)
        {
            return Some(i + 1);
        }
    }
    None
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

    #[test]
    fn finds_entries_of_one_section() {
        let text = "policies:\n  - name: a\nauditSinks:\n  - name: s\n    outputs:\n      - name: a\n  - name: a\n";
        assert_eq!(section_entry_line(text, "auditSinks", "a"), Some(7));
        assert_eq!(section_entry_line(text, "auditSinks", "s"), Some(4));
        assert_eq!(section_entry_line(text, "policies", "a"), Some(2));
        assert_eq!(section_entry_line(text, "policies", "s"), None);
    }
}
