//! Reading a request: JSON bodies within a size limit and a deadline, query strings and path
//! segments, every refusal a [`RequestError`].

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt as _;

use super::RequestError;

/// Refuses bodies that are not JSON. A missing Content-Type is taken as JSON.
///
/// # Errors
/// [`RequestError::UnsupportedMediaType`].
pub fn require_json(req: &HttpRequest) -> Result<(), RequestError> {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else { return Ok(()) };
    let ct = ct.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json")) {
        Ok(())
    } else {
        Err(RequestError::UnsupportedMediaType)
    }
}

/// Reads the body, refusing it as soon as it passes `limit` bytes or when it has not fully
/// arrived within `timeout` (a slow or stuck client must not hold the request's resources).
///
/// # Errors
/// [`RequestError::PayloadTooLarge`], [`RequestError::RequestTimeout`], or [`RequestError::BadRequest`]
/// when the body cannot be read.
pub async fn read_body(req: &HttpRequest, payload: web::Payload, limit: usize, timeout: std::time::Duration) -> Result<web::BytesMut, RequestError> {
    tokio::time::timeout(timeout, read_body_within(req, payload, limit))
        .await
        .unwrap_or(Err(RequestError::RequestTimeout(timeout.as_millis())))
}

async fn read_body_within(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, RequestError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(RequestError::PayloadTooLarge(limit));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| RequestError::BadRequest(format!("cannot read body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(RequestError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The request's query string as `T`. Handlers call it after authenticating, so a client without
/// a valid key learns nothing about the parameters.
///
/// # Errors
/// 400 naming what does not parse.
pub fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, RequestError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| RequestError::BadRequest(format!("invalid query string: {e}")))
}

/// Query strings that do not parse answer 400 in the JSON shape, naming the parameter.
pub fn query_errors() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| RequestError::BadRequest(format!("invalid query string: {err}")).into())
}

/// Path segments that do not parse answer 400 in the JSON shape.
pub fn path_errors() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _| RequestError::BadRequest(format!("invalid path: {err}")).into())
}
