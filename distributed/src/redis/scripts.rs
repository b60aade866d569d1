//! The Lua scripts behind the Redis lock (the semaphore's are beside it, in
//! `semaphore.rs`). Each runs atomically on the server: nothing can happen
//! between its `GET` and its `DEL`.

use std::sync::LazyLock;

use redis::Script;

/// A Lua function for the scripts that hand out fencing tokens:
/// `next_fencing_token(key)` returns one more than the counter at `key`,
/// or the server's time in microseconds if that is larger (spelled from
/// `TIME`'s own digits), and stores what it returns.
///
/// The clock is what keeps tokens increasing when the counter goes back: a
/// restart without persistence loses it, and a failover promotes a replica
/// that may not have seen the latest increments. Every token handed out
/// took a round trip, so none is ahead of the clock by more than a few;
/// a later acquisition, on any server whose clock agrees to within the
/// time a restart or failover takes, gets a larger one.
// ANCHOR: acquire
pub(crate) const NEXT_FENCING_TOKEN: &str = r"
    local function next_fencing_token(key)
        local t = redis.call('TIME')
        local micros = t[1] .. string.format('%06d', tonumber(t[2]))
        local token = redis.call('INCR', key)
        if token < tonumber(micros) then
            redis.call('SET', key, micros)
            return tonumber(micros)
        end
        return token
    end
";

/// KEYS[1] lock, KEYS[2] fencing counter; ARGV[1] token, ARGV[2] ttl ms.
/// Takes the lock if free and returns a fresh fencing token (> 0, in the
/// same step); if busy, returns minus the lock's remaining milliseconds
/// (or -1 if it has no expiry). Running it twice with the same token (a
/// client library that resends after a lost reply) takes the lock once: the
/// second run finds our own token and answers as the first did.
pub(crate) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NEXT_FENCING_TOKEN}
        if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
            or redis.call('GET', KEYS[1]) == ARGV[1] then
            return next_fencing_token(KEYS[2])
        end
        local left = redis.call('PTTL', KEYS[1])
        if left > 0 then return -left end
        return -1
        "
    ))
});
// ANCHOR_END: acquire

/// KEYS[1] lock; ARGV[1] token, ARGV[2] channel. Deletes the lock only if it
/// still holds our token, and tells the waiters on the channel.
// ANCHOR: release
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            redis.call('DEL', KEYS[1])
            redis.call('PUBLISH', ARGV[2], 'released')
            return 1
        end
        return 0
        ",
    )
});
// ANCHOR_END: release

/// KEYS[1] lock; ARGV[1] token, ARGV[2] ttl ms. If the lock still holds our
/// token, makes it live at least ARGV[2] more milliseconds (never shortens
/// it); returns 1, or 0 if the lock is not ours any more.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
            redis.call('PEXPIRE', KEYS[1], ARGV[2])
        end
        return 1
        ",
    )
});

/// KEYS[1] lock; ARGV[1] token, ARGV[2] ttl ms. Redlock's per-server
/// acquire: `SET NX PX`, returning 1 if taken.
pub(crate) static SET_IF_FREE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
        return 0
        ",
    )
});

/// KEYS[1] lock; ARGV[1] token. The lock's remaining lease in milliseconds
/// if it still holds our token; -1 if ours with no expiry; -2 if not ours.
pub(crate) static OWN_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('PTTL', KEYS[1])
        end
        return -2
        ",
    )
});
