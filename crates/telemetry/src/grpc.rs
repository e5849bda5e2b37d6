//! gRPC middleware (tower layers over tonic's HTTP services) that gives every call a span and RED
//! metrics, on both sides of the wire:
//!
//! - [`GrpcServerLayer`]: a `SERVER` span named `package.Service/Method`, the child of the caller's
//!   `traceparent` metadata; `grpc_server_started_total`, `grpc_server_handled_total{grpc_code}`
//!   and `grpc_server_handling_seconds`.
//! - [`GrpcClientLayer`]: a `CLIENT` span whose context is sent as `traceparent`, so the server's
//!   span continues the caller's trace; the same metrics with `grpc_client_` names.
//!
//! A call's status code is read where gRPC puts it: the response headers for a "trailers-only"
//! answer (most errors), else the trailers at the end of the body. The call is recorded when the
//! code is known, or as `CANCELLED` when the body is dropped before (the peer went away).

use std::future::Future;
use std::pin::Pin;
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
        self.span.record("rpc.grpc.status_code", code as i32);
        if code != tonic::Code::Ok {
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
}

impl GrpcServerLayer {
    /// A layer recording into `metrics` (from [`GrpcMetrics::server`]).
    pub fn new(metrics: GrpcMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for GrpcServerLayer {
    type Service = Observed<S>;
    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            metrics: self.metrics.clone(),
            side: Side::Server,
        }
    }
}

/// Adds a client span, `traceparent` propagation and client metrics to every call.
#[derive(Clone, Debug)]
pub struct GrpcClientLayer {
    metrics: GrpcMetrics,
}

impl GrpcClientLayer {
    /// A layer recording into `metrics` (from [`GrpcMetrics::client`]).
    pub fn new(metrics: GrpcMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for GrpcClientLayer {
    type Service = Observed<S>;
    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            metrics: self.metrics.clone(),
            side: Side::Client,
        }
    }
}

/// The service made by [`GrpcServerLayer`] or [`GrpcClientLayer`].
#[derive(Clone, Debug)]
pub struct Observed<S> {
    inner: S,
    metrics: GrpcMetrics,
    side: Side,
}

impl<S> Observed<S> {
    fn span(&self, labels: &MethodLabels) -> tracing::Span {
        if !traced(&labels.grpc_service) {
            return tracing::Span::none();
        }
        let name = format!("{}/{}", labels.grpc_service, labels.grpc_method);
        let kind = match self.side {
            Side::Server => "server",
            Side::Client => "client",
        };
        tracing::info_span!(
            "grpc",
            otel.name = %name,
            otel.kind = kind,
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %labels.grpc_service,
            rpc.method = %labels.grpc_method,
            rpc.grpc.status_code = tracing::field::Empty,
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
        let span = self.span(&labels);
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
    }
}
