//! Request bodies that carry their own checksum, so a test can tell an intact reply from a
//! truncated or mixed-up one. Shared by the titanic tests (`tests/common`) and the crash drill
//! (`examples/drill.rs`), each including it with `#[path]`; not a test target of its own
//! (cargo takes only `tests/*.rs` and `tests/*/main.rs` as those).

/// A body that carries its own checksum: [nonce, payload, fnv1a64(nonce + payload) in hex].
pub fn checked_body(nonce: &str, payload: &[u8]) -> Vec<Vec<u8>> {
    let sum = fnv1a(&[nonce.as_bytes(), payload]);
    vec![
        nonce.as_bytes().to_vec(),
        payload.to_vec(),
        format!("{sum:016x}").into_bytes(),
    ]
}

/// True if `frames` is a body made by [`checked_body`], intact.
pub fn checksum_holds(frames: &[Vec<u8>]) -> bool {
    let [nonce, payload, sum] = frames else {
        return false;
    };
    format!("{:016x}", fnv1a(&[nonce, payload])).as_bytes() == &sum[..]
}

pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
