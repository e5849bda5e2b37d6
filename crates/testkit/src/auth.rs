//! Tokens for tests and dev runs: an Ed25519 signing key (generated, never committed), its
//! public JSON Web Key Set for the services, tokens minted for customers, operators and
//! services, and the client interceptor that sends one with every call.
//!
//! [`test_auth`] is the process-wide test issuer: one key pair per test process, its JWKS written
//! to a file of its own that the services under test read (`AUTH_JWKS_FILE`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore as _;
use serde::Serialize;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The issuer and audience the services expect unless told otherwise (`AUTH_ISSUER`,
/// `AUTH_AUDIENCE`; shop-runtime's defaults).
pub const ISSUER: &str = "shop";
/// See [`ISSUER`].
pub const AUDIENCE: &str = "shop";

/// The DER prefix of a PKCS#8 Ed25519 private key (RFC 8410): the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// What a minted token says.
#[derive(Clone, Debug, Serialize)]
pub struct Claims {
    pub sub: String,
    pub roles: Vec<String>,
    pub iss: String,
    pub aud: String,
    /// Seconds since the epoch.
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// An Ed25519 token issuer: what an identity provider does for the shop, reduced to signing.
pub struct TokenIssuer {
    key: EncodingKey,
    der: Vec<u8>,
    kid: String,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenIssuer {
    /// A new random key pair, with a random key id.
    ///
    /// # Panics
    /// Never: a PKCS#8 key built from 32 random bytes is valid.
    pub fn generate(issuer: &str, audience: &str) -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        let mut kid = [0u8; 8];
        rand::rng().fill_bytes(&mut kid);
        let kid = format!("shop-{}", hex(&kid));
        Self::from_der(der, kid, issuer, audience)
    }

    fn from_der(der: Vec<u8>, kid: String, issuer: &str, audience: &str) -> Self {
        Self {
            key: EncodingKey::from_ed_der(&der),
            der,
            kid,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// Another key pair under this one's key id and names: what an attacker who read the public
    /// JWKS would sign with. Its tokens must fail the signature check.
    pub fn impostor(&self) -> Self {
        let mut other = Self::generate(&self.issuer, &self.audience);
        other.kid = self.kid.clone();
        other
    }

    /// The issuer whose private key is the PKCS#8 PEM file at `path` (as written by
    /// [`TokenIssuer::write_key_pair`] or `openssl genpkey -algorithm ed25519`); the key id is the
    /// one in the `.kid` file beside it, else derived from the file's name.
    ///
    /// # Errors
    /// When the file cannot be read or is not an Ed25519 private key.
    pub fn from_pem_file(path: &Path, issuer: &str, audience: &str) -> anyhow::Result<Self> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the signing key {}: {e}", path.display()))?;
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|e| anyhow::anyhow!("{} is not a PEM file: {e}", path.display()))?;
        anyhow::ensure!(
            der.len() == 48 && der[..16] == PKCS8_ED25519_PREFIX,
            "{} is not a PKCS#8 Ed25519 private key",
            path.display()
        );
        let kid = std::fs::read_to_string(path.with_extension("kid"))
            .map(|k| k.trim().to_owned())
            .unwrap_or_else(|_| "shop-dev".to_owned());
        Ok(Self::from_der(der, kid, issuer, audience))
    }

    /// The key id tokens carry and the JWKS names.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key, PKCS#8 PEM.
    pub fn private_key_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.der);
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
    }

    /// The public key as a JSON Web Key Set, the document services read.
    ///
    /// # Panics
    /// Never for a key this type built.
    pub fn jwks(&self) -> String {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::EdDSA).expect("an Ed25519 key");
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
        serde_json::to_string_pretty(&JwkSet { keys: vec![jwk] }).expect("JSON")
    }

    /// Writes the private key to `<dir>/signing-key.pem` (mode 0600), its key id to
    /// `<dir>/signing-key.kid` and the public JWKS to `<dir>/jwks.json`.
    ///
    /// # Errors
    /// When the files cannot be written.
    pub fn write_key_pair(&self, dir: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::create_dir_all(dir)?;
        let mut key = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join("signing-key.pem"))?;
        key.write_all(self.private_key_pem().as_bytes())?;
        std::fs::write(dir.join("signing-key.kid"), format!("{}\n", self.kid))?;
        std::fs::write(dir.join("jwks.json"), self.jwks())?;
        Ok(())
    }

    /// The claims of a token for `subject` with `roles`, valid from now for `ttl`.
    pub fn claims(&self, subject: &str, roles: &[&str], ttl: Duration) -> Claims {
        let now = now();
        Claims {
            sub: subject.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
        }
    }

    /// A signed token with exactly `claims`.
    ///
    /// # Panics
    /// Never for a key this type built.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("signing with an Ed25519 key")
    }

    /// A token for `subject` with `roles`, valid for `ttl`.
    pub fn mint(&self, subject: &str, roles: &[&str], ttl: Duration) -> String {
        self.sign(&self.claims(subject, roles, ttl))
    }

    /// A customer's token (an hour).
    pub fn customer(&self, customer_id: &str) -> String {
        self.mint(customer_id, &["customer"], Duration::from_secs(3600))
    }

    /// An operator's token (an hour).
    pub fn operator(&self, name: &str) -> String {
        self.mint(name, &["operator"], Duration::from_secs(3600))
    }

    /// A service's own token (an hour).
    pub fn service(&self, name: &str) -> String {
        self.mint(name, &["service"], Duration::from_secs(3600))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The test issuer of this process and the files the services under test read.
#[derive(Debug)]
pub struct TestAuth {
    issuer: TokenIssuer,
    dir: PathBuf,
}

impl TestAuth {
    /// The issuer, to mint tokens.
    pub fn issuer(&self) -> &TokenIssuer {
        &self.issuer
    }

    /// The public JWKS file (for `AUTH_JWKS_FILE`).
    pub fn jwks_file(&self) -> PathBuf {
        self.dir.join("jwks.json")
    }

    /// The variables that make a service process trust this issuer.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AUTH_JWKS_FILE".into(),
                self.jwks_file().display().to_string(),
            ),
            ("AUTH_ISSUER".into(), ISSUER.into()),
            ("AUTH_AUDIENCE".into(), AUDIENCE.into()),
        ]
    }

    /// The private key as a PEM file (mode 0600), for the tools that mint their own tokens
    /// (`SHOP_SIGNING_KEY` of the demo and the load generator).
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn signing_key_file(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        static WRITTEN: OnceLock<()> = OnceLock::new();
        let path = self.dir.join("signing-key.pem");
        WRITTEN.get_or_init(|| {
            write_atomically(&path, &self.issuer.private_key_pem()).expect("writing the key");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("restricting the key file");
            std::fs::write(self.dir.join("signing-key.kid"), self.issuer.kid())
                .expect("writing the key id");
        });
        path
    }

    /// A file holding a fresh token of the service `name` (a day), for its
    /// `<SERVICE>_SERVICE_TOKEN_FILE`.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn service_token_file(&self, name: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.token"));
        let token = self
            .issuer
            .mint(name, &["service"], Duration::from_secs(86_400));
        write_atomically(&path, &token).expect("writing a service token");
        path
    }

    /// A customer's token.
    pub fn customer(&self, customer_id: &str) -> String {
        self.issuer.customer(customer_id)
    }

    /// An operator's token.
    pub fn operator(&self) -> String {
        self.issuer.operator("test-operator")
    }

    /// A service's token.
    pub fn service(&self, name: &str) -> String {
        self.issuer.service(name)
    }
}

/// Writes `contents` to `path` through a temporary file and a rename, so a reader never sees
/// half a token (what the kubelet does with a mounted Secret, too).
///
/// # Errors
/// When the file cannot be written.
pub fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// The process-wide test issuer: generated on first use, its JWKS written under the system's
/// temporary directory (one directory per process, named after the key id).
///
/// # Panics
/// When the files cannot be written.
pub fn test_auth() -> &'static TestAuth {
    static AUTH: OnceLock<TestAuth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let issuer = TokenIssuer::generate(ISSUER, AUDIENCE);
        let dir = std::env::temp_dir().join(format!("shop-test-auth-{}", issuer.kid()));
        std::fs::create_dir_all(&dir).expect("a directory for the test JWKS");
        std::fs::write(dir.join("jwks.json"), issuer.jwks()).expect("writing the test JWKS");
        TestAuth { issuer, dir }
    })
}

/// Sends `authorization: Bearer <token>` with every call of a client.
#[derive(Clone, Debug)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    /// Calls carrying `token`.
    ///
    /// # Panics
    /// When `token` has characters no header may carry (a JWT never has).
    pub fn new(token: &str) -> Self {
        Self(Some(
            format!("Bearer {token}")
                .parse()
                .expect("a token is header-safe"),
        ))
    }

    /// Calls carrying no token at all (anonymous).
    pub fn anonymous() -> Self {
        Self(None)
    }

    /// Calls carrying exactly `value` as their `authorization` header (e.g. a scheme that is not
    /// Bearer).
    ///
    /// # Panics
    /// When `value` cannot be a header.
    pub fn raw(value: &str) -> Self {
        Self(Some(value.parse().expect("a header value")))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry a bearer token: `XServiceClient<Authed>`.
pub type Authed<T = Channel> = InterceptedService<T, Bearer>;

/// `channel`, with `token` on every call.
pub fn authed(channel: Channel, token: &str) -> Authed {
    InterceptedService::new(channel, Bearer::new(token))
}

/// Connects to `url` (`http://host:port`) with `token` on every call.
///
/// # Errors
/// When the server cannot be reached.
pub async fn connect_authed(url: &str, token: &str) -> anyhow::Result<Authed> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    Ok(authed(channel, token))
}
