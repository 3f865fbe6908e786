//! The object of a review as its initializers change it: RFC 6902 patches applied to the
//! request's JSON text, parsing only the members the operations reach. Pure data: no plugins, no
//! I/O. Its semantics are `json_patch::patch`'s, operation for operation (a test holds it to
//! that crate on random documents and patches, and the `patch_apply` fuzz target on any).
//!
//! Parsing a whole Pod into a `serde_json::Value`, cloning it and comparing the two copies cost
//! more than the initializer's call itself (BENCHMARKS.md, "The initializer's object"); a patch
//! that sets one field of one container reads the root's members, `spec`'s, `containers`'
//! elements and that container's, and copies the rest as the text it was.

use std::fmt;

use indexmap::IndexMap;
use json_patch::jsonptr::Pointer;
use json_patch::{PatchErrorKind, PatchOperation};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON document borrowed from a review's text, opened only where patches reached into it.
#[derive(Clone, Debug)]
pub struct Document<'a> {
    root: Node<'a>,
}

#[derive(Clone, Debug)]
enum Node<'a> {
    /// As the request sent it (the review's decoding has checked that it is JSON).
    Raw(&'a RawValue),
    /// An object that an operation reached into; members in their order.
    Object(IndexMap<String, Node<'a>>),
    /// An array that an operation reached into.
    Array(Vec<Node<'a>>),
    /// A value an operation wrote (or a replacement of the whole object).
    Value(Value),
}

/// Why a patch cannot be applied.
#[derive(Debug)]
pub enum PatchFailure {
    /// The patch does not apply, worded as `json_patch::PatchError` words it.
    DoesNotApply {
        /// The failing operation's index in the patch.
        operation: usize,
        /// Its `path`.
        path: String,
        /// Why it failed.
        kind: PatchErrorKind,
    },
    /// A part of the object the patch reaches cannot be read as a `serde_json::Value`: nested
    /// deeper than its limit of 128, or a number beyond f64's range (the review's decoding
    /// passes both on as sent).
    Unreadable(serde_json::Error),
}

impl fmt::Display for PatchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchFailure::DoesNotApply {
                operation,
                path,
                kind,
            } => write!(
                f,
                "operation '/{operation}' failed at path '{path}': {kind}"
            ),
            PatchFailure::Unreadable(e) => e.fmt(f),
        }
    }
}

/// What one operation ends with when it fails.
enum Failure {
    Kind(PatchErrorKind),
    Unreadable(serde_json::Error),
}

impl<E: Into<PatchErrorKind>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Kind(e.into())
    }
}

/// How deep a pointer may reach: `serde_json`'s nesting limit, beyond which `json_patch`
/// could not have parsed the object at all. It also bounds the depth of the opened tree, which
/// is cloned, written and dropped recursively.
pub const MAX_DEPTH: usize = 128;

impl<'a> Document<'a> {
    /// The object as the request sent it; nothing is parsed yet.
    pub fn new(text: &'a RawValue) -> Self {
        Document {
            root: Node::Raw(text),
        }
    }

    /// A whole object an initializer answered with.
    pub fn of_value(value: Value) -> Self {
        Document {
            root: Node::Value(value),
        }
    }

    /// Applies `operations` in order, all or none: on an error the document is as it was.
    /// Returns whether any operation changed it (an `add` or `replace` of the value already
    /// there, a `test`, or a `move` onto itself changes nothing).
    pub fn apply(&mut self, operations: &[PatchOperation]) -> Result<bool, PatchFailure> {
        let mut next = self.root.clone();
        let mut changed = false;
        for (index, operation) in operations.iter().enumerate() {
            changed |= apply_one(&mut next, operation).map_err(|failure| match failure {
                Failure::Kind(kind) => PatchFailure::DoesNotApply {
                    operation: index,
                    path: operation.path().as_str().to_owned(),
                    kind,
                },
                Failure::Unreadable(e) => PatchFailure::Unreadable(e),
            })?;
        }
        self.root = next;
        Ok(changed)
    }

    /// The value at `tokens` (already decoded), if there is one.
    pub fn get(&mut self, tokens: &[&str]) -> Result<Option<Value>, serde_json::Error> {
        let mut node = &mut self.root;
        for token in tokens {
            match child(node, token)? {
                Some(next) => node = next,
                None => return Ok(None),
            }
        }
        node.to_value().map(Some)
    }

    /// Whether the document is a JSON object.
    pub fn is_object(&self) -> bool {
        match &self.root {
            Node::Raw(raw) => raw.get().trim_start().starts_with('{'),
            Node::Object(_) => true,
            Node::Array(_) => false,
            Node::Value(value) => value.is_object(),
        }
    }

    /// The whole document, parsed.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        self.root.to_value()
    }

    /// The document as JSON text: what no operation reached is copied as it was sent.
    pub fn to_text(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(&self.root)
    }
}

/// One operation on `root`, as `json_patch` applies it; whether it changed anything.
fn apply_one(root: &mut Node<'_>, operation: &PatchOperation) -> Result<bool, Failure> {
    use PatchErrorKind::{CannotMoveInsideItself, TestFailed};
    // A value nested deeper than serde_json reads differs from any it has read.
    let differs = |node: Option<Node<'_>>, value: &Value| {
        Ok(node.is_none_or(|node| !node.to_value().is_ok_and(|old| old == *value)))
    };
    match operation {
        PatchOperation::Add(op) => {
            let previous = add(root, &op.path, Node::Value(op.value.clone()))?;
            differs(previous, &op.value)
        }
        PatchOperation::Remove(op) => remove(root, &op.path).map(|_| true),
        PatchOperation::Replace(op) => {
            let target = find(root, &op.path)?;
            let previous = std::mem::replace(target, Node::Value(op.value.clone()));
            differs(Some(previous), &op.value)
        }
        PatchOperation::Move(op) => {
            if op.path.starts_with(&op.from) && op.path.len() != op.from.len() {
                return Err(CannotMoveInsideItself.into());
            }
            let value = remove(root, &op.from).map_err(from_pointer)?;
            add(root, &op.path, value)?;
            Ok(op.path != op.from)
        }
        PatchOperation::Copy(op) => {
            let source = find(root, &op.from).map_err(from_pointer)?.clone();
            let value = source.to_value().map_err(Failure::Unreadable)?;
            let previous = add(root, &op.path, source)?;
            differs(previous, &value)
        }
        PatchOperation::Test(op) => {
            let target = find(root, &op.path)?;
            if target.to_value().map_err(Failure::Unreadable)? == op.value {
                Ok(false)
            } else {
                Err(TestFailed.into())
            }
        }
    }
}

/// A `from` that does not point at anything is worded as such.
fn from_pointer(failure: Failure) -> Failure {
    match failure {
        Failure::Kind(PatchErrorKind::InvalidPointer) => {
            Failure::Kind(PatchErrorKind::InvalidFromPointer)
        }
        failure => failure,
    }
}

/// `json_patch`'s add: the root replaced, a member set, or an element inserted; the value it
/// replaced, if any.
fn add<'a>(
    root: &mut Node<'a>,
    path: &Pointer,
    value: Node<'a>,
) -> Result<Option<Node<'a>>, Failure> {
    let Some((parent, last)) = path.split_back() else {
        return Ok(Some(std::mem::replace(root, value)));
    };
    match open(find(root, parent)?).map_err(Failure::Unreadable)? {
        Node::Object(members) => Ok(members.insert(last.decoded().into_owned(), value)),
        Node::Array(elements) => {
            let index = last.to_index()?.for_len_incl(elements.len())?;
            elements.insert(index, value);
            Ok(None)
        }
        _ => Err(PatchErrorKind::InvalidPointer.into()),
    }
}

/// `json_patch`'s remove: the root cannot be removed, nor the `-` element.
fn remove<'a>(root: &mut Node<'a>, path: &Pointer) -> Result<Node<'a>, Failure> {
    let (parent, last) = path.split_back().ok_or(PatchErrorKind::InvalidPointer)?;
    match open(find(root, parent)?).map_err(Failure::Unreadable)? {
        Node::Object(members) => Ok(members
            .shift_remove(last.decoded().as_ref())
            .ok_or(PatchErrorKind::InvalidPointer)?),
        Node::Array(elements) => {
            let index = last.to_index()?.for_len(elements.len())?;
            Ok(elements.remove(index))
        }
        _ => Err(PatchErrorKind::InvalidPointer.into()),
    }
}

/// The node `path` points at, opening the containers on the way (`serde_json`'s
/// `Value::pointer_mut` rules: an array index is decimal, without a sign or leading zeros);
/// none deeper than [`MAX_DEPTH`].
fn find<'n, 'a>(root: &'n mut Node<'a>, path: &Pointer) -> Result<&'n mut Node<'a>, Failure> {
    let mut node = root;
    for (depth, token) in path.tokens().enumerate() {
        if depth == MAX_DEPTH {
            return Err(PatchErrorKind::InvalidPointer.into());
        }
        node = child(node, &token.decoded())
            .map_err(Failure::Unreadable)?
            .ok_or(PatchErrorKind::InvalidPointer)?;
    }
    Ok(node)
}

fn child<'n, 'a>(
    node: &'n mut Node<'a>,
    token: &str,
) -> Result<Option<&'n mut Node<'a>>, serde_json::Error> {
    Ok(match open(node)? {
        Node::Object(members) => members.get_mut(token),
        Node::Array(elements) => array_index(token).and_then(|i| elements.get_mut(i)),
        _ => None,
    })
}

/// `serde_json`'s reading of an array index in a pointer.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// Turns a container, as sent or as written, into one whose members can be reached; scalars
/// stay as they are.
fn open<'n, 'a>(node: &'n mut Node<'a>) -> Result<&'n mut Node<'a>, serde_json::Error> {
    let opened = match node {
        Node::Raw(raw) => match raw.get().trim_start().as_bytes().first() {
            Some(b'{') => Node::Object(members(raw)?),
            Some(b'[') => Node::Array(
                serde_json::from_str::<Vec<&'a RawValue>>(raw.get())?
                    .into_iter()
                    .map(Node::Raw)
                    .collect(),
            ),
            _ => return Ok(node),
        },
        Node::Value(Value::Object(map)) => Node::Object(
            std::mem::take(map)
                .into_iter()
                .map(|(k, v)| (k, Node::Value(v)))
                .collect(),
        ),
        Node::Value(Value::Array(elements)) => Node::Array(
            std::mem::take(elements)
                .into_iter()
                .map(Node::Value)
                .collect(),
        ),
        _ => return Ok(node),
    };
    *node = opened;
    Ok(node)
}

/// An object's members as sent, each value left unparsed; a repeated key keeps its last value
/// (as `serde_json::Value` does).
fn members<'a>(raw: &'a RawValue) -> Result<IndexMap<String, Node<'a>>, serde_json::Error> {
    struct Members;
    impl<'de> serde::de::Visitor<'de> for Members {
        type Value = IndexMap<String, Node<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(
            self,
            mut map: M,
        ) -> Result<Self::Value, M::Error> {
            let mut members = IndexMap::with_capacity(map.size_hint().unwrap_or(8));
            while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                members.insert(key, Node::Raw(value));
            }
            Ok(members)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    serde::Deserializer::deserialize_map(&mut de, Members)
}

impl Node<'_> {
    /// The node parsed: it fails only on JSON nested deeper than `serde_json` reads (the
    /// review's decoding took it whole, unparsed).
    fn to_value(&self) -> Result<Value, serde_json::Error> {
        Ok(match self {
            Node::Raw(raw) => serde_json::from_str(raw.get())?,
            Node::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.to_value()?)))
                    .collect::<Result<_, serde_json::Error>>()?,
            ),
            Node::Array(elements) => Value::Array(
                elements
                    .iter()
                    .map(Node::to_value)
                    .collect::<Result<_, _>>()?,
            ),
            Node::Value(value) => value.clone(),
        })
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Raw(raw) => raw.serialize(serializer),
            Node::Object(members) => serializer.collect_map(members),
            Node::Array(elements) => serializer.collect_seq(elements),
            Node::Value(value) => value.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), so that a failure names its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'p, T>(&mut self, items: &'p [T]) -> &'p T {
            &items[self.below(items.len())]
        }
    }

    const KEYS: [&str; 6] = ["a", "b", "c/d", "e~f", "0", ""];

    fn value(rng: &mut Rng, depth: usize) -> Value {
        match rng.below(if depth == 0 { 4 } else { 7 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.below(2) == 1),
            2 => Value::from(rng.below(3)),
            3 => Value::from(*rng.pick(&["x", "y", "\"q\"\n"])),
            4 | 5 => Value::Object(
                (0..rng.below(4))
                    .map(|_| (rng.pick(&KEYS).to_string(), value(rng, depth - 1)))
                    .collect(),
            ),
            _ => Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect()),
        }
    }

    /// A pointer into `doc` most of the time (one step further, or a wrong index, sometimes).
    fn pointer(rng: &mut Rng, doc: &Value) -> String {
        let mut path = String::new();
        let mut node = doc;
        loop {
            if rng.below(4) == 0 {
                return path;
            }
            let token = match node {
                Value::Object(members) if !members.is_empty() && rng.below(5) != 0 => {
                    let key = members.keys().nth(rng.below(members.len())).unwrap();
                    node = &members[key];
                    key.replace('~', "~0").replace('/', "~1")
                }
                Value::Array(elements) if !elements.is_empty() && rng.below(5) != 0 => {
                    let index = rng.below(elements.len());
                    node = &elements[index];
                    index.to_string()
                }
                _ if rng.below(2) == 0 => return path,
                _ => {
                    let token =
                        rng.pick(&["a", "c~1d", "e~0f", "-", "0", "1", "01", "+1", "9", ""]);
                    path.push('/');
                    path.push_str(token);
                    return path;
                }
            };
            path.push('/');
            path.push_str(&token);
        }
    }

    fn operation(rng: &mut Rng, doc: &Value) -> Value {
        let path = pointer(rng, doc);
        let from = pointer(rng, doc);
        // Often the value already there (a test that holds, an add that changes nothing).
        let value = match rng.below(3) {
            0 => value(rng, 2),
            _ => doc.pointer(&path).cloned().unwrap_or(Value::Null),
        };
        match rng.below(6) {
            0 => serde_json::json!({"op": "add", "path": path, "value": value}),
            1 => serde_json::json!({"op": "remove", "path": path}),
            2 => serde_json::json!({"op": "replace", "path": path, "value": value}),
            3 => serde_json::json!({"op": "move", "from": from, "path": path}),
            4 => serde_json::json!({"op": "copy", "from": from, "path": path}),
            _ => serde_json::json!({"op": "test", "path": path, "value": value}),
        }
    }

    #[test]
    fn patches_apply_as_json_patch_applies_them() {
        let (mut applied, mut refused) = (0, 0);
        for seed in 1..=20_000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let before = value(&mut rng, 4);
            let text = if rng.below(2) == 0 {
                serde_json::to_string(&before).unwrap()
            } else {
                serde_json::to_string_pretty(&before).unwrap()
            };
            let raw = RawValue::from_string(text.clone()).unwrap();
            let mut doc = Document::new(&raw);
            // A second patch on a document the first has opened, as a later initializer's.
            for _ in 0..2 {
                let current = doc.to_value().unwrap();
                let operations: Vec<Value> = (0..1 + rng.below(2))
                    .map(|_| operation(&mut rng, &current))
                    .collect();
                let patch: json_patch::Patch =
                    serde_json::from_value(Value::Array(operations.clone())).unwrap();
                let mut expected = current.clone();
                let case = format!("seed {seed}: {text} with {}", Value::Array(operations));
                match (
                    json_patch::patch_unsafe(&mut expected, &patch.0),
                    doc.apply(&patch.0),
                ) {
                    (Ok(()), Ok(changed)) => {
                        applied += 1;
                        assert_eq!(doc.to_value().unwrap(), expected, "{case}");
                        let written: Value = serde_json::from_str(&doc.to_text().unwrap()).unwrap();
                        assert_eq!(written, expected, "{case}: as text");
                        // Never unchanged when it changed; exact for one operation that is
                        // not a move (a move of an element onto an equal one counts).
                        if !changed {
                            assert_eq!(expected, current, "{case}: unchanged");
                        }
                        if let [operation] = &patch.0[..]
                            && !matches!(operation, PatchOperation::Move(_))
                        {
                            assert_eq!(changed, expected != current, "{case}: changed");
                        }
                    }
                    (Err(expected), Err(failure)) => {
                        refused += 1;
                        assert_eq!(failure.to_string(), expected.to_string(), "{case}");
                        assert_eq!(doc.to_value().unwrap(), current, "{case}: all or none");
                    }
                    (expected, actual) => {
                        panic!("{case}: json_patch gives {expected:?}, this {actual:?}")
                    }
                }
            }
        }
        // Both outcomes are well represented.
        assert!(
            applied > 8_000 && refused > 8_000,
            "{applied} applied, {refused} refused"
        );
    }

    #[test]
    fn what_no_operation_reaches_is_written_as_it_was_sent() {
        let text = r#"{"kind": "Pod", "n": 12345678901234567890123, "spec": {"containers": [{"name": "a"}, {"name" : "b"}]}}"#;
        let raw = RawValue::from_string(text.to_owned()).unwrap();
        let mut doc = Document::new(&raw);
        let patch: json_patch::Patch = serde_json::from_str(
            r#"[{"op":"add","path":"/spec/containers/1/imagePullPolicy","value":"Always"}]"#,
        )
        .unwrap();
        assert!(doc.apply(&patch.0).unwrap());
        // The number beyond f64's precision and the first container keep their text.
        assert_eq!(
            doc.to_text().unwrap(),
            r#"{"kind":"Pod","n":12345678901234567890123,"spec":{"containers":[{"name": "a"},{"name":"b","imagePullPolicy":"Always"}]}}"#
        );
    }

    #[test]
    fn nesting_beyond_serde_json_s_limit_is_refused_only_where_a_patch_reaches_it() {
        let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        let text = format!(r#"{{"kind":"Pod","deep":{deep},"spec":{{}}}}"#);
        let raw = RawValue::from_string(text.clone()).unwrap();
        let mut doc = Document::new(&raw);
        let patch: json_patch::Patch =
            serde_json::from_str(r#"[{"op":"add","path":"/spec/x","value":1}]"#).unwrap();
        assert!(doc.apply(&patch.0).unwrap());
        assert!(doc.to_text().unwrap().contains(&deep));
        let test: json_patch::Patch =
            serde_json::from_str(r#"[{"op":"test","path":"/deep","value":1}]"#).unwrap();
        match doc.apply(&test.0) {
            Err(PatchFailure::Unreadable(e)) => {
                assert!(e.to_string().contains("recursion limit"), "{e}")
            }
            other => panic!("a test of the deep value: {other:?}"),
        }
        // A pointer deeper than MAX_DEPTH does not apply, however deep the object.
        let far = format!("/deep{}", "/0".repeat(MAX_DEPTH));
        let reach: json_patch::Patch =
            serde_json::from_value(serde_json::json!([{"op": "replace", "path": far, "value": 2}]))
                .unwrap();
        let refused = doc.apply(&reach.0).unwrap_err().to_string();
        assert!(refused.ends_with("path is invalid"), "{refused}");
        // One within it does, and what it replaced, unreadable, counts as changed.
        let near = format!("/deep{}", "/0".repeat(MAX_DEPTH - 2));
        let reach: json_patch::Patch = serde_json::from_value(
            serde_json::json!([{"op": "replace", "path": near, "value": 2}]),
        )
        .unwrap();
        assert!(doc.apply(&reach.0).unwrap());
    }

    #[test]
    fn a_repeated_member_keeps_its_last_value() {
        let raw = RawValue::from_string(r#"{"a":1,"b":2,"a":3}"#.to_owned()).unwrap();
        let mut doc = Document::new(&raw);
        assert_eq!(doc.get(&["a"]).unwrap(), Some(Value::from(3)));
        assert_eq!(doc.to_text().unwrap(), r#"{"a":3,"b":2}"#);
    }
}
