//! Starling's protocol crate: the code generated from `proto/`, and [`series`], the one
//! helper on generated types (building columnar range-query pages).
//!
//! - [`v1`]: the public API (`starling.v1`), served on the client port.
//! - [`peer`]: node-to-node services (`starling.peer.v1`), served only on the peer port.

/// The public API, package `starling.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("starling.v1");
}

/// Node-to-node services, package `starling.peer.v1`.
pub mod peer {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("starling.peer.v1");
}

pub mod series;
