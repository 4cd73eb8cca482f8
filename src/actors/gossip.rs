//! The Gossip actor: this node's voice on the UDP gossip port.
//!
//! Owns the UDP socket and the protocol timer. Every datagram it reads is
//! decoded by the `wire` codec; what does not decode is counted and dropped.
//! News about members goes to the Membership actor as [`ApplyNews`]; the
//! member list it gossips comes back as [`MembersChanged`]. It must never
//! decide which news wins (that is Membership's) nor touch stored data.
//!
//! The protocol here is deliberately small: a joining node sends `Join` to
//! its seed until it hears a `Welcome`, and once per interval every node
//! pings one random member with what it knows, answered by an `Ack` with what
//! the other knows. Failure detection builds on the same messages.
//!
//! On a socket error the actor drops its socket and stops; its supervisor
//! restarts it, and `started` binds the same address afresh.

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, StreamHandler, Supervised};
use futures_util::stream::{self, Stream};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use tokio::net::UdpSocket;

use super::contain_panic;
use super::membership::{ApplyNews, MembersChanged, Membership};
use crate::member::{Member, MemberState};
use crate::metrics::SharedMetrics;
use crate::wire::{Codec, Datagram, GossipMessage};

/// How long to wait before trying again when the gossip address cannot be
/// bound after a restart (the old socket may still be closing).
const REBIND_DELAY: Duration = Duration::from_millis(200);

pub struct GossipSettings {
    pub codec: Codec,
    pub interval: Duration,
    /// The member to join through, if this node is joining a cluster.
    pub seed: Option<SocketAddr>,
}

pub struct Gossip {
    local: Member,
    settings: GossipSettings,
    membership: Addr<Membership>,
    metrics: SharedMetrics,
    /// The socket bound before the actor first started, so that a port in
    /// use is reported at start-up; later restarts bind afresh.
    first_socket: Option<StdUdpSocket>,
    socket: Option<Arc<UdpSocket>>,
    /// The latest member list published by Membership, this node included.
    members: Arc<[Member]>,
    next_seq: u64,
    rng: StdRng,
}

type Received = io::Result<(Vec<u8>, SocketAddr)>;

impl Gossip {
    pub fn new(
        local: Member,
        socket: StdUdpSocket,
        settings: GossipSettings,
        membership: Addr<Membership>,
        metrics: SharedMetrics,
    ) -> Self {
        Gossip {
            members: Arc::from(vec![local.clone()]),
            local,
            settings,
            membership,
            metrics,
            first_socket: Some(socket),
            socket: None,
            next_seq: 0,
            rng: StdRng::from_os_rng(),
        }
    }

    fn bind(&mut self) -> io::Result<Arc<UdpSocket>> {
        let std_socket = match self.first_socket.take() {
            Some(socket) => socket,
            None => StdUdpSocket::bind(self.local.gossip_addr)?,
        };
        std_socket.set_nonblocking(true)?;
        Ok(Arc::new(UdpSocket::from_std(std_socket)?))
    }

    /// Reads datagrams one at a time. The buffer is one byte larger than the
    /// limit so that an oversized datagram shows up as such instead of being
    /// silently truncated to a valid-looking length.
    fn receive(socket: Arc<UdpSocket>, limit: usize) -> impl Stream<Item = Received> {
        stream::unfold(socket, move |socket| async move {
            let mut buf = vec![0u8; limit + 1];
            let received = socket.recv_from(&mut buf).await.map(|(len, from)| {
                buf.truncate(len);
                (buf, from)
            });
            Some((received, socket))
        })
    }

    fn tick(&mut self) {
        let peers: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| m.id != self.local.id)
            .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .collect();
        if let Some(peer) = peers.choose(&mut self.rng) {
            let target = peer.gossip_addr;
            self.next_seq += 1;
            let seq = self.next_seq;
            self.send_with_news(target, |news| GossipMessage::Ping { seq, news });
        } else if let Some(seed) = self.settings.seed {
            tracing::debug!(%seed, "asking to join");
            let member = self.local.clone();
            self.send(seed, GossipMessage::Join { member });
        }
    }

    fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        self.metrics.gossip_datagrams_received.inc();
        self.metrics.gossip_bytes_received.add(bytes.len() as u64);
        let datagram = match self.settings.codec.decode(bytes) {
            Ok(datagram) => datagram,
            Err(reason) => {
                self.metrics.count_dropped(&reason);
                tracing::debug!(%from, %reason, "dropped a datagram");
                return;
            }
        };
        if datagram.sender == self.local.id {
            return;
        }
        match datagram.message {
            GossipMessage::Join { member } => {
                tracing::info!(member = %member.id, addr = %member.gossip_addr, "join request");
                let reply_to = member.gossip_addr;
                self.apply(vec![member]);
                self.send_with_news(reply_to, |members| GossipMessage::Welcome { members });
            }
            GossipMessage::Welcome { members } => self.apply(members),
            GossipMessage::Ping { seq, news } => {
                self.apply(news);
                self.send_with_news(from, |news| GossipMessage::Ack { seq, news });
            }
            GossipMessage::Ack { news, .. } => self.apply(news),
        }
    }

    fn apply(&self, news: Vec<Member>) {
        if !news.is_empty() {
            self.membership.do_send(ApplyNews { news });
        }
    }

    /// Sends a message carrying as many members as fit one datagram: this
    /// node first, the others in random order.
    fn send_with_news(&mut self, to: SocketAddr, make: impl Fn(Vec<Member>) -> GossipMessage) {
        let mut news: Vec<Member> = self
            .members
            .iter()
            .filter(|m| m.id != self.local.id)
            .cloned()
            .collect();
        news.shuffle(&mut self.rng);
        news.insert(0, self.local.clone());
        loop {
            let datagram = Datagram {
                sender: self.local.id,
                message: make(news.clone()),
            };
            match self.settings.codec.encode_within_limit(&datagram) {
                Ok(Some(bytes)) => return self.send_bytes(to, &bytes),
                Ok(None) if news.len() > 1 => news.truncate(news.len() / 2),
                Ok(None) => {
                    tracing::error!("gossip limit too small for a single member");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not encode gossip");
                    return;
                }
            }
        }
    }

    fn send(&mut self, to: SocketAddr, message: GossipMessage) {
        let datagram = Datagram {
            sender: self.local.id,
            message,
        };
        match self.settings.codec.encode_within_limit(&datagram) {
            Ok(Some(bytes)) => self.send_bytes(to, &bytes),
            Ok(None) => tracing::error!(
                kind = datagram.message.kind(),
                "message exceeds the gossip limit"
            ),
            Err(e) => tracing::error!(error = %e, "could not encode gossip"),
        }
    }

    fn send_bytes(&self, to: SocketAddr, bytes: &[u8]) {
        let Some(socket) = &self.socket else { return };
        match socket.try_send_to(bytes, to) {
            Ok(_) => {
                self.metrics.gossip_datagrams_sent.inc();
                self.metrics.gossip_bytes_sent.add(bytes.len() as u64);
            }
            Err(e) => {
                self.metrics.gossip_send_failures.inc();
                tracing::debug!(%to, error = %e, "gossip send failed");
            }
        }
    }

    fn fail_socket(&mut self, error: io::Error, ctx: &mut Context<Self>) {
        tracing::error!(%error, "gossip socket failed; restarting the gossip actor");
        self.metrics.gossip_socket_restarts.inc();
        self.socket = None;
        ctx.stop();
    }
}

impl Actor for Gossip {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        match self.bind() {
            Ok(socket) => {
                tracing::debug!(addr = %self.local.gossip_addr, "gossip socket bound");
                ctx.add_stream(Self::receive(
                    socket.clone(),
                    self.settings.codec.max_datagram_bytes(),
                ));
                self.socket = Some(socket);
            }
            Err(error) => {
                tracing::warn!(addr = %self.local.gossip_addr, %error, "cannot bind the gossip socket; retrying");
                ctx.run_later(REBIND_DELAY, |_, ctx| ctx.stop());
                return;
            }
        }
        ctx.run_interval(self.settings.interval, |act, _| act.tick());
        self.tick();
    }
}

impl Supervised for Gossip {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.metrics.actor_restarts_gossip.inc();
        // The receive stream held the other handle and is gone by now, so
        // dropping this one closes the socket before `started` binds again.
        self.socket = None;
        tracing::warn!("gossip actor restarting");
    }
}

impl StreamHandler<Received> for Gossip {
    fn handle(&mut self, item: Received, ctx: &mut Self::Context) {
        match item {
            Ok((bytes, from)) => {
                contain_panic("gossip", ctx, || self.on_datagram(&bytes, from));
            }
            Err(e) if is_transient(&e) => {
                tracing::debug!(error = %e, "transient gossip receive error");
            }
            Err(e) => self.fail_socket(e, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Errors a UDP socket may report for one earlier datagram (an ICMP reply
/// from a peer that went away) rather than for itself.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

impl Handler<MembersChanged> for Gossip {
    type Result = ();

    fn handle(&mut self, msg: MembersChanged, _ctx: &mut Self::Context) {
        self.members = msg.members;
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<super::fault::InjectFault> for Gossip {
    type Result = ();

    fn handle(&mut self, msg: super::fault::InjectFault, ctx: &mut Self::Context) {
        use super::fault::Fault;
        match msg.0 {
            Fault::Stop => ctx.stop(),
            Fault::Panic => {
                contain_panic("gossip", ctx, || panic!("injected panic"));
            }
            Fault::SocketError => {
                self.fail_socket(io::Error::other("injected socket failure"), ctx)
            }
        }
    }
}
