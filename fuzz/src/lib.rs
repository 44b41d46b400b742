//! Fuzz harnesses for every input intake takes from outside: provider payloads ([`decode`]),
//! messages on the queue ([`codec`]), credentials and signatures ([`auth`]) and whole HTTP
//! requests ([`receiver`]). Each target in `fuzz_targets/` calls one `run` here, which panics
//! only when an oracle fails: a crash, a hang, or an answer the code's own rules forbid.
//!
//! [`seeds`] builds the committed seed corpus (`fuzz/seeds/`) from the provider documents and
//! fixtures; [`Input`] and [`Seed`] read and write the input layout every target shares.
#![forbid(unsafe_code)]

pub mod auth;
pub mod codec;
pub mod decode;
mod input;
pub mod receiver;
pub mod seeds;

pub use input::{Input, Seed};
