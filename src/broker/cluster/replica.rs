//! What this node knows of the members of the other nodes: their rows as the stream and the
//! roster hashes said them, by folded nick. Pure bookkeeping: it tells its caller what
//! changed, and the caller tells the rooms and the members.

use std::collections::HashMap;

use crate::names;
use crate::proto::cluster::RemoteMember;

/// One member of another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub node: String,
    pub member: RemoteMember,
}

/// The other nodes' members.
#[derive(Debug, Default)]
pub struct Replica {
    by_key: HashMap<String, Remote>,
}

impl Replica {
    pub fn get(&self, nick: &str) -> Option<&Remote> {
        self.by_key.get(&names::fold(nick))
    }

    /// Sets `node`'s member (replacing the row of `previous`, a nick it had). Returns the
    /// rows it replaced (the same nick on another node too: the newer word wins).
    pub fn set(&mut self, node: &str, member: RemoteMember, previous: Option<&str>) -> Vec<Remote> {
        let mut replaced = Vec::new();
        if let Some(previous) = previous
            && let Some(old) = self.by_key.remove(previous)
        {
            replaced.push(old);
        }
        let key = names::fold(&member.nick);
        if let Some(old) = self.by_key.insert(key, Remote { node: node.to_string(), member }) {
            replaced.push(old);
        }
        replaced
    }

    /// Removes `node`'s member with this folded nick (not another node's).
    pub fn remove(&mut self, node: &str, key: &str) -> Option<Remote> {
        match self.by_key.get(key) {
            Some(remote) if remote.node == node => self.by_key.remove(key),
            _ => None,
        }
    }

    /// Replaces everything known of `node` with `members`. Returns the members it had that
    /// are not in `members` any more, and the rows that changed or are new.
    pub fn replace_node(
        &mut self,
        node: &str,
        members: Vec<RemoteMember>,
    ) -> (Vec<Remote>, Vec<Remote>) {
        let mut gone: HashMap<String, Remote> = HashMap::new();
        self.by_key.retain(|key, remote| {
            if remote.node == node {
                gone.insert(key.clone(), remote.clone());
                false
            } else {
                true
            }
        });
        let mut changed = Vec::new();
        for member in members {
            let key = names::fold(&member.nick);
            let remote = Remote { node: node.to_string(), member };
            if gone.remove(&key).as_ref() != Some(&remote) {
                changed.push(remote.clone());
            }
            self.by_key.insert(key, remote);
        }
        (gone.into_values().collect(), changed)
    }

    /// Removes every member of `node`, and returns them.
    pub fn forget_node(&mut self, node: &str) -> Vec<Remote> {
        self.replace_node(node, Vec::new()).0
    }

    /// The members of the room with this folded key, sorted by folded nick.
    pub fn in_room(&self, room_key: &str) -> Vec<&Remote> {
        let mut found: Vec<&Remote> =
            self.by_key.values().filter(|r| names::fold(&r.member.room) == room_key).collect();
        found.sort_by_cached_key(|r| names::fold(&r.member.nick));
        found
    }

    /// Every member of another node.
    pub fn all(&self) -> impl Iterator<Item = &Remote> {
        self.by_key.values()
    }

    /// Every room another node has members in: (its name, how many).
    pub fn rooms(&self) -> HashMap<String, (String, u32)> {
        let mut rooms: HashMap<String, (String, u32)> = HashMap::new();
        for remote in self.by_key.values() {
            let entry = rooms
                .entry(names::fold(&remote.member.room))
                .or_insert_with(|| (remote.member.room.clone(), 0));
            entry.1 += 1;
        }
        rooms
    }

    /// How many members each node has here.
    pub fn per_node(&self) -> HashMap<&str, usize> {
        let mut counts = HashMap::new();
        for remote in self.by_key.values() {
            *counts.entry(remote.node.as_str()).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(nick: &str, room: &str) -> RemoteMember {
        RemoteMember {
            nick: nick.into(),
            room: room.into(),
            account: None,
            tls: false,
            away: None,
            connected_at: 0,
            last_spoke: 0,
        }
    }

    #[test]
    fn a_renamed_member_keeps_one_row() {
        let mut replica = Replica::default();
        replica.set("a", member("alice", "lobby"), None);
        let replaced = replica.set("a", member("alicia", "lobby"), Some("alice"));
        assert_eq!(replaced.len(), 1);
        assert!(replica.get("alice").is_none());
        assert_eq!(replica.get("ALICIA").map(|r| r.node.as_str()), Some("a"));
        assert_eq!(replica.per_node().get("a"), Some(&1));
    }

    #[test]
    fn a_roster_replaces_only_its_own_node() {
        let mut replica = Replica::default();
        replica.set("a", member("alice", "lobby"), None);
        replica.set("a", member("carol", "rust"), None);
        replica.set("b", member("bob", "lobby"), None);
        let (gone, changed) =
            replica.replace_node("a", vec![member("alice", "lobby"), member("dave", "lobby")]);
        assert_eq!(gone.iter().map(|r| r.member.nick.as_str()).collect::<Vec<_>>(), ["carol"]);
        assert_eq!(changed.iter().map(|r| r.member.nick.as_str()).collect::<Vec<_>>(), ["dave"]);
        assert_eq!(
            replica.in_room("lobby").iter().map(|r| r.member.nick.as_str()).collect::<Vec<_>>(),
            ["alice", "bob", "dave"]
        );
        assert_eq!(replica.forget_node("b").len(), 1);
        assert!(replica.remove("b", "alice").is_none(), "not b's to remove");
    }
}
