//! What a gRPC server's reflection tells a client such as `grpcurl list`: the services it says
//! it serves, over both reflection versions (v1 for current clients, v1alpha for older ones).

use tonic::transport::Channel;

macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = ServerReflectionClient::new($channel)
            .server_reflection_info(futures::stream::iter([request]))
            .await?
            .into_inner();
        match responses.message().await?.and_then(|r| r.message_response) {
            Some(MessageResponse::ListServicesResponse(list)) => {
                let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
                names.sort();
                names
            }
            other => anyhow::bail!("reflection answered a ListServices with {other:?}"),
        }
    }};
}

/// The services the server at `url` lists through reflection v1 and v1alpha, each sorted.
///
/// # Errors
/// When the server cannot be reached or does not answer as reflection should.
pub async fn reflected_services(url: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    let v1 = list_services!(v1, channel.clone());
    let v1alpha = list_services!(v1alpha, channel);
    Ok((v1, v1alpha))
}
