//! Accepting HTTP connections and serving the routes on them.

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `routes` on `listener` until `stop` is cancelled.
pub(super) async fn serve(listener: TcpListener, routes: Router, stop: CancellationToken) {
    let served = axum::serve(listener, routes)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the HTTP server stopped");
    }
}
