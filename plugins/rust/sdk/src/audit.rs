//! Helpers on the `audit-sink` world's types: an event back to `audit.k8s.io/v1` Event JSON, the
//! line most sinks write, with the objects embedded exactly as they arrived (or as the sink
//! replaced them).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::audit_sink::{Event, ObjectReference, UserInfo};

impl Event {
    /// The event as one line of `audit.k8s.io/v1` Event JSON (with `kind` and `apiVersion`),
    /// the format `kubectl`, `jq` and log shippers read. The objects are written as the host
    /// gave them (it read each one as JSON before handing it over).
    pub fn to_json(&self) -> Result<String, String> {
        self.to_json_with(
            self.request_object.as_deref(),
            self.response_object.as_deref(),
        )
    }

    /// As [`Event::to_json`], with `request_object` and `response_object` in place of the
    /// event's own (e.g. redacted copies); `None` leaves the object out. `Err` if a replacement
    /// is not JSON.
    pub fn to_json_with(
        &self,
        request_object: Option<&str>,
        response_object: Option<&str>,
    ) -> Result<String, String> {
        // The host's own texts are JSON (it read each one before handing it over); only a
        // replacement is checked. The objects are copied only into the line itself.
        let objects = [
            (
                "responseStatus",
                self.response_status.as_deref(),
                self.response_status.as_deref(),
            ),
            (
                "requestObject",
                request_object,
                self.request_object.as_deref(),
            ),
            (
                "responseObject",
                response_object,
                self.response_object.as_deref(),
            ),
        ];
        let mut size = 0;
        for (what, text, host) in objects {
            if let Some(text) = text {
                size += text.len() + what.len() + 4;
                let same = host.is_some_and(|h| std::ptr::eq(h, text));
                if !same {
                    serde_json::from_str::<&RawValue>(text)
                        .map_err(|e| format!("{what} is not JSON: {e}"))?;
                }
            }
        }
        let head = HeadJson {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: self.level.as_str(),
            audit_id: &self.audit_id,
            stage: self.stage.as_str(),
            request_uri: &self.request_uri,
            verb: &self.verb,
            user: UserJson::from(&self.user),
            impersonated_user: self.impersonated_user.as_ref().map(UserJson::from),
            source_ips: &self.source_ips,
            user_agent: &self.user_agent,
            object_ref: self.object_ref.as_ref().map(RefJson::from),
        };
        let tail = TailJson {
            request_received_timestamp: &self.request_received_timestamp,
            stage_timestamp: &self.stage_timestamp,
            annotations: self
                .annotations
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        };
        // `{head…}` and `{tail…}` (neither is ever `{}`) joined around the objects, which are
        // written as they are.
        let head = serde_json::to_string(&head).map_err(|e| e.to_string())?;
        let tail = serde_json::to_string(&tail).map_err(|e| e.to_string())?;
        let mut line = String::with_capacity(size + head.len() + tail.len());
        line.push_str(&head[..head.len() - 1]);
        for (what, text, _) in objects {
            if let Some(text) = text {
                line.push_str(",\"");
                line.push_str(what);
                line.push_str("\":");
                line.push_str(text.trim_matches([' ', '\t', '\n', '\r']));
            }
        }
        line.push(',');
        line.push_str(&tail[1..]);
        Ok(line)
    }
}

/// The members of an Event before its objects.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HeadJson<'a> {
    kind: &'static str,
    api_version: &'static str,
    level: &'static str,
    #[serde(rename = "auditID")]
    audit_id: &'a str,
    stage: &'static str,
    #[serde(rename = "requestURI")]
    request_uri: &'a str,
    verb: &'a str,
    user: UserJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    impersonated_user: Option<UserJson<'a>>,
    #[serde(rename = "sourceIPs", skip_serializing_if = "<[_]>::is_empty")]
    source_ips: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    user_agent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_ref: Option<RefJson<'a>>,
}

/// The members of an Event after its objects.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TailJson<'a> {
    request_received_timestamp: &'a str,
    stage_timestamp: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct UserJson<'a> {
    username: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    uid: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    groups: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extra: BTreeMap<&'a str, &'a [String]>,
}

impl<'a> From<&'a UserInfo> for UserJson<'a> {
    fn from(u: &'a UserInfo) -> Self {
        UserJson {
            username: &u.username,
            uid: &u.uid,
            groups: &u.groups,
            extra: u
                .extra
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RefJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    resource: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    uid: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    api_group: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    api_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    resource_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    subresource: &'a str,
}

impl<'a> From<&'a ObjectReference> for RefJson<'a> {
    fn from(o: &'a ObjectReference) -> Self {
        RefJson {
            resource: &o.resource,
            namespace: &o.namespace,
            name: &o.name,
            uid: &o.uid,
            api_group: &o.api_group,
            api_version: &o.api_version,
            resource_version: &o.resource_version,
            subresource: &o.subresource,
        }
    }
}

#[cfg(test)]
mod tests;
