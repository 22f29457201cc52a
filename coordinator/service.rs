//! The control service: turns each agent's session into events for the
//! run loop, and gives the loop a sender to answer that agent.
//!
//! The loop owns all state; sessions only forward. A session whose first
//! message is not Register is refused here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use walplayer_proto::control::agent_message::Body as Up;
use walplayer_proto::control::control_server::Control;
use walplayer_proto::control::{AgentMessage, CoordinatorMessage, Register};

/// Messages to one agent.
pub type Downlink = mpsc::Sender<Result<CoordinatorMessage, Status>>;

/// What happened on some session.
#[derive(Debug)]
pub enum Event {
    Joined {
        conn: u64,
        register: Register,
        peer: String,
        down: Downlink,
    },
    Message {
        conn: u64,
        body: Up,
    },
    Left {
        conn: u64,
        reason: String,
    },
}

/// The tonic service; cheap to clone.
#[derive(Clone)]
pub struct ControlService {
    events: mpsc::Sender<Event>,
    next_conn: Arc<AtomicU64>,
    sessions: Sessions,
}

/// The tasks that forward each session's messages, so the coordinator can
/// wait for them and end them.
#[derive(Clone, Default)]
pub struct Sessions {
    tasks: TaskTracker,
    closing: CancellationToken,
}

impl Sessions {
    /// Waits up to `grace` for every agent to close its session (they do
    /// once the run loop dropped their downlinks), then ends the rest; returns
    /// when every forwarding task is gone.
    pub async fn close(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("agents still connected after {grace:?}: closing their sessions");
            self.closing.cancel();
            self.tasks.wait().await;
        }
    }
}

impl ControlService {
    pub fn new(events: mpsc::Sender<Event>, sessions: Sessions) -> ControlService {
        ControlService {
            events,
            next_conn: Arc::default(),
            sessions,
        }
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    type SessionStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown address".into());
        let mut up = request.into_inner();
        let register = match up.message().await? {
            Some(AgentMessage {
                body: Some(Up::Register(r)),
            }) => r,
            _ => {
                return Err(Status::invalid_argument(
                    "a session must start with Register",
                ))
            }
        };
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (down, rx) = mpsc::channel(64);
        let joined = Event::Joined {
            conn,
            register,
            peer,
            down,
        };
        if self.events.send(joined).await.is_err() {
            return Err(Status::unavailable("the coordinator is shutting down"));
        }
        let events = self.events.clone();
        let closing = self.sessions.closing.clone();
        self.sessions.tasks.spawn(async move {
            let reason = loop {
                let message = tokio::select! {
                    m = up.message() => m,
                    _ = closing.cancelled() => return,
                };
                match message {
                    Ok(Some(AgentMessage { body: Some(body) })) => {
                        if events.send(Event::Message { conn, body }).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break "the agent closed its session".to_string(),
                    Err(status) => break walplayer_klio::transport::status_text(&status),
                }
            };
            let _ = events.send(Event::Left { conn, reason }).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
