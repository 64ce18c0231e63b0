//! Identities that the controller, its pure plan and the runtimes share. A leaf: it imports no
//! other part of the crate, so `plan` can name an instance without knowing who runs it.

use std::fmt;

/// The runtime's own identity of one replica instance (a container id, a process number).
/// Two instances may share a replica name during a rolling replacement; never an id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(pub String);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
