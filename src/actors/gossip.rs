//! The Gossip actor: drives the SWIM state machine over a real UDP socket
//! and a real clock.
//!
//! Owns the UDP socket and the protocol timer, and the [`Swim`] state
//! machine that holds the rules. Everything it receives goes to `Swim`;
//! everything `Swim` wants sent goes out on the socket; every member change
//! `Swim` makes goes to the Membership actor as [`ApplyNews`]. It must never
//! decide anything about members itself, nor touch stored data.
//!
//! On a socket error the actor drops its socket and stops; its supervisor
//! restarts it, `started` binds the same address afresh, and `Swim` (a field,
//! so kept across the restart) carries on where it was.

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, SpawnHandle, StreamHandler,
    Supervised,
};
use futures_util::stream::{self, Stream};
use tokio::net::UdpSocket;

use super::contain_panic;
use super::membership::{ApplyNews, Membership};
use crate::member::Member;
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::swim::{RemoveError, Swim};

/// How long to wait before trying again when the gossip address cannot be
/// bound after a restart (the old socket may still be closing).
const REBIND_DELAY: Duration = Duration::from_millis(200);

pub struct Gossip {
    swim: Swim,
    bind_addr: SocketAddr,
    datagram_limit: usize,
    membership: Addr<Membership>,
    metrics: SharedMetrics,
    /// The socket bound before the actor first started, so that a port in
    /// use is reported at start-up; later restarts bind afresh.
    first_socket: Option<StdUdpSocket>,
    socket: Option<Arc<UdpSocket>>,
    wake: Option<(Instant, SpawnHandle)>,
}

/// Announce that this node leaves the cluster; answered once the news is on
/// its way to a few members.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Leave;

/// Announce that this node stops (and will be back): the others mark it
/// dead at once and keep hints for it, but its keys stay where they are.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct AnnounceStop;

/// Whether this node knows any other live member yet, or why the cluster
/// refused to let it in.
#[derive(Message, Debug)]
#[rtype(result = "Result<bool, String>")]
pub struct HasPeers;

type Received = io::Result<(Vec<u8>, SocketAddr)>;

impl Gossip {
    pub fn new(
        swim: Swim,
        socket: StdUdpSocket,
        datagram_limit: usize,
        membership: Addr<Membership>,
        metrics: SharedMetrics,
    ) -> Self {
        Gossip {
            bind_addr: swim.local().gossip_addr,
            swim,
            datagram_limit,
            membership,
            metrics,
            first_socket: Some(socket),
            socket: None,
            wake: None,
        }
    }

    fn bind(&mut self) -> io::Result<Arc<UdpSocket>> {
        let std_socket = match self.first_socket.take() {
            Some(socket) => socket,
            None => StdUdpSocket::bind(self.bind_addr)?,
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

    /// Carries out what the state machine decided: datagrams out, changes to
    /// Membership, and a timer for its next deadline.
    fn carry_out(&mut self, ctx: &mut Context<Self>) {
        for datagram in self.swim.take_outgoing() {
            self.send_bytes(datagram.to, &datagram.bytes);
        }
        let news = self.swim.take_changes();
        if !news.is_empty() {
            self.membership.do_send(ApplyNews { news });
        }
        let Some(next) = self.swim.next_wake() else {
            return;
        };
        if let Some((scheduled, handle)) = self.wake {
            if scheduled <= next {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = next.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |act, ctx| {
            act.wake = None;
            let now = Instant::now();
            contain_panic("gossip", ctx, || act.swim.tick(now));
            act.carry_out(ctx);
        });
        self.wake = Some((next, handle));
    }

    fn send_bytes(&self, to: SocketAddr, bytes: &[u8]) {
        let Some(socket) = &self.socket else { return };
        if let Err(e) = socket.try_send_to(bytes, to) {
            self.metrics.gossip_send_failures.inc();
            tracing::debug!(%to, error = %e, "gossip send failed");
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
                tracing::debug!(addr = %self.bind_addr, "gossip socket bound");
                ctx.add_stream(Self::receive(socket.clone(), self.datagram_limit));
                self.socket = Some(socket);
                self.carry_out(ctx);
            }
            Err(error) => {
                tracing::warn!(addr = %self.bind_addr, %error, "cannot bind the gossip socket; retrying");
                ctx.run_later(REBIND_DELAY, |_, ctx| ctx.stop());
            }
        }
    }
}

impl Supervised for Gossip {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.metrics.actor_restarts_gossip.inc();
        // The receive stream and the timer belonged to the old context and
        // are gone; dropping this handle closes the socket before `started`
        // binds again.
        self.socket = None;
        self.wake = None;
        tracing::warn!("gossip actor restarting");
    }
}

impl StreamHandler<Received> for Gossip {
    fn handle(&mut self, item: Received, ctx: &mut Self::Context) {
        match item {
            Ok((bytes, from)) => {
                let now = Instant::now();
                let swim = &mut self.swim;
                contain_panic("gossip", ctx, || swim.handle_bytes(from, &bytes, now));
                self.carry_out(ctx);
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

impl Handler<Leave> for Gossip {
    type Result = ();

    fn handle(&mut self, _msg: Leave, ctx: &mut Self::Context) {
        self.swim.leave(Instant::now());
        self.carry_out(ctx);
    }
}

impl Handler<AnnounceStop> for Gossip {
    type Result = ();

    fn handle(&mut self, _msg: AnnounceStop, ctx: &mut Self::Context) {
        self.swim.stop(Instant::now());
        self.carry_out(ctx);
    }
}

/// Removes a dead member for good (`POST /cluster/remove/{id}`).
#[derive(Message, Debug)]
#[rtype(result = "Result<Member, RemoveError>")]
pub struct Remove(pub NodeId);

impl Handler<Remove> for Gossip {
    type Result = Result<Member, RemoveError>;

    fn handle(&mut self, msg: Remove, ctx: &mut Self::Context) -> Self::Result {
        let removed = self.swim.remove(msg.0, Instant::now());
        self.carry_out(ctx);
        removed
    }
}

impl Handler<HasPeers> for Gossip {
    type Result = Result<bool, String>;

    fn handle(&mut self, _msg: HasPeers, _ctx: &mut Self::Context) -> Self::Result {
        match self.swim.join_refusal() {
            Some(reason) => Err(reason.to_string()),
            None => Ok(self.swim.has_peers()),
        }
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<super::fault::InjectFault> for Gossip {
    type Result = ();

    fn handle(&mut self, msg: super::fault::InjectFault, ctx: &mut Self::Context) {
        use super::fault::Fault;
        match msg.0 {
            Fault::Stop => ctx.stop(),
            Fault::Stall(busy) => std::thread::sleep(busy),
            Fault::Panic => {
                contain_panic("gossip", ctx, || panic!("injected panic"));
            }
            Fault::SocketError => {
                self.fail_socket(io::Error::other("injected socket failure"), ctx)
            }
        }
    }
}
