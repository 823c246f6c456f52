//! OTLP receivers: gRPC ([`grpc`]) and HTTP ([`http`]), both handing decoded
//! requests to the [`Pipeline`](crate::pipeline::Pipeline).

pub mod grpc;
pub mod http;

use bulkhead_rules::AuthError;

/// The token of an `Authorization: Bearer <token>` value.
pub(crate) fn bearer_token(value: Option<&str>) -> Result<&str, AuthError> {
    let value = value.ok_or(AuthError::Missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_extracted() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some("Basic abc")), Err(AuthError::Malformed));
        assert_eq!(bearer_token(Some("abc")), Err(AuthError::Malformed));
    }
}
