//! Checks on messages that arrive from the wire, before any of their text reaches SQL or a log
//! line: a record on a topic may have been written by anyone who could write there (a buggy or
//! hostile producer, an operator's replay of an edited record), whatever its producer's own
//! validation.
//!
//! The rules are the same for every message, and deliberately coarse: the domain checks what a
//! value means; this checks that it is text a database column, a log line and a terminal can
//! hold. Every string is at most [`MAX_TEXT_BYTES`] bytes and free of control characters
//! (NUL, which PostgreSQL's `text` refuses; newlines and escape sequences, which forge log lines
//! or terminal output), and every repeated field holds at most [`MAX_ITEMS`] elements. The
//! [`Untrusted`] impls are generated from the descriptors (`proto/build.rs`), so each field of
//! every `shop.*` message, nested and repeated ones included, is covered.

/// The longest string any field of a message may hold, in bytes. The gRPC edge allows far
/// less for each field (names of 200 characters are its longest, up to 800 bytes of UTF-8).
pub const MAX_TEXT_BYTES: usize = 1024;

/// The most elements of any repeated field (an order holds at most 100 lines at the edge).
pub const MAX_ITEMS: usize = 1000;

/// A message whose every field can be checked for hostile input: see the [module](self).
pub trait Untrusted {
    /// The first field that breaks the rules, if any.
    ///
    /// # Errors
    /// The field (a path such as `lines[3].sku`) and what is wrong with it; never its value.
    fn check_text(&self) -> Result<(), Violation>;
}

/// A field of a message from the wire that breaks the rules of [`Untrusted`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Where: field names from the message down, e.g. `lines[3].sku`.
    pub field: String,
    /// What is wrong, without the value (which is what cannot be trusted).
    pub problem: &'static str,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field {}: {}", self.field, self.problem)
    }
}

impl std::error::Error for Violation {}

impl Violation {
    fn new(field: &str, problem: &'static str) -> Self {
        Self {
            field: field.to_owned(),
            problem,
        }
    }

    fn within(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

pub(crate) fn text(field: &str, value: &str) -> Result<(), Violation> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(Violation::new(
            field,
            "longer than 1024 bytes (shop_proto::untrusted::MAX_TEXT_BYTES)",
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Violation::new(
            field,
            "contains a control character (such as NUL, a newline or an escape)",
        ));
    }
    Ok(())
}

pub(crate) fn count(field: &str, len: usize) -> Result<(), Violation> {
    if len > MAX_ITEMS {
        return Err(Violation::new(
            field,
            "holds more than 1000 elements (shop_proto::untrusted::MAX_ITEMS)",
        ));
    }
    Ok(())
}

pub(crate) fn texts(field: &str, values: &[String]) -> Result<(), Violation> {
    count(field, values.len())?;
    for (i, value) in values.iter().enumerate() {
        text(&format!("{field}[{i}]"), value)?;
    }
    Ok(())
}

pub(crate) fn message<M: Untrusted>(field: &str, value: Option<&M>) -> Result<(), Violation> {
    value.map_or(Ok(()), |m| m.check_text().map_err(|v| v.within(field)))
}

pub(crate) fn messages<M: Untrusted>(field: &str, values: &[M]) -> Result<(), Violation> {
    count(field, values.len())?;
    for (i, value) in values.iter().enumerate() {
        value
            .check_text()
            .map_err(|v| v.within(&format!("{field}[{i}]")))?;
    }
    Ok(())
}

include!(concat!(env!("OUT_DIR"), "/untrusted.rs"));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::v1::Money;
    use crate::order::v1::{OrderLine, OrderPlaced};

    fn placed() -> OrderPlaced {
        OrderPlaced {
            order_id: "order-1".into(),
            customer_id: "ann".into(),
            lines: vec![OrderLine {
                sku: "BOOK".into(),
                quantity: 1,
                unit_price: Some(Money {
                    amount_minor: 100,
                    currency: "EUR".into(),
                }),
            }],
            total: Some(Money {
                amount_minor: 100,
                currency: "EUR".into(),
            }),
        }
    }

    #[test]
    fn a_well_formed_event_passes() {
        assert_eq!(placed().check_text(), Ok(()));
    }

    #[test]
    fn a_nul_byte_in_a_nested_field_is_named_by_its_path() {
        let mut event = placed();
        event.lines[0].sku = "BO\0OK".into();
        let violation = event.check_text().unwrap_err();
        assert_eq!(violation.field, "lines[0].sku");
        assert!(violation.problem.contains("control character"));
        assert!(
            !violation.to_string().contains("BO"),
            "the value is not repeated"
        );
    }

    #[test]
    fn control_characters_oversized_text_and_too_many_items_are_refused() {
        let mut forged = placed();
        forged.customer_id = "ann\n{\"level\":\"INFO\"}".into();
        assert_eq!(forged.check_text().unwrap_err().field, "customer_id");

        let mut escaped = placed();
        escaped.total.as_mut().unwrap().currency = "\u{1b}[2J".into();
        assert_eq!(escaped.check_text().unwrap_err().field, "total.currency");

        let mut long = placed();
        long.order_id = "x".repeat(MAX_TEXT_BYTES + 1);
        assert_eq!(long.check_text().unwrap_err().field, "order_id");
        long.order_id = "x".repeat(MAX_TEXT_BYTES);
        assert_eq!(long.check_text(), Ok(()));

        let mut many = placed();
        many.lines = vec![many.lines[0].clone(); MAX_ITEMS + 1];
        assert_eq!(many.check_text().unwrap_err().field, "lines");
    }
}
