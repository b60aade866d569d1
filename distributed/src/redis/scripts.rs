//! The Lua scripts behind the Redis lock (the semaphore's are beside it, in
//! `semaphore.rs`). Each runs atomically on the server: nothing can happen
//! between its `GET` and its `DEL`.

use std::sync::LazyLock;

use redis::Script;

/// A Lua function for the scripts that hand out fencing tokens:
/// `next_fencing_token(key)` increments the counter at `key` and returns
/// it. A counter that does not exist (new, or lost when the server
/// restarted without persistence) starts at the server's time in
/// microseconds, spelled from `TIME`'s own digits. Every token handed out
/// since the counter last started took a round trip, so there are fewer of
/// them than microseconds have passed: the new counter starts above all of
/// them, and tokens keep increasing across the loss (as long as the
/// server's clock does not step back).
// ANCHOR: acquire
pub(crate) const NEXT_FENCING_TOKEN: &str = r"
    local function next_fencing_token(key)
        if redis.call('EXISTS', key) == 0 then
            local t = redis.call('TIME')
            redis.call('SET', key, t[1] .. string.format('%06d', tonumber(t[2])))
        end
        return redis.call('INCR', key)
    end
";

/// KEYS[1] lock, KEYS[2] fencing counter; ARGV[1] token, ARGV[2] ttl ms.
/// Takes the lock if free and returns a fresh fencing token (> 0, in the
/// same step); if busy, returns minus the lock's remaining milliseconds
/// (or -1 if it has no expiry).
pub(crate) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NEXT_FENCING_TOKEN}
        if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
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
