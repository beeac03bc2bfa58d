//! Generated bindings for `mesh.proto`: the controller↔daemon wire contract.
//! Conversions to and from domain types live in `vpblu-messages`.

#![allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]

/// `vpblu.mesh.v1`: messages, the `Mesh` client and server.
pub mod mesh {
    tonic::include_proto!("vpblu.mesh.v1");
}

pub use mesh::*;
