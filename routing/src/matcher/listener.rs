//! One listener of the matcher: its part, its virtual hosts in order, and
//! the index that finds a virtual host by request host.
//!
//! A listener holds few virtual hosts (Kubeflow puts every notebook on `*`),
//! so their list is a plain vector of `Arc`s copied on edit, and the host
//! index is rebuilt whenever a virtual host of the listener changes. Route
//! edits copy only the listener and virtual host they go through.

use std::collections::HashMap;
use std::sync::Arc;

use super::route_index::{RouteIndex, SortKey};
use crate::parts::{ListenerPart, VirtualHostPart};

#[derive(Clone, Debug)]
pub(crate) struct ListenerEntry {
    pub key: SortKey,
    pub part: Arc<ListenerPart>,
    /// Sorted by key.
    pub virtual_hosts: Vec<Arc<VirtualHostEntry>>,
    hosts: Arc<HostIndex>,
}

#[derive(Clone, Debug)]
pub(crate) struct VirtualHostEntry {
    pub key: SortKey,
    pub part: Arc<VirtualHostPart>,
    pub routes: RouteIndex,
}

/// Positions in [`ListenerEntry::virtual_hosts`] by domain. Looked up with
/// every request's host, so hashed with foldhash rather than SipHash: the
/// keys come from the configuration, and a client's host only probes them.
#[derive(Debug, Default)]
struct HostIndex {
    exact: HashMap<String, usize, FoldHash>,
    /// `*.a.com` stored as `.a.com`.
    wildcard: HashMap<String, usize, FoldHash>,
    any: Option<usize>,
}

type FoldHash = foldhash::fast::RandomState;

impl ListenerEntry {
    pub fn new(key: SortKey, part: ListenerPart) -> Self {
        Self { key, part: Arc::new(part), virtual_hosts: Vec::new(), hosts: Arc::default() }
    }

    /// The virtual host serving `host` (lower-case, no port).
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHostEntry> {
        self.hosts.find(host).and_then(|position| self.virtual_hosts.get(position)).map(|v| &**v)
    }

    pub fn position_of(&self, name: &str) -> Option<usize> {
        self.virtual_hosts.iter().position(|v| &*v.key.name == name)
    }

    /// Adds or replaces (by name) a virtual host.
    pub fn put_virtual_host(&mut self, entry: Arc<VirtualHostEntry>) {
        if let Some(position) = self.position_of(&entry.key.name) {
            self.virtual_hosts.remove(position);
        }
        let position = self.virtual_hosts.partition_point(|v| v.key < entry.key);
        self.virtual_hosts.insert(position, entry);
        self.reindex();
    }

    pub fn take_virtual_host(&mut self, name: &str) -> Option<Arc<VirtualHostEntry>> {
        let entry = self.virtual_hosts.remove(self.position_of(name)?);
        self.reindex();
        Some(entry)
    }

    fn reindex(&mut self) {
        self.hosts = Arc::new(HostIndex::new(&self.virtual_hosts));
    }
}

impl HostIndex {
    fn new(virtual_hosts: &[Arc<VirtualHostEntry>]) -> Self {
        let mut index = HostIndex::default();
        for (position, virtual_host) in virtual_hosts.iter().enumerate() {
            for domain in &virtual_host.part.domains {
                // First one wins, as in the ordered scan.
                if domain == "*" {
                    index.any.get_or_insert(position);
                } else if let Some(suffix) = domain.strip_prefix('*') {
                    index.wildcard.entry(suffix.to_string()).or_insert(position);
                } else {
                    index.exact.entry(domain.clone()).or_insert(position);
                }
            }
        }
        index
    }

    fn find(&self, host: &str) -> Option<usize> {
        if let Some(position) = self.exact.get(host) {
            return Some(*position);
        }
        // Kubeflow's hosts are all `*`: no suffix walk then.
        if self.wildcard.is_empty() {
            return self.any;
        }
        // `a.b.c` tries `.b.c` then `.c`: the longest wildcard wins.
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            let suffix = &rest[dot..];
            if (dot > 0 || rest.len() < host.len())
                && let Some(position) = self.wildcard.get(suffix)
            {
                return Some(*position);
            }
            rest = &rest[dot + 1..];
        }
        self.any
    }
}
