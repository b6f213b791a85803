//! The fixed part of the browsed tree, built once from the snapshot list:
//! the grouping directories, the `latest` links and one node for each
//! place a component appears. Its size is proportional to snapshots times
//! components, never to files. Owns the names shown for hosts, times and
//! components; never reads a tree.
//!
//! ```text
//! /latest -> snapshots/ID                  the newest snapshot
//! /snapshots/ID/COMPONENT/...              every snapshot by short id
//! /hosts/HOST/TIME/COMPONENT/...           by host, then time
//! /hosts/HOST/latest -> TIME
//! /components/NAME/TIME/...                a component through time
//! /components/NAME/latest -> TIME
//! ```
//!
//! TIME is the snapshot's time in UTC to the second
//! (`2026-12-06T13:17:32Z`); two snapshots of one group with the same
//! second get `-ID` after it. A name that cannot be a file name (empty,
//! `.`, `..`, holding `/` or NUL) is shown with those bytes as `_`.

use super::NodeId;
use crate::format::manifest::SnapshotBody;
use crate::id::Id;
use std::collections::BTreeMap;

/// One node of the fixed part; its id is its position plus one.
pub(super) struct Fixed {
    pub(super) parent: NodeId,
    pub(super) name: Vec<u8>,
    /// Seconds since the epoch: the newest snapshot the node shows.
    pub(super) mtime: i64,
    pub(super) shape: Shape,
}

pub(super) enum Shape {
    /// Children sorted by name.
    Directory(Vec<(Vec<u8>, NodeId)>),
    Link(Vec<u8>),
    /// Snapshot `.0` (position in the list), component `.1`: a directory
    /// for a directory component, the one file otherwise.
    Component(usize, usize),
}

/// The root's id, as FUSE numbers it.
pub const ROOT: NodeId = 1;

/// Builds the fixed nodes for `snapshots` (oldest first).
pub(super) fn build(snapshots: &[(Id, SnapshotBody)], times: &[i64]) -> Vec<Fixed> {
    let mut builder = Builder { nodes: Vec::new() };
    let newest = times.iter().copied().max().unwrap_or(0);
    let root = builder.directory(0, b"", newest);
    debug_assert_eq!(root, ROOT);
    let mut top = Vec::new();

    // /snapshots/ID
    let by_id = builder.directory(root, b"snapshots", newest);
    let mut children = Vec::new();
    for (position, (id, _)) in snapshots.iter().enumerate() {
        let name = id.short().into_bytes();
        children.push((
            name.clone(),
            builder.snapshot(by_id, &name, snapshots, position, times),
        ));
    }
    builder.set_children(by_id, children);
    top.push((b"snapshots".to_vec(), by_id));
    if let Some((id, _)) = snapshots.last() {
        let target = format!("snapshots/{}", id.short()).into_bytes();
        top.push((
            b"latest".to_vec(),
            builder.link(root, b"latest", &target, newest),
        ));
    }

    // /hosts/HOST/TIME
    let hosts = builder.directory(root, b"hosts", newest);
    let mut by_host: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
    for (position, (_, body)) in snapshots.iter().enumerate() {
        by_host
            .entry(file_name(&body.host))
            .or_default()
            .push(position);
    }
    let mut host_dirs = Vec::new();
    for (host, positions) in by_host {
        let host_newest = positions.iter().map(|&p| times[p]).max().unwrap_or(0);
        let host_dir = builder.directory(hosts, &host, host_newest);
        let mut children = Vec::new();
        let names = time_names(snapshots, &positions);
        for (&position, name) in positions.iter().zip(&names) {
            children.push((
                name.clone(),
                builder.snapshot(host_dir, name, snapshots, position, times),
            ));
        }
        if let Some(name) = names.last() {
            children.push((
                b"latest".to_vec(),
                builder.link(host_dir, b"latest", name, host_newest),
            ));
        }
        builder.set_children(host_dir, children);
        host_dirs.push((host, host_dir));
    }
    builder.set_children(hosts, host_dirs);
    top.push((b"hosts".to_vec(), hosts));

    // /components/NAME/TIME
    let components = builder.directory(root, b"components", newest);
    let mut by_name: BTreeMap<Vec<u8>, Vec<(usize, usize)>> = BTreeMap::new();
    for (position, (_, body)) in snapshots.iter().enumerate() {
        for (index, component) in body.components.iter().enumerate() {
            by_name
                .entry(file_name(&component.name))
                .or_default()
                .push((position, index));
        }
    }
    let mut component_dirs = Vec::new();
    for (name, places) in by_name {
        let positions: Vec<usize> = places.iter().map(|&(position, _)| position).collect();
        let dir_newest = positions.iter().map(|&p| times[p]).max().unwrap_or(0);
        let dir = builder.directory(components, &name, dir_newest);
        let names = time_names(snapshots, &positions);
        let mut children = Vec::new();
        for (&(position, index), time) in places.iter().zip(&names) {
            let node = builder.push(
                dir,
                time,
                times[position],
                Shape::Component(position, index),
            );
            children.push((time.clone(), node));
        }
        if let Some(time) = names.last() {
            children.push((
                b"latest".to_vec(),
                builder.link(dir, b"latest", time, dir_newest),
            ));
        }
        builder.set_children(dir, children);
        component_dirs.push((name, dir));
    }
    builder.set_children(components, component_dirs);
    top.push((b"components".to_vec(), components));

    builder.set_children(root, top);
    builder.nodes
}

struct Builder {
    nodes: Vec<Fixed>,
}

impl Builder {
    fn push(&mut self, parent: NodeId, name: &[u8], mtime: i64, shape: Shape) -> NodeId {
        self.nodes.push(Fixed {
            parent,
            name: name.to_vec(),
            mtime,
            shape,
        });
        self.nodes.len() as NodeId
    }

    fn directory(&mut self, parent: NodeId, name: &[u8], mtime: i64) -> NodeId {
        self.push(parent, name, mtime, Shape::Directory(Vec::new()))
    }

    fn link(&mut self, parent: NodeId, name: &[u8], target: &[u8], mtime: i64) -> NodeId {
        self.push(parent, name, mtime, Shape::Link(target.to_vec()))
    }

    /// A snapshot's directory: one node per component.
    fn snapshot(
        &mut self,
        parent: NodeId,
        name: &[u8],
        snapshots: &[(Id, SnapshotBody)],
        position: usize,
        times: &[i64],
    ) -> NodeId {
        let mtime = times[position];
        let dir = self.directory(parent, name, mtime);
        let children = snapshots[position]
            .1
            .components
            .iter()
            .enumerate()
            .map(|(index, component)| {
                let name = file_name(&component.name);
                let node = self.push(dir, &name, mtime, Shape::Component(position, index));
                (name, node)
            })
            .collect();
        self.set_children(dir, children);
        dir
    }

    /// Sorts `children` by name and gives a repeated name `~2`, `~3`...
    /// (two names that differ only in bytes shown as `_`).
    fn set_children(&mut self, dir: NodeId, mut children: Vec<(Vec<u8>, NodeId)>) {
        children.sort();
        let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for (name, node) in &mut children {
            let count = seen.entry(name.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                name.extend_from_slice(format!("~{count}").as_bytes());
                self.nodes[*node as usize - 1].name = name.clone();
            }
        }
        children.sort();
        self.nodes[dir as usize - 1].shape = Shape::Directory(children);
    }
}

/// `name` as a file name: `/` and NUL shown as `_`, and an empty name,
/// `.` or `..` prefixed with `_`.
fn file_name(name: &str) -> Vec<u8> {
    let mut bytes: Vec<u8> = name
        .bytes()
        .map(|byte| {
            if byte == b'/' || byte == 0 {
                b'_'
            } else {
                byte
            }
        })
        .collect();
    if bytes.is_empty() || bytes == b"." || bytes == b".." {
        bytes.insert(0, b'_');
    }
    bytes
}

/// The TIME names of the snapshots at `positions`: the time to the
/// second, with `-ID` where two share it.
fn time_names(snapshots: &[(Id, SnapshotBody)], positions: &[usize]) -> Vec<Vec<u8>> {
    let seconds: Vec<String> = positions
        .iter()
        .map(|&position| second_of(&snapshots[position].1.time))
        .collect();
    seconds
        .iter()
        .zip(positions)
        .map(|(time, &position)| {
            let shared = seconds.iter().filter(|other| *other == time).count() > 1;
            let name = if shared {
                format!("{time}-{}", snapshots[position].0.short())
            } else {
                time.clone()
            };
            file_name(&name)
        })
        .collect()
}

/// `2026-12-06T13:17:32.123456789Z` -> `2026-12-06T13:17:32Z`; a time that
/// does not parse is shown as recorded.
fn second_of(time: &str) -> String {
    match time.parse::<jiff::Timestamp>() {
        Ok(timestamp) => timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => time.to_string(),
    }
}

/// Seconds since the epoch of a snapshot's recorded time (0 if it does
/// not parse: the manifest's signature already vouches for it).
pub(super) fn seconds_of(time: &str) -> i64 {
    time.parse::<jiff::Timestamp>()
        .map(|timestamp| timestamp.as_second())
        .unwrap_or(0)
}
