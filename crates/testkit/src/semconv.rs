//! The OpenTelemetry semantic conventions the suite's spans follow, as checks on exported spans:
//! [`violations`] lists what a span gets wrong. Version [`VERSION`] of the conventions
//! (github.com/open-telemetry/semantic-conventions, tag `v1.44.0`):
//!
//! - `docs/messaging/kafka.md`, "Send span (producer)" and "Process span": kind PRODUCER /
//!   CONSUMER, name `{messaging.operation.name} {messaging.destination.name}`,
//!   `messaging.system` = `kafka`, `messaging.operation.name` and `.type` (`send`, `process`),
//!   `messaging.consumer.group.name` (the Kafka group id) on consumers,
//!   `messaging.destination.partition.id` (a string), `messaging.kafka.offset` (an int),
//!   `messaging.kafka.message.key`, `messaging.message.id`; `error.type` if and only if the
//!   operation failed. A process span links to the message's creation context
//!   (`docs/messaging/messaging-spans.md`: it SHOULD; it MAY also be its child, as here).
//! - `docs/rpc/grpc.md` (RPC conventions as reworked in v1.39): kind SERVER / CLIENT,
//!   `rpc.system.name` = `grpc`, `rpc.method` the fully-qualified `package.Service/Method`
//!   (`_OTHER` for a method the server does not know, with `rpc.method_original`), span name
//!   `{rpc.method}` (`grpc` for `_OTHER`), `rpc.response.status_code` the code's name (`OK`,
//!   `NOT_FOUND`, ...), `error.type` the code when it is an error (on a server only `UNKNOWN`,
//!   `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`; on a client
//!   every code but `OK`), `server.address` (and `server.port`); the replaced `rpc.system`,
//!   `rpc.service`, `rpc.grpc.status_code` are gone.
//! - `docs/db/database-spans.md`, `docs/db/postgresql.md`: kind CLIENT,
//!   `db.system.name` = `postgresql`, name `{db.operation.name} {db.collection.name}`.
//!
//! Any other span is INTERNAL and carries none of the attributes that mark a span of those
//! conventions (`messaging.system`, `rpc.system.name`, `db.system.name`).

use crate::ReceivedSpan;

/// The version of the semantic conventions checked.
pub const VERSION: &str = "1.44.0";

/// The names of gRPC's status codes, as `rpc.response.status_code` carries them.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The codes a gRPC server span counts as errors (`docs/rpc/grpc.md`, server span, note 1).
const GRPC_SERVER_ERRORS: [&str; 6] = [
    "UNKNOWN",
    "DEADLINE_EXCEEDED",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
];

/// Attributes earlier versions used, replaced since.
const REPLACED: [(&str, &str); 4] = [
    ("rpc.system", "rpc.system.name"),
    ("rpc.service", "rpc.method (fully qualified)"),
    ("rpc.grpc.status_code", "rpc.response.status_code"),
    (
        "messaging.kafka.destination.partition",
        "messaging.destination.partition.id",
    ),
];

/// What `span` gets wrong against the conventions (empty when nothing), each as a sentence
/// naming the span.
pub fn violations(span: &ReceivedSpan) -> Vec<String> {
    let mut check = Check {
        span,
        found: Vec::new(),
    };
    for (old, new) in REPLACED {
        if span.attr(old).is_some() {
            check.fail(format!("carries `{old}`, replaced by `{new}`"));
        }
    }
    match span.kind {
        "producer" => check.kafka("send"),
        "consumer" => check.kafka("process"),
        "server" => check.grpc(false),
        "client" if span.attr("rpc.system.name").is_some() => check.grpc(true),
        "client" if span.attr("db.system.name").is_some() => check.database(),
        "client" => check.fail("is a CLIENT span of neither gRPC nor a database".into()),
        _ => {
            for marker in ["messaging.system", "rpc.system.name", "db.system.name"] {
                if span.attr(marker).is_some() {
                    check.fail(format!(
                        "is INTERNAL but carries `{marker}` (a span of that convention has its own kind)"
                    ));
                }
            }
        }
    }
    check.found
}

struct Check<'a> {
    span: &'a ReceivedSpan,
    found: Vec<String>,
}

impl<'a> Check<'a> {
    fn fail(&mut self, what: String) {
        self.found.push(format!(
            "{} `{}` [{}] {what}",
            self.span.service, self.span.name, self.span.kind
        ));
    }

    /// The attribute's value when it is set with type `ty`; a violation otherwise.
    fn typed(&mut self, key: &str, ty: &str) -> Option<&'a str> {
        let span = self.span;
        match (span.attr(key), span.attribute_types.get(key).copied()) {
            (Some(value), Some(t)) if t == ty => Some(value),
            (Some(_), t) => {
                self.fail(format!("has `{key}` of type {t:?}, not {ty}"));
                None
            }
            (None, _) => {
                self.fail(format!("lacks `{key}`"));
                None
            }
        }
    }

    fn equals(&mut self, key: &str, expected: &str) {
        if let Some(value) = self.typed(key, "string")
            && value != expected
        {
            let value = value.to_owned();
            self.fail(format!("has `{key}` = {value:?}, not {expected:?}"));
        }
    }

    fn name_is(&mut self, expected: &str) {
        if self.span.name != expected {
            self.fail(format!("should be named {expected:?}"));
        }
    }

    /// `error.type` set exactly when the span's status is ERROR.
    fn error_type_iff_error(&mut self) {
        match (self.span.error, self.span.attr("error.type")) {
            (true, None) => self.fail("failed without `error.type`".into()),
            (false, Some(t)) => {
                let t = t.to_owned();
                self.fail(format!("did not fail but has `error.type` = {t:?}"));
            }
            _ => {}
        }
    }

    fn kafka(&mut self, operation: &str) {
        self.equals("messaging.system", "kafka");
        self.equals("messaging.operation.name", operation);
        self.equals("messaging.operation.type", operation);
        if let Some(destination) = self.typed("messaging.destination.name", "string") {
            let name = format!("{operation} {destination}");
            self.name_is(&name);
        }
        for key in ["messaging.message.id", "messaging.kafka.message.key"] {
            self.typed(key, "string");
        }
        self.error_type_iff_error();
        // A send that failed has no partition or offset to report.
        if operation == "process" || !self.span.error {
            if let Some(partition) = self.typed("messaging.destination.partition.id", "string")
                && partition.parse::<u32>().is_err()
            {
                let partition = partition.to_owned();
                self.fail(format!("has partition id {partition:?}"));
            }
            self.typed("messaging.kafka.offset", "int");
        }
        if operation == "process" {
            self.typed("messaging.consumer.group.name", "string");
            let span = self.span;
            if span.links.is_empty() {
                self.fail("links to no creation context".into());
            } else if !span.parent_span_id.is_empty()
                && !span
                    .links
                    .iter()
                    .any(|(t, s)| *t == span.trace_id && *s == span.parent_span_id)
            {
                self.fail("is the child of a context it does not link to".into());
            }
        }
    }

    fn grpc(&mut self, client: bool) {
        self.equals("rpc.system.name", "grpc");
        if let Some(method) = self.typed("rpc.method", "string").map(str::to_owned) {
            if method == "_OTHER" {
                self.name_is("grpc");
                self.typed("rpc.method_original", "string");
            } else {
                let qualified = method.split_once('/').is_some_and(|(service, m)| {
                    service.contains('.') && !m.is_empty() && !m.contains('/')
                });
                if !qualified {
                    self.fail(format!(
                        "has `rpc.method` = {method:?}, not package.Service/Method"
                    ));
                }
                self.name_is(&method);
            }
        }
        if let Some(code) = self
            .typed("rpc.response.status_code", "string")
            .map(str::to_owned)
        {
            if !GRPC_CODES.contains(&code.as_str()) {
                self.fail(format!("has status code {code:?}, not a gRPC code's name"));
            }
            let is_error = if client {
                code != "OK"
            } else {
                GRPC_SERVER_ERRORS.contains(&code.as_str())
            };
            if is_error != self.span.error {
                self.fail(format!(
                    "has status ERROR = {} for code {code}",
                    self.span.error
                ));
            }
            match self.span.attr("error.type") {
                Some(t) if !is_error || t != code => {
                    let t = t.to_owned();
                    self.fail(format!("has `error.type` = {t:?} for code {code}"));
                }
                None if is_error => self.fail(format!("lacks `error.type` for code {code}")),
                _ => {}
            }
        }
        self.typed("server.address", "string");
        if self.span.attr("server.port").is_some() {
            self.typed("server.port", "int");
        }
    }

    fn database(&mut self) {
        self.equals("db.system.name", "postgresql");
        if let Some(operation) = self.typed("db.operation.name", "string").map(str::to_owned) {
            let name = match self.span.attr("db.collection.name") {
                Some(collection) => format!("{operation} {collection}"),
                None => operation,
            };
            self.name_is(&name);
        }
        self.error_type_iff_error();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn span(kind: &'static str, name: &str, attrs: &[(&str, &str, &'static str)]) -> ReceivedSpan {
        ReceivedSpan {
            service: "order-service".into(),
            name: name.into(),
            kind,
            trace_id: "t".into(),
            span_id: "s".into(),
            parent_span_id: String::new(),
            attributes: attrs
                .iter()
                .map(|(k, v, _)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            attribute_types: attrs
                .iter()
                .map(|(k, _, t)| ((*k).to_owned(), *t))
                .collect::<BTreeMap<_, _>>(),
            links: Vec::new(),
            start_unix_nanos: 0,
            end_unix_nanos: 0,
            error: false,
        }
    }

    const S: &str = "string";

    fn consumer() -> ReceivedSpan {
        let mut s = span(
            "consumer",
            "process order.events.v1",
            &[
                ("messaging.system", "kafka", S),
                ("messaging.operation.name", "process", S),
                ("messaging.operation.type", "process", S),
                ("messaging.destination.name", "order.events.v1", S),
                ("messaging.consumer.group.name", "payment-service", S),
                ("messaging.destination.partition.id", "2", S),
                ("messaging.kafka.offset", "41", "int"),
                ("messaging.message.id", "0192", S),
                ("messaging.kafka.message.key", "order-1", S),
            ],
        );
        s.parent_span_id = "p".into();
        s.links = vec![("t".into(), "p".into())];
        s
    }

    #[test]
    fn a_conventional_process_span_passes() {
        assert_eq!(violations(&consumer()), Vec::<String>::new());
    }

    #[test]
    fn what_earlier_code_emitted_is_caught() {
        // An int partition id, no operation name, no link.
        let mut s = consumer();
        s.attribute_types
            .insert("messaging.destination.partition.id".into(), "int");
        s.attributes.remove("messaging.operation.name");
        s.links.clear();
        let found = violations(&s);
        assert_eq!(found.len(), 3, "{found:#?}");

        let server = span(
            "server",
            "shop.order.v1.OrderService/PlaceOrder",
            &[
                ("rpc.system", "grpc", S),
                ("rpc.service", "shop.order.v1.OrderService", S),
                ("rpc.method", "PlaceOrder", S),
                ("rpc.grpc.status_code", "0", "int"),
            ],
        );
        let found = violations(&server);
        // Three replaced attributes, no rpc.system.name, an unqualified method (which the name
        // is not), no status code and no server address.
        assert_eq!(found.len(), 8, "{found:#?}");
    }

    #[test]
    fn a_conventional_grpc_server_span_passes_and_client_errors_differ_from_server_errors() {
        let server = |code: &str, error: bool| {
            let mut attrs = vec![
                ("rpc.system.name", "grpc", S),
                ("rpc.method", "shop.order.v1.OrderService/GetOrder", S),
                ("rpc.response.status_code", code, S),
                ("server.address", "127.0.0.1", S),
                ("server.port", "50051", "int"),
            ];
            if error {
                attrs.push(("error.type", code, S));
            }
            let mut s = span("server", "shop.order.v1.OrderService/GetOrder", &attrs);
            s.error = error;
            s
        };
        assert!(violations(&server("OK", false)).is_empty());
        // NOT_FOUND is the caller's problem, not the server's.
        assert!(violations(&server("NOT_FOUND", false)).is_empty());
        assert_eq!(violations(&server("NOT_FOUND", true)).len(), 2);
        assert!(violations(&server("INTERNAL", true)).is_empty());
        let mut client = server("NOT_FOUND", true);
        client.kind = "client";
        assert!(violations(&client).is_empty());
    }

    #[test]
    fn database_spans_are_named_after_operation_and_table() {
        let ok = span(
            "client",
            "INSERT orders",
            &[
                ("db.system.name", "postgresql", S),
                ("db.operation.name", "INSERT", S),
                ("db.collection.name", "orders", S),
            ],
        );
        assert!(violations(&ok).is_empty());
        let mut wrong = ok.clone();
        wrong.name = "insert order".into();
        assert_eq!(violations(&wrong).len(), 1);
        let internal = span(
            "internal",
            "outbox append",
            &[("messaging.system", "kafka", S)],
        );
        assert_eq!(violations(&internal).len(), 1);
    }
}
