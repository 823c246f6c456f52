//! Arrow Flight SQL: the same sandboxed, tenant-scoped SQL as `/api/v1/query`,
//! for Grafana's Flight SQL data source, ADBC and JDBC drivers and notebooks.
//!
//! Every call is authenticated from its own metadata, with a key holding the
//! `query` scope: `authorization: Bearer <key>`, or `Basic` with the key as
//! the password (what drivers send for user/password; the handshake answers
//! with the key as the bearer token, so later calls carry it). A ticket or a
//! prepared-statement handle only carries the SQL text: the tenant always
//! comes from the credential of the call that runs it, never from a handle.
//!
//! What a caller can list is what its session can name: one catalog
//! (`tenant`), one schema (`public`), the tenant's own tables.
use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use base64::Engine as _;
use bulkhead_rules::{AuthError, Authenticator, Principal, Scope};
use bulkhead_store::audit::{NewEvent, RefusalAudit};
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::error::QueryError;
use crate::http::audit;
use crate::sandbox::{QueryEngine, QueryOutput};

/// The one catalog and schema a tenant's session has.
pub const CATALOG: &str = "tenant";
pub const SCHEMA: &str = "public";

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Flight SQL service; serve it with [`FlightSql::into_server`].
#[derive(Clone)]
pub struct FlightSql {
    engine: Arc<QueryEngine>,
    auth: Arc<dyn Authenticator>,
    refusals: Arc<RefusalAudit>,
    sql_info: Arc<SqlInfoData>,
}

impl std::fmt::Debug for FlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSql").finish_non_exhaustive()
    }
}

impl FlightSql {
    pub fn new(
        engine: Arc<QueryEngine>,
        auth: Arc<dyn Authenticator>,
        refusals: Arc<RefusalAudit>,
    ) -> Result<Self, QueryError> {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "Bulkhead");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        info.append(SqlInfo::SqlDdlCatalog, false);
        info.append(SqlInfo::SqlDdlSchema, false);
        info.append(SqlInfo::SqlDdlTable, false);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        let sql_info = info
            .build()
            .map_err(|e| QueryError::Internal(format!("Flight SQL info: {e}")))?;
        Ok(Self {
            engine,
            auth,
            refusals,
            sql_info: Arc::new(sql_info),
        })
    }

    /// The tonic service (gzip and zstd accepted and offered).
    pub fn into_server(self) -> FlightServiceServer<Self> {
        use tonic::codec::CompressionEncoding;
        FlightServiceServer::new(self)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
    }

    /// The key a call presents: `Bearer <key>`, or `Basic` with the key as
    /// the password (any user name).
    fn presented_key(metadata: &MetadataMap) -> Result<String, AuthError> {
        let value = bulkhead_rules::keys::authorization_value(
            metadata
                .get_all("authorization")
                .iter()
                .map(|v| v.as_encoded_bytes()),
        )?
        .ok_or(AuthError::Missing)?
        .trim();
        if let Some(basic) = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))
        {
            // padded or not: Go's Flight client sends it unpadded
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            let decoded = engine
                .decode(basic.trim())
                .map_err(|_| AuthError::Malformed)?;
            let text = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
            let (_, password) = text.split_once(':').ok_or(AuthError::Malformed)?;
            return Ok(password.to_string());
        }
        bulkhead_rules::keys::bearer_token(Some(value)).map(str::to_string)
    }

    /// The caller, who must hold `query`; refusals are summed up for the
    /// audit trail.
    fn principal(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        let presented = Self::presented_key(metadata);
        presented
            .clone()
            .and_then(|k| self.auth.authenticate(&k))
            .and_then(|p| p.require(Scope::Query).map(|_| p))
            .map_err(|e| {
                if self.engine.audit().is_some() {
                    self.refusals.record(NewEvent::refused_credential(
                        &e,
                        presented.as_deref().ok(),
                        "flight_sql",
                    ));
                }
                match e {
                    AuthError::Forbidden { .. } => Status::permission_denied(e.to_string()),
                    _ => Status::unauthenticated(e.to_string()),
                }
            })
    }

    /// The result schema of `sql` for `principal`'s tenant, planned but not
    /// run; a statement the sandbox refuses is on the record as at run time.
    async fn plan(&self, principal: &Principal, sql: &str) -> Result<Schema, Status> {
        match self.engine.plan_schema(&principal.tenant, sql).await {
            Ok(schema) => Ok(schema.as_ref().clone()),
            Err(e) => {
                let event = NewEvent::query_refused(
                    &principal.tenant,
                    &principal.key_id,
                    sql,
                    &e.to_string(),
                );
                audit(self.engine.audit(), event).await;
                Err(query_status(e))
            }
        }
    }

    /// Runs `sql` for the caller, on the record as the HTTP API's queries are.
    async fn run(&self, principal: &Principal, sql: &str) -> Result<QueryOutput, Status> {
        let (tenant, key) = (&principal.tenant, principal.key_id.as_str());
        let log = self.engine.audit();
        match self.engine.execute(tenant, sql).await {
            Ok(out) => {
                if !audit(log, NewEvent::query(tenant, key, sql, out.rows as u64)).await {
                    return Err(Status::unavailable(
                        "the audit trail is unavailable; try again later",
                    ));
                }
                Ok(out)
            }
            Err(e) => {
                audit(
                    log,
                    NewEvent::query_refused(tenant, key, sql, &e.to_string()),
                )
                .await;
                Err(query_status(e))
            }
        }
    }

    /// The flight info of a metadata listing: its schema, and a ticket that
    /// is the command itself (answered by the matching `do_get_*`).
    fn listing_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        command: Any,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(request.metadata())?;
        Self::ticket_info(schema, request.into_inner(), command.encode_to_vec())
    }

    fn ticket_info(
        schema: &Schema,
        descriptor: FlightDescriptor,
        ticket: Vec<u8>,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("encoding the schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }
}

/// A query error as a gRPC status: the caller's mistakes are
/// `INVALID_ARGUMENT`, limits `RESOURCE_EXHAUSTED`, the rest `INTERNAL`.
fn query_status(e: QueryError) -> Status {
    match &e {
        QueryError::NotAllowed(_) | QueryError::Invalid(_) => {
            Status::invalid_argument(e.to_string())
        }
        QueryError::Timeout(_) => Status::deadline_exceeded(e.to_string()),
        QueryError::TooManyRows(_) | QueryError::TooLarge(_) | QueryError::Memory(_) => {
            Status::resource_exhausted(e.to_string())
        }
        QueryError::Busy(_) => Status::unavailable(e.to_string()),
        QueryError::Gone(_) => Status::failed_precondition(e.to_string()),
        QueryError::Internal(detail) => {
            tracing::error!(error = %detail, "Flight SQL query failed");
            Status::internal(e.to_string())
        }
    }
}

/// Batches as a Flight data stream in `schema`.
fn batches_stream(
    schema: Arc<Schema>,
    batches: Vec<RecordBatch>,
) -> Stream_<arrow_flight::FlightData> {
    let input = futures::stream::iter(batches.into_iter().map(Ok::<_, FlightError>));
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(input)
        .map_err(|e| Status::internal(e.to_string()));
    Box::pin(stream)
}

/// A metadata answer: one batch built by an `arrow_flight` builder.
fn one_batch<E: std::fmt::Display>(
    batch: Result<RecordBatch, E>,
) -> Result<Response<Stream_<arrow_flight::FlightData>>, Status> {
    let batch = batch.map_err(arrow_status)?;
    Ok(Response::new(batches_stream(batch.schema(), vec![batch])))
}

fn sql_of(handle: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(handle)
        .map_err(|_| Status::invalid_argument("statement handle is not UTF-8 SQL text"))
}

fn arrow_status(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Stream_<HandshakeResponse>>, Status> {
        self.principal(request.metadata())?;
        let key = Self::presented_key(request.metadata())
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        let mut response: Response<Stream_<HandshakeResponse>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        let bearer = format!("Bearer {key}")
            .parse()
            .map_err(|_| Status::internal("the key is not a header value"))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.principal(request.metadata())?;
        let schema = self.plan(&principal, &query.query).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        Self::ticket_info(
            &schema,
            request.into_inner(),
            ticket.as_any().encode_to_vec(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<Stream_<arrow_flight::FlightData>>, Status> {
        let principal = self.principal(request.metadata())?;
        let out = self
            .run(&principal, sql_of(&ticket.statement_handle)?)
            .await?;
        Ok(Response::new(batches_stream(out.schema, out.batches)))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = self.principal(request.metadata())?;
        let schema = self.plan(&principal, &query.query).await?;
        let message: arrow_flight::IpcMessage =
            arrow_flight::SchemaAsIpc::new(&schema, &Default::default())
                .try_into()
                .map_err(arrow_status)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema: message.0,
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // handles hold no server state
        self.principal(request.metadata())?;
        Ok(())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.principal(request.metadata())?;
        let schema = self
            .plan(&principal, sql_of(&cmd.prepared_statement_handle)?)
            .await?;
        Self::ticket_info(&schema, request.into_inner(), cmd.as_any().encode_to_vec())
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<Stream_<arrow_flight::FlightData>>, Status> {
        let principal = self.principal(request.metadata())?;
        let out = self
            .run(&principal, sql_of(&cmd.prepared_statement_handle)?)
            .await?;
        Ok(Response::new(batches_stream(out.schema, out.batches)))
    }

    async fn do_put_prepared_statement_query(
        &self,
        _query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<arrow_flight::sql::DoPutPreparedStatementResult, Status> {
        self.principal(request.metadata())?;
        Err(Status::invalid_argument(
            "prepared statements take no parameters here; put the values in the SQL",
        ))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.listing_info(request, &schema, query.as_any())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<Stream_<arrow_flight::FlightData>>, Status> {
        self.principal(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        one_batch(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.listing_info(request, &schema, query.as_any())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<Stream_<arrow_flight::FlightData>>, Status> {
        self.principal(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append(CATALOG, SCHEMA);
        one_batch(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.listing_info(request, &schema, query.as_any())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<Stream_<arrow_flight::FlightData>>, Status> {
        let principal = self.principal(request.metadata())?;
        let tables = self
            .engine
            .tables(&principal.tenant)
            .await
            .map_err(query_status)?;
        let mut builder = query.into_builder();
        for (name, schema) in tables {
            builder
                .append(CATALOG, SCHEMA, name, "TABLE", &schema)
                .map_err(arrow_status)?;
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.listing_info(request, &schema, query.as_any())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<Stream_<arrow_flight::FlightData>>, Status> {
        self.principal(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        one_batch(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.listing_info(request, &schema, query.as_any())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<Stream_<arrow_flight::FlightData>>, Status> {
        self.principal(request.metadata())?;
        one_batch(query.into_builder(&self.sql_info).build())
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<Stream_<arrow_flight::FlightData>>, Status> {
        self.principal(request.metadata())?;
        Err(Status::unimplemented(format!(
            "{} is not served: Bulkhead's Flight SQL is read-only SQL over the tenant's tables",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
