//! Payloads decoded from the published descriptors (`shop_proto::FILE_DESCRIPTOR_SET`, compiled
//! from proto/shop/**.proto): the `ce_type` names the message, whatever the Rust types are.

use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use serde_json::{Map, Value as Json};

/// The payload of a record of type `event_type`, as JSON (field names as in the .proto), or why
/// it cannot be decoded (an unknown type, bytes that are not that message).
pub(crate) fn payload(event_type: &str, payload: &[u8]) -> Result<Json, String> {
    let pool = DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET)
        .map_err(|e| format!("the compiled-in descriptors do not decode: {e}"))?;
    let descriptor = pool
        .get_message_by_name(event_type)
        .ok_or_else(|| format!("{event_type:?} is not a message of the published contracts"))?;
    let message = DynamicMessage::decode(descriptor, payload)
        .map_err(|e| format!("the payload is not a {event_type}: {e}"))?;
    Ok(message_json(&message))
}

fn message_json(message: &DynamicMessage) -> Json {
    let mut out = Map::new();
    for (field, value) in message.fields() {
        out.insert(field.name().to_owned(), value_json(value, &field.kind()));
    }
    Json::Object(out)
}

fn value_json(value: &Value, kind: &prost_reflect::Kind) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(n) => Json::from(*n),
        Value::I64(n) => Json::String(n.to_string()),
        Value::U32(n) => Json::from(*n),
        Value::U64(n) => Json::String(n.to_string()),
        Value::F32(n) => Json::from(f64::from(*n)),
        Value::F64(n) => Json::from(*n),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(hex(b)),
        Value::EnumNumber(n) => match kind.as_enum().and_then(|e| e.get_value(*n)) {
            Some(v) => Json::String(v.name().to_owned()),
            None => Json::from(*n),
        },
        Value::Message(m) => message_json(m),
        Value::List(items) => Json::Array(items.iter().map(|v| value_json(v, kind)).collect()),
        Value::Map(entries) => {
            let value_kind = kind
                .as_message()
                .map(|m| m.map_entry_value_field().kind())
                .unwrap_or_else(|| kind.clone());
            Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| (format!("{k:?}"), value_json(v, &value_kind)))
                    .collect(),
            )
        }
    }
}

/// Bytes as lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A header value for people: the text when it is printable UTF-8, else `0x` and hex.
pub(crate) fn header_text(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
        _ => format!("0x{}", hex(value)),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use shop_proto::order::v1::PaymentRequested;

    use super::*;

    #[test]
    fn an_event_decodes_by_its_type_name_alone() {
        let event = PaymentRequested {
            order_id: "o-1".into(),
            customer_id: "alice".into(),
            ..Default::default()
        };
        let json = payload("shop.order.v1.PaymentRequested", &event.encode_to_vec()).unwrap();
        assert_eq!(json["order_id"], "o-1");
        assert_eq!(json["customer_id"], "alice");
        assert!(payload("shop.order.v1.NoSuchEvent", &[]).is_err());
        assert!(payload("shop.order.v1.PaymentRequested", &[0xff; 12]).is_err());
    }
}
