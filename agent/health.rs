//! gRPC health (`grpc.health.v1.Health`) for Kubernetes probes.
//!
//! `liveness` is SERVING while the agent's event loop answers; `readiness`
//! is SERVING while its Klio configuration and certificates load, so a pod
//! with a broken secret or config map is shown as not ready.

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Service name of the liveness check.
pub const LIVENESS: &str = "liveness";
/// Service name of the readiness check.
pub const READINESS: &str = "readiness";

/// Updates what the health service answers.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
}

impl Health {
    pub async fn set_ready(&self, ready: bool) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(READINESS, status).await;
    }
}

/// The running health server; [`HealthServer::stop`] ends and joins it.
pub struct HealthServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HealthServer {
    /// Stops serving and waits until the server is gone.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Serves health checks on `addr` (plain gRPC, as kubelet's probe speaks)
/// until [`HealthServer::stop`].
pub async fn serve(addr: SocketAddr) -> std::io::Result<(Health, HealthServer)> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    reporter
        .set_service_status(READINESS, ServingStatus::NotServing)
        .await;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
            {
                tracing::error!("health service stopped: {e}");
            }
        }
    });
    Ok((Health { reporter }, HealthServer { stop, task }))
}
