//! The identifiers the contracts carry between services — customer ids and skus — with the one
//! rule every service parses them by: 1 to 64 characters of ASCII letters, digits, `-`, `_` or
//! `.`. A value that passed the edge of one service passes the edge of every other.

/// Checks `raw` against the identifier rule.
///
/// # Errors
/// A description of what is wrong (never the value).
pub fn check(raw: &str) -> Result<(), String> {
    if raw.is_empty() || raw.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("may contain only letters, digits, '-', '_' and '.'".into());
    }
    Ok(())
}

/// Defines an identifier newtype that only [`check`]ed text becomes.
macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// # Errors
            /// A description of what is wrong.
            pub fn parse(raw: &str) -> Result<Self, String> {
                check(raw).map(|()| Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier! {
    /// A customer id, the key of a customer's account and orders.
    CustomerId
}

identifier! {
    /// A stock-keeping unit: the key of a product.
    Sku
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_to_64_safe_characters() {
        assert!(Sku::parse("SKU-1_a.b").is_ok());
        assert!(CustomerId::parse(&"c".repeat(64)).is_ok());
        assert!(CustomerId::parse(&"c".repeat(65)).is_err());
        assert!(Sku::parse("").is_err());
        for bad in ["a b", "a/b", "é", "a\n", "a;drop"] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Sku::parse("x").unwrap().to_string(), "x");
    }
}
