//! The request body path: gzip/deflate decoding under a limit, and the value count that runs
//! before JSON parsing — which must never count fewer values than serde_json builds (else the cap
//! could be bypassed). It may count more: a repeated object key is counted each time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serval_server::memory::{MemoryPool, Reservation};
use serval_server::wire::encoding::decompress;
use serval_server::wire::json::check_values;

/// Scalars plus object keys: what `check_values` counts.
fn count(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(count).sum(),
        Value::Object(map) => map.len() + map.values().map(count).sum::<usize>(),
        _ => 1,
    }
}

fuzz_target!(|data: &[u8]| {
    for encoding in ["gzip", "deflate"] {
        let mut memory = Reservation::new(MemoryPool::new(8 << 20), 8 << 20);
        if let Ok(decoded) = decompress(encoding, data, 1 << 20, &mut memory) {
            assert!(decoded.len() <= 1 << 20);
            // The output was charged before it was inflated.
            assert!(memory.charged() >= decoded.capacity());
        }
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let n = count(&value);
        if n > 0 {
            assert!(check_values(data, n - 1).is_err(), "counted fewer than {n} values");
        }
    } else {
        let _ = check_values(data, 16);
    }
});
