//! The keyspace and the commands, each answering as redis-server 7.0.15 does.
//!
//! Supported: `PING ECHO SET GET DEL EXISTS INCR DECR INCRBY DECRBY APPEND STRLEN MSET MGET
//! LPUSH RPUSH LPOP RPOP LRANGE SADD SPOP HSET ZADD ZPOPMIN TTL PTTL DBSIZE FLUSHALL SELECT QUIT`,
//! `CONFIG GET` (`save` and `appendonly` only), `COMMAND` and `COMMAND DOCS` (both `*0`, so
//! redis-cli falls back to its built-in help).
//! Command lookup, the unknown-command and arity errors, and the `POST`/`Host:` guard follow
//! `processCommand` in `src/server.c`.
//!
//! Known differences from redis (listed in VERIFICATION.md):
//! - any other redis command is an unknown command here, and other subcommands of `CONFIG`
//!   and `COMMAND` are unknown subcommands;
//! - `CONFIG GET` knows two parameters and lists matches in argument order, not hash order;
//! - expiry is lazy only, so `DBSIZE` still counts an expired key until it is touched;
//! - `SPOP` picks a different random member than redis would.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use refloop::framing::resp::{string2ll, Args};
use refloop::ConnId;

use crate::collections::{list_range, pop, spop, zadd, zpopmin};
use crate::reply::{self, NOT_INTEGER, SYNTAX, WRONGTYPE};
use crate::strings::{incr_by, set};

/// FxHash: keys come from clients, but the server is a benchmark example, not a shared service.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, i: usize) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type Fx = BuildHasherDefault<FxHasher>;
pub type Map<K, V> = HashMap<K, V, Fx>;

/// How many databases `SELECT` chooses from (redis's `databases 16`).
const DATABASES: usize = 16;

/// What the connection should do after a command.
pub enum Outcome {
    /// Stay open.
    Open,
    /// Close once the reply is written (`QUIT`).
    CloseAfterReply,
    /// Close without a reply (`POST`, `Host:`).
    CloseNow,
}

pub enum Value {
    Str(Vec<u8>),
    List(VecDeque<Vec<u8>>),
    Set(HashSet<Vec<u8>, Fx>),
    Hash(Map<Vec<u8>, Vec<u8>>),
    Zset(Zset),
}

pub struct Entry {
    pub value: Value,
    /// Unix time in milliseconds at which the key expires.
    pub expire_at: Option<i64>,
}

/// A sorted set: members by score, then by their bytes, as redis orders them.
#[derive(Default)]
pub struct Zset {
    pub scores: Map<Vec<u8>, f64>,
    pub order: BTreeSet<(Score, Vec<u8>)>,
}

/// A score ordered as redis compares doubles (`-0` equals `0`; NaN is never stored).
#[derive(Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .partial_cmp(&other.0)
            .unwrap_or(std::cmp::Ordering::Equal)
    }
}

/// The keyspace: sixteen databases and which one each connection selected.
pub struct Store {
    dbs: Vec<Map<Vec<u8>, Entry>>,
    selected: Map<ConnId, usize>,
    max_bulk: usize,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The bytes a C string function sees: up to the first NUL.
fn cstr(arg: &[u8]) -> &[u8] {
    match memchr_nul(arg) {
        Some(at) => &arg[..at],
        None => arg,
    }
}

fn memchr_nul(arg: &[u8]) -> Option<usize> {
    arg.iter().position(|&b| b == 0)
}

/// `strcasecmp(arg, word) == 0`.
pub fn is(arg: &[u8], word: &str) -> bool {
    cstr(arg).eq_ignore_ascii_case(word.as_bytes())
}

/// The command table: name, arity (negative: at least that many), and whether it has
/// subcommands.
const COMMANDS: &[(&str, i32)] = &[
    ("get", 2),
    ("set", -3),
    ("ping", -1),
    ("incr", 2),
    ("lpush", -3),
    ("rpush", -3),
    ("lpop", -2),
    ("rpop", -2),
    ("sadd", -3),
    ("hset", -4),
    ("spop", -2),
    ("zadd", -4),
    ("zpopmin", -2),
    ("lrange", 4),
    ("mset", -3),
    ("mget", -2),
    ("echo", 2),
    ("del", -2),
    ("exists", -2),
    ("decr", 2),
    ("incrby", 3),
    ("decrby", 3),
    ("append", 3),
    ("strlen", 2),
    ("ttl", 2),
    ("pttl", 2),
    ("dbsize", 1),
    ("flushall", -1),
    ("select", 2),
    ("quit", -1),
    ("config", -2),
    ("command", -1),
];

/// Subcommands: container, name, full name, arity.
const SUBCOMMANDS: &[(&str, &str, &str, i32)] = &[
    ("config", "get", "config|get", -3),
    ("command", "docs", "command|docs", -2),
];

fn arity_ok(arity: i32, argc: usize) -> bool {
    let argc = argc as i64;
    let arity = i64::from(arity);
    if arity > 0 {
        arity == argc
    } else {
        argc >= -arity
    }
}

/// `string2ll` as `getLongLongFromObject` applies it.
pub fn parse_i64(arg: &[u8]) -> Option<i64> {
    string2ll(arg)
}

/// Redis's `string2d`: `strtod` over the whole argument, no leading space, no NaN, no overflow
/// to infinity (an explicit `inf` is fine).
pub fn parse_f64(arg: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(arg).ok()?;
    let first = *arg.first()?;
    if matches!(first, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    let explicit_inf = unsigned == "inf" || unsigned == "infinity";
    if unsigned.starts_with("nan") || unsigned.starts_with("0x") {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    if value.is_nan() || (value.is_infinite() && !explicit_inf) {
        return None;
    }
    // strtod reports an underflow to zero as ERANGE, which redis refuses.
    let mantissa = lower.split('e').next().unwrap_or("");
    if value == 0.0 && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
        return None;
    }
    Some(value)
}

impl Store {
    pub fn new(max_bulk: usize) -> Store {
        Store {
            dbs: (0..DATABASES).map(|_| Map::default()).collect(),
            selected: Map::default(),
            max_bulk,
        }
    }

    pub fn forget(&mut self, id: ConnId) {
        self.selected.remove(&id);
    }

    fn db(&mut self, id: ConnId) -> &mut Map<Vec<u8>, Entry> {
        // Most clients never SELECT: skip the hash lookup then.
        let index = if self.selected.is_empty() {
            0
        } else {
            self.selected.get(&id).copied().unwrap_or(0)
        };
        &mut self.dbs[index]
    }

    /// Runs one command and appends its reply to `out`.
    pub fn execute(&mut self, id: ConnId, args: &Args, out: &mut Vec<u8>) -> Outcome {
        // The arguments as slices: on the stack for the usual few, on the heap past 16.
        let mut stack: [&[u8]; 16] = [&[]; 16];
        let heap: Vec<&[u8]>;
        let argv: &[&[u8]] = if args.len() <= stack.len() {
            for (slot, arg) in stack.iter_mut().zip(args.iter()) {
                *slot = arg;
            }
            &stack[..args.len()]
        } else {
            heap = args.iter().collect();
            &heap
        };
        let Some(&name) = argv.first() else {
            return Outcome::Open;
        };
        if is(name, "host:") || is(name, "post") {
            return Outcome::CloseNow;
        }
        let Some(&(cmd, arity)) = COMMANDS
            .iter()
            .find(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
        else {
            unknown_command(out, argv);
            return Outcome::Open;
        };
        let mut fullname = cmd;
        let mut arity = arity;
        if (cmd == "config" || cmd == "command") && argv.len() >= 2 {
            match SUBCOMMANDS
                .iter()
                .find(|(c, s, _, _)| *c == cmd && argv[1].eq_ignore_ascii_case(s.as_bytes()))
            {
                Some(&(_, _, full, sub_arity)) => {
                    fullname = full;
                    arity = sub_arity;
                }
                None => {
                    let upper = String::from_utf8_lossy(cstr(name)).to_ascii_uppercase();
                    let mut text = b"unknown subcommand '".to_vec();
                    let sub = cstr(argv[1]);
                    text.extend_from_slice(&sub[..sub.len().min(128)]);
                    text.extend_from_slice(format!("'. Try {upper} HELP.").as_bytes());
                    reply::error(out, &text);
                    return Outcome::Open;
                }
            }
        }
        if !arity_ok(arity, argv.len()) {
            reply::arity(out, fullname);
            return Outcome::Open;
        }
        self.dispatch(id, fullname, argv, out)
    }

    fn dispatch(&mut self, id: ConnId, cmd: &str, a: &[&[u8]], out: &mut Vec<u8>) -> Outcome {
        match cmd {
            "ping" => {
                if a.len() > 2 {
                    reply::arity(out, "ping");
                } else if a.len() == 2 {
                    reply::bulk(out, a[1]);
                } else {
                    out.extend_from_slice(b"+PONG\r\n");
                }
            }
            "echo" => reply::bulk(out, a[1]),
            "quit" => {
                reply::ok(out);
                return Outcome::CloseAfterReply;
            }
            "select" => match parse_i64(a[1]) {
                None => out.extend_from_slice(NOT_INTEGER),
                Some(n) if n < i64::from(i32::MIN) || n > i64::from(i32::MAX) => reply::error(
                    out,
                    b"value is out of range, value must between -2147483648 and 2147483647",
                ),
                Some(n) if n < 0 || n >= DATABASES as i64 => {
                    reply::error(out, b"DB index is out of range")
                }
                Some(n) => {
                    if n == 0 {
                        self.selected.remove(&id);
                    } else {
                        self.selected.insert(id, n as usize);
                    }
                    reply::ok(out);
                }
            },
            "dbsize" => {
                let n = self.db(id).len();
                reply::int(out, n as i64);
            }
            "flushall" => {
                if a.len() > 2 || (a.len() == 2 && !is(a[1], "sync") && !is(a[1], "async")) {
                    out.extend_from_slice(SYNTAX);
                } else {
                    for db in &mut self.dbs {
                        db.clear();
                    }
                    reply::ok(out);
                }
            }
            "config|get" => self.config_get(a, out),
            "command" | "command|docs" => reply::empty_array(out),
            _ => self.data_command(id, cmd, a, out),
        }
        Outcome::Open
    }

    fn config_get(&self, a: &[&[u8]], out: &mut Vec<u8>) {
        const PARAMS: &[(&str, &str)] = &[("save", ""), ("appendonly", "no")];
        let mut found: Vec<(&str, &str)> = Vec::new();
        for pattern in &a[2..] {
            for &(name, value) in PARAMS {
                if glob_match(cstr(pattern), name.as_bytes()) && !found.iter().any(|f| f.0 == name)
                {
                    found.push((name, value));
                }
            }
        }
        reply::array(out, found.len() * 2);
        for (name, value) in found {
            reply::bulk(out, name.as_bytes());
            reply::bulk(out, value.as_bytes());
        }
    }

    /// Looks `key` up, dropping it first if it has expired (redis's lazy expiry).
    pub fn lookup<'s>(
        db: &'s mut Map<Vec<u8>, Entry>,
        key: &[u8],
        now: i64,
    ) -> Option<&'s mut Entry> {
        let expired = matches!(db.get(key), Some(Entry { expire_at: Some(at), .. }) if *at <= now);
        if expired {
            db.remove(key);
            return None;
        }
        db.get_mut(key)
    }

    fn data_command(&mut self, id: ConnId, cmd: &str, a: &[&[u8]], out: &mut Vec<u8>) {
        let now = now_ms();
        let max_bulk = self.max_bulk;
        let db = self.db(id);
        match cmd {
            "get" => match Self::lookup(db, a[1], now) {
                None => reply::null(out),
                Some(Entry {
                    value: Value::Str(v),
                    ..
                }) => reply::bulk(out, v),
                Some(_) => out.extend_from_slice(WRONGTYPE),
            },
            "set" => set(db, a, now, out),
            "del" => {
                let mut n = 0;
                for key in &a[1..] {
                    if Self::lookup(db, key, now).is_some() {
                        db.remove(*key);
                        n += 1;
                    }
                }
                reply::int(out, n);
            }
            "exists" => {
                let n = a[1..]
                    .iter()
                    .filter(|k| Self::lookup(db, k, now).is_some())
                    .count();
                reply::int(out, n as i64);
            }
            "incr" => incr_by(db, a[1], 1, now, out),
            "decr" => incr_by(db, a[1], -1, now, out),
            "incrby" => match parse_i64(a[2]) {
                Some(n) => incr_by(db, a[1], n, now, out),
                None => out.extend_from_slice(NOT_INTEGER),
            },
            "decrby" => match parse_i64(a[2]) {
                Some(i64::MIN) => reply::error(out, b"decrement would overflow"),
                Some(n) => incr_by(db, a[1], -n, now, out),
                None => out.extend_from_slice(NOT_INTEGER),
            },
            "append" => match Self::lookup(db, a[1], now) {
                None => {
                    db.insert(
                        a[1].to_vec(),
                        Entry {
                            value: Value::Str(a[2].to_vec()),
                            expire_at: None,
                        },
                    );
                    reply::int(out, a[2].len() as i64);
                }
                Some(Entry {
                    value: Value::Str(v),
                    ..
                }) => {
                    if v.len() as u64 + a[2].len() as u64 > max_bulk as u64 {
                        reply::error(
                            out,
                            b"string exceeds maximum allowed size (proto-max-bulk-len)",
                        );
                    } else {
                        v.extend_from_slice(a[2]);
                        reply::int(out, v.len() as i64);
                    }
                }
                Some(_) => out.extend_from_slice(WRONGTYPE),
            },
            "strlen" => match Self::lookup(db, a[1], now) {
                None => reply::int(out, 0),
                Some(Entry {
                    value: Value::Str(v),
                    ..
                }) => reply::int(out, v.len() as i64),
                Some(_) => out.extend_from_slice(WRONGTYPE),
            },
            "mset" => {
                if a.len().is_multiple_of(2) {
                    reply::arity(out, "mset");
                    return;
                }
                for pair in a[1..].chunks_exact(2) {
                    db.insert(
                        pair[0].to_vec(),
                        Entry {
                            value: Value::Str(pair[1].to_vec()),
                            expire_at: None,
                        },
                    );
                }
                reply::ok(out);
            }
            "mget" => {
                reply::array(out, a.len() - 1);
                for key in &a[1..] {
                    match Self::lookup(db, key, now) {
                        Some(Entry {
                            value: Value::Str(v),
                            ..
                        }) => reply::bulk(out, v),
                        _ => reply::null(out),
                    }
                }
            }
            "lpush" | "rpush" => {
                let entry = match Self::lookup(db, a[1], now) {
                    Some(entry) => entry,
                    None => db.entry(a[1].to_vec()).or_insert(Entry {
                        value: Value::List(VecDeque::new()),
                        expire_at: None,
                    }),
                };
                let Value::List(list) = &mut entry.value else {
                    out.extend_from_slice(WRONGTYPE);
                    return;
                };
                for item in &a[2..] {
                    if cmd == "lpush" {
                        list.push_front(item.to_vec());
                    } else {
                        list.push_back(item.to_vec());
                    }
                }
                reply::int(out, list.len() as i64);
            }
            "lpop" | "rpop" => pop(db, cmd, a, now, out),
            "lrange" => {
                let (Some(start), Some(end)) = (parse_i64(a[2]), parse_i64(a[3])) else {
                    out.extend_from_slice(NOT_INTEGER);
                    return;
                };
                match Self::lookup(db, a[1], now) {
                    None => reply::empty_array(out),
                    Some(Entry {
                        value: Value::List(list),
                        ..
                    }) => list_range(out, list, start, end, false),
                    Some(_) => out.extend_from_slice(WRONGTYPE),
                }
            }
            "sadd" => {
                let entry = match Self::lookup(db, a[1], now) {
                    Some(entry) => entry,
                    None => db.entry(a[1].to_vec()).or_insert(Entry {
                        value: Value::Set(HashSet::default()),
                        expire_at: None,
                    }),
                };
                let Value::Set(set) = &mut entry.value else {
                    out.extend_from_slice(WRONGTYPE);
                    return;
                };
                let added = a[2..].iter().filter(|m| set.insert(m.to_vec())).count();
                reply::int(out, added as i64);
            }
            "spop" => spop(db, a, now, out),
            "hset" => {
                if !a.len().is_multiple_of(2) {
                    reply::arity(out, "hset");
                    return;
                }
                let entry = match Self::lookup(db, a[1], now) {
                    Some(entry) => entry,
                    None => db.entry(a[1].to_vec()).or_insert(Entry {
                        value: Value::Hash(Map::default()),
                        expire_at: None,
                    }),
                };
                let Value::Hash(hash) = &mut entry.value else {
                    out.extend_from_slice(WRONGTYPE);
                    return;
                };
                let created = a[2..]
                    .chunks_exact(2)
                    .filter(|p| hash.insert(p[0].to_vec(), p[1].to_vec()).is_none())
                    .count();
                reply::int(out, created as i64);
            }
            "zadd" => zadd(db, a, now, out),
            "zpopmin" => zpopmin(db, a, now, out),
            "ttl" | "pttl" => match Self::lookup(db, a[1], now) {
                None => reply::int(out, -2),
                Some(Entry {
                    expire_at: None, ..
                }) => reply::int(out, -1),
                Some(Entry {
                    expire_at: Some(at),
                    ..
                }) => {
                    let ttl = (*at - now).max(0);
                    reply::int(
                        out,
                        if cmd == "pttl" {
                            ttl
                        } else {
                            (ttl + 500) / 1000
                        },
                    );
                }
            },
            other => reply::error(out, format!("kv has no handler for '{other}'").as_bytes()),
        }
    }
}

/// `unknown command '<name>', with args beginning with: '<a>' '<b>' `, with redis's cuts: the
/// name to 128 bytes, and arguments appended while the list is under 128 bytes, each cut to
/// what is left of the 128.
fn unknown_command(out: &mut Vec<u8>, argv: &[&[u8]]) {
    let mut args: Vec<u8> = Vec::new();
    for arg in &argv[1..] {
        if args.len() >= 128 {
            break;
        }
        let arg = cstr(arg);
        let room = 128 - args.len();
        args.push(b'\'');
        args.extend_from_slice(&arg[..arg.len().min(room)]);
        args.extend_from_slice(b"' ");
    }
    let name = cstr(argv[0]);
    let mut text = b"unknown command '".to_vec();
    text.extend_from_slice(&name[..name.len().min(128)]);
    text.extend_from_slice(b"', with args beginning with: ");
    text.extend_from_slice(&args);
    reply::error(out, &text);
}

/// Redis's `stringmatchlen` for the patterns `CONFIG GET` sees, case-insensitively: `*`, `?`,
/// `[...]` (with `^` and ranges) and `\` escapes.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        let Some((&c, rest)) = p.split_first() else {
            return t.is_empty();
        };
        match c {
            b'*' => (0..=t.len()).any(|i| go(rest, &t[i..])),
            b'?' => !t.is_empty() && go(rest, &t[1..]),
            b'[' => {
                let Some((&tc, trest)) = t.split_first() else {
                    return false;
                };
                let mut i = 0;
                let negate = rest.first() == Some(&b'^');
                if negate {
                    i += 1;
                }
                let mut matched = false;
                while i < rest.len() && rest[i] != b']' {
                    if rest[i] == b'\\' && i + 1 < rest.len() {
                        matched |= rest[i + 1].eq_ignore_ascii_case(&tc);
                        i += 2;
                    } else if i + 2 < rest.len() && rest[i + 1] == b'-' {
                        let (lo, hi) = (rest[i].min(rest[i + 2]), rest[i].max(rest[i + 2]));
                        let l = tc.to_ascii_lowercase();
                        matched |= (lo.to_ascii_lowercase()..=hi.to_ascii_lowercase()).contains(&l);
                        i += 3;
                    } else {
                        matched |= rest[i].eq_ignore_ascii_case(&tc);
                        i += 1;
                    }
                }
                let after = if i < rest.len() {
                    &rest[i + 1..]
                } else {
                    &rest[i..]
                };
                matched != negate && go(after, trest)
            }
            b'\\' if !rest.is_empty() => {
                !t.is_empty() && rest[0].eq_ignore_ascii_case(&t[0]) && go(&rest[1..], &t[1..])
            }
            _ => !t.is_empty() && c.eq_ignore_ascii_case(&t[0]) && go(rest, &t[1..]),
        }
    }
    go(pattern, text)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn config_patterns_match_like_stringmatchlen() {
        assert!(glob_match(b"save", b"save"));
        assert!(glob_match(b"SAVE", b"save"));
        assert!(glob_match(b"*only", b"appendonly"));
        assert!(glob_match(b"s?v[a-f]", b"save"));
        assert!(!glob_match(b"sav", b"save"));
    }
}
