//! How a service process reaches Kafka: the bootstrap servers from its settings, and the
//! security properties librdkafka needs from the environment.
//!
//! Security is deployment, not code: in Kubernetes the brokers require SASL/SCRAM over TLS
//! (k8s/components/kafka-strimzi), locally `deploy/run.sh --broker kafka` requires SASL/SCRAM,
//! and the embedded mock cluster nothing. So the service passes through librdkafka's own
//! properties, named the way Kafka images name them: `KAFKA_SECURITY_PROTOCOL` →
//! `security.protocol`, `KAFKA_SASL_MECHANISM` → `sasl.mechanism`, `KAFKA_SASL_USERNAME`,
//! `KAFKA_SASL_PASSWORD`, `KAFKA_SSL_CA_LOCATION` → `ssl.ca.location`, and any other
//! `KAFKA_SECURITY_*`, `KAFKA_SASL_*` or `KAFKA_SSL_*` (lower case, `_` → `.`). Only these
//! families: a stray `KAFKA_*` variable can never change what the eventing crate relies on
//! (idempotence, acks, offset storing).

use shop_eventing::KafkaConfig;

/// The prefixes of the variables passed through, after `KAFKA_`.
const PASSED: [&str; 3] = ["SECURITY_", "SASL_", "SSL_"];

/// A Kafka configuration for `bootstrap_servers` with the security properties of this process's
/// environment.
pub fn client_config(bootstrap_servers: &str) -> KafkaConfig {
    with_security(KafkaConfig::new(bootstrap_servers), std::env::vars())
}

/// The librdkafka security properties of this process's environment, for a Kafka client that is
/// not a service's (the load generator's reader): the same login a service would use.
pub fn security_properties() -> Vec<(String, String)> {
    passed(std::env::vars())
}

fn with_security(
    config: KafkaConfig,
    vars: impl IntoIterator<Item = (String, String)>,
) -> KafkaConfig {
    passed(vars)
        .into_iter()
        .fold(config, |config, (key, value)| config.with(key, value))
}

fn passed(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix("KAFKA_")?;
            (!value.is_empty() && PASSED.iter().any(|p| rest.starts_with(p)))
                .then(|| (rest.to_lowercase().replace('_', "."), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_variables_become_librdkafka_properties_and_nothing_else_does() {
        let vars = [
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("KAFKA_SASL_USERNAME", "order-service"),
            ("KAFKA_SASL_PASSWORD", "secret"),
            ("KAFKA_SSL_CA_LOCATION", "/etc/shop/kafka-ca/ca.crt"),
            ("KAFKA_SSL_KEY_PASSWORD", ""),
            ("KAFKA_ENABLE_IDEMPOTENCE", "false"),
            ("KAFKA_BOOTSTRAP_SERVERS", "elsewhere:9092"),
            ("SASL_USERNAME", "no prefix"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let config = with_security(KafkaConfig::new("broker:9093"), vars);
        assert_eq!(config.bootstrap_servers, "broker:9093");
        let properties: Vec<(&str, &str)> = config
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            properties,
            [
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.password", "secret"),
                ("sasl.username", "order-service"),
                ("security.protocol", "SASL_SSL"),
                ("ssl.ca.location", "/etc/shop/kafka-ca/ca.crt"),
            ]
        );
    }
}
