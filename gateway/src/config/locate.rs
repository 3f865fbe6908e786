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

/// The 1-based line of the entry's own `key:` (not a nested one), for the entry whose `- ` list
/// item starts on line `entry` (1-based): a line indented like the entry's first key, before
/// the entry ends (a line indented less, i.e. the next item or section). `None` when the entry
/// has no such key or is written in flow style (`- {name: a, ...}`).
pub fn entry_key_line(text: &str, entry: Option<usize>, key: &str) -> Option<usize> {
    let entry = entry?;
    let mut lines = text.lines().enumerate().skip(entry - 1);
    let (_, first) = lines.next()?;
    let item = first.trim_start();
    let column = first.len() - item.len() + 2;
    let first_key = item.strip_prefix("- ")?.trim_start();
    if first_key.starts_with('{') {
        return None;
    }
    if value_of(first, key).is_some() {
        return Some(entry);
    }
    for (i, line) in lines {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let depth = line.len() - trimmed.len();
        if depth < column {
            return None;
        }
        if depth == column && value_of(line, key).is_some() {
            return Some(i + 1);
        }
    }
    None
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
    fn finds_an_entrys_own_key() {
        let text = "policies:\n  - name: a\n    objectSelector:\n      matchLabels: {settings: x}\n      settings: y\n    # settings: z\n    settings:\n      labels: [team]\n  - name: b\n    settings: {}\n  - {name: c, settings: {}}\n  - settings: {}\n    name: d\n";
        assert_eq!(entry_key_line(text, Some(2), "settings"), Some(7));
        assert_eq!(entry_key_line(text, Some(9), "settings"), Some(10));
        assert_eq!(entry_key_line(text, Some(11), "settings"), None);
        assert_eq!(entry_key_line(text, Some(12), "settings"), Some(12));
        assert_eq!(entry_key_line(text, Some(2), "timeout"), None);
        assert_eq!(entry_key_line(text, None, "settings"), None);
        // An entry without the key does not find the next entry's.
        let text = "policies:\n  - name: a\n    kind: validator\n  - name: b\n    settings: {}\n";
        assert_eq!(entry_key_line(text, Some(2), "settings"), None);
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
