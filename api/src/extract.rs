//! Extractors that turn bad input into the API's error envelope.

use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    http::request::Parts,
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `Json<T>` whose rejections are [`ApiError`]s (400/413/415/422 with codes),
/// after the depth and string-length limits of [`crate::hardening`].
#[derive(Debug)]
pub struct ValidJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes =
            axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
                .await
                .map_err(|e| ApiError::from(axum::extract::rejection::JsonRejection::from(e)))?;
        crate::hardening::check_json_limits(&bytes).map_err(|m| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                crate::error::codes::BAD_REQUEST,
                m,
            )
        })?;
        // The same request (headers, body limit) with the body already read.
        let rebuilt = Request::from_parts(parts, axum::body::Body::from(bytes));
        let axum::Json(v) = axum::Json::<T>::from_request(rebuilt, state).await?;
        Ok(Self(v))
    }
}

/// `Query<T>` with envelope errors.
#[derive(Debug)]
pub struct ValidQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(v))
    }
}

/// `Path<T>` with envelope errors.
#[derive(Debug)]
pub struct ValidPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ValidPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(v) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(v))
    }
}

/// Pagination query: `page` (from 1) and `page_size` (1..=100, default 20).
#[derive(Debug, Clone, Copy, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Pagination {
    /// Page number, from 1.
    pub page: Option<u64>,
    /// Items per page, at most 100.
    pub page_size: Option<u64>,
}

impl Pagination {
    /// Validated (page, page_size).
    pub fn resolve(self) -> Result<(u64, u64), ApiError> {
        let page = self.page.unwrap_or(1);
        let size = self.page_size.unwrap_or(20);
        if page == 0 || page > 1_000_000 {
            return Err(ApiError::field("page", "must be between 1 and 1000000"));
        }
        if !(1..=100).contains(&size) {
            return Err(ApiError::field("page_size", "must be between 1 and 100"));
        }
        Ok((page, size))
    }
}
