//! The lesson's compare-and-swap transfer between two accounts.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use tracing::instrument;

use super::EtcdError;
use super::retry::{Repeat, retrying};

/// How many times a transfer that lost a race is tried again by default.
pub const DEFAULT_TRANSFER_ATTEMPTS: usize = 32;

/// Moves `amount` from the balance at key `from` to the one at `to`
/// (decimal integers; a missing key is an empty account), atomically.
///
/// One transaction reads both balances at one revision; a second writes
/// both, only if neither account changed since (their mod revisions are
/// compared). On a conflict it reads and tries again, up to `max_attempts`.
/// Returns the number of attempts it took.
///
/// Each balance is read from its own response — the lesson's version took
/// the second balance from the wrong index.
#[instrument(level = "debug", skip(client))]
pub async fn transfer(
    client: &Client,
    from: &str,
    to: &str,
    amount: u64,
    max_attempts: usize,
) -> Result<usize, EtcdError> {
    if from == to {
        return Err(EtcdError::InvalidConfig(
            "a transfer needs two different accounts".into(),
        ));
    }
    for attempt in 1..=max_attempts.max(1) {
        let read = Txn::new().and_then([TxnOp::get(from, None), TxnOp::get(to, None)]);
        let response = retrying(Repeat::Idempotent, || {
            let (mut client, read) = (client.clone(), read.clone());
            async move { client.txn(read).await }
        })
        .await?;
        let mut accounts = response.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .map(|kv| (kv.value_str().map(str::to_string), kv.mod_revision())),
            _ => None,
        });
        let (from_balance, from_revision) = balance(from, accounts.next().flatten())?;
        let (to_balance, to_revision) = balance(to, accounts.next().flatten())?;
        if from_balance < amount {
            return Err(EtcdError::InsufficientFunds {
                account: from.to_string(),
                balance: from_balance,
                amount,
            });
        }
        let write = Txn::new()
            .when([
                Compare::mod_revision(from, CompareOp::Equal, from_revision),
                Compare::mod_revision(to, CompareOp::Equal, to_revision),
            ])
            .and_then([
                TxnOp::put(from, (from_balance - amount).to_string(), None),
                TxnOp::put(to, (to_balance + amount).to_string(), None),
            ]);
        let committed = retrying(Repeat::IfUnsent, || {
            let (mut client, write) = (client.clone(), write.clone());
            async move { client.txn(write).await }
        })
        .await?;
        if committed.succeeded() {
            return Ok(attempt);
        }
    }
    Err(EtcdError::TooManyConflicts {
        attempts: max_attempts,
    })
}

/// A balance and its mod revision (0 for a missing account).
fn balance(
    key: &str,
    read: Option<(Result<String, etcd_client::Error>, i64)>,
) -> Result<(u64, i64), EtcdError> {
    match read {
        None => Ok((0, 0)),
        Some((value, revision)) => {
            let value = value?;
            let balance = value.trim().parse::<u64>().map_err(|_| {
                EtcdError::InvalidConfig(format!(
                    "account `{key}` holds {value:?}, not a whole number"
                ))
            })?;
            Ok((balance, revision))
        }
    }
}
