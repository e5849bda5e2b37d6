//! Page tokens, one convention for every listing: opaque to clients, and checked on the way back
//! in, so that what a client sends as a token never reaches SQL unless this listing issued it.
//!
//! A token is `<listing>.<hex>`, the hex being the cursor's fields (the last row's sort key)
//! joined by a unit separator. Hex keeps tokens URL- and log-safe; the listing name makes a
//! token of one listing useless to another. Tokens are not secret and not signed: a client that
//! forges one only pages through what it could list anyway, and each field is parsed again by
//! the listing (a UUID, a timestamp, a sku).

/// The longest token any listing accepts; longer ones are refused before being decoded.
pub const MAX_LEN: usize = 512;

const SEPARATOR: char = '\u{1f}';

/// The token continuing after the row whose sort key is `fields`, in `listing`.
pub fn encode(listing: &str, fields: &[&str]) -> String {
    let joined = fields.join(&SEPARATOR.to_string());
    let mut token = String::with_capacity(listing.len() + 1 + joined.len() * 2);
    token.push_str(listing);
    token.push('.');
    for byte in joined.bytes() {
        token.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        token.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    token
}

/// The `count` fields of a token [`encode`]d for `listing`; `None` for anything else.
pub fn decode(listing: &str, token: &str, count: usize) -> Option<Vec<String>> {
    if token.len() > MAX_LEN {
        return None;
    }
    let hex = token.strip_prefix(listing)?.strip_prefix('.')?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes: Option<Vec<u8>> = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect();
    let joined = String::from_utf8(bytes?).ok()?;
    let fields: Vec<String> = joined.split(SEPARATOR).map(str::to_owned).collect();
    (fields.len() == count
        && fields
            .iter()
            .all(|f| !f.is_empty() && !f.chars().any(char::is_control)))
    .then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_anything_else_is_refused() {
        let token = encode("products", &["SKU-9"]);
        assert_eq!(
            decode("products", &token, 1),
            Some(vec!["SKU-9".to_owned()])
        );
        let two = encode("orders", &["1790000000123456", "0190a8d2"]);
        assert_eq!(
            decode("orders", &two, 2),
            Some(vec!["1790000000123456".to_owned(), "0190a8d2".to_owned()])
        );
        assert_eq!(decode("orders", &two, 1), None, "wrong arity");
        assert_eq!(decode("products", &two, 2), None, "another listing's token");
        for garbage in [
            "",
            "garbage",
            "products.",
            "products.zz",
            "products.abc",
            "products.00",
            "products.ff",
            "SKU-9",
        ] {
            assert_eq!(decode("products", garbage, 1), None, "{garbage:?}");
        }
        let long = encode("products", &[&"x".repeat(MAX_LEN)]);
        assert_eq!(decode("products", &long, 1), None, "too long");
    }
}
