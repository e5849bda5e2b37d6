//! Reading the event catalog, `docs/asyncapi.yaml`, as any tool would: YAML, with its local
//! `$ref`s followed. Shared by the catalog check and the new-subscriber test.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_norway::Value;

/// The repository root (this crate is `crates/suite`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The catalog document.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub doc: Value,
}

/// One message of a channel.
#[derive(Clone, Debug)]
pub struct CatalogMessage {
    /// The message's `name`: the `ce_type` (for events, the protobuf full name).
    pub name: String,
    /// The payload's `x-protobuf-message`, if it is a protobuf message.
    pub protobuf_message: Option<String>,
    /// The message's `x-protobuf-file`.
    pub protobuf_file: Option<String>,
    /// The headers schema (its `allOf` merged).
    pub headers: Value,
}

/// One channel (topic).
#[derive(Clone, Debug)]
pub struct CatalogChannel {
    /// The channel's key under `channels`.
    pub id: String,
    pub address: String,
    pub producer: Option<String>,
    pub messages: Vec<CatalogMessage>,
    pub partitions: Option<i64>,
    pub retention_ms: Option<i64>,
}

impl Catalog {
    pub fn load() -> Self {
        Self::parse(
            &std::fs::read_to_string(root().join("docs/asyncapi.yaml"))
                .expect("docs/asyncapi.yaml"),
        )
    }

    pub fn parse(text: &str) -> Self {
        Self {
            doc: serde_norway::from_str(text).expect("docs/asyncapi.yaml is YAML"),
        }
    }

    /// `value`, or what its `$ref` (a local JSON pointer, `#/...`) points at.
    pub fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
            return value;
        };
        let pointer = reference
            .strip_prefix("#/")
            .unwrap_or_else(|| panic!("only local references are used: {reference}"));
        // A dangling reference resolves to null (asyncapi validate reports it; the checks then
        // report what is missing).
        static NULL: Value = Value::Null;
        let target = pointer.split('/').try_fold(&self.doc, |v, key| {
            v.get(key.replace("~1", "/").replace("~0", "~").as_str())
        });
        target.map_or(&NULL, |t| self.resolve(t))
    }

    /// A schema with its `$ref` followed and its `allOf` parts merged into one mapping.
    pub fn schema(&self, value: &Value) -> Value {
        let value = self.resolve(value);
        let mut merged = serde_norway::Mapping::new();
        if let Some(parts) = value.get("allOf").and_then(Value::as_sequence) {
            for part in parts {
                merge(&mut merged, &self.schema(part));
            }
        }
        if let Some(own) = value.as_mapping() {
            let mut own = own.clone();
            own.remove("allOf");
            merge(&mut merged, &Value::Mapping(own));
        }
        Value::Mapping(merged)
    }

    pub fn channels(&self) -> Vec<CatalogChannel> {
        let Some(channels) = self.doc.get("channels").and_then(Value::as_mapping) else {
            return Vec::new();
        };
        channels
            .iter()
            .map(|(id, channel)| {
                let channel = self.resolve(channel);
                let kafka = channel.get("bindings").and_then(|b| b.get("kafka"));
                let int = |v: Option<&Value>| v.and_then(Value::as_i64);
                CatalogChannel {
                    id: id.as_str().unwrap_or_default().to_owned(),
                    address: text(channel.get("address")).unwrap_or_default(),
                    producer: text(channel.get("x-producer")),
                    messages: channel
                        .get("messages")
                        .and_then(Value::as_mapping)
                        .map(|m| m.values().map(|m| self.message(m)).collect())
                        .unwrap_or_default(),
                    partitions: int(kafka.and_then(|k| k.get("partitions"))),
                    retention_ms: int(kafka
                        .and_then(|k| k.get("topicConfiguration"))
                        .and_then(|c| c.get("retention.ms"))),
                }
            })
            .collect()
    }

    pub fn channel(&self, address: &str) -> Option<CatalogChannel> {
        self.channels().into_iter().find(|c| c.address == address)
    }

    fn message(&self, value: &Value) -> CatalogMessage {
        let message = self.resolve(value);
        let payload = message.get("payload").map(|p| self.schema(p));
        CatalogMessage {
            name: text(message.get("name")).unwrap_or_default(),
            protobuf_message: payload.and_then(|p| text(p.get("x-protobuf-message"))),
            protobuf_file: text(message.get("x-protobuf-file")),
            headers: message
                .get("headers")
                .map(|h| self.schema(h))
                .unwrap_or(Value::Null),
        }
    }

    /// `components.schemas`, by name.
    pub fn schemas(&self) -> BTreeMap<String, Value> {
        self.doc
            .get("components")
            .and_then(|c| c.get("schemas"))
            .and_then(Value::as_mapping)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The consumer groups of the `receive` operations, with the channel address each reads.
    pub fn consumer_groups(&self) -> Vec<(String, String)> {
        let Some(operations) = self.doc.get("operations").and_then(Value::as_mapping) else {
            return Vec::new();
        };
        let mut groups = Vec::new();
        for operation in operations.values() {
            if operation.get("action").and_then(Value::as_str) != Some("receive") {
                continue;
            }
            let address = operation
                .get("channel")
                .map(|c| text(self.resolve(c).get("address")).unwrap_or_default())
                .unwrap_or_default();
            let ids = operation
                .get("bindings")
                .and_then(|b| b.get("kafka"))
                .and_then(|k| k.get("groupId"))
                .and_then(|g| g.get("enum"))
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default();
            for id in ids {
                groups.push((text(Some(&id)).unwrap_or_default(), address.clone()));
            }
        }
        groups
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Merges `from` into `into`; nested mappings (e.g. `properties`) are merged key by key, and
/// sequences (e.g. `required`) are concatenated.
fn merge(into: &mut serde_norway::Mapping, from: &Value) {
    let Some(from) = from.as_mapping() else {
        return;
    };
    for (key, value) in from {
        match (into.get_mut(key), value) {
            (Some(Value::Mapping(existing)), Value::Mapping(_)) => merge(existing, value),
            (Some(Value::Sequence(existing)), Value::Sequence(more)) => {
                existing.extend(more.iter().cloned());
            }
            _ => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}
