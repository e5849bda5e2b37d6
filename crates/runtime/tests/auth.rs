//! Bearer-token authentication over real gRPC: a server built by `shop_runtime::grpc::serve`
//! with a real API (a small InventoryService that answers with its caller), called by real
//! clients with real tokens. The key set comes from a file that is rotated, or from an HTTP
//! URL; the service token of a caller is renewed in its file.

use std::time::Duration;

use shop_proto::inventory::v1 as pb;
use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::inventory::v1::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use shop_runtime::auth::{
    AuthSettings, Authenticator, Caller, JwksSource, ServiceToken, UNAUTHENTICATED_MESSAGE,
};
use shop_testkit::auth::{AUDIENCE, ISSUER, write_atomically};
use shop_testkit::{Bearer, TokenIssuer, eventually};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// Answers every call with the caller it was given: the product's name is
/// `<subject> <roles>`.
struct Echo;

fn echo<T>(request: &Request<T>) -> Result<pb::Product, Status> {
    let caller = Caller::of(request)?;
    let roles: Vec<&str> = caller.roles().iter().map(|r| r.as_str()).collect();
    Ok(pb::Product {
        name: format!("{} {}", caller.subject(), roles.join(",")),
        ..Default::default()
    })
}

#[tonic::async_trait]
impl InventoryService for Echo {
    async fn upsert_product(
        &self,
        request: Request<pb::UpsertProductRequest>,
    ) -> Result<Response<pb::UpsertProductResponse>, Status> {
        Caller::of(&request)?.require_operator()?;
        Ok(Response::new(pb::UpsertProductResponse {
            product: Some(echo(&request)?),
        }))
    }
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        Ok(Response::new(pb::GetProductResponse {
            product: Some(echo(&request)?),
        }))
    }
    async fn list_products(
        &self,
        _: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }
    async fn adjust_stock(
        &self,
        _: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }
    async fn get_reservation(
        &self,
        _: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

struct Server {
    url: String,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(auth: Authenticator) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let (reporter, health) = shop_runtime::grpc::health_reporter();
    let routes = tonic::service::Routes::new(InventoryServiceServer::new(Echo)).add_service(health);
    let (_ready_tx, ready) = tokio::sync::watch::channel(true);
    let shutdown = stop.clone();
    tokio::spawn(async move {
        shop_runtime::grpc::serve(
            listener,
            routes,
            shop_runtime::grpc::Health {
                reporter,
                service_names: &["shop.inventory.v1.InventoryService"],
                ready,
            },
            shutdown,
            Duration::from_secs(10),
            shop_telemetry::grpc::GrpcMetrics::unregistered(),
            &auth,
        )
        .await
        .unwrap();
        drop(_ready_tx);
    });
    shop_runtime_wait(&url).await;
    Server { url, stop }
}

async fn shop_runtime_wait(url: &str) {
    eventually("the server to listen", Duration::from_secs(10), || async {
        Channel::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            .ok()
    })
    .await;
}

async fn client(
    url: &str,
    bearer: Bearer,
) -> InventoryServiceClient<InterceptedService<Channel, Bearer>> {
    let channel = Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    InventoryServiceClient::new(InterceptedService::new(channel, bearer))
}

/// Who the server says called, or the refusal.
async fn whoami(url: &str, bearer: Bearer) -> Result<String, (Code, String)> {
    client(url, bearer)
        .await
        .get_product(pb::GetProductRequest::default())
        .await
        .map(|r| r.into_inner().product.unwrap().name)
        .map_err(|s| (s.code(), s.message().to_owned()))
}

fn refused() -> Result<String, (Code, String)> {
    Err((Code::Unauthenticated, UNAUTHENTICATED_MESSAGE.to_owned()))
}

fn temp_dir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("shop-auth-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_valid_token_names_its_caller_and_every_other_is_refused_alike() {
    shop_telemetry::init_for_tests();
    let issuer = TokenIssuer::generate(ISSUER, AUDIENCE);
    let dir = temp_dir();
    std::fs::write(dir.join("jwks.json"), issuer.jwks()).unwrap();
    let auth = Authenticator::load(&AuthSettings::with_jwks_file(
        dir.join("jwks.json"),
        ISSUER,
        AUDIENCE,
    ))
    .await
    .unwrap();
    let server = serve(auth).await;
    let url = &server.url;

    assert_eq!(
        whoami(url, Bearer::new(&issuer.customer("alice"))).await,
        Ok("alice customer".to_owned())
    );
    assert_eq!(
        whoami(
            url,
            Bearer::new(&issuer.mint("olga", &["operator", "auditor"], Duration::from_secs(60)))
        )
        .await,
        Ok("olga operator".to_owned()),
        "an unknown role grants nothing and is dropped"
    );

    let at = |f: &dyn Fn(&mut shop_testkit::auth::Claims)| {
        let mut claims = issuer.claims("alice", &["customer"], Duration::from_secs(600));
        f(&mut claims);
        Bearer::new(&issuer.sign(&claims))
    };
    let cases = [
        ("no token", Bearer::anonymous()),
        ("not Bearer", Bearer::raw("Basic YWxpY2U6c2VjcmV0")),
        ("not a JWT", Bearer::raw("Bearer not-a-jwt")),
        (
            "signed by another key",
            Bearer::new(&TokenIssuer::generate(ISSUER, AUDIENCE).customer("alice")),
        ),
        (
            "signed by another key under the same kid",
            Bearer::new(&issuer.impostor().customer("alice")),
        ),
        ("expired (beyond the leeway)", at(&|c| c.exp = c.iat - 120)),
        (
            "not yet valid (beyond the leeway)",
            at(&|c| c.nbf = c.iat + 600),
        ),
        ("another issuer", at(&|c| c.iss = "someone-else".into())),
        ("another audience", at(&|c| c.aud = "another-shop".into())),
        ("no subject", at(&|c| c.sub = String::new())),
    ];
    for (what, bearer) in cases {
        assert_eq!(whoami(url, bearer).await, refused(), "{what}");
    }
    // Within the leeway, a slightly early clock still works.
    assert!(whoami(url, at(&|c| c.nbf = c.iat + 10)).await.is_ok());

    // A valid token without the role the method needs: PERMISSION_DENIED, nothing more.
    let denied = client(url, Bearer::new(&issuer.customer("alice")))
        .await
        .upsert_product(pb::UpsertProductRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        shop_runtime::auth::PERMISSION_DENIED_MESSAGE
    );

    // Health needs no token.
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1);
}

#[tokio::test]
async fn a_rotated_key_set_is_picked_up_without_a_restart() {
    shop_telemetry::init_for_tests();
    let old = TokenIssuer::generate(ISSUER, AUDIENCE);
    let new = TokenIssuer::generate(ISSUER, AUDIENCE);
    let dir = temp_dir();
    let jwks = dir.join("jwks.json");
    write_atomically(&jwks, &old.jwks()).unwrap();
    let mut settings = AuthSettings::with_jwks_file(&jwks, ISSUER, AUDIENCE);
    settings.refresh = Duration::from_millis(1000);
    let auth = Authenticator::load(&settings).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(auth.clone().keep_fresh(stop.clone()));
    let server = serve(auth).await;
    let url = server.url.clone();

    assert!(
        whoami(&url, Bearer::new(&old.customer("alice")))
            .await
            .is_ok()
    );
    assert_eq!(
        whoami(&url, Bearer::new(&new.customer("alice"))).await,
        refused()
    );

    // The new key published (the old one withdrawn): tokens of the new key work within a
    // refresh, the old key's stop working.
    write_atomically(&jwks, &new.jwks()).unwrap();
    let new_token = new.customer("alice");
    eventually(
        "the new key to be accepted",
        Duration::from_secs(10),
        || {
            let (url, token) = (url.clone(), new_token.clone());
            async move { whoami(&url, Bearer::new(&token)).await.ok() }
        },
    )
    .await;
    assert_eq!(
        whoami(&url, Bearer::new(&old.customer("alice"))).await,
        refused()
    );

    // A broken file keeps the keys in use.
    std::fs::write(&jwks, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(whoami(&url, Bearer::new(&new_token)).await.is_ok());
    stop.cancel();
}

#[tokio::test]
async fn keys_come_from_an_issuers_jwks_url() {
    shop_telemetry::init_for_tests();
    let issuer = TokenIssuer::generate(ISSUER, AUDIENCE);
    let jwks = issuer.jwks();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { jwks }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let settings = AuthSettings {
        jwks: Some(JwksSource::Url(jwks_url)),
        ..AuthSettings::with_jwks_file("unused", ISSUER, AUDIENCE)
    };
    let auth = Authenticator::load(&settings).await.unwrap();
    let server = serve(auth).await;
    assert_eq!(
        whoami(&server.url, Bearer::new(&issuer.service("order-service"))).await,
        Ok("order-service service".to_owned())
    );

    // A service without any key set configured does not start.
    let none = AuthSettings {
        jwks: None,
        ..AuthSettings::with_jwks_file("unused", ISSUER, AUDIENCE)
    };
    let error = Authenticator::load(&none).await.unwrap_err();
    assert!(error.to_string().contains("AUTH_JWKS_FILE"), "{error}");
}

#[tokio::test]
async fn a_service_token_renewed_in_its_file_is_sent_from_then_on() {
    shop_telemetry::init_for_tests();
    let issuer = TokenIssuer::generate(ISSUER, AUDIENCE);
    let auth = Authenticator::from_jwks(&issuer.jwks(), ISSUER, AUDIENCE).unwrap();
    let server = serve(auth).await;
    let dir = temp_dir();
    let file = dir.join("order-service.token");
    // The issuer's renewal is late: the file holds an expired token.
    let mut stale = issuer.claims("order-service", &["service"], Duration::ZERO);
    stale.exp -= 600;
    write_atomically(&file, &issuer.sign(&stale)).unwrap();
    let token = ServiceToken::from_file(&file).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(
        token
            .clone()
            .keep_fresh(Duration::from_millis(100), stop.clone()),
    );
    let channel = Channel::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client =
        InventoryServiceClient::new(InterceptedService::new(channel, token.interceptor()));
    let status = client
        .get_product(pb::GetProductRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Renewed: the same client sends the new token.
    write_atomically(&file, &issuer.service("order-service")).unwrap();
    let name = eventually(
        "the renewed token to be sent",
        Duration::from_secs(10),
        || {
            let mut client = client.clone();
            async move {
                client
                    .get_product(pb::GetProductRequest::default())
                    .await
                    .ok()
                    .map(|r| r.into_inner().product.unwrap().name)
            }
        },
    )
    .await;
    assert_eq!(name, "order-service service");

    // A file that is not a token is refused at start-up.
    std::fs::write(dir.join("garbage.token"), "not a token").unwrap();
    assert!(
        ServiceToken::from_file(dir.join("garbage.token"))
            .await
            .is_err()
    );
    stop.cancel();
}

#[test]
fn a_key_set_without_key_ids_checks_every_token_with_its_keys() {
    let issuer = TokenIssuer::generate(ISSUER, AUDIENCE);
    let mut set: serde_json::Value = serde_json::from_str(&issuer.jwks()).unwrap();
    set["keys"][0].as_object_mut().unwrap().remove("kid");
    let auth = Authenticator::from_jwks(&set.to_string(), ISSUER, AUDIENCE).unwrap();
    let token = format!("Bearer {}", issuer.customer("alice"));
    let caller = auth.authenticate(Some(token.as_bytes())).unwrap();
    assert_eq!(caller.subject(), "alice");
    // ...but a signature by another key still fails.
    let forged = format!("Bearer {}", issuer.impostor().customer("alice"));
    assert!(auth.authenticate(Some(forged.as_bytes())).is_err());
}
