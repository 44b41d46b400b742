//! Domain effects: what each provider's event changes in its tables. Called inside the apply
//! transaction with the entity locked; returns the Spark contacts it changed (for the outbox).

mod contacts;
mod healthsherpa;
mod leads;
mod sparkloop;

use deadpool_postgres::Transaction;
use intake_providers::{DecodedEvent, Effect};
use uuid::Uuid;

use crate::StoreError;
use crate::crypto::Keyring;

/// How the ordering rule lets an event touch state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Apply fully.
    Apply,
    /// Arrived late: keep as history, or fill gaps only; never overwrite.
    Stale,
}

/// What an effect did.
#[derive(Debug, Default)]
pub(crate) struct Effected {
    /// Spark contacts it changed (one outbox row each).
    pub contacts: Vec<String>,
    /// Whether it changed current state; `false` means every row it touches already holds a
    /// newer event (history only: outcome `stale`).
    pub changed: bool,
}

impl Effected {
    fn by_mode(mode: Mode, contacts: Vec<String>) -> Effected {
        Effected {
            contacts,
            changed: mode == Mode::Apply,
        }
    }
}

/// Applies `event`'s effect; PHI columns are sealed with `keys`.
pub(crate) async fn apply(
    tx: &Transaction<'_>,
    keys: &Keyring,
    event: &DecodedEvent,
    envelope_id: Uuid,
    mode: Mode,
) -> Result<Effected, StoreError> {
    match &event.effect {
        Effect::SparkContact(c) => Ok(Effected::by_mode(
            mode,
            contacts::apply(tx, keys, c, event, envelope_id, mode).await?,
        )),
        Effect::SparkLoop(l) => sparkloop::apply(tx, l, event)
            .await
            .map(|()| Effected::by_mode(mode, Vec::new())),
        Effect::Lead(l) => leads::apply(tx, l, event, mode)
            .await
            .map(|()| Effected::by_mode(mode, Vec::new())),
        Effect::Widget(w) => leads::widget(tx, w, event)
            .await
            .map(|()| Effected::by_mode(mode, Vec::new())),
        Effect::HealthSherpa(h) => healthsherpa::apply(tx, keys, h, event, mode)
            .await
            .map(|changed| Effected {
                contacts: Vec::new(),
                changed,
            }),
        Effect::RecordOnly => Ok(Effected::by_mode(mode, Vec::new())),
    }
}
