//! `portico.ca.v1.CertificateService`: a CSR and a service-account token in,
//! a workload certificate out.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use portico_api::ca::certificate_service_server::CertificateService;
use portico_api::ca::{CreateCertificateRequest, CreateCertificateResponse};
use tonic::{Request, Response, Status};

use super::authority::{Authority, CaError};
use crate::metrics::Metrics;

/// Lifetimes of workload certificates.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    pub default: Duration,
    pub max: Duration,
}

/// The gRPC service.
pub struct CertificateServer {
    pub authority: Arc<Authority>,
    pub client: Client,
    /// Tokens must be issued for this audience (`portico-ca`), so a token
    /// meant for another service cannot be replayed here.
    pub audience: String,
    pub lifetimes: Lifetimes,
    pub metrics: Metrics,
}

#[tonic::async_trait]
impl CertificateService for CertificateServer {
    async fn create_certificate(
        &self,
        request: Request<CreateCertificateRequest>,
    ) -> Result<Response<CreateCertificateResponse>, Status> {
        self.metrics.csr_count.inc();
        let token = bearer_token(&request).inspect_err(|_| self.metrics.authentication_failures.inc())?;
        let (namespace, service_account) =
            self.review(&token).await.inspect_err(|_| self.metrics.authentication_failures.inc())?;
        let identity = self.authority.spiffe_id(&namespace, &service_account);
        let request = request.into_inner();
        let ttl = match request.validity_duration_seconds {
            seconds if seconds > 0 => Duration::from_secs(seconds.unsigned_abs()).min(self.lifetimes.max),
            _ => self.lifetimes.default,
        };
        let certificate =
            self.authority.sign_workload_csr(&request.csr, &identity, ttl).map_err(|error| match error {
                CaError::IdentityMismatch { .. } => Status::permission_denied(error.to_string()),
                CaError::BadCsr(_) => Status::invalid_argument(error.to_string()),
                _ => Status::internal(error.to_string()),
            })?;
        self.metrics.certificates_issued.inc();
        tracing::info!(%identity, ttl_s = ttl.as_secs(), "issued a workload certificate");
        Ok(Response::new(CreateCertificateResponse {
            cert_chain: vec![certificate, self.authority.root_pem().to_string()],
        }))
    }
}

impl CertificateServer {
    /// Asks the API server who `token` belongs to; only service accounts
    /// get certificates.
    async fn review(&self, token: &str) -> Result<(String, String), Status> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: Some(vec![self.audience.clone()]) },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let reviewed = api.create(&PostParams::default(), &review).await.map_err(|error| {
            tracing::warn!(%error, "TokenReview failed");
            Status::unavailable("could not review the token with the API server")
        })?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let reason = status.error.unwrap_or_else(|| "not authenticated".to_string());
            return Err(Status::unauthenticated(format!("the token was refused: {reason}")));
        }
        if !status.audiences.unwrap_or_default().contains(&self.audience) {
            return Err(Status::unauthenticated(format!("the token is not for audience {}", self.audience)));
        }
        let username = status.user.and_then(|user| user.username).unwrap_or_default();
        match username.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':')) {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                Ok((namespace.to_string(), name.to_string()))
            }
            _ => Err(Status::permission_denied(format!("{username} is not a service account"))),
        }
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer_token<T>(request: &Request<T>) -> Result<String, Status> {
    let value = request
        .metadata()
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("no authorization metadata (Bearer <service account token>)"))?;
    let value = value.to_str().map_err(|_| Status::unauthenticated("authorization metadata is not text"))?;
    value
        .strip_prefix("Bearer ")
        .map(|token| token.trim().to_string())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| Status::unauthenticated("authorization metadata is not `Bearer <token>`"))
}
