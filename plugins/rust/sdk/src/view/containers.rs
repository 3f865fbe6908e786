//! One string field of every container of an object's pod spec, read straight from the JSON
//! text: the typed counterpart of [`crate::k8s::pod_containers`] for a plugin that reads a
//! single container field (`always-pull-images` reads `imagePullPolicy`). Deserializing walks
//! only the pod spec's path and the three container lists, skipping everything else with
//! [`IgnoredAny`] without building it. It reads exactly what the `Value` helpers read: a level
//! of the path or a list that is not of the expected JSON type counts as absent, a container
//! that is not a JSON object is reported as such, a repeated key counts once (the last, as a
//! `Value` map keeps it), and a field that is not a string reads as absent (`Value::as_str`).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::k8s::{ContainerList, pod_spec_location};

/// The scalar visits of a lenient visitor: every scalar reads as `self.other()`.
macro_rules! scalars_are_other {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(self.other())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(self.other())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(self.other())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(self.other())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(self.other())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(self.other())
        }
    };
}

/// The containers of one pod spec, in [`crate::k8s::containers`] order (`containers`, then
/// `initContainers`, then `ephemeralContainers`, each in list order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContainers {
    /// The pod spec's dotted path, e.g. `spec.template.spec`.
    pub path: &'static str,
    /// Its JSON pointer, e.g. `/spec/template/spec`.
    pub pointer: &'static str,
    /// Every container of the three lists.
    pub containers: Vec<ContainerField>,
}

/// One container of a pod spec and the field read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerField {
    /// The list it is in.
    pub list: ContainerList,
    /// Its index in that list.
    pub index: usize,
    /// `None` when the container is not a JSON object; else the field when it is a string.
    pub value: Option<Option<String>>,
}

impl ContainerField {
    /// Its dotted path under the pod spec at `pod_path`, e.g. `spec.initContainers[1]`.
    pub fn path(&self, pod_path: &str) -> String {
        format!("{pod_path}.{}[{}]", self.list.field(), self.index)
    }
}

/// String field `field` of every container of the pod spec of `json`, an object taken as one of
/// `group` and `kind` ([`pod_spec_location`]). `Ok(None)` for kinds without a pod spec and when
/// the spec is absent (or not an object on the way); `Err` when `json` is not JSON.
pub fn container_field(
    group: &str,
    kind: &str,
    json: &str,
    field: &str,
) -> Result<Option<PodContainers>, serde_json::Error> {
    let Some((path, pointer)) = pod_spec_location(group, kind) else {
        return Ok(None);
    };
    let segments: Vec<&str> = pointer.split('/').skip(1).collect();
    let mut de = serde_json::Deserializer::from_str(json);
    let lists = Seek {
        segments: &segments,
        field,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(lists.map(|lists| PodContainers {
        path,
        pointer,
        containers: ContainerList::ALL
            .into_iter()
            .zip(lists)
            .flat_map(|(list, items)| {
                items
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(move |(index, value)| ContainerField { list, index, value })
            })
            .collect(),
    }))
}

/// The three lists as read: `None` for a list absent or not an array; per container `None` when
/// it is not an object, else its field as a string.
type Lists = [Option<Vec<Option<Option<String>>>>; 3];

/// Follows `segments` through nested objects to the pod spec, then reads its lists. `None` when
/// a level is absent or not an object.
struct Seek<'a> {
    segments: &'a [&'a str],
    field: &'a str,
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = Option<Lists>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Seek<'_> {
    /// What a value that is not an object reads as: nothing on the way to the pod spec; the
    /// pod spec itself is there, with no lists (`Value::get` on a non-object finds nothing).
    fn other(&self) -> Option<Lists> {
        self.segments.is_empty().then_some([None, None, None])
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = Option<Lists>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some((&first, rest)) = self.segments.split_first() else {
            // The pod spec itself: its three lists.
            let mut lists: Lists = [None, None, None];
            while let Some(key) = map.next_key_seed(KeyIn(&LIST_FIELDS))? {
                match key {
                    Some(slot) => lists[slot] = map.next_value_seed(List { field: self.field })?,
                    None => skip_value(&mut map)?,
                }
            }
            return Ok(Some(lists));
        };
        let mut found = None;
        while let Some(key) = map.next_key_seed(KeyIn(&[first]))? {
            match key {
                Some(_) => {
                    found = map.next_value_seed(Seek {
                        segments: rest,
                        field: self.field,
                    })?
                }
                None => skip_value(&mut map)?,
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|()| self.other())
    }

    scalars_are_other!();
}

const LIST_FIELDS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// A container list: `None` when not an array.
struct List<'a> {
    field: &'a str,
}

impl<'de> DeserializeSeed<'de> for List<'_> {
    type Value = Option<Vec<Option<Option<String>>>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl List<'_> {
    fn other(&self) -> Option<Vec<Option<Option<String>>>> {
        None
    }
}

impl<'de> Visitor<'de> for List<'_> {
    type Value = Option<Vec<Option<Option<String>>>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(Item { field: self.field })? {
            items.push(item);
        }
        Ok(Some(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map).map(|()| self.other())
    }

    scalars_are_other!();
}

/// A container: `None` when not an object, else its `field` when that is a string.
struct Item<'a> {
    field: &'a str,
}

impl<'de> DeserializeSeed<'de> for Item<'_> {
    type Value = Option<Option<String>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Item<'_> {
    fn other(&self) -> Option<Option<String>> {
        None
    }
}

impl<'de> Visitor<'de> for Item<'_> {
    type Value = Option<Option<String>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut value = None;
        while let Some(key) = map.next_key_seed(KeyIn(&[self.field]))? {
            match key {
                Some(_) => value = map.next_value_seed(StringOrNone)?,
                None => skip_value(&mut map)?,
            }
        }
        Ok(Some(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|()| self.other())
    }

    scalars_are_other!();
}

/// A value read as `Value::as_str` would: the string, or `None` for anything else.
struct StringOrNone;

impl<'de> DeserializeSeed<'de> for StringOrNone {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl StringOrNone {
    fn other(&self) -> Option<String> {
        None
    }
}

impl<'de> Visitor<'de> for StringOrNone {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map).map(|()| self.other())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|()| self.other())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A map key: the index of `names` it equals, `None` for any other key. Compared as borrowed
/// text when the key has no escapes, so no key is allocated.
struct KeyIn<'a>(&'a [&'a str]);

impl<'de> DeserializeSeed<'de> for KeyIn<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIn<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|name| *name == v))
    }
}

fn skip_value<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(drop)
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests;
