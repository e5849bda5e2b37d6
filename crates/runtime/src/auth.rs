//! Who is calling, and what they may do: bearer tokens (JWT) on every gRPC call.
//!
//! # Authentication
//!
//! Every call to a shop service carries `authorization: Bearer <JWT>`. The token is checked by
//! the [`AuthLayer`] that [`crate::grpc::serve`] puts in front of every service of the port (it
//! cannot be left out: `serve` takes the [`Authenticator`]), except `grpc.health.v1` (the
//! probes of Kubernetes and load balancers carry no token) and server reflection (`grpcurl
//! list`/`describe`: the contracts are public, the data is not).
//!
//! A token is accepted when its signature verifies with a key of the configured JWKS (an
//! asymmetric one: EdDSA, ES256/ES384 or RS256; symmetric keys in the set are ignored, since a
//! service holding a secret that signs could mint any token), and its claims hold:
//! `exp` in the future and `nbf` (if present) in the past, each give or take [`LEEWAY`];
//! `iss` = `AUTH_ISSUER`; `aud` = (or contains) `AUTH_AUDIENCE`; `sub` present. Its `roles`
//! claim (a list of strings) says what the subject is: `customer` (the subject is the customer
//! id), `operator` (shop staff), `service` (the subject is a service name, e.g. `order-service`).
//! Unknown role names grant nothing.
//!
//! Anything else answers `UNAUTHENTICATED` with the message [`UNAUTHENTICATED_MESSAGE`] and
//! nothing more: which check failed is logged (at debug) but never told to the caller, who could
//! otherwise probe the key set or the clock. A valid token becomes a [`Caller`] in the request's
//! extensions, which the service's handlers read with [`Caller::of`].
//!
//! The keys come from `AUTH_JWKS_FILE` (a JSON Web Key Set on disk, e.g. a mounted ConfigMap) or
//! `AUTH_JWKS_URL` (an issuer's `jwks_uri`), and are read again every `AUTH_JWKS_REFRESH_MS`:
//! a rotated key (published before it signs, kept after it stops) is picked up without a
//! restart. A refresh that fails keeps the keys in use, and says so in the log.
//!
//! # Authorisation
//!
//! Each service decides per method, in its gRPC adapter, with the typed helpers of [`Caller`]:
//! [`Caller::require_operator`], [`Caller::require_customer`] (the customer themself),
//! [`Caller::require_customer_or_operator`], [`Caller::require_service`],
//! [`Caller::require_any`], and [`Caller::sees_customer`] for what is found by an id.
//!
//! ## PERMISSION_DENIED or NOT_FOUND: one rule
//!
//! - When the refusal follows from the caller and the request alone (the method needs a role the
//!   caller lacks; the request names another customer: `ListOrders` of someone else,
//!   `GetAccount` of someone else, `PlaceOrder` for someone else), the answer is
//!   `PERMISSION_DENIED` ([`Denied`]), with the fixed message [`PERMISSION_DENIED_MESSAGE`].
//!   It tells the caller nothing about the data: it would be the same whether that customer
//!   exists or not.
//! - When the refusal depends on a stored resource found by its id (an order, a payment, the
//!   notifications of an order, that belong to another customer), the answer is exactly the
//!   answer for an id that does not exist: `NOT_FOUND` for a single resource, an empty page for
//!   a listing. A customer guessing order ids learns nothing, not even that the order exists.
//!
//! Every service applies this rule; `crates/suite/tests/authorization.rs` checks every method
//! against every kind of caller.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};

use crate::config::{self, ConfigError};

/// The only thing an unauthenticated caller is told.
pub const UNAUTHENTICATED_MESSAGE: &str = "missing or invalid bearer token";

/// The only thing a caller refused by role or customer is told.
pub const PERMISSION_DENIED_MESSAGE: &str = "the caller may not do this";

/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// The longest `authorization` value looked at: a token is a few hundred bytes; a huge header is
/// refused before any base64 or JSON work is spent on it.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Services whose calls need no token: health checks (probes carry none) and reflection (the
/// public contracts).
const OPEN_SERVICES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

// --- callers ----------------------------------------------------------------------------------

/// What a token says its subject is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A customer of the shop; the token's subject is the customer id.
    Customer,
    /// Shop staff: the catalog, stock, accounts and deposits, and every customer's data.
    Operator,
    /// Another service of the suite; the subject is its name (`order-service`).
    Service,
}

impl Role {
    /// The name in the token's `roles` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Operator => "operator",
            Self::Service => "service",
        }
    }

    /// The role named `name` in a `roles` claim, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "customer" => Some(Self::Customer),
            "operator" => Some(Self::Operator),
            "service" => Some(Self::Service),
            _ => None,
        }
    }
}

/// The authenticated caller of a gRPC call: the token's subject and roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    subject: String,
    roles: Vec<Role>,
}

/// A refusal by role or by customer: `PERMISSION_DENIED`, with nothing about the data (see the
/// [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{PERMISSION_DENIED_MESSAGE}")]
pub struct Denied;

impl From<Denied> for Status {
    fn from(_: Denied) -> Self {
        Status::permission_denied(PERMISSION_DENIED_MESSAGE)
    }
}

impl Caller {
    /// A caller with `subject` and `roles` (what a validated token gives; tests build their own).
    pub fn new(subject: impl Into<String>, roles: impl IntoIterator<Item = Role>) -> Self {
        let mut roles: Vec<Role> = roles.into_iter().collect();
        roles.sort_unstable();
        roles.dedup();
        Self {
            subject: subject.into(),
            roles,
        }
    }

    /// The caller of `request`, put there by the [`AuthLayer`].
    ///
    /// # Errors
    /// `UNAUTHENTICATED` when there is none: the request did not pass the layer (which
    /// [`crate::grpc::serve`] always installs), so nothing vouches for it.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self, Status> {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated(UNAUTHENTICATED_MESSAGE))
    }

    /// The token's subject: a customer id, an operator's name, a service's name.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The roles, sorted.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Whether the token gives `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    fn is_customer(&self, customer_id: &str) -> bool {
        self.has(Role::Customer) && self.subject == customer_id
    }

    /// Shop staff only.
    ///
    /// # Errors
    /// [`Denied`] for anyone else.
    pub fn require_operator(&self) -> Result<(), Denied> {
        self.require_any(&[Role::Operator])
    }

    /// The customer `customer_id` themself (not an operator, not another customer).
    ///
    /// # Errors
    /// [`Denied`] for anyone else.
    pub fn require_customer(&self, customer_id: &str) -> Result<(), Denied> {
        if self.is_customer(customer_id) {
            Ok(())
        } else {
            Err(Denied)
        }
    }

    /// The customer `customer_id` themself, or an operator acting for them.
    ///
    /// # Errors
    /// [`Denied`] for anyone else.
    pub fn require_customer_or_operator(&self, customer_id: &str) -> Result<(), Denied> {
        if self.sees_customer(customer_id) {
            Ok(())
        } else {
            Err(Denied)
        }
    }

    /// The service named `name` (`order-service`), calling with its own identity.
    ///
    /// # Errors
    /// [`Denied`] for anyone else.
    pub fn require_service(&self, name: &str) -> Result<(), Denied> {
        if self.has(Role::Service) && self.subject == name {
            Ok(())
        } else {
            Err(Denied)
        }
    }

    /// A caller with at least one of `roles`.
    ///
    /// # Errors
    /// [`Denied`] for anyone else.
    pub fn require_any(&self, roles: &[Role]) -> Result<(), Denied> {
        if roles.iter().any(|role| self.has(*role)) {
            Ok(())
        } else {
            Err(Denied)
        }
    }

    /// Whether the caller may see what belongs to `customer_id`: that customer, or an operator.
    /// For a resource found by its id, a `false` here is answered as if the resource did not
    /// exist (see the [module docs](self)).
    pub fn sees_customer(&self, customer_id: &str) -> bool {
        self.has(Role::Operator) || self.is_customer(customer_id)
    }
}

// --- settings ---------------------------------------------------------------------------------

/// Where the token-signing keys' public halves are published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// A JSON Web Key Set file (e.g. a mounted ConfigMap, which the kubelet keeps current).
    File(PathBuf),
    /// An issuer's `jwks_uri` (HTTP(S) GET returning a JSON Web Key Set).
    Url(String),
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => f.write_str(url),
        }
    }
}

/// How a service checks its callers' tokens, from environment variables (defaults in brackets):
///
/// | Variable | Meaning |
/// | --- | --- |
/// | `AUTH_JWKS_FILE` or `AUTH_JWKS_URL` | the issuer's public keys, a JWKS file or URL (one of them, required) |
/// | `AUTH_ISSUER` | the `iss` every token must carry [`shop`] |
/// | `AUTH_AUDIENCE` | the `aud` every token must carry (or include) [`shop`] |
/// | `AUTH_JWKS_REFRESH_MS` | how often the key set is read again [`300000`] |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSettings {
    /// `None` when neither variable is set: the service refuses to start (no key, no caller).
    pub jwks: Option<JwksSource>,
    pub issuer: String,
    pub audience: String,
    pub refresh: Duration,
}

/// The issuer and audience when none are configured (what `deploy/run.sh` and the tests use).
pub const DEFAULT_ISSUER: &str = "shop";
/// See [`DEFAULT_ISSUER`].
pub const DEFAULT_AUDIENCE: &str = "shop";

impl AuthSettings {
    /// Tokens from `issuer` for `audience`, checked against the JWKS file at `path`.
    pub fn with_jwks_file(path: impl Into<PathBuf>, issuer: &str, audience: &str) -> Self {
        Self {
            jwks: Some(JwksSource::File(path.into())),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            refresh: Duration::from_secs(300),
        }
    }

    /// # Errors
    /// A variable that is set but invalid, or both JWKS variables set.
    pub fn from_env() -> Result<Self, ConfigError> {
        let jwks = match config::one_of(&["AUTH_JWKS_FILE", "AUTH_JWKS_URL"])? {
            Some(("AUTH_JWKS_FILE", path)) => Some(JwksSource::File(path.into())),
            Some((_, url)) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(ConfigError {
                        name: "AUTH_JWKS_URL".into(),
                        value: url,
                        reason: "must be an http:// or https:// URL".into(),
                    });
                }
                Some(JwksSource::Url(url))
            }
            None => None,
        };
        let refresh = config::millis("AUTH_JWKS_REFRESH_MS", Duration::from_secs(300))?;
        if refresh < Duration::from_secs(1) {
            return Err(ConfigError {
                name: "AUTH_JWKS_REFRESH_MS".into(),
                value: refresh.as_millis().to_string(),
                reason: "must be at least 1000".into(),
            });
        }
        Ok(Self {
            jwks,
            issuer: config::string("AUTH_ISSUER", DEFAULT_ISSUER),
            audience: config::string("AUTH_AUDIENCE", DEFAULT_AUDIENCE),
            refresh,
        })
    }
}

// --- keys and tokens --------------------------------------------------------------------------

/// Why a token was not accepted: logged, never told to the caller.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("no authorization header")]
    Missing,
    #[error("the authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("the token's header does not decode: {0}")]
    Malformed(jsonwebtoken::errors::Error),
    #[error("the token is signed with {0:?}, not an asymmetric algorithm")]
    Algorithm(Algorithm),
    #[error("no key of the set matches the token (kid {kid:?}, {alg:?})")]
    UnknownKey { kid: Option<String>, alg: Algorithm },
    #[error("the token does not verify: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("the token's subject is empty")]
    NoSubject,
}

/// One usable key of the set.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The algorithm a JWK verifies: its `alg` when given, else the one its type and curve imply.
/// `None` for what the suite never accepts: symmetric keys, encryption keys, unknown types.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        _ => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        Some(given) => Algorithm::try_from(given).ok()?,
        None => implied,
    };
    // An `alg` that contradicts the key's type (an RSA key labelled EdDSA) is a broken entry.
    (algorithm.family() == implied.family()).then_some(algorithm)
}

fn parse_key_set(json: &[u8]) -> anyhow::Result<Vec<Key>> {
    let set: JwkSet = serde_json::from_slice(json)?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let Some(algorithm) = algorithm_of(jwk) else {
            tracing::warn!(
                ?kid,
                "Ignoring a JWKS key that is not an asymmetric signing key."
            );
            continue;
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => keys.push(Key {
                kid,
                algorithm,
                key,
            }),
            Err(error) => tracing::warn!(?kid, %error, "Ignoring a JWKS key that does not parse."),
        }
    }
    anyhow::ensure!(
        !keys.is_empty(),
        "the key set has no usable signing key (EdDSA, ES256, ES384 or RS256)"
    );
    Ok(keys)
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
}

struct Inner {
    keys: RwLock<Arc<Vec<Key>>>,
    issuer: String,
    audience: String,
    source: Option<JwksSource>,
    refresh: Duration,
    http: reqwest::Client,
}

/// Checks bearer tokens against the configured key set, and keeps the set current.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("source", &self.inner.source)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Reads the key set `settings` name (waiting up to 30 s for a URL to answer, as an issuer
    /// starting next to the service may not answer yet).
    ///
    /// # Errors
    /// No key set configured, unreadable, or without a usable key.
    pub async fn load(settings: &AuthSettings) -> anyhow::Result<Self> {
        let source = settings.jwks.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "no token keys configured: set AUTH_JWKS_FILE (a JWKS file) or AUTH_JWKS_URL \
                 (the issuer's jwks_uri); every gRPC call is authenticated"
            )
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let patience = tokio::time::Instant::now() + Duration::from_secs(30);
        let keys = loop {
            match fetch(&http, &source).await {
                Ok(keys) => break keys,
                Err(error)
                    if matches!(source, JwksSource::Url(_))
                        && tokio::time::Instant::now() < patience =>
                {
                    tracing::warn!(%source, error = format!("{error:#}"), "The token key set is not available yet; retrying.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => {
                    return Err(error.context(format!("reading the token key set {source}")));
                }
            }
        };
        tracing::info!(%source, keys = keys.len(), issuer = %settings.issuer, audience = %settings.audience, "Token keys loaded.");
        Ok(Self {
            inner: Arc::new(Inner {
                keys: RwLock::new(Arc::new(keys)),
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                source: Some(source),
                refresh: settings.refresh,
                http,
            }),
        })
    }

    /// An authenticator over the key set `jwks` (JSON), never refreshed.
    ///
    /// # Errors
    /// A set without a usable key.
    pub fn from_jwks(jwks: &str, issuer: &str, audience: &str) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                keys: RwLock::new(Arc::new(parse_key_set(jwks.as_bytes())?)),
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
                source: None,
                refresh: Duration::MAX,
                http: reqwest::Client::new(),
            }),
        })
    }

    fn keys(&self) -> Arc<Vec<Key>> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The caller an `authorization` header value vouches for.
    ///
    /// # Errors
    /// Why it does not (for the log only: the caller is told [`UNAUTHENTICATED_MESSAGE`]).
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Caller, Rejected> {
        let header = header.ok_or(Rejected::Missing)?;
        if header.len() > MAX_TOKEN_LEN {
            return Err(Rejected::NotBearer);
        }
        let token = std::str::from_utf8(header)
            .ok()
            .and_then(|h| {
                let (scheme, token) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Rejected::NotBearer)?;
        let header = jsonwebtoken::decode_header(token).map_err(Rejected::Malformed)?;
        if !matches!(
            header.alg,
            Algorithm::EdDSA | Algorithm::ES256 | Algorithm::ES384 | Algorithm::RS256
        ) {
            return Err(Rejected::Algorithm(header.alg));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_audience(&[&self.inner.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY.as_secs();
        let keys = self.keys();
        // A token naming its key is checked with that key only (a key of the set without an
        // id may be any); one naming none, with every key of its algorithm.
        let candidates = keys.iter().filter(|k| {
            k.algorithm == header.alg
                && match (&header.kid, &k.kid) {
                    (Some(wanted), Some(kid)) => wanted == kid,
                    _ => true,
                }
        });
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    if data.claims.sub.is_empty() {
                        return Err(Rejected::NoSubject);
                    }
                    let roles = data.claims.roles.iter().filter_map(|r| Role::parse(r));
                    return Ok(Caller::new(data.claims.sub, roles));
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.map_or(
            Rejected::UnknownKey {
                kid: header.kid,
                alg: header.alg,
            },
            Rejected::Invalid,
        ))
    }

    /// Reads the key set again and swaps it in; returns how many keys it has.
    ///
    /// # Errors
    /// When it cannot be read or has no usable key: the keys in use stay.
    pub async fn refresh(&self) -> anyhow::Result<usize> {
        let Some(source) = &self.inner.source else {
            return Ok(self.keys().len());
        };
        let keys = fetch(&self.inner.http, source).await?;
        let count = keys.len();
        *self
            .inner
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        Ok(count)
    }

    /// Refreshes the key set every `AUTH_JWKS_REFRESH_MS` until `shutdown` (a service task).
    ///
    /// # Errors
    /// Never: a failed refresh is logged and tried again at the next round.
    pub async fn keep_fresh(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if self.inner.source.is_none() {
            shutdown.cancelled().await;
            return Ok(());
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.inner.refresh) => {}
            }
            match self.refresh().await {
                Ok(keys) => tracing::debug!(keys, "Token keys refreshed."),
                Err(error) => tracing::warn!(
                    source = ?self.inner.source,
                    error = format!("{error:#}"),
                    "Could not refresh the token keys; keeping the ones in use."
                ),
            }
        }
    }

    /// The layer that authenticates every call but health and reflection.
    pub fn layer(&self) -> AuthLayer {
        AuthLayer {
            authenticator: self.clone(),
        }
    }
}

async fn fetch(http: &reqwest::Client, source: &JwksSource) -> anyhow::Result<Vec<Key>> {
    let body = match source {
        JwksSource::File(path) => tokio::fs::read(path).await?,
        JwksSource::Url(url) => http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?
            .to_vec(),
    };
    parse_key_set(&body)
}

// --- the server layer -------------------------------------------------------------------------

/// Authenticates every call of a gRPC server but health and reflection (see the
/// [module docs](self)); the [`Caller`] goes into the request's extensions.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    authenticator: Authenticator,
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Authenticator,
}

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        std::future::Ready<Result<http::Response<ResBody>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if OPEN_SERVICES.iter().any(|open| path.starts_with(open)) {
            return futures::future::Either::Left(self.inner.call(request));
        }
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes);
        match self.authenticator.authenticate(header) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                futures::future::Either::Left(self.inner.call(request))
            }
            Err(reason) => {
                tracing::debug!(%reason, path, "Call refused: unauthenticated.");
                futures::future::Either::Right(std::future::ready(Ok(Status::unauthenticated(
                    UNAUTHENTICATED_MESSAGE,
                )
                .into_http())))
            }
        }
    }
}

// --- the service's own identity, for its calls to other services ------------------------------

/// The bearer token a service presents to the services it calls (order → inventory): its own
/// identity, never a token of the caller it is serving.
///
/// It is read from a file that the token's issuer keeps fresh, and read again every
/// `refresh`: in Kubernetes, a Secret (or a projected token) mounted as a volume, whose file the
/// kubelet replaces when the issuer renews it before it expires; in `deploy/run.sh`, a file the
/// script mints again every half hour. The service holds no signing key: a key that can mint its
/// own token could mint an operator's too. A token that has expired, or will within
/// [`ServiceToken::EXPIRY_WARNING`], is logged as a warning at every read, so a stalled renewal
/// is seen before calls fail.
#[derive(Clone, Debug)]
pub struct ServiceToken {
    path: PathBuf,
    current: Arc<RwLock<AsciiMetadataValue>>,
}

impl ServiceToken {
    /// How long before its expiry an unrenewed token is warned about.
    pub const EXPIRY_WARNING: Duration = Duration::from_secs(300);

    /// Reads the token at `path`.
    ///
    /// # Errors
    /// When the file cannot be read or is not a token.
    pub async fn from_file(path: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let path = path.into();
        let value = read_token(&path).await?;
        Ok(Self {
            path,
            current: Arc::new(RwLock::new(value)),
        })
    }

    /// Reads the file again every `interval` until `shutdown` (a service task). A failed read
    /// keeps the token in use.
    ///
    /// # Errors
    /// Never: failures are logged.
    pub async fn keep_fresh(
        self,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
            match read_token(&self.path).await {
                Ok(value) => {
                    let mut current = self
                        .current
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if *current != value {
                        tracing::info!(path = %self.path.display(), "Service token renewed.");
                        *current = value;
                    }
                }
                Err(error) => tracing::warn!(
                    path = %self.path.display(),
                    error = format!("{error:#}"),
                    "Could not read the service token again; keeping the one in use."
                ),
            }
        }
    }

    /// An interceptor that puts the current token on each call of a client.
    pub fn interceptor(&self) -> BearerInterceptor {
        BearerInterceptor {
            current: self.current.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Expiry {
    exp: Option<u64>,
}

async fn read_token(path: &std::path::Path) -> anyhow::Result<AsciiMetadataValue> {
    let raw = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| anyhow::anyhow!("reading the service token {}: {e}", path.display()))?;
    let token = raw.trim();
    // Not verified here (the callee does that); only read for its expiry, to warn in time.
    let expiry: Expiry = jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|e| {
        anyhow::anyhow!("the service token in {} is not a JWT: {e}", path.display())
    })?;
    if let Some(exp) = expiry.exp {
        let now = jsonwebtoken::get_current_timestamp();
        let left = exp.saturating_sub(now);
        if left <= ServiceToken::EXPIRY_WARNING.as_secs() {
            tracing::warn!(path = %path.display(), seconds_left = left, "The service token expires soon (or has expired) and was not renewed.");
        }
    }
    Ok(MetadataValue::try_from(format!("Bearer {token}"))?)
}

/// Adds `authorization: Bearer <token>` to each call (see [`ServiceToken::interceptor`]).
#[derive(Clone, Debug)]
pub struct BearerInterceptor {
    current: Arc<RwLock<AsciiMetadataValue>>,
}

impl tonic::service::Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let value = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_customers_decide_as_documented() {
        let alice = Caller::new("alice", [Role::Customer]);
        let staff = Caller::new("olga", [Role::Operator]);
        let order = Caller::new("order-service", [Role::Service]);
        let nobody = Caller::new("mallory", []);

        assert_eq!(alice.require_customer("alice"), Ok(()));
        assert_eq!(alice.require_customer("bob"), Err(Denied));
        assert_eq!(staff.require_customer("alice"), Err(Denied));
        assert_eq!(staff.require_customer_or_operator("alice"), Ok(()));
        assert_eq!(alice.require_customer_or_operator("bob"), Err(Denied));
        assert_eq!(alice.require_operator(), Err(Denied));
        assert_eq!(staff.require_operator(), Ok(()));
        assert_eq!(order.require_service("order-service"), Ok(()));
        assert_eq!(order.require_service("payment-service"), Err(Denied));
        assert_eq!(alice.require_service("alice"), Err(Denied));
        assert_eq!(order.require_operator(), Err(Denied));
        assert!(!order.sees_customer("order-service"));
        assert!(!nobody.sees_customer("mallory"));
        assert_eq!(
            nobody.require_any(&[Role::Customer, Role::Operator]),
            Err(Denied)
        );
        // A subject that is a customer id only counts with the customer role.
        assert_eq!(
            Caller::new("alice", [Role::Service]).require_customer("alice"),
            Err(Denied)
        );

        let denied: Status = Denied.into();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(denied.message(), PERMISSION_DENIED_MESSAGE);
    }

    /// A JWKS of one freshly generated Ed25519 key, as JSON to edit.
    fn key_set() -> serde_json::Value {
        let issuer = shop_testkit::TokenIssuer::generate("shop", "shop");
        serde_json::from_str(&issuer.jwks()).unwrap()
    }

    #[test]
    fn symmetric_and_encryption_keys_are_never_used() {
        let mut encryption = key_set();
        encryption["keys"][0]["use"] = "enc".into();
        let hmac =
            serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"});
        let set = serde_json::json!({"keys": [hmac, encryption["keys"][0].clone()]}).to_string();
        let error = Authenticator::from_jwks(&set, "shop", "shop").unwrap_err();
        assert!(
            error.to_string().contains("no usable signing key"),
            "{error}"
        );
        assert!(Authenticator::from_jwks(&key_set().to_string(), "shop", "shop").is_ok());
    }

    #[test]
    fn a_header_that_is_not_a_bearer_token_is_rejected_before_any_key_is_tried() {
        let set = key_set().to_string();
        let auth = Authenticator::from_jwks(&set, "shop", "shop").unwrap();
        assert!(matches!(auth.authenticate(None), Err(Rejected::Missing)));
        for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "token"] {
            assert!(
                matches!(
                    auth.authenticate(Some(header.as_bytes())),
                    Err(Rejected::NotBearer)
                ),
                "{header}"
            );
        }
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN));
        assert!(matches!(
            auth.authenticate(Some(huge.as_bytes())),
            Err(Rejected::NotBearer)
        ));
        // alg "none" and HS256 are refused by their header, whatever follows.
        for header in [r#"{"alg":"none"}"#, r#"{"alg":"HS256","typ":"JWT"}"#] {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let token = format!(
                "Bearer {}.{}.",
                b64.encode(header),
                b64.encode(r#"{"sub":"x"}"#)
            );
            assert!(
                matches!(
                    auth.authenticate(Some(token.as_bytes())),
                    Err(Rejected::Algorithm(_) | Rejected::Malformed(_))
                ),
                "{header}"
            );
        }
    }
}
