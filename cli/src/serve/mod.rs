//! `cairn serve`: cairn as a long-running HTTP service. Owns the
//! subcommand's set-up (plan, tokens, TLS, the tokio runtime) and the
//! dispatch to a server; the servers live in submodules (`api`: the
//! snapshot service for a plan; `repository`: a repository served to
//! other machines, append-only if asked, with `tls` its TLS listener).
//! Shared pieces: `listen` (binding, TLS) and `auth` (bearer tokens).
//! Never does repository work itself.

pub mod api;
pub mod auth;
pub mod listen;
pub mod repository;
mod tls;

use crate::args::ServeArgs;
use crate::context::{Context, Usage};
use crate::exit;
use anyhow::{Result, anyhow};
use std::sync::Arc;

pub fn run(context: &Context, args: &ServeArgs) -> Result<u8> {
    let Some(plan_path) = &args.plan else {
        if !context.global.repo.is_empty() {
            return repository::run(context, args);
        }
        return Err(Usage(
            "cairn serve needs --plan PATH (the snapshot API for a plan) or --repo PATH \
             [--append-only] (the repository for other machines)"
                .into(),
        )
        .into());
    };
    let Ok(Some(plan)) = crate::commands::plan::load_if_given(Some(plan_path.as_path())) else {
        return Ok(exit::ERROR);
    };
    let context = crate::plan::context_for(context, Some(&plan)).unwrap_or_else(|| Context {
        global: context.global.clone(),
    });
    // Fails now, not on the first request, if no repository is named.
    context.repository_locations()?;
    let from_env = std::env::var("CAIRN_SERVE_TOKEN").ok();
    let tokens = auth::Tokens::load(args.token_file.as_deref(), from_env.as_deref())
        .map_err(|why| anyhow!(why))?;
    if tokens.is_empty() {
        return Err(Usage(
            "cairn serve needs at least one token: --token-file FILE or CAIRN_SERVE_TOKEN".into(),
        )
        .into());
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(listen::tls_config(cert, key).map_err(|why| anyhow!(why))?),
        (None, None) => None,
        _ => return Err(Usage("--tls-cert and --tls-key go together".into()).into()),
    };
    let config = context.config_dir()?;
    let server = Arc::new(api::Server {
        max_age: plan.serve_max_age.unwrap_or(api::DEFAULT_MAX_AGE),
        plan,
        tokens,
        jobs: api::jobs::Registry::default(),
        drill_history: config.join("drill-history.jsonl"),
        verify_history: config.join("verify-history.jsonl"),
        context,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| anyhow!("starting the server's runtime: {error}"))?;
    runtime
        .block_on(async {
            let listener = listen::bind(&args.listen).await?;
            listen::serve(listener, tls, api::router(server)).await
        })
        .map_err(|why| anyhow!(why))?;
    Ok(exit::SUCCESS)
}
