//! gRPC middleware (tower layers over tonic's HTTP services) that gives every call a span and RED
//! metrics, on both sides of the wire:
//!
//! - [`GrpcServerLayer`]: a `SERVER` span, the child of the caller's `traceparent` metadata;
//!   `grpc_server_started_total`, `grpc_server_handled_total{grpc_code}` and
//!   `grpc_server_handling_seconds`.
//! - [`GrpcClientLayer`]: a `CLIENT` span whose context is sent as `traceparent`, so the server's
//!   span continues the caller's trace; the same metrics with `grpc_client_` names.
//!
//! The spans follow the OpenTelemetry semantic conventions for gRPC, v1.44.0
//! (`docs/rpc/grpc.md`): named after `rpc.method`, the fully-qualified `package.Service/Method`
//! (on a server, `_OTHER` for a path it does not serve, the span then named `grpc` and the path
//! kept in `rpc.method_original`); `rpc.system.name` = `grpc`; `rpc.response.status_code`, the
//! code's name (`OK`, `NOT_FOUND`, ...); `error.type` and an ERROR status when the code is an
//! error, which for a client is any code but `OK` and for a server only `UNKNOWN`,
//! `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE` and `DATA_LOSS` (the others
//! are the caller's doing); `server.address` and `server.port`: the client's target, and on the
//! server the `:authority` the client called. The reported errors are gRPC codes only: a call
//! whose transport fails before any status is recorded as `UNAVAILABLE` (as tonic reports it),
//! one whose body ends without a status as `UNKNOWN`, one dropped by the peer as `CANCELLED`.
//!
//! A call's status code is read where gRPC puts it: the response headers for a "trailers-only"
//! answer (most errors), else the trailers at the end of the body. The call is recorded when the
//! code is known, or as `CANCELLED` when the body is dropped before (the peer went away).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http_body::{Body, Frame};
use prometheus_client::encoding::EncodeLabelSet;
use tracing::Instrument;

use crate::metrics::{Counter, Family, HistogramFamily, Registry, latency_family};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: String,
    grpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

/// The RED metrics of one side (server or client) of gRPC calls.
#[derive(Clone, Debug)]
pub struct GrpcMetrics {
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: HistogramFamily<MethodLabels>,
}

impl GrpcMetrics {
    /// Server-side metrics (`grpc_server_*`), registered in `registry`.
    pub fn server(registry: &mut Registry) -> Self {
        Self::register(registry, "server", "handled by this server")
    }

    /// Client-side metrics (`grpc_client_*`), registered in `registry`.
    pub fn client(registry: &mut Registry) -> Self {
        Self::register(registry, "client", "made by this client")
    }

    /// Metrics kept but not exported (tests, tools).
    pub fn unregistered() -> Self {
        Self {
            started: Family::default(),
            handled: Family::default(),
            handling: latency_family(),
        }
    }

    fn register(registry: &mut Registry, side: &str, what: &str) -> Self {
        let metrics = Self::unregistered();
        registry.register(
            format!("grpc_{side}_started"),
            format!("gRPC calls started, {what}"),
            metrics.started.clone(),
        );
        registry.register(
            format!("grpc_{side}_handled"),
            format!("gRPC calls completed, {what}, by status code"),
            metrics.handled.clone(),
        );
        registry.register(
            format!("grpc_{side}_handling_seconds"),
            format!("Duration of gRPC calls {what}, until the status is known"),
            metrics.handling.clone(),
        );
        metrics
    }
}

/// The name gRPC gives to a status code, as in `grpc_code` labels.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::{
        Aborted, AlreadyExists, Cancelled, DataLoss, DeadlineExceeded, FailedPrecondition,
        Internal, InvalidArgument, NotFound, Ok, OutOfRange, PermissionDenied, ResourceExhausted,
        Unauthenticated, Unavailable, Unimplemented, Unknown,
    };
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// The code as `rpc.response.status_code` and `error.type` carry it: its name in gRPC's
/// status code list.
fn code_text(code: tonic::Code) -> &'static str {
    use tonic::Code::{
        Aborted, AlreadyExists, Cancelled, DataLoss, DeadlineExceeded, FailedPrecondition,
        Internal, InvalidArgument, NotFound, Ok, OutOfRange, PermissionDenied, ResourceExhausted,
        Unauthenticated, Unavailable, Unimplemented, Unknown,
    };
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Whether `code` makes the call's span an error on `side` (see the module docs).
fn is_error(side: Side, code: tonic::Code) -> bool {
    use tonic::Code::{
        DataLoss, DeadlineExceeded, Internal, Ok, Unavailable, Unimplemented, Unknown,
    };
    match side {
        Side::Client => code != Ok,
        Side::Server => matches!(
            code,
            Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
        ),
    }
}

fn status_in(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// `/shop.order.v1.OrderService/PlaceOrder` → (`shop.order.v1.OrderService`, `PlaceOrder`).
fn service_and_method(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default().to_owned();
    let method = parts.next().unwrap_or_default().to_owned();
    (service, method)
}

/// Health checks and reflection are infrastructure: they are counted, but get no span (probes
/// every few seconds would bury the traces that matter).
fn traced(service: &str) -> bool {
    !(service.starts_with("grpc.health.") || service.starts_with("grpc.reflection."))
}

#[derive(Clone, Copy, Debug)]
enum Side {
    Server,
    Client,
}

/// One call in flight: finished (metrics, span status) once its code is known.
struct Call {
    side: Side,
    metrics: GrpcMetrics,
    labels: MethodLabels,
    started: Instant,
    span: tracing::Span,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: tonic::Code) {
        if self.done {
            return;
        }
        self.done = true;
        let name = code_name(code);
        self.metrics
            .handled
            .get_or_create(&HandledLabels {
                grpc_service: self.labels.grpc_service.clone(),
                grpc_method: self.labels.grpc_method.clone(),
                grpc_code: name,
            })
            .inc();
        self.metrics
            .handling
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
        self.span
            .record("rpc.response.status_code", code_text(code));
        if is_error(self.side, code) {
            self.span.record("error.type", code_text(code));
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The body went away before the status: the peer cancelled (or the connection broke).
        self.finish(tonic::Code::Cancelled);
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports the call's status code when it sees it.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(call) = this.call.as_mut() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(code) = frame.trailers_ref().and_then(status_in) {
                        call.finish(code);
                    }
                }
                Some(Err(_)) => call.finish(tonic::Code::Unknown),
                // Ended without a status: not a valid gRPC response.
                None => call.finish(tonic::Code::Unknown),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Adds a server span and server metrics to every call (see the module docs).
#[derive(Clone, Debug)]
pub struct GrpcServerLayer {
    metrics: GrpcMetrics,
    recognized: Arc<HashSet<String>>,
}

impl GrpcServerLayer {
    /// A layer recording into `metrics` (from [`GrpcMetrics::server`]). Its spans name every
    /// method `_OTHER` until told which the server serves ([`Self::recognizing`]).
    pub fn new(metrics: GrpcMetrics) -> Self {
        Self {
            metrics,
            recognized: Arc::default(),
        }
    }

    /// The methods the server serves, as `package.Service/Method` (see
    /// `shop_proto::grpc_methods`). A call to any other path is named `_OTHER` in its span, so
    /// that what a client sends cannot make up span names.
    #[must_use]
    pub fn recognizing(mut self, methods: impl IntoIterator<Item = String>) -> Self {
        self.recognized = Arc::new(methods.into_iter().collect());
        self
    }
}

impl<S> tower_layer::Layer<S> for GrpcServerLayer {
    type Service = Observed<S>;
    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            metrics: self.metrics.clone(),
            side: Side::Server,
            recognized: Arc::clone(&self.recognized),
            target: None,
        }
    }
}

/// Adds a client span, `traceparent` propagation and client metrics to every call.
#[derive(Clone, Debug)]
pub struct GrpcClientLayer {
    metrics: GrpcMetrics,
    target: Option<Target>,
}

/// The server a client calls, as its spans name it (`server.address`, `server.port`).
#[derive(Clone, Debug)]
struct Target {
    address: String,
    port: Option<u16>,
}

impl Target {
    /// From a URI such as `http://inventory:50052`; the port defaults by scheme.
    fn from_uri(uri: &http::Uri) -> Option<Self> {
        let address = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("http") => Some(80),
            Some("https") => Some(443),
            _ => None,
        });
        Some(Self {
            address: address.to_owned(),
            port,
        })
    }
}

impl GrpcClientLayer {
    /// A layer recording into `metrics` (from [`GrpcMetrics::client`]).
    pub fn new(metrics: GrpcMetrics) -> Self {
        Self {
            metrics,
            target: None,
        }
    }

    /// The server the channel was configured with (e.g. `http://inventory:50052`), which the
    /// spans name as `server.address` and `server.port`. A target that is not a URI with a host
    /// is named as a whole, without a port.
    #[must_use]
    pub fn with_target(mut self, target: &str) -> Self {
        self.target = Some(
            target
                .parse::<http::Uri>()
                .ok()
                .as_ref()
                .and_then(Target::from_uri)
                .unwrap_or_else(|| Target {
                    address: target.to_owned(),
                    port: None,
                }),
        );
        self
    }
}

impl<S> tower_layer::Layer<S> for GrpcClientLayer {
    type Service = Observed<S>;
    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            metrics: self.metrics.clone(),
            side: Side::Client,
            recognized: Arc::default(),
            target: self.target.clone(),
        }
    }
}

/// The service made by [`GrpcServerLayer`] or [`GrpcClientLayer`].
#[derive(Clone, Debug)]
pub struct Observed<S> {
    inner: S,
    metrics: GrpcMetrics,
    side: Side,
    /// The server's methods (servers only).
    recognized: Arc<HashSet<String>>,
    /// The server called (clients only).
    target: Option<Target>,
}

impl<S> Observed<S> {
    fn span<B>(&self, request: &http::Request<B>, labels: &MethodLabels) -> tracing::Span {
        if !traced(&labels.grpc_service) {
            return tracing::Span::none();
        }
        let path = format!("{}/{}", labels.grpc_service, labels.grpc_method);
        // A client calls through generated stubs, so it calls only methods it knows.
        let recognized = match self.side {
            Side::Client => true,
            Side::Server => self.recognized.contains(&path),
        };
        let (kind, server) = match self.side {
            Side::Server => ("server", Target::from_uri(request.uri())),
            Side::Client => ("client", self.target.clone()),
        };
        tracing::info_span!(
            "grpc",
            otel.name = if recognized { path.as_str() } else { "grpc" },
            otel.kind = kind,
            otel.status_code = tracing::field::Empty,
            rpc.system.name = "grpc",
            rpc.method = if recognized { path.as_str() } else { "_OTHER" },
            rpc.method_original = (!recognized).then_some(path.as_str()),
            rpc.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            server.address = server.as_ref().map(|s| s.address.as_str()),
            server.port = server.as_ref().and_then(|s| s.port).map(i64::from),
        )
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for Observed<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResBody: 'static,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let (grpc_service, grpc_method) = service_and_method(request.uri().path());
        let labels = MethodLabels {
            grpc_service,
            grpc_method,
        };
        let span = self.span(&request, &labels);
        match self.side {
            Side::Server => crate::set_parent_from_headers(
                &span,
                request
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
            ),
            Side::Client => {
                for (key, value) in span.in_scope(crate::current_trace_headers) {
                    if let (Ok(key), Ok(value)) = (
                        http::HeaderName::from_bytes(key.as_bytes()),
                        http::HeaderValue::from_str(&value),
                    ) {
                        request.headers_mut().insert(key, value);
                    }
                }
            }
        }
        self.metrics.started.get_or_create(&labels).inc();
        let mut call = Call {
            side: self.side,
            metrics: self.metrics.clone(),
            labels,
            started: Instant::now(),
            span: span.clone(),
            done: false,
        };
        let response = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(error) => {
                    // The transport failed (no connection, timeout in a lower layer).
                    call.finish(tonic::Code::Unavailable);
                    return Err(error);
                }
            };
            if let Some(code) = status_in(response.headers()) {
                call.finish(code);
            }
            Ok(response.map(|inner| ObservedBody {
                inner,
                call: Some(call),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            service_and_method("/shop.order.v1.OrderService/PlaceOrder"),
            ("shop.order.v1.OrderService".into(), "PlaceOrder".into())
        );
        assert_eq!(service_and_method("/"), (String::new(), String::new()));
    }

    #[test]
    fn codes_have_their_grpc_names() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "InvalidArgument");
        assert_eq!(code_name(tonic::Code::Unavailable), "Unavailable");
        assert_eq!(code_text(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_text(tonic::Code::Cancelled), "CANCELLED");
    }

    #[test]
    fn a_server_counts_only_its_own_failures_as_errors() {
        assert!(!is_error(Side::Server, tonic::Code::NotFound));
        assert!(!is_error(Side::Server, tonic::Code::Unauthenticated));
        assert!(is_error(Side::Server, tonic::Code::Internal));
        assert!(is_error(Side::Client, tonic::Code::NotFound));
        assert!(!is_error(Side::Client, tonic::Code::Ok));
    }

    #[test]
    fn targets_name_their_host_and_port() {
        let layer = GrpcClientLayer::new(GrpcMetrics::unregistered());
        let target = layer
            .clone()
            .with_target("http://inventory:50052")
            .target
            .unwrap();
        assert_eq!(
            (target.address.as_str(), target.port),
            ("inventory", Some(50052))
        );
        let target = layer.clone().with_target("https://[::1]").target.unwrap();
        assert_eq!((target.address.as_str(), target.port), ("::1", Some(443)));
        let target = layer.with_target("unix:/run/x.sock").target.unwrap();
        assert_eq!(target.address, "unix:/run/x.sock");
    }
}
