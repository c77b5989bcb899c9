//! Comparing JSON values the way wirelab's files can promise: exactly, except that a float may
//! move by a unit in the last place. serde_json is built without its `float_roundtrip` feature,
//! so reading back the shortest text of an f64 it wrote can give the neighbouring f64.

use serde_json::Value;

/// Floats within this many units in the last place count as equal.
const MAX_ULPS: u64 = 1;

fn ulps_apart(a: f64, b: f64) -> u64 {
    if a == b {
        return 0;
    }
    if a.is_sign_negative() != b.is_sign_negative() {
        return u64::MAX;
    }
    a.to_bits().abs_diff(b.to_bits())
}

/// Where `a` and `b` differ by more than [`MAX_ULPS`] in a float (or at all elsewhere): the
/// JSON path of the first difference.
pub fn diff(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x == y {
                return None;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) if x.is_f64() && y.is_f64() && ulps_apart(p, q) <= MAX_ULPS => {
                    None
                }
                _ => Some(format!("{path}: {x} != {y}")),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("{path}: {} != {} items", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (p, q))| diff(p, q, &format!("{path}[{i}]")))
        }
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() || x.keys().zip(y.keys()).any(|(p, q)| p != q) {
                return Some(format!("{path}: different keys"));
            }
            x.iter()
                .zip(y.values())
                .find_map(|((k, p), q)| diff(p, q, &format!("{path}.{k}")))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: {a} != {b}")),
    }
}
