//! The lesson's compare-and-swap transfer between two accounts.

use crate::etcd::Client;
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use tracing::instrument;

use crate::etcd::EtcdError;
use crate::etcd::client::retry::Repeat;

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
/// # Errors
///
/// [`EtcdError::InsufficientFunds`] if `from` holds less than `amount`,
/// [`EtcdError::BalanceOverflow`] if `to` would exceed `u64::MAX`,
/// [`EtcdError::InvalidValue`] if either holds something other than a
/// whole number; in each case nothing is written.
/// [`EtcdError::TooManyConflicts`] after `max_attempts` lost races.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::etcd::EtcdError> {
/// use cpr_distributed::etcd::{EtcdConfig, transfer, DEFAULT_TRANSFER_ATTEMPTS};
///
/// let client = EtcdConfig::from_env()?.connect().await?;
/// transfer(&client, "bank/alice", "bank/bob", 30, DEFAULT_TRANSFER_ATTEMPTS).await?;
/// # Ok(()) }
/// ```
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
        let response = client.retried_txn(Repeat::Idempotent, read).await?;
        let mut accounts = response.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .map(|kv| (kv.value().to_vec(), kv.mod_revision())),
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
        let Some(new_to_balance) = to_balance.checked_add(amount) else {
            return Err(EtcdError::BalanceOverflow {
                account: to.to_string(),
                balance: to_balance,
                amount,
            });
        };
        // Cannot underflow: checked against the balance above.
        let new_from_balance = from_balance - amount;
        let write = Txn::new()
            .when([
                Compare::mod_revision(from, CompareOp::Equal, from_revision),
                Compare::mod_revision(to, CompareOp::Equal, to_revision),
            ])
            .and_then([
                TxnOp::put(from, new_from_balance.to_string(), None),
                TxnOp::put(to, new_to_balance.to_string(), None),
            ]);
        let committed = client.retried_txn(Repeat::IfUnsent, write).await?;
        if committed.succeeded() {
            return Ok(attempt);
        }
    }
    Err(EtcdError::TooManyConflicts {
        attempts: max_attempts,
    })
}

/// A balance and its mod revision (0 for a missing account).
fn balance(key: &str, read: Option<(Vec<u8>, i64)>) -> Result<(u64, i64), EtcdError> {
    match read {
        None => Ok((0, 0)),
        Some((value, revision)) => Ok((parse_balance(key, &value)?, revision)),
    }
}

/// A balance as stored: a decimal whole number, surrounding blanks allowed.
pub fn parse_balance(key: &str, value: &[u8]) -> Result<u64, EtcdError> {
    let invalid = |reason: String| EtcdError::InvalidValue {
        key: key.to_string(),
        reason,
    };
    let text =
        std::str::from_utf8(value).map_err(|_| invalid("not UTF-8 text".into()))?;
    text.trim().parse::<u64>().map_err(|_| {
        invalid(format!(
            "{text:?} is not a whole number from 0 to {}",
            u64::MAX
        ))
    })
}
