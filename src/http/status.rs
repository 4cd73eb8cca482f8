//! `GET /cluster/status`: the whole cluster on one screen, from any node.
//!
//! Owns the fan-out (every member that is up is asked for its
//! [`NodeStats`] over the authenticated node-to-node channel, each within
//! [`MEMBER_TIMEOUT`], all at once) and the verdict ([`problems`]: why the
//! cluster is not healthy, one sentence each). Reads only; it must never
//! change a member or wait on one longer than the deadline. What each node
//! holds is the Store's to say (`LocalStats`); membership is Membership's.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use futures_util::future::join_all;
use serde::Serialize;

use super::{ApiError, AppState};
use crate::actors::membership::{GetRing, ListMembers};
use crate::actors::store::LocalStats;
use crate::member::MemberState;
use crate::replica::{NodeStats, ReplicaReply, ReplicaRequest};

/// How long one member may take to say what it holds.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cluster/status", web::get().to(status));
}

/// One member as the status shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeStatus {
    pub id: String,
    pub gossip_addr: String,
    pub http_addr: String,
    pub state: &'static str,
    pub incarnation: u64,
    pub state_for_ms: u128,
    /// Share of the ring this node is the first home of, 0 to 1.
    pub ring_share: f64,
    /// `None` when the node was not asked (not up) or did not answer.
    pub stats: Option<NodeStats>,
    pub stats_error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ClusterStatus {
    node: String,
    healthy: bool,
    problems: Vec<String>,
    replicas: usize,
    read_quorum: usize,
    write_quorum: usize,
    nodes: Vec<NodeStatus>,
}

/// Why the cluster is not healthy: a member not alive, a member whose
/// figures did not come, hints not yet handed over, data still moving
/// after a ring change. Empty when healthy. A member that left is gone on
/// purpose and is no problem.
pub fn problems(nodes: &[NodeStatus]) -> Vec<String> {
    let mut found = Vec::new();
    for node in nodes {
        if node.state == MemberState::Left.as_str() {
            continue;
        }
        if node.state != MemberState::Alive.as_str() {
            found.push(format!(
                "{} ({}) is {}",
                node.id, node.http_addr, node.state
            ));
            continue;
        }
        let Some(stats) = &node.stats else {
            let why = node.stats_error.as_deref().unwrap_or("no answer");
            found.push(format!(
                "{} ({}) did not say what it holds: {why}",
                node.id, node.http_addr
            ));
            continue;
        };
        if stats.hints_pending > 0 {
            found.push(format!(
                "{} keeps {} hints for other nodes",
                node.id, stats.hints_pending
            ));
        }
        if stats.handoff.running.is_some() {
            found.push(format!(
                "{} is handing data over after a ring change",
                node.id
            ));
        }
    }
    found
}

/// The whole cluster on one screen, from any node.
#[utoipa::path(get, path = "/cluster/status", tag = "cluster", responses(
    (status = 200, description = "Every member with its figures, and the verdict", body = ClusterStatus),
    (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
    (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
    (status = 503, description = "An actor of this node did not answer in time", body = super::openapi::ErrorBody),
))]
pub(super) async fn status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let members = state.ask(&state.membership, ListMembers).await?;
    let ring = state.ask(&state.membership, GetRing).await?.ring;
    let shares = ring.ownership();
    let local = state.ask(&state.store, LocalStats).await?;
    let asked = members.into_iter().map(|status| {
        let (client, node_id) = (state.replica_client.clone(), state.node_id);
        let local = local.clone();
        let ring_share = shares.get(&status.member.id).copied().unwrap_or(0.0);
        async move {
            let member = status.member;
            let (stats, stats_error) = if member.id == node_id {
                (Some(local), None)
            } else if matches!(member.state, MemberState::Alive | MemberState::Suspect) {
                let answer = client
                    .request_within(member.gossip_addr, &ReplicaRequest::Stats, MEMBER_TIMEOUT)
                    .await;
                match answer {
                    Ok(ReplicaReply::Stats(stats)) => (Some(*stats), None),
                    Ok(ReplicaReply::Refused(reason)) => (None, Some(reason)),
                    Ok(_) => (None, Some("an answer that is not its figures".into())),
                    Err(e) => (None, Some(e.to_string())),
                }
            } else {
                (
                    None,
                    Some(format!("not asked: it is {}", member.state.as_str())),
                )
            };
            NodeStatus {
                id: member.id.to_string(),
                gossip_addr: member.gossip_addr.to_string(),
                http_addr: member.http_addr.to_string(),
                state: member.state.as_str(),
                incarnation: member.incarnation,
                state_for_ms: status.time_in_state.as_millis(),
                ring_share,
                stats,
                stats_error,
            }
        }
    });
    let mut nodes = join_all(asked).await;
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    let problems = problems(&nodes);
    Ok(HttpResponse::Ok().json(ClusterStatus {
        node: state.node_id.to_string(),
        healthy: problems.is_empty(),
        problems,
        replicas: state.replication.replicas,
        read_quorum: state.replication.read_quorum,
        write_quorum: state.replication.write_quorum,
        nodes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::handoff::{HandoffReport, HandoffView, JobState, Progress};

    fn node(id: &str, state: MemberState, stats: Option<NodeStats>) -> NodeStatus {
        NodeStatus {
            id: id.into(),
            gossip_addr: "127.0.0.1:5000".into(),
            http_addr: "127.0.0.1:6000".into(),
            state: state.as_str(),
            incarnation: 1,
            state_for_ms: 10,
            ring_share: 0.5,
            stats_error: stats.is_none().then(|| "timed out".to_string()),
            stats,
        }
    }

    fn quiet() -> NodeStats {
        NodeStats {
            keys: 10,
            bytes: 100,
            hints_pending: 0,
            handoff: HandoffView {
                running: None,
                last: None,
            },
        }
    }

    #[test]
    fn alive_members_that_owe_nothing_are_healthy() {
        let nodes = [
            node("a", MemberState::Alive, Some(quiet())),
            node("b", MemberState::Alive, Some(quiet())),
            node("c", MemberState::Left, None),
        ];
        assert_eq!(problems(&nodes), Vec::<String>::new());
    }

    #[test]
    fn each_reason_is_one_sentence_naming_the_node() {
        let running = HandoffReport {
            state: JobState::Running,
            from_nodes: 3,
            to_nodes: 4,
            elapsed_ms: 5,
            progress: Progress::default(),
        };
        let nodes = [
            node("dead-one", MemberState::Dead, None),
            node("mute", MemberState::Alive, None),
            node(
                "hinting",
                MemberState::Alive,
                Some(NodeStats {
                    hints_pending: 7,
                    ..quiet()
                }),
            ),
            node(
                "moving",
                MemberState::Alive,
                Some(NodeStats {
                    handoff: HandoffView {
                        running: Some(running),
                        last: None,
                    },
                    ..quiet()
                }),
            ),
            node("wary", MemberState::Suspect, Some(quiet())),
        ];
        let found = problems(&nodes);
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(found[0].contains("dead-one") && found[0].ends_with("is dead"));
        assert!(found[1].contains("mute") && found[1].contains("timed out"));
        assert!(found[2].contains("7 hints"));
        assert!(found[3].contains("moving") && found[3].contains("handing data over"));
        assert!(found[4].contains("wary") && found[4].ends_with("is suspect"));
    }
}
