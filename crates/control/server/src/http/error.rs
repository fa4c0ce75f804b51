//! The one place errors become HTTP responses: every failure the API reports has an
//! [`ErrorBody`] with a reason and, where there is one, a hint.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use slipway_api::{DiagnosticView, ErrorBody};
use slipway_store::StoreError;

use crate::environments::ApplyError;

/// An API error: a status and a body.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>, hint: Option<&str>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                hint: hint.map(str::to_string),
                diagnostics: Vec::new(),
            },
        }
    }

    pub(crate) fn bad_request(error: impl Into<String>, hint: &str) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, error, Some(hint))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// Logs the whole chain of an internal error once, and tells the client only that it happened.
fn internal(what: &str, error: &dyn std::error::Error) -> ApiError {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    tracing::error!(error = %chain, "{what}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{what}: {chain}"),
        Some("see the control plane's log (`.slipway/daemon.log` when detached)"),
    )
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        internal("the state store failed", &e)
    }
}

/// Diagnostics in their wire form.
pub(crate) fn diagnostic_views(report: &slipway_spec::Report) -> Vec<DiagnosticView> {
    report
        .diagnostics
        .iter()
        .map(|d| DiagnosticView {
            level: match d.level {
                slipway_spec::Level::Error => "error".into(),
                slipway_spec::Level::Warning => "warning".into(),
            },
            file: d.file.display().to_string(),
            line: d.line,
            column: d.column,
            path: d.path.clone(),
            message: d.message.clone(),
            hint: d.hint.clone(),
        })
        .collect()
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Invalid(report) => {
                let mut err = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("the project file has {} error(s)", report.error_count()),
                    Some("run `slipway validate` to see them with their source lines"),
                );
                err.body.diagnostics = diagnostic_views(&report);
                err
            }
            ApplyError::UnknownEnvironment { name, known } => ApiError::new(
                StatusCode::NOT_FOUND,
                format!("unknown environment `{name}`"),
                Some(&format!("known environments: {}", known.join(", "))),
            ),
            ApplyError::Load(e) => internal("cannot load the project file", &e),
            ApplyError::Store(e) => e.into(),
        }
    }
}
