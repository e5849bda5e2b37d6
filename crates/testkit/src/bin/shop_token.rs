//! Dev tokens for the shop's gRPC APIs: the identity provider of a local run, reduced to an
//! Ed25519 key pair and a signing command. Not for production: there, tokens come from the
//! platform's issuer, whose JWKS the services are given (`AUTH_JWKS_URL` or `AUTH_JWKS_FILE`).
//!
//! ```text
//! shop-token keygen --dir DIR          # DIR/signing-key.pem (0600), signing-key.kid, jwks.json;
//!                                      # keeps an existing key pair
//! shop-token mint --key DIR/signing-key.pem (--customer ID | --operator NAME | --service NAME)
//!                 [--ttl-seconds 43200] [--issuer shop] [--audience shop] [--out FILE]
//! ```
//!
//! `mint` prints the token (or writes it to `--out` through a rename, so a service reading the
//! file never sees half of one). Issuer and audience default to `AUTH_ISSUER` / `AUTH_AUDIENCE`,
//! else `shop`.

use std::path::PathBuf;
use std::time::Duration;

use shop_testkit::auth::{AUDIENCE, ISSUER, TokenIssuer, write_atomically};

const USAGE: &str = "usage:
  shop-token keygen --dir DIR
  shop-token mint --key FILE (--customer ID | --operator NAME | --service NAME)
                  [--ttl-seconds N] [--issuer ISS] [--audience AUD] [--out FILE]";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        anyhow::bail!("{USAGE}");
    };
    let mut options = std::collections::HashMap::new();
    let mut rest = rest.iter();
    while let Some(flag) = rest.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| anyhow::anyhow!("unexpected argument {flag}\n{USAGE}"))?;
        let value = rest
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        options.insert(name.to_owned(), value.clone());
    }
    let env_or = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let issuer = options
        .remove("issuer")
        .unwrap_or_else(|| env_or("AUTH_ISSUER", ISSUER));
    let audience = options
        .remove("audience")
        .unwrap_or_else(|| env_or("AUTH_AUDIENCE", AUDIENCE));
    let allowed: &[&str] = match command.as_str() {
        "keygen" => &["dir"],
        "mint" => &[
            "key",
            "ttl-seconds",
            "customer",
            "operator",
            "service",
            "out",
        ],
        _ => &[],
    };
    if let Some(unknown) = options.keys().find(|k| !allowed.contains(&k.as_str())) {
        anyhow::bail!("--{unknown} does not apply to {command}\n{USAGE}");
    }
    match command.as_str() {
        "keygen" => {
            let dir = PathBuf::from(
                options
                    .remove("dir")
                    .ok_or_else(|| anyhow::anyhow!("keygen needs --dir"))?,
            );
            if dir.join("signing-key.pem").exists() {
                eprintln!("{} has a key pair already; kept.", dir.display());
                return Ok(());
            }
            let issuer = TokenIssuer::generate(&issuer, &audience);
            issuer.write_key_pair(&dir)?;
            eprintln!(
                "Key pair {} written: {}/signing-key.pem (private, 0600), {}/jwks.json (public).",
                issuer.kid(),
                dir.display(),
                dir.display()
            );
        }
        "mint" => {
            let key = PathBuf::from(
                options
                    .remove("key")
                    .ok_or_else(|| anyhow::anyhow!("mint needs --key"))?,
            );
            let issuer = TokenIssuer::from_pem_file(&key, &issuer, &audience)?;
            let ttl = Duration::from_secs(
                options
                    .remove("ttl-seconds")
                    .map_or(Ok(43_200), |v| v.parse())?,
            );
            let (subject, role) = match (
                options.remove("customer"),
                options.remove("operator"),
                options.remove("service"),
            ) {
                (Some(id), None, None) => (id, "customer"),
                (None, Some(name), None) => (name, "operator"),
                (None, None, Some(name)) => (name, "service"),
                _ => anyhow::bail!("give exactly one of --customer, --operator, --service"),
            };
            let token = issuer.mint(&subject, &[role], ttl);
            match options.remove("out") {
                Some(out) => write_atomically(std::path::Path::new(&out), &token)?,
                None => println!("{token}"),
            }
        }
        other => anyhow::bail!("unknown command {other}\n{USAGE}"),
    }
    Ok(())
}
