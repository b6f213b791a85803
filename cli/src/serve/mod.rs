//! `cairn serve`: today the append-only repository server
//! (`repository`), with TLS (`tls`) when given a certificate.

pub mod repository;
mod tls;

use crate::args::ServeArgs;
use crate::context::Context;

pub fn run(context: &Context, args: &ServeArgs) -> anyhow::Result<u8> {
    repository::run(context, args)
}
