//! Generated RESP request streams: commands the `kv` example supports (and some it must refuse
//! as redis does), spelled inline or multibulk, plus the malformed requests redis answers with
//! a protocol error.
//!
//! Each [`Piece`] knows what [`Resp`](refloop::framing::Resp) must decode it to, so the same
//! streams drive the framing proptest (against that expectation, split at arbitrary points)
//! and the differential test against redis-server (where only redis's bytes count).

use proptest::prelude::*;
use refloop::framing::resp::{Args, Message, ProtocolError};

/// One request on the wire and what it decodes to.
#[derive(Debug, Clone)]
pub struct Piece {
    /// The bytes sent.
    pub bytes: Vec<u8>,
    /// What `Resp` decodes them to.
    pub expect: Message,
}

/// A stream of requests; at most the last one ends the connection.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The requests in order.
    pub pieces: Vec<Piece>,
}

impl Stream {
    /// The bytes of every piece, concatenated.
    pub fn bytes(&self) -> Vec<u8> {
        self.pieces.iter().flat_map(|p| p.bytes.clone()).collect()
    }

    /// The messages `Resp` must decode, in order.
    pub fn messages(&self) -> Vec<Message> {
        self.pieces.iter().map(|p| p.expect.clone()).collect()
    }

    /// Whether the stream ends with a request that closes the connection.
    pub fn ends_in_error(&self) -> bool {
        matches!(
            self.pieces.last().map(|p| &p.expect),
            Some(Message::ProtocolError(_))
        )
    }
}

/// Generation knobs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Allow `SET .. EX/PX`, and then never ask `PTTL` (its answer depends on timing).
    pub expiry: bool,
    /// Most commands per stream.
    pub max_commands: usize,
}

const KEYS: &[&str] = &["k0", "k1", "k2", "l0", "l1", "s0", "h0", "z0"];

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(KEYS).prop_map(|k| k.as_bytes().to_vec())
}

/// Values: short text, numbers in edge spellings, and arbitrary bytes.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[a-z]{0,6}".prop_map(String::into_bytes),
        2 => prop::sample::select(&[
            "0", "1", "-1", "10", "01", "-0", "+1", " 1", "1 ", "9223372036854775807",
            "-9223372036854775808", "9223372036854775808", "1.5", "inf", "-inf", "1e3", "nan",
            "", "x y", "\"q\"", "it's",
        ][..])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn int() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (-5i64..12).prop_map(|n| n.to_string().into_bytes()),
        1 => value(),
    ]
}

fn opt(word: &'static str) -> Vec<u8> {
    word.as_bytes().to_vec()
}

/// One command's arguments (before the arity is perturbed).
fn command(options: Options) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let set_opts = prop::collection::vec(
        prop_oneof![
            Just(vec![opt("NX")]),
            Just(vec![opt("XX")]),
            Just(vec![opt("GET")]),
            Just(vec![opt("KEEPTTL")]),
            Just(vec![opt("bogus")]),
            if options.expiry {
                prop_oneof![
                    (1000i64..5000).prop_map(|s| vec![opt("EX"), s.to_string().into_bytes()]),
                    (1_000_000i64..5_000_000)
                        .prop_map(|s| vec![opt("PX"), s.to_string().into_bytes()]),
                    Just(vec![opt("EX"), opt("0")]),
                    Just(vec![opt("PX"), opt("x")]),
                ]
                .boxed()
            } else {
                Just(vec![opt("EX"), opt("-1")]).boxed()
            },
        ],
        0..3,
    );
    let keys = || prop::collection::vec(key(), 1..4);
    let pttl = if options.expiry { "TTL" } else { "PTTL" };
    prop_oneof![
        2 => prop::option::of(value()).prop_map(|m| {
            let mut a = vec![opt("PING")];
            a.extend(m);
            a
        }),
        1 => value().prop_map(|v| vec![opt("ECHO"), v]),
        4 => (key(), value(), set_opts).prop_map(|(k, v, o)| {
            let mut a = vec![opt("SET"), k, v];
            a.extend(o.into_iter().flatten());
            a
        }),
        3 => key().prop_map(|k| vec![opt("GET"), k]),
        1 => keys().prop_map(|ks| [vec![opt("DEL")], ks].concat()),
        1 => keys().prop_map(|ks| [vec![opt("EXISTS")], ks].concat()),
        2 => (prop::sample::select(&["INCR", "DECR"][..]), key())
            .prop_map(|(c, k)| vec![opt(c), k]),
        2 => (prop::sample::select(&["INCRBY", "DECRBY"][..]), key(), int())
            .prop_map(|(c, k, n)| vec![opt(c), k, n]),
        1 => (key(), value()).prop_map(|(k, v)| vec![opt("APPEND"), k, v]),
        1 => key().prop_map(|k| vec![opt("STRLEN"), k]),
        1 => prop::collection::vec((key(), value()), 1..3).prop_map(|kv| {
            let mut a = vec![opt("MSET")];
            for (k, v) in kv {
                a.push(k);
                a.push(v);
            }
            a
        }),
        1 => keys().prop_map(|ks| [vec![opt("MGET")], ks].concat()),
        2 => (
            prop::sample::select(&["LPUSH", "RPUSH"][..]),
            key(),
            prop::collection::vec(value(), 1..4)
        )
            .prop_map(|(c, k, vs)| [vec![opt(c), k], vs].concat()),
        2 => (
            prop::sample::select(&["LPOP", "RPOP"][..]),
            key(),
            prop::option::of(int())
        )
            .prop_map(|(c, k, n)| {
                let mut a = vec![opt(c), k];
                a.extend(n);
                a
            }),
        1 => (key(), int(), int()).prop_map(|(k, s, e)| vec![opt("LRANGE"), k, s, e]),
        // One member only, so SPOP's random choice is the same on both servers.
        1 => key().prop_map(|k| vec![opt("SADD"), k, opt("m")]),
        1 => (key(), prop::option::of(int())).prop_map(|(k, n)| {
            let mut a = vec![opt("SPOP"), k];
            if let Some(n) = n {
                // A count of one or more pops the whole one-member set in either order.
                a.push(n);
            }
            a
        }),
        1 => (key(), prop::collection::vec((value(), value()), 1..3)).prop_map(|(k, fv)| {
            let mut a = vec![opt("HSET"), k];
            for (f, v) in fv {
                a.push(f);
                a.push(v);
            }
            a
        }),
        2 => (
            key(),
            prop::collection::vec(
                prop::sample::select(&["NX", "XX", "CH", "INCR", "GT", "LT"][..]),
                0..2
            ),
            prop::collection::vec(
                (
                    prop_oneof![
                        3 => (-3i32..4).prop_map(|n| n.to_string().into_bytes()),
                        1 => value(),
                    ],
                    prop::sample::select(&["a", "b", "c"][..])
                ),
                1..3
            )
        )
            .prop_map(|(k, opts, pairs)| {
                let mut a = vec![opt("ZADD"), k];
                a.extend(opts.into_iter().map(opt));
                for (s, m) in pairs {
                    a.push(s);
                    a.push(opt(m));
                }
                a
            }),
        1 => (key(), prop::option::of(int())).prop_map(|(k, n)| {
            let mut a = vec![opt("ZPOPMIN"), k];
            a.extend(n);
            a
        }),
        1 => key().prop_map(move |k| vec![opt(pttl), k]),
        1 => Just(vec![opt("DBSIZE")]),
        1 => Just(vec![opt("QUIT")]),
        1 => prop::sample::select(&["", "ASYNC", "sync", "later"][..]).prop_map(|o| {
            let mut a = vec![opt("FLUSHALL")];
            if !o.is_empty() {
                a.push(opt(o));
            }
            a
        }),
        1 => int().prop_map(|n| vec![opt("SELECT"), n]),
        1 => prop::sample::select(&["save", "appendonly", "no-such-parameter"][..])
            .prop_map(|p| vec![opt("CONFIG"), opt("GET"), opt(p)]),
        // Not COMMAND: dropping the argument would ask redis for its whole command table.
        1 => Just(vec![opt("CONFIG"), opt("zzbogus")]),
        // Unknown commands, with the 128-byte cuts of redis's error in reach.
        2 => (
            prop_oneof![
                Just(opt("zzunknown")),
                "zz[a-z]{0,140}".prop_map(String::into_bytes),
                prop::collection::vec(any::<u8>(), 1..8).prop_map(|mut b| {
                    b.insert(0, b'Z');
                    b
                }),
            ],
            prop::collection::vec(
                prop_oneof![value(), "[a-z]{30,70}".prop_map(String::into_bytes)],
                0..5
            )
        )
            .prop_map(|(name, args)| [vec![name], args].concat()),
    ]
}

/// Upper, lower or mixed case for the command name (redis looks names up case-insensitively).
fn recase(mut args: Vec<Vec<u8>>, how: u8) -> Vec<Vec<u8>> {
    if let Some(name) = args.first_mut() {
        for (i, b) in name.iter_mut().enumerate() {
            match how {
                0 => {}
                1 => b.make_ascii_lowercase(),
                _ if i % 2 == 0 => b.make_ascii_lowercase(),
                _ => {}
            }
        }
    }
    args
}

/// Adds or drops an argument now and then, for the arity errors.
///
/// The added argument is `m`, the one set member there is, so `SADD k m m` still leaves a
/// one-member set and `SPOP` stays deterministic.
fn perturb(mut args: Vec<Vec<u8>>, how: u8) -> Vec<Vec<u8>> {
    match how {
        0 if args.len() > 1 => {
            args.pop();
        }
        1 => args.push(b"m".to_vec()),
        _ => {}
    }
    args
}

/// The multibulk spelling of `args`.
pub fn multibulk(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// An inline spelling of `args` that `sdssplitargs` splits back into them: each argument bare
/// when that is safe, else double-quoted with `\xHH` escapes; `style` varies the separators.
pub fn inline(args: &[Vec<u8>], style: u8) -> Vec<u8> {
    let bare_ok = |a: &[u8]| {
        !a.is_empty()
            && a.iter()
                .all(|&b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\'))
    };
    let mut out = Vec::new();
    if style & 1 == 1 {
        out.extend_from_slice(b"  ");
    }
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(if style & 2 == 2 { b" \t " } else { b" " });
        }
        if bare_ok(arg) && style & 4 == 0 {
            out.extend_from_slice(arg);
        } else {
            out.push(b'"');
            for &b in arg {
                match b {
                    b'"' | b'\\' => {
                        out.push(b'\\');
                        out.push(b);
                    }
                    b if b.is_ascii_graphic() || b == b' ' => out.push(b),
                    b => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                }
            }
            out.push(b'"');
        }
    }
    out.extend_from_slice(if style & 8 == 8 { b"\n" } else { b"\r\n" });
    out
}

fn command_piece(options: Options) -> impl Strategy<Value = Piece> {
    (command(options), 0u8..3, 0u8..12, any::<bool>(), 0u8..16).prop_map(
        |(args, case, arity, as_inline, style)| {
            let args = perturb(recase(args, case), arity);
            let bytes = if as_inline {
                inline(&args, style)
            } else {
                multibulk(&args)
            };
            Piece {
                bytes,
                expect: Message::Command(Args::from_slices(&args)),
            }
        },
    )
}

fn empty_piece() -> impl Strategy<Value = Piece> {
    prop::sample::select(&["\r\n", "\n", "   \r\n", "*0\r\n", "*-1\r\n", "\t\n"][..]).prop_map(
        |s| Piece {
            bytes: s.as_bytes().to_vec(),
            expect: Message::Empty,
        },
    )
}

/// A request redis answers with a protocol error (and then closes).
pub fn malformed_piece() -> impl Strategy<Value = Piece> {
    use ProtocolError::*;
    let fixed: &[(&str, ProtocolError)] = &[
        ("*x\r\n", InvalidMultibulkLength),
        ("*+1\r\n", InvalidMultibulkLength),
        ("*01\r\n", InvalidMultibulkLength),
        ("*2147483648\r\n", InvalidMultibulkLength),
        ("*1\r\n+PING\r\n", ExpectedDollar(b'+')),
        ("*2\r\n$4\r\nECHO\r\n:1\r\n", ExpectedDollar(b':')),
        ("*1\r\n\r\n", ExpectedDollar(b'\r')),
        ("*1\r\n$-1\r\n", InvalidBulkLength),
        ("*1\r\n$01\r\n", InvalidBulkLength),
        ("*1\r\n$ 4\r\n", InvalidBulkLength),
        ("*1\r\n$99999999999\r\n", InvalidBulkLength),
        ("GET \"k0\r\n", UnbalancedQuotes),
        ("GET 'k0'x\r\n", UnbalancedQuotes),
        ("ECHO \"a\"b\r\n", UnbalancedQuotes),
    ];
    prop::sample::select(fixed).prop_map(|(s, e)| Piece {
        bytes: s.as_bytes().to_vec(),
        expect: Message::ProtocolError(e),
    })
}

/// A stream of commands and empty requests, ending now and then in a malformed request.
pub fn stream(options: Options) -> impl Strategy<Value = Stream> {
    (
        prop::collection::vec(
            prop_oneof![9 => command_piece(options), 1 => empty_piece()],
            1..=options.max_commands,
        ),
        prop::option::weighted(0.25, malformed_piece()),
    )
        .prop_map(|(mut pieces, bad)| {
            // QUIT closes: nothing after it matters.
            if let Some(quit) = pieces.iter().position(|p| {
                matches!(&p.expect, Message::Command(a) if a.get(0).is_some_and(|n| n.eq_ignore_ascii_case(b"quit")))
            }) {
                pieces.truncate(quit + 1);
            } else {
                pieces.extend(bad);
            }
            Stream { pieces }
        })
}
