//! Where the broker's requests and deliveries pass through the cluster: what goes to the
//! stream instead of the rooms' rings, what the stream brings, nickname claims, and the
//! other nodes' members in `/who`, `/whois`, `/rooms` and `/msg`.

use std::time::Instant;

use log::{debug, info, warn};

use super::bridge::{Bridge, BridgeSettings, Incoming, Outgoing, RosterChange, StreamEntry};
use super::{Cluster, HEARTBEAT_EVERY, NODE_LAPSE, Parked};
use crate::broker::Broker;
use crate::broker::room::{Audience, Delivery, MemberId};
use crate::config::ClusterSettings;
use crate::names;
use crate::proto::broadcast::Broadcast;
use crate::proto::cluster::{CLUSTER_VERSION, EntryBody};
use crate::proto::{ClusterNews, Event, Failure, LeaveReason, Request, RoomInfo, WhoIs, codec};

/// The first protocol whose sessions know `Event::Cluster`, `MemberNodes` and `WhoIsOn`.
const CLUSTER_EVENTS: u32 = 12;

/// Why a login or `/nick` is refused while no nickname can be claimed in Redis.
const NO_CLAIM_NOW: &str =
    "new nicknames cannot be checked with the other servers right now; try again in a moment";

/// Starts the cluster's threads, or says why they cannot start (a password file that cannot
/// be read, a URL the client refuses). `roster_due`: when the node's full roster is to be
/// published (a restarted broker first lets its sessions resume).
pub(in crate::broker) fn start(
    settings: &ClusterSettings,
    waker: std::sync::Arc<mio::Waker>,
    roster_due: Instant,
) -> Result<Cluster, String> {
    let password = match &settings.redis_password_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text.lines().next().unwrap_or_default().trim().to_string()),
            Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
        },
    };
    let bridge = Bridge::start(
        BridgeSettings { url: settings.redis.clone(), password, node: settings.node.clone() },
        waker,
    )
    .map_err(|err| err.to_string())?;
    Ok(Cluster::new(settings.node.clone(), bridge, roster_due))
}

impl Broker {
    /// Hands deliveries on: a room broadcast goes to the stream (and is shown when it comes
    /// back, in the stream's order) while Redis is in reach, and is shown at once and queued
    /// while it is not; everything else is delivered here.
    pub(in crate::broker) fn deliver(&mut self, deliveries: Vec<Delivery>) -> u64 {
        if self.cluster.is_none() {
            return self.deliver_here(deliveries);
        }
        let mut here = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            if !matches!(delivery.to, Audience::Room(_)) || Broadcast::of(&delivery.event).is_none()
            {
                here.push(delivery);
                continue;
            }
            self.publish_members_named(&delivery.event);
            let Some(cluster) = &mut self.cluster else { break };
            if let Delivery { to: Audience::Room(key), event } = delivery {
                here.extend(cluster.publish_room(key, event));
            }
        }
        self.deliver_here(here)
    }

    /// The members a broadcast names, as the other nodes are to know them now: present
    /// (joined, moved, renamed) or gone, with their roster rows and nick claims.
    fn publish_members_named(&mut self, event: &Event) {
        let (nick, previous) = match event {
            Event::Joined { nick, .. } | Event::Left { nick, .. } => (nick, None),
            Event::NickChanged { old, new } => (new, Some(names::fold(old))),
            _ => return,
        };
        let Some(cluster) = &mut self.cluster else { return };
        let key = names::fold(nick);
        match self.rooms.find(nick).and_then(|id| self.rooms.row_of(id)) {
            Some(member) => {
                let roster =
                    RosterChange::Set { key, member: member.clone(), previous: previous.clone() };
                cluster.publish(&EntryBody::Present { member, previous: previous.clone() }, roster);
                if let Some(previous) = previous {
                    cluster.release(previous);
                }
            }
            None => {
                cluster.publish(
                    &EntryBody::Gone { nick: key.clone() },
                    RosterChange::Remove { key: key.clone() },
                );
                cluster.release(key);
            }
        }
    }

    /// What the Redis threads said, and what is due (heartbeat, roster); called when the
    /// helpers wake the loop and at [`Cluster::next_wake`].
    pub(in crate::broker) fn cluster_turn(&mut self, now: Instant) {
        let Some(cluster) = &mut self.cluster else { return };
        let news: Vec<Incoming> = cluster.bridge.take().collect();
        for incoming in news {
            self.cluster_news(incoming);
        }
        let Some(cluster) = &mut self.cluster else { return };
        // The first beat goes as soon as the writer is in contact: a heartbeat older than
        // the lapse (this node's previous life) must not outlive this start.
        if cluster.writer_up && now >= cluster.next_beat {
            cluster.next_beat = now + HEARTBEAT_EVERY;
            let nicks = self
                .rooms
                .member_ids()
                .filter_map(|id| self.rooms.nick(id))
                .map(names::fold)
                .collect();
            // A full writer queue skips a beat; the next one comes in 5 s.
            let _ = cluster.bridge.send(Outgoing::Heartbeat { nicks });
        }
        if cluster.connected() && cluster.roster_due.is_some_and(|due| now >= due) {
            cluster.roster_due = None;
            let rows =
                self.rooms.member_ids().filter_map(|id| self.rooms.row_of(id)).collect::<Vec<_>>();
            let (body, roster) = Cluster::roster_job(rows);
            cluster.publish(&body, roster);
        }
        cluster.pump();
    }

    fn cluster_news(&mut self, incoming: Incoming) {
        let Some(cluster) = &mut self.cluster else { return };
        match incoming {
            Incoming::ReaderUp { from_id, rosters, missed } => {
                cluster.reader_up = true;
                cluster.last_id = from_id;
                let own = cluster.node.clone();
                for (node, members) in rosters {
                    if node != own {
                        self.roster_of(&node, members);
                    }
                }
                if missed {
                    self.tell_everyone(ClusterNews::Missed);
                }
                self.contact_back();
            }
            Incoming::WriterUp => {
                cluster.writer_up = true;
                cluster.writer_answers = true;
                self.contact_back();
            }
            Incoming::Lost { reader, why } => {
                if reader {
                    cluster.reader_up = false;
                    // The writer may hang on the same cut network without knowing it: until
                    // it answers again, nothing counts on it, and a heartbeat asks now.
                    cluster.next_beat = Instant::now();
                } else {
                    cluster.writer_up = false;
                }
                cluster.writer_answers = false;
                let why = crate::text::sanitize(&why);
                cluster.lost_why = Some(why);
                let unshown = cluster.take_unshown();
                let first = !std::mem::replace(&mut cluster.told_lost, true);
                if first {
                    cluster.figures.lost_episodes += 1;
                }
                self.deliver_here(unshown);
                if first {
                    self.tell_everyone(ClusterNews::Lost);
                }
            }
            Incoming::Entries(entries) => {
                for entry in entries {
                    self.stream_entry(entry);
                }
            }
            Incoming::Published(tags) => {
                cluster.published(&tags);
                self.writer_answered();
            }
            Incoming::Unsent(jobs) => {
                cluster.unsent(jobs);
                if !cluster.connected() {
                    let unshown = cluster.take_unshown();
                    self.deliver_here(unshown);
                }
            }
            Incoming::Claimed { ticket, granted, unreachable } => {
                if !unreachable {
                    self.writer_answered();
                }
                self.claimed(ticket, granted, unreachable);
            }
            Incoming::Beat { redis_ms, nodes, lost } => {
                self.writer_answered();
                self.beat(redis_ms, nodes, lost);
            }
        }
    }

    /// The writer did something in Redis: it is in contact.
    fn writer_answered(&mut self) {
        let Some(cluster) = &mut self.cluster else { return };
        if !cluster.writer_answers && cluster.writer_up {
            cluster.writer_answers = true;
            self.contact_back();
        }
    }

    /// Both threads are back after an outage: the queue goes out, the roster is sent again,
    /// the heartbeat goes at once (the outage may have come close to the lapse), and the
    /// members are told.
    fn contact_back(&mut self) {
        let Some(cluster) = &mut self.cluster else { return };
        if !cluster.connected() {
            return;
        }
        cluster.next_beat = Instant::now();
        if cluster.roster_due.is_none() {
            // After an outage: what the others know of this node is made whole again.
            cluster.roster_due = Some(Instant::now());
        }
        cluster.pump();
        cluster.lost_why = None;
        if std::mem::take(&mut cluster.told_lost) {
            let undelivered = std::mem::take(&mut cluster.undelivered);
            self.tell_everyone(ClusterNews::Back { undelivered });
        }
    }

    /// Tells every member of this node what became of the contact with the others.
    fn tell_everyone(&mut self, news: ClusterNews) {
        let members: Vec<MemberId> = self.rooms.member_ids().collect();
        let (new, old): (Vec<MemberId>, Vec<MemberId>) = members
            .into_iter()
            .partition(|&id| self.peers.get(id).is_some_and(|p| p.protocol >= CLUSTER_EVENTS));
        let words = news.words();
        self.send_to(new, &Event::Cluster(news));
        self.send_to(old, &Event::Announcement { text: words });
    }

    /// One entry of the stream, in the stream's order.
    fn stream_entry(&mut self, entry: StreamEntry) {
        let Some(cluster) = &mut self.cluster else { return };
        cluster.figures.read += 1;
        cluster.last_id.clone_from(&entry.id);
        let StreamEntry { id, node, version, body, problem } = entry;
        if let Some(problem) = problem {
            cluster.skipped(&id, &node, &problem);
            return;
        }
        if version > CLUSTER_VERSION {
            let why = format!("version {version}, newer than this node's {CLUSTER_VERSION}");
            cluster.skipped(&id, &node, &why);
            return;
        }
        let body = match body.as_deref().map(codec::decode_payload::<EntryBody>) {
            Some(Ok(body)) => body,
            Some(Err(err)) => {
                return cluster.skipped(&id, &node, &format!("does not decode: {err}"));
            }
            None => return cluster.skipped(&id, &node, "no body"),
        };
        if let EntryBody::NodeGone { node: gone } = &body
            && *gone == cluster.node
        {
            warn!("cluster: node {node} took this node for gone; its roster goes out again");
            cluster.roster_due = Some(Instant::now());
        }
        if node == cluster.node {
            // What this node said: shown now, unless it was shown when it was said (or when
            // contact was lost with it in the writer's hands).
            if let EntryBody::Room { room, event, number, .. } = body
                && cluster.read_back(number)
            {
                self.deliver_here(vec![Delivery { to: Audience::Room(room), event }]);
            }
            return;
        }
        match body {
            EntryBody::Room { room, event, .. } => {
                if Broadcast::of(&event).is_none() {
                    return cluster.skipped(&id, &node, "not a room broadcast");
                }
                if let Some(remote_nick) = said_by(&event)
                    && self.rooms.find(remote_nick).is_some()
                {
                    return cluster.skipped(&id, &node, "names a member of this node");
                }
                if self.rooms.exists(&room) {
                    self.rooms.said_elsewhere(&room, &event);
                    self.deliver_here(vec![Delivery { to: Audience::Room(room), event }]);
                }
            }
            EntryBody::Private { to, event } => {
                if !matches!(event, Event::Private { .. }) {
                    return cluster.skipped(&id, &node, "not a private line");
                }
                if let Some(target) = self.rooms.find(&to) {
                    self.deliver_here(vec![Delivery { to: Audience::One(target), event }]);
                }
            }
            EntryBody::Present { member, previous } => {
                let nick = member.nick.clone();
                for old in cluster.replica.set(&node, member, previous.as_deref()) {
                    self.rooms.set_elsewhere(&old.member.nick, false);
                }
                self.rooms.set_elsewhere(&nick, true);
            }
            EntryBody::Gone { nick } => {
                if let Some(gone) = cluster.replica.remove(&node, &names::fold(&nick)) {
                    self.rooms.set_elsewhere(&gone.member.nick, false);
                }
            }
            EntryBody::Roster { members } => self.roster_of(&node, members),
            EntryBody::Announce { text } => {
                let everyone: Vec<MemberId> = self.rooms.member_ids().collect();
                self.send_to(everyone, &Event::Announcement { text });
            }
            EntryBody::Kick { nick, reason } => {
                if let Some(target) = self.rooms.find(&nick) {
                    info!("cluster: node {node} kicks {}", crate::text::sanitize(&nick));
                    self.kick(target, reason);
                }
            }
            EntryBody::AccountsChanged => self.storage.reload_accounts(),
            EntryBody::NodeGone { node: gone } => {
                if gone != cluster.node {
                    self.node_gone(&gone);
                }
            }
            EntryBody::Moderation { request } => {
                use crate::proto::control::ControlRequest as Asked;
                if !matches!(
                    request,
                    Asked::Ban { .. }
                        | Asked::Unban { .. }
                        | Asked::Mute { .. }
                        | Asked::Unmute { .. }
                        | Asked::Motd { text: Some(_) }
                ) {
                    return cluster.skipped(&id, &node, "not a moderation change");
                }
                info!("cluster: node {node}'s operator: {request:?}");
                let from_cluster = crate::broker::control::FROM_CLUSTER;
                if let Some(reply) = self.change(from_cluster, request, crate::clock::unix_now()) {
                    debug!("cluster: node {node}'s change not applied here: {reply:?}");
                }
            }
        }
    }

    /// Everything `node` says it has: the replica follows; members it no longer lists left
    /// while this node was not looking, and their rooms here are told.
    fn roster_of(&mut self, node: &str, members: Vec<crate::proto::cluster::RemoteMember>) {
        let Some(cluster) = &mut self.cluster else { return };
        let (gone, present) = cluster.replica.replace_node(node, members);
        for remote in &present {
            self.rooms.set_elsewhere(&remote.member.nick, true);
        }
        self.remotes_left(gone, LeaveReason::ConnectionLost);
    }

    /// Members of other nodes who are gone: their nicks are free here, and this node's
    /// members in their rooms see them leave.
    fn remotes_left(&mut self, gone: Vec<super::replica::Remote>, reason: LeaveReason) {
        let mut told = Vec::new();
        for remote in gone {
            self.rooms.set_elsewhere(&remote.member.nick, false);
            let key = names::fold(&remote.member.room);
            if self.rooms.exists(&key) {
                told.push(Delivery {
                    to: Audience::Room(key),
                    event: Event::Left {
                        nick: remote.member.nick,
                        room: remote.member.room,
                        reason: reason.clone(),
                    },
                });
            }
        }
        self.deliver_here(told);
    }

    /// A heartbeat's answer: nodes whose heartbeat lapsed are gone; nicks this node lost
    /// to another are given up here. That happens only after an outage longer than a
    /// claim's life (30 s): the others saw this node's users leave, and one of theirs may
    /// have taken the nick meanwhile; this node's user is renamed.
    fn beat(&mut self, redis_ms: u64, nodes: Vec<(String, u64)>, lost: Vec<String>) {
        let Some(cluster) = &mut self.cluster else { return };
        cluster.redis_ms = redis_ms;
        cluster.beat_at = Instant::now();
        cluster.nodes = nodes.into_iter().collect();
        let lapse = NODE_LAPSE.as_millis() as u64;
        let mut lapsed: Vec<String> = cluster
            .nodes
            .iter()
            .filter(|(node, beat)| {
                **node != cluster.node && redis_ms.saturating_sub(**beat) > lapse
            })
            .map(|(node, _)| node.clone())
            .collect();
        // A node with members here but no heartbeat in Redis (forgotten by another node, or
        // a Redis that restarted empty) has as long as any to beat again.
        let missing: Vec<String> = cluster
            .replica
            .per_node()
            .keys()
            .filter(|node| !cluster.nodes.contains_key(**node))
            .map(|node| node.to_string())
            .collect();
        cluster.unbeaten_since.retain(|node, _| missing.contains(node));
        for node in missing {
            let since = *cluster.unbeaten_since.entry(node.clone()).or_insert(redis_ms);
            if redis_ms.saturating_sub(since) > lapse && !lapsed.contains(&node) {
                lapsed.push(node);
            }
        }
        for node in lapsed {
            let Some(cluster) = &mut self.cluster else { return };
            let age =
                cluster.nodes.get(&node).map_or(0, |beat| redis_ms.saturating_sub(*beat) / 1000);
            warn!("cluster: node {node} is gone (no heartbeat for {age} s)");
            let _ = cluster.bridge.send(Outgoing::ForgetNode { node: node.clone() });
            cluster.publish(&EntryBody::NodeGone { node: node.clone() }, RosterChange::None);
            self.node_gone(&node);
        }
        for key in lost {
            let Some(id) = self.rooms.find(&key) else { continue };
            let Some(nick) = self.rooms.nick(id).map(str::to_string) else { continue };
            let Some(variant) = self.rooms.free_variant(&nick) else { continue };
            warn!(
                "cluster: {} is held by another node (its claim lapsed while out of contact); renamed {}",
                crate::text::sanitize(&nick),
                crate::text::sanitize(&variant)
            );
            let deliveries = self.rooms.change_nick(id, &variant);
            self.deliver(deliveries);
        }
    }

    /// `node` is gone (its heartbeat lapsed): its members leave, told to this node's members.
    fn node_gone(&mut self, node: &str) {
        let Some(cluster) = &mut self.cluster else { return };
        cluster.nodes.remove(node);
        cluster.unbeaten_since.remove(node);
        let gone = cluster.replica.forget_node(node);
        self.remotes_left(gone, LeaveReason::Quit(Some(format!("server {node} lost"))));
    }

    /// A login or `/nick` to `nick`: true when the request waits for the nick's claim in
    /// Redis (it is applied when the answer comes) or was refused because no claim can be
    /// made now. A nick the rooms refuse anyway goes on at once, to be refused there.
    ///
    /// Out of contact, no new nick is given out (the writer answers such a claim as
    /// unreachable): the nodes in contact with Redis may give it to someone else meanwhile,
    /// and two nodes must never both admit `alice`. Who is already here keeps their nick
    /// (see `beat` for a claim that lapsed meanwhile).
    pub(in crate::broker) fn waits_for_claim(
        &mut self,
        id: MemberId,
        nick: &str,
        request: &Request,
    ) -> bool {
        let Some(cluster) = &mut self.cluster else { return false };
        let key = names::fold(nick);
        if let Some(at) = cluster.granted.iter().position(|granted| *granted == (id, key.clone())) {
            cluster.granted.swap_remove(at);
            return false;
        }
        if self.rooms.nick_free(nick, Some(id)).is_err() {
            return false;
        }
        // Sent even while the writer is out of contact: it answers a claim it cannot make
        // as unreachable, and one made before its first connection when it connects.
        cluster.next_ticket += 1;
        let ticket = cluster.next_ticket;
        if cluster.bridge.send(Outgoing::Claim { ticket, key: key.clone() }).is_ok() {
            cluster.claims.insert(ticket, Parked { id, key, request: request.clone() });
        } else {
            self.refuse_unclaimed(id, nick);
        }
        true
    }

    fn claimed(&mut self, ticket: u64, granted: bool, unreachable: bool) {
        let Some(cluster) = &mut self.cluster else { return };
        let Some(Parked { id, key, request }) = cluster.claims.remove(&ticket) else { return };
        if !self.peers.contains(id) {
            if granted {
                cluster.release(key);
            }
            return;
        }
        let nick = match &request {
            Request::Login { nick, .. } | Request::ChangeNick { nick } => nick.clone(),
            _ => key.clone(),
        };
        if unreachable {
            self.refuse_unclaimed(id, &nick);
            return;
        }
        if granted {
            cluster.granted.push((id, key));
            self.handle(id, request);
            return;
        }
        debug!("cluster: {} is held by another node", crate::text::sanitize(&nick));
        self.deliver_here(vec![Delivery {
            to: Audience::One(id),
            event: Event::Failed(Failure::NickInUse(nick)),
        }]);
    }

    /// No claim could be made for `nick` (Redis out of reach, or the writer's queue full):
    /// the login or `/nick` is refused, in words that say to try again.
    fn refuse_unclaimed(&mut self, id: MemberId, nick: &str) {
        debug!("cluster: {} refused, no claim can be made now", crate::text::sanitize(nick));
        self.deliver_here(vec![Delivery {
            to: Audience::One(id),
            event: Event::Failed(Failure::Unavailable(NO_CLAIM_NOW.into())),
        }]);
    }

    /// `/msg` to a member of another node: true when it was (the line goes through the
    /// stream; the sender is answered at once).
    pub(in crate::broker) fn private_elsewhere(
        &mut self,
        id: MemberId,
        seq: u64,
        to: &str,
        text: &str,
    ) -> bool {
        let Some(cluster) = &mut self.cluster else { return false };
        if self.rooms.find(to).is_some() {
            return false;
        }
        let Some(remote) = cluster.replica.get(to) else { return false };
        let nick = remote.member.nick.clone();
        let (line, answer) = self.rooms.private_elsewhere(id, seq, &nick, text);
        if let Some(event) = line {
            let body = EntryBody::Private { to: names::fold(&nick), event };
            cluster.publish(&body, RosterChange::None);
        }
        self.deliver_here(answer);
        true
    }

    /// `/who`, `/whois` and `/rooms` with the other nodes' members.
    pub(in crate::broker) fn with_other_nodes(
        &self,
        id: MemberId,
        mut deliveries: Vec<Delivery>,
    ) -> Vec<Delivery> {
        let Some(cluster) = &self.cluster else { return deliveries };
        let knows_nodes = self.peers.get(id).is_some_and(|p| p.protocol >= CLUSTER_EVENTS);
        let now = crate::clock::unix_now();
        let mut extra = Vec::new();
        for delivery in &mut deliveries {
            match &mut delivery.event {
                Event::Members { room, nicks, away, idle, tls, registered } => {
                    let remotes = cluster.replica.in_room(&names::fold(room));
                    if remotes.is_empty() {
                        continue;
                    }
                    let mut rows: Vec<(String, u64)> =
                        nicks.drain(..).zip(idle.drain(..).chain(std::iter::repeat(0))).collect();
                    for remote in &remotes {
                        let member = &remote.member;
                        rows.push((member.nick.clone(), now.saturating_sub(member.last_spoke)));
                        if member.away.is_some() {
                            away.push(member.nick.clone());
                        }
                        if member.tls {
                            tls.push(member.nick.clone());
                        }
                        if member.account.is_some() {
                            registered.push(member.nick.clone());
                        }
                    }
                    rows.sort_by_cached_key(|(nick, _)| names::fold(nick));
                    (*nicks, *idle) = rows.into_iter().unzip();
                    if knows_nodes {
                        extra.push(Delivery {
                            to: Audience::One(id),
                            event: Event::MemberNodes {
                                room: room.clone(),
                                nicks: remotes.iter().map(|r| r.member.nick.clone()).collect(),
                                nodes: remotes.iter().map(|r| r.node.clone()).collect(),
                            },
                        });
                    }
                }
                Event::RoomList { rooms } => {
                    for (key, (name, count)) in cluster.replica.rooms() {
                        match rooms.iter_mut().find(|room| names::fold(&room.name) == key) {
                            Some(room) => room.members = room.members.saturating_add(count),
                            None => rooms.push(RoomInfo { name, members: count }),
                        }
                    }
                    rooms.sort_by_cached_key(|room| names::fold(&room.name));
                }
                _ => {}
            }
        }
        deliveries.extend(extra);
        deliveries
    }

    /// `/whois` of a member of another node, when there is one by that nick.
    pub(in crate::broker) fn whois_elsewhere(&self, id: MemberId, nick: &str) -> Option<Delivery> {
        let cluster = self.cluster.as_ref()?;
        if self.rooms.find(nick).is_some() {
            return None;
        }
        let remote = cluster.replica.get(nick)?;
        let member = &remote.member;
        let now = crate::clock::unix_now();
        let who = WhoIs {
            nick: member.nick.clone(),
            room: member.room.clone(),
            connected_seconds: now.saturating_sub(member.connected_at),
            idle_seconds: now.saturating_sub(member.last_spoke),
            away: member.away.clone(),
            tls: member.tls,
            registered: member.account.is_some(),
        };
        let knows_nodes = self.peers.get(id).is_some_and(|p| p.protocol >= CLUSTER_EVENTS);
        let event = match knows_nodes {
            true => Event::WhoIsOn { who, node: remote.node.clone() },
            false => Event::WhoIs(who),
        };
        Some(Delivery { to: Audience::One(id), event })
    }
}

impl Broker {
    /// The account changes up to number `settled` are in the shared database: the other
    /// nodes read the accounts again.
    pub(in crate::broker) fn accounts_settled(&mut self, settled: u64) {
        let Some(cluster) = &mut self.cluster else { return };
        if settled > cluster.accounts_settled {
            cluster.accounts_settled = settled;
            cluster.publish(&EntryBody::AccountsChanged, RosterChange::None);
        }
    }
}

impl Broker {
    /// An operator's moderation change is in force here: the other nodes apply it too.
    pub(in crate::broker) fn moderation_elsewhere(
        &mut self,
        request: crate::proto::control::ControlRequest,
    ) {
        let Some(cluster) = &mut self.cluster else { return };
        cluster.publish(&EntryBody::Moderation { request }, RosterChange::None);
    }

    /// `chatctl kick` of a member of another node: its node is asked (through the stream)
    /// and does it. Returns that node.
    pub(in crate::broker) fn kick_elsewhere(
        &mut self,
        nick: &str,
        reason: Option<String>,
    ) -> Option<String> {
        let cluster = self.cluster.as_mut()?;
        let node = cluster.replica.get(nick)?.node.clone();
        cluster.publish(&EntryBody::Kick { nick: names::fold(nick), reason }, RosterChange::None);
        Some(node)
    }

    /// `chatctl announce` to everyone: the other nodes announce it to theirs. False without
    /// a cluster.
    pub(in crate::broker) fn announce_elsewhere(&mut self, text: &str) -> bool {
        let Some(cluster) = &mut self.cluster else { return false };
        cluster.publish(&EntryBody::Announce { text: text.to_string() }, RosterChange::None);
        true
    }

    /// This node's name in a cluster.
    pub(in crate::broker) fn cluster_node(&self) -> Option<&str> {
        self.cluster.as_ref().map(|cluster| cluster.node.as_str())
    }

    /// `chatctl who`'s rows for the other nodes' members (of the room with key `room`, or
    /// all).
    pub(in crate::broker) fn users_elsewhere(
        &self,
        room: Option<&str>,
        now: u64,
    ) -> Vec<crate::proto::control::UserRow> {
        let Some(cluster) = &self.cluster else { return Vec::new() };
        cluster
            .replica
            .all()
            .filter(|remote| room.is_none_or(|key| names::fold(&remote.member.room) == key))
            .map(|remote| {
                let member = &remote.member;
                crate::proto::control::UserRow {
                    nick: member.nick.clone(),
                    room: member.room.clone(),
                    peer: "-".to_string(),
                    pid: 0,
                    connected_seconds: now.saturating_sub(member.connected_at),
                    idle_seconds: now.saturating_sub(member.last_spoke),
                    away: member.away.clone(),
                    muted: self.moderation.is_muted(&member.nick, now),
                    tls: member.tls,
                    registered: member.account.is_some(),
                    node: Some(remote.node.clone()),
                }
            })
            .collect()
    }

    pub(in crate::broker) fn cluster_status(&self) -> Option<crate::proto::control::ClusterStatus> {
        self.cluster.as_ref().map(Cluster::status)
    }
}

impl Cluster {
    /// Gives up a nick this node no longer uses.
    fn release(&mut self, key: String) {
        if self.writer_up {
            let _ = self.bridge.send(Outgoing::Release { key });
        }
    }
}

/// The nick whose words or doing a broadcast is (a line, a join, a departure, a rename).
fn said_by(event: &Event) -> Option<&str> {
    match event {
        Event::Chat { from, .. } | Event::Action { from, .. } => Some(from),
        Event::Joined { nick, .. } | Event::Left { nick, .. } => Some(nick),
        Event::NickChanged { new, .. } => Some(new),
        _ => None,
    }
}
