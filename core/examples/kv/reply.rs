//! Writing replies into the reply buffer, with redis 7.0's exact texts.

use refloop::framing::resp::{write_bulk, write_header};

/// `-WRONGTYPE ...`, redis's `shared.wrongtypeerr`.
pub const WRONGTYPE: &[u8] =
    b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
/// `shared.syntaxerr`.
pub const SYNTAX: &[u8] = b"-ERR syntax error\r\n";
/// `getLongLongFromObjectOrReply`'s default error.
pub const NOT_INTEGER: &[u8] = b"-ERR value is not an integer or out of range\r\n";
/// `getDoubleFromObjectOrReply`'s default error.
pub const NOT_FLOAT: &[u8] = b"-ERR value is not a valid float\r\n";
/// `getPositiveLongFromObjectOrReply`'s default error.
pub const NOT_POSITIVE: &[u8] = b"-ERR value is out of range, must be positive\r\n";

pub fn ok(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+OK\r\n");
}

pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

pub fn null_array(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*-1\r\n");
}

pub fn empty_array(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*0\r\n");
}

pub fn int(out: &mut Vec<u8>, n: i64) {
    write_header(out, b':', n);
}

pub fn array(out: &mut Vec<u8>, len: usize) {
    write_header(out, b'*', len as i64);
}

pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    write_bulk(out, bytes);
}

/// An `-ERR <text>` reply, with `\r` and `\n` mapped to spaces as redis's
/// `addReplyErrorFormat` and `rejectCommandFormat` do.
pub fn error(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(b"-ERR ");
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// `wrong number of arguments for '<name>' command`.
pub fn arity(out: &mut Vec<u8>, fullname: &str) {
    error(
        out,
        format!("wrong number of arguments for '{fullname}' command").as_bytes(),
    );
}

/// A double as redis 7.0's RESP2 `addReplyDouble` writes it: `inf`, `-inf`, or C's `%.17g`.
pub fn double(out: &mut Vec<u8>, d: f64) {
    bulk(out, format_double(d).as_bytes());
}

/// C's `printf("%.17g", d)` for a finite `d` (`inf`/`-inf` for infinities, as redis writes).
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    const P: i32 = 17;
    // 17 significant digits, in scientific form, to learn the decimal exponent after rounding.
    let sci = format!("{:.*e}", (P - 1) as usize, d);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let body = if !(-4..P).contains(&exp) {
        let mantissa = strip_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (P - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{d:.decimals$}")).to_string()
    };
    body
}

/// `%g` drops trailing zeros after the point, and the point itself if nothing follows.
fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::format_double;

    #[test]
    fn doubles_format_as_c_percent_17g() {
        assert_eq!(format_double(1.0), "1");
        assert_eq!(format_double(1.5), "1.5");
        assert_eq!(format_double(0.1), "0.10000000000000001");
        assert_eq!(format_double(-2.5e-5), "-2.5000000000000001e-05");
        assert_eq!(format_double(1e17), "1e+17");
        assert_eq!(format_double(123456789.0), "123456789");
    }
}
