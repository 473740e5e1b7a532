//! One mapping from the control plane's errors to the CSI spec's gRPC status codes.
//!
//! The contract names a code with each HTTP status (`invalid_argument` 400, `not_found` 404,
//! `already_exists` 409, `failed_precondition` 412, `out_of_range` 416, `resource_exhausted`
//! 507, `unavailable` 503, `internal` 500). The code in the body wins; a body without one
//! (an older server, a proxy) falls back to the status. What each RPC does with a code it
//! treats as success (a 404 on delete is "already deleted") is decided by the RPC, not here.

use tonic::{Code, Status};

use crate::control::ControlError;

/// The gRPC code for an API error code or, when the code is unknown, its HTTP status.
pub fn code_for(status: u16, code: &str) -> Code {
    match code {
        "invalid_argument" => return Code::InvalidArgument,
        "not_found" => return Code::NotFound,
        "already_exists" => return Code::AlreadyExists,
        "failed_precondition" => return Code::FailedPrecondition,
        "out_of_range" => return Code::OutOfRange,
        "resource_exhausted" => return Code::ResourceExhausted,
        "unavailable" => return Code::Unavailable,
        "internal" => return Code::Internal,
        _ => {}
    }
    match status {
        400 => Code::InvalidArgument,
        404 => Code::NotFound,
        409 => Code::AlreadyExists,
        412 => Code::FailedPrecondition,
        416 => Code::OutOfRange,
        429 => Code::ResourceExhausted,
        507 => Code::ResourceExhausted,
        502..=504 => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// The status a CSI RPC answers for a failed call to the control plane.
pub fn from_control(e: ControlError) -> Status {
    match e {
        ControlError::Api {
            status,
            ref code,
            ref message,
        } => Status::new(code_for(status, code), format!("shoal-control: {message}")),
        // The CO retries UNAVAILABLE with backoff: what a restarting control plane needs.
        ControlError::Transport(m) => Status::unavailable(format!("shoal-control: {m}")),
        ControlError::Decode(m) => Status::internal(format!("shoal-control: {m}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::api_error;

    #[test]
    fn every_contract_code_maps_to_its_csi_code() {
        let cases = [
            (400, "invalid_argument", Code::InvalidArgument),
            (404, "not_found", Code::NotFound),
            (409, "already_exists", Code::AlreadyExists),
            (412, "failed_precondition", Code::FailedPrecondition),
            (416, "out_of_range", Code::OutOfRange),
            (507, "resource_exhausted", Code::ResourceExhausted),
            (503, "unavailable", Code::Unavailable),
            (500, "internal", Code::Internal),
        ];
        for (status, code, want) in cases {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
            let st = from_control(api_error(status, body.as_bytes()));
            assert_eq!(st.code(), want, "{status} {code}");
            assert!(st.message().contains('m'));
            // The status alone (no code in the body) gives the same answer.
            let plain = from_control(api_error(status, br#"{"error":"why"}"#));
            assert_eq!(plain.code(), want, "{status} without a code");
            assert!(plain.message().contains("why"), "{}", plain.message());
        }
    }

    #[test]
    fn the_body_code_wins_over_the_status() {
        let body = br#"{"error":{"code":"resource_exhausted","message":"no node has space"}}"#;
        assert_eq!(
            from_control(api_error(500, body)).code(),
            Code::ResourceExhausted
        );
    }

    #[test]
    fn garbage_and_transport_errors() {
        let st = from_control(api_error(502, b"<html>bad gateway</html>"));
        assert_eq!(st.code(), Code::Unavailable);
        assert!(st.message().contains("bad gateway"));
        assert_eq!(from_control(api_error(418, b"")).code(), Code::Internal);
        let long = vec![b'x'; 10_000];
        assert!(from_control(api_error(500, &long)).message().len() < 300);
        assert_eq!(
            from_control(ControlError::Transport("refused".into())).code(),
            Code::Unavailable
        );
        assert_eq!(
            from_control(ControlError::Decode("eof".into())).code(),
            Code::Internal
        );
    }
}
