//! Replicated volumes: the nexus, its children and online rebuild.
//!
//! Nothing is here yet; the replication issue builds it on the bdev layer and the NVMe/TCP host.
