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

/// The 1-based line an error message about one field of an entry is about. `entry` is the line
/// of the entry's `name:`; `message` starts with the field's path as the validators write it:
/// `timeout ...`, `memoryLimit: ...`, `instanceReuse.maxCalls ...`, `rules[1]: operations ...`,
/// `outputs[0] "x": url ...`. Searches only inside that entry; falls back to the deepest part of
/// the path it found, and `None` when not even the first key is in the entry (the caller then
/// points at the entry).
pub fn field_line(text: &str, entry: Option<usize>, message: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = entry?.checked_sub(1)?;
    // The entry's list item column: its `- ` marker, or two left of a key under that marker.
    let first = *lines.get(start)?;
    let item_indent = indent_of(first).saturating_sub(if first.trim_start().starts_with("- ") {
        0
    } else {
        2
    });
    let end = (start + 1..lines.len())
        .find(|&i| {
            let t = lines[i].trim_start();
            !t.is_empty() && !t.starts_with('#') && indent_of(lines[i]) <= item_indent
        })
        .unwrap_or(lines.len());
    let (mut from, mut to) = (start, end);
    let mut found = None;
    let mut rest = message;
    loop {
        let key_len = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        let key = &rest[..key_len];
        if key.is_empty() || !key.starts_with(|c: char| c.is_ascii_lowercase()) {
            return found;
        }
        // Only keys of this level: at the column of the level's first key.
        let Some(column) = (from..to)
            .find(|&i| {
                let t = lines[i].trim_start();
                !t.is_empty() && !t.starts_with('#') && (i == from || !t.starts_with("- "))
            })
            .map(|i| key_column(lines[i]))
        else {
            return found;
        };
        let Some(at) = (from..to)
            .find(|&i| key_column(lines[i]) == column && value_of(lines[i], key).is_some())
        else {
            return found;
        };
        found = Some(at + 1);
        // The key's block: the lines after it that are indented deeper than it.
        let key_indent = key_column(lines[at]);
        let block_end = (at + 1..to)
            .find(|&i| {
                let t = lines[i].trim_start();
                !t.is_empty() && !t.starts_with('#') && indent_of(lines[i]) <= key_indent
            })
            .unwrap_or(to);
        rest = &rest[key_len..];
        (from, to) = (at + 1, block_end);
        if let Some(index) = rest.strip_prefix('[') {
            let Some((n, after)) = index.split_once(']') else {
                return found;
            };
            let Ok(n) = n.parse::<usize>() else {
                return found;
            };
            // The n-th list item of the key's block, at the first item's indentation.
            let items: Vec<usize> = (at + 1..block_end)
                .filter(|&i| is_item_start(lines[i]))
                .collect();
            let Some(item_col) = items.first().map(|&i| indent_of(lines[i])) else {
                return found;
            };
            let items: Vec<usize> = items
                .into_iter()
                .filter(|&i| indent_of(lines[i]) == item_col)
                .collect();
            let Some(&item) = items.get(n) else {
                return found;
            };
            found = Some(item + 1);
            let item_end = (item + 1..block_end)
                .find(|&i| {
                    let t = lines[i].trim_start();
                    !t.is_empty() && !t.starts_with('#') && indent_of(lines[i]) <= item_col
                })
                .unwrap_or(block_end);
            (from, to) = (item, item_end);
            rest = after;
            // `outputs[0] "name": ...`: skip the quoted name.
            rest = rest.trim_start();
            if let Some(quoted) = rest.strip_prefix('"') {
                rest = quoted.split_once('"').map_or("", |(_, r)| r);
            }
        }
        rest = rest.trim_start_matches([':', '.', ' ']);
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_item_start(line: &str) -> bool {
    line.trim_start().starts_with("- ")
}

/// The column of the key on a line, after any `- ` list marker.
fn key_column(line: &str) -> usize {
    let trimmed = line.trim_start();
    match trimmed.strip_prefix("- ") {
        Some(after) => line.len() - after.trim_start().len(),
        None => indent_of(line),
    }
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
    fn finds_the_field_an_error_is_about() {
        let text = "\
policies:
  - name: a
    timeout: 1s
  - name: b
    module: b.wasm
    timeout: 1
    instanceReuse:
      maxIdle: 4
      maxCalls: 1
    rules:
      - operations: [CREATE]
        resources: [pods]
      - apiGroups: [\"\"]
        operations: []
auditSinks:
  - name: s
    outputs:
      - {name: o, type: stdout}
      - name: f
        type: http
        url: nope
";
        let b = Some(4);
        assert_eq!(
            field_line(text, b, "timeout 1 must be more than 0"),
            Some(6)
        );
        assert_eq!(field_line(text, Some(2), "timeout: bad"), Some(3));
        assert_eq!(
            field_line(text, b, "instanceReuse.maxCalls must be"),
            Some(9)
        );
        assert_eq!(
            field_line(text, b, "instanceReuse.maxIdle must be"),
            Some(8)
        );
        assert_eq!(
            field_line(text, b, "rules[1]: operations must list"),
            Some(14)
        );
        assert_eq!(field_line(text, b, "rules[0]: scope is bad"), Some(11));
        assert_eq!(field_line(text, b, "rules[5]: x"), Some(10));
        // Not in this entry (only in the next one): the caller points at the entry.
        assert_eq!(field_line(text, Some(2), "instanceReuse.maxIdle"), None);
        assert_eq!(field_line(text, b, "the name is used twice"), None);
        assert_eq!(
            field_line(text, Some(16), "outputs[1] \"f\": url \"nope\": bad"),
            Some(21)
        );
        assert_eq!(
            field_line(text, Some(16), "outputs[0] \"o\": path"),
            Some(18)
        );
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
