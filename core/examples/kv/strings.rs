//! The string commands with options or arithmetic: `SET` and the `INCR` family.

use crate::commands::{is, parse_i64, Entry, Map, Store, Value};
use crate::reply::{self, NOT_INTEGER, SYNTAX, WRONGTYPE};

pub fn set(db: &mut Map<Vec<u8>, Entry>, a: &[&[u8]], now: i64, out: &mut Vec<u8>) {
    const NX: u32 = 1;
    const XX: u32 = 2;
    const EX: u32 = 4;
    const PX: u32 = 8;
    const KEEPTTL: u32 = 16;
    const GET: u32 = 32;
    const EXAT: u32 = 64;
    const PXAT: u32 = 128;
    const ANY_EXPIRE: u32 = EX | PX | EXAT | PXAT;
    let mut flags = 0;
    let mut expire: Option<&[u8]> = None;
    let mut j = 3;
    while j < a.len() {
        let opt = a[j];
        let next = a.get(j + 1).copied();
        // An expiry option: allowed unless one of `excluded` is set, and only with a value.
        let expiry = |flags: u32, excluded: u32| flags & excluded == 0 && next.is_some();
        if is(opt, "nx") && flags & XX == 0 {
            flags |= NX;
        } else if is(opt, "xx") && flags & NX == 0 {
            flags |= XX;
        } else if is(opt, "get") {
            flags |= GET;
        } else if is(opt, "keepttl") && flags & ANY_EXPIRE == 0 {
            flags |= KEEPTTL;
        } else if is(opt, "ex") && expiry(flags, KEEPTTL | EXAT | PX | PXAT) {
            flags |= EX;
            expire = next;
            j += 1;
        } else if is(opt, "px") && expiry(flags, KEEPTTL | EX | EXAT | PXAT) {
            flags |= PX;
            expire = next;
            j += 1;
        } else if is(opt, "exat") && expiry(flags, KEEPTTL | EX | PX | PXAT) {
            flags |= EXAT;
            expire = next;
            j += 1;
        } else if is(opt, "pxat") && expiry(flags, KEEPTTL | EX | EXAT | PX) {
            flags |= PXAT;
            expire = next;
            j += 1;
        } else {
            out.extend_from_slice(SYNTAX);
            return;
        }
        j += 1;
    }
    let mut expire_at = None;
    if let Some(arg) = expire {
        let Some(mut ms) = parse_i64(arg) else {
            out.extend_from_slice(NOT_INTEGER);
            return;
        };
        let seconds = flags & (EX | EXAT) != 0;
        if ms <= 0 || (seconds && ms > i64::MAX / 1000) {
            reply::error(out, b"invalid expire time in 'set' command");
            return;
        }
        if seconds {
            ms *= 1000;
        }
        if flags & (EX | PX) != 0 {
            ms = ms.wrapping_add(now);
        }
        if ms <= 0 {
            reply::error(out, b"invalid expire time in 'set' command");
            return;
        }
        expire_at = Some(ms);
    }
    let existing = Store::lookup(db, a[1], now);
    if flags & GET != 0 {
        match &existing {
            None => reply::null(out),
            Some(Entry {
                value: Value::Str(v),
                ..
            }) => reply::bulk(out, v),
            Some(_) => {
                out.extend_from_slice(WRONGTYPE);
                return;
            }
        }
    }
    let found = existing.is_some();
    if (flags & NX != 0 && found) || (flags & XX != 0 && !found) {
        if flags & GET == 0 {
            reply::null(out);
        }
        return;
    }
    let kept = match existing {
        Some(entry) if flags & KEEPTTL != 0 => entry.expire_at,
        _ => None,
    };
    db.insert(
        a[1].to_vec(),
        Entry {
            value: Value::Str(a[2].to_vec()),
            expire_at: expire_at.or(kept),
        },
    );
    if flags & GET == 0 {
        reply::ok(out);
    }
}

pub fn incr_by(db: &mut Map<Vec<u8>, Entry>, key: &[u8], by: i64, now: i64, out: &mut Vec<u8>) {
    let entry = Store::lookup(db, key, now);
    let current = match &entry {
        None => 0,
        Some(Entry {
            value: Value::Str(v),
            ..
        }) => match parse_i64(v) {
            Some(n) => n,
            None => {
                out.extend_from_slice(NOT_INTEGER);
                return;
            }
        },
        Some(_) => {
            out.extend_from_slice(WRONGTYPE);
            return;
        }
    };
    let Some(value) = current.checked_add(by) else {
        reply::error(out, b"increment or decrement would overflow");
        return;
    };
    let text = value.to_string().into_bytes();
    match entry {
        Some(entry) => entry.value = Value::Str(text),
        None => {
            db.insert(
                key.to_vec(),
                Entry {
                    value: Value::Str(text),
                    expire_at: None,
                },
            );
        }
    }
    reply::int(out, value);
}
