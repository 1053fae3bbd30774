//! gRPC sample workload and client: the standard health service (`grpc.health.v1.Health`,
//! tonic's implementation): `Check` is a unary call, `Watch` a server-streaming one. The
//! server reports its `--name` as SERVING, and a service named `flapping` that changes
//! status every 100 ms, so a `Watch` on it streams message after message. A `Check` of an
//! unknown service ends with status NOT_FOUND in the trailers: a non-OK status travels
//! through proxies the way errors do.

use std::net::SocketAddr;
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The service whose status changes all the time.
pub const FLAPPING: &str = "flapping";

/// Serves the health service on `listen` until killed.
pub async fn serve(listen: SocketAddr, name: String) -> anyhow::Result<()> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status(&name, ServingStatus::Serving)
        .await;
    tokio::spawn(async move {
        let mut serving = true;
        loop {
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status(FLAPPING, status).await;
            serving = !serving;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tonic::transport::Server::builder()
        .add_service(service)
        .serve(listen)
        .await?;
    Ok(())
}

/// One client call's outcome, printed as JSON by `mesh-agent app grpc-client`.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    /// The gRPC status code (0 = OK) and message the call ended with.
    pub code: i32,
    pub message: String,
    /// The statuses received (one for `Check`, one per message for `Watch`).
    pub statuses: Vec<String>,
}

/// `Check(service)`, or with `watch` messages, `Watch(service)` until that many arrived.
pub async fn call(
    target: String,
    service: String,
    watch: Option<usize>,
) -> anyhow::Result<Outcome> {
    let channel = tonic::transport::Endpoint::from_shared(target)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest { service };
    let mut statuses = Vec::new();
    let result = match watch {
        None => client.check(request).await.map(|answer| {
            statuses.push(status_name(answer.into_inner().status));
        }),
        Some(count) => match client.watch(request).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                let mut outcome = Ok(());
                while statuses.len() < count {
                    match stream.message().await {
                        Ok(Some(m)) => statuses.push(status_name(m.status)),
                        Ok(None) => break,
                        Err(status) => {
                            outcome = Err(status);
                            break;
                        }
                    }
                }
                outcome
            }
            Err(status) => Err(status),
        },
    };
    Ok(match result {
        Ok(()) => Outcome {
            code: 0,
            message: String::new(),
            statuses,
        },
        Err(status) => Outcome {
            code: status.code() as i32,
            message: status.message().to_string(),
            statuses,
        },
    })
}

fn status_name(status: i32) -> String {
    match tonic_health::pb::health_check_response::ServingStatus::try_from(status) {
        Ok(s) => s.as_str_name().to_string(),
        Err(_) => format!("UNKNOWN_{status}"),
    }
}
