//! List, set and sorted-set commands with redis 7.0's counting, ordering and error rules.

use std::collections::VecDeque;

use crate::commands::{is, parse_f64, parse_i64, Entry, Map, Score, Store, Value, Zset};
use crate::reply::{self, NOT_FLOAT, NOT_POSITIVE, SYNTAX, WRONGTYPE};

/// Redis's `addListRangeReply`.
pub fn list_range(
    out: &mut Vec<u8>,
    list: &VecDeque<Vec<u8>>,
    start: i64,
    end: i64,
    reverse: bool,
) {
    let len = list.len() as i64;
    let mut start = if start < 0 { len + start } else { start };
    let mut end = if end < 0 { len + end } else { end };
    if start < 0 {
        start = 0;
    }
    if start > end || start >= len {
        reply::empty_array(out);
        return;
    }
    if end >= len {
        end = len - 1;
    }
    reply::array(out, (end - start + 1) as usize);
    let range = list.range(start as usize..=end as usize);
    if reverse {
        for item in range.rev() {
            reply::bulk(out, item);
        }
    } else {
        for item in range {
            reply::bulk(out, item);
        }
    }
}

pub fn pop(db: &mut Map<Vec<u8>, Entry>, cmd: &str, a: &[&[u8]], now: i64, out: &mut Vec<u8>) {
    if a.len() > 3 {
        reply::arity(out, cmd);
        return;
    }
    let count = if a.len() == 3 {
        // `getPositiveLongFromObjectOrReply` gives its own message for every failure.
        match parse_i64(a[2]) {
            None => {
                out.extend_from_slice(NOT_POSITIVE);
                return;
            }
            Some(n) if n < 0 => {
                out.extend_from_slice(NOT_POSITIVE);
                return;
            }
            Some(n) => Some(n),
        }
    } else {
        None
    };
    let Some(entry) = Store::lookup(db, a[1], now) else {
        if count.is_some() {
            reply::null_array(out);
        } else {
            reply::null(out);
        }
        return;
    };
    let Value::List(list) = &mut entry.value else {
        out.extend_from_slice(WRONGTYPE);
        return;
    };
    let front = cmd == "lpop";
    match count {
        Some(0) => {
            reply::empty_array(out);
            return;
        }
        None => {
            let item = if front {
                list.pop_front()
            } else {
                list.pop_back()
            };
            match item {
                Some(item) => reply::bulk(out, &item),
                None => reply::null(out),
            }
        }
        Some(n) => {
            let take = (n as u64).min(list.len() as u64) as usize;
            reply::array(out, take);
            for _ in 0..take {
                let item = if front {
                    list.pop_front()
                } else {
                    list.pop_back()
                };
                if let Some(item) = item {
                    reply::bulk(out, &item);
                }
            }
        }
    }
    if list.is_empty() {
        db.remove(a[1]);
    }
}

pub fn spop(db: &mut Map<Vec<u8>, Entry>, a: &[&[u8]], now: i64, out: &mut Vec<u8>) {
    if a.len() > 3 {
        out.extend_from_slice(SYNTAX);
        return;
    }
    let count = if a.len() == 3 {
        // `getPositiveLongFromObjectOrReply` gives its own message for every failure.
        match parse_i64(a[2]) {
            None => {
                out.extend_from_slice(NOT_POSITIVE);
                return;
            }
            Some(n) if n < 0 => {
                out.extend_from_slice(NOT_POSITIVE);
                return;
            }
            Some(n) => Some(n as u64),
        }
    } else {
        None
    };
    let Some(entry) = Store::lookup(db, a[1], now) else {
        if count.is_some() {
            reply::empty_array(out);
        } else {
            reply::null(out);
        }
        return;
    };
    let Value::Set(set) = &mut entry.value else {
        out.extend_from_slice(WRONGTYPE);
        return;
    };
    match count {
        Some(0) => {
            reply::empty_array(out);
            return;
        }
        None => {
            let member = set.iter().next().cloned();
            if let Some(member) = member {
                set.remove(&member);
                reply::bulk(out, &member);
            }
        }
        Some(n) => {
            let take = n.min(set.len() as u64) as usize;
            let members: Vec<Vec<u8>> = set.iter().take(take).cloned().collect();
            reply::array(out, members.len());
            for member in &members {
                set.remove(member);
                reply::bulk(out, member);
            }
        }
    }
    if set.is_empty() {
        db.remove(a[1]);
    }
}

/// The score as redis's small (listpack) sorted sets keep it: an integral score is stored as
/// an integer, so `-0` comes back as `0`. Replies about the write itself (`ZADD INCR`) still
/// show the computed score.
fn stored(score: f64) -> f64 {
    if score == 0.0 {
        0.0
    } else {
        score
    }
}

pub fn zadd(db: &mut Map<Vec<u8>, Entry>, a: &[&[u8]], now: i64, out: &mut Vec<u8>) {
    let (mut nx, mut xx, mut ch, mut incr, mut gt, mut lt) =
        (false, false, false, false, false, false);
    let mut idx = 2;
    while idx < a.len() {
        let opt = a[idx];
        if is(opt, "nx") {
            nx = true;
        } else if is(opt, "xx") {
            xx = true;
        } else if is(opt, "ch") {
            ch = true;
        } else if is(opt, "incr") {
            incr = true;
        } else if is(opt, "gt") {
            gt = true;
        } else if is(opt, "lt") {
            lt = true;
        } else {
            break;
        }
        idx += 1;
    }
    let elements = a.len() - idx;
    if !elements.is_multiple_of(2) || elements == 0 {
        out.extend_from_slice(SYNTAX);
        return;
    }
    if nx && xx {
        reply::error(
            out,
            b"XX and NX options at the same time are not compatible",
        );
        return;
    }
    if ((gt || lt) && nx) || (gt && lt) {
        reply::error(
            out,
            b"GT, LT, and/or NX options at the same time are not compatible",
        );
        return;
    }
    if incr && elements > 2 {
        reply::error(out, b"INCR option supports a single increment-element pair");
        return;
    }
    let mut pairs = Vec::with_capacity(elements / 2);
    for pair in a[idx..].chunks_exact(2) {
        let Some(score) = parse_f64(pair[0]) else {
            out.extend_from_slice(NOT_FLOAT);
            return;
        };
        pairs.push((score, pair[1]));
    }
    let entry = match Store::lookup(db, a[1], now) {
        Some(entry) => entry,
        None if xx => {
            if incr {
                reply::null(out);
            } else {
                reply::int(out, 0);
            }
            return;
        }
        None => db.entry(a[1].to_vec()).or_insert(Entry {
            value: Value::Zset(Zset::default()),
            expire_at: None,
        }),
    };
    let Value::Zset(zset) = &mut entry.value else {
        out.extend_from_slice(WRONGTYPE);
        return;
    };
    let (mut added, mut updated, mut processed) = (0i64, 0i64, 0);
    let mut last = 0.0;
    for (score, member) in pairs {
        match zset.scores.get(member).copied() {
            Some(current) => {
                if nx {
                    continue;
                }
                let score = if incr { score + current } else { score };
                if score.is_nan() {
                    reply::error(out, b"resulting score is not a number (NaN)");
                    return;
                }
                if (lt && score >= current) || (gt && score <= current) {
                    continue;
                }
                last = score;
                processed += 1;
                if score != current {
                    zset.order.remove(&(Score(current), member.to_vec()));
                    zset.order.insert((Score(stored(score)), member.to_vec()));
                    zset.scores.insert(member.to_vec(), stored(score));
                    updated += 1;
                }
            }
            None if !xx => {
                zset.order.insert((Score(stored(score)), member.to_vec()));
                zset.scores.insert(member.to_vec(), stored(score));
                last = score;
                added += 1;
                processed += 1;
            }
            None => {}
        }
    }
    if incr {
        if processed > 0 {
            reply::double(out, last);
        } else {
            reply::null(out);
        }
    } else {
        reply::int(out, if ch { added + updated } else { added });
    }
}

pub fn zpopmin(db: &mut Map<Vec<u8>, Entry>, a: &[&[u8]], now: i64, out: &mut Vec<u8>) {
    if a.len() > 3 {
        out.extend_from_slice(SYNTAX);
        return;
    }
    let count = if a.len() == 3 {
        // `getPositiveLongFromObjectOrReply` gives its own message for every failure.
        match parse_i64(a[2]) {
            None => {
                out.extend_from_slice(NOT_POSITIVE);
                return;
            }
            Some(n) if n < 0 => {
                out.extend_from_slice(NOT_POSITIVE);
                return;
            }
            Some(n) => n as u64,
        }
    } else {
        1
    };
    let Some(entry) = Store::lookup(db, a[1], now) else {
        reply::empty_array(out);
        return;
    };
    let Value::Zset(zset) = &mut entry.value else {
        out.extend_from_slice(WRONGTYPE);
        return;
    };
    if count == 0 {
        reply::empty_array(out);
        return;
    }
    let take = count.min(zset.order.len() as u64) as usize;
    reply::array(out, take * 2);
    for _ in 0..take {
        if let Some((score, member)) = zset.order.pop_first() {
            zset.scores.remove(&member);
            reply::bulk(out, &member);
            reply::double(out, score.0);
        }
    }
    if zset.order.is_empty() {
        db.remove(a[1]);
    }
}
