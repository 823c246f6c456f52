//! Errors of the query side, and their HTTP statuses.
use axum::http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement is not a read query (DDL, DML, COPY, SET, ...).
    #[error("only read queries are allowed: {0}")]
    NotAllowed(String),
    /// The SQL does not parse or plan (unknown table or column, syntax, types).
    #[error("{0}")]
    Invalid(String),
    #[error("query exceeded its time limit of {0:?} (query.timeout)")]
    Timeout(std::time::Duration),
    #[error("query result exceeds {0} rows (query.max_rows); add a LIMIT or aggregate")]
    TooManyRows(usize),
    #[error("query result exceeds {0} bytes (query.max_result_size); select fewer columns, add a LIMIT or aggregate")]
    TooLarge(usize),
    #[error("query exceeded its memory limit: {0}")]
    Memory(String),
    /// The tenant runs as many queries as it may; retry shortly.
    #[error("{0} queries of this tenant are running already, its limit (query.max_concurrent); retry when one has finished")]
    Busy(u32),
    /// The tenant's data can never be read again (its keys were shredded).
    #[error("{0}")]
    Gone(String),
    #[error("internal error")]
    Internal(String),
}

impl QueryError {
    /// The one place a query error becomes an HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            QueryError::NotAllowed(_) | QueryError::Invalid(_) => StatusCode::BAD_REQUEST,
            QueryError::Timeout(_)
            | QueryError::TooManyRows(_)
            | QueryError::TooLarge(_)
            | QueryError::Memory(_) => StatusCode::UNPROCESSABLE_ENTITY,
            QueryError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            QueryError::Gone(_) => StatusCode::GONE,
            QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn from_datafusion(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        match e.find_root() {
            D::ResourcesExhausted(m) => QueryError::Memory(m.clone()),
            D::SQL(..) | D::Plan(_) | D::SchemaError(..) | D::NotImplemented(_) => {
                QueryError::Invalid(e.find_root().to_string())
            }
            D::Execution(m) => QueryError::Invalid(m.clone()),
            D::ArrowError(..) => QueryError::Invalid(e.find_root().to_string()),
            D::External(inner)
                if matches!(
                    inner.downcast_ref::<bulkhead_store::Error>(),
                    Some(bulkhead_store::Error::Key(
                        bulkhead_store::crypto::KeyError::Shredded { .. }
                    ))
                ) =>
            {
                QueryError::Gone(inner.to_string())
            }
            // a pattern the user wrote that does not compile
            root if root.to_string().contains("regex parse error") => {
                QueryError::Invalid(root.to_string())
            }
            _ => QueryError::Internal(e.to_string()),
        }
    }
}
