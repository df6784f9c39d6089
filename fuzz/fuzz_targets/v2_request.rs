//! Open Inference Protocol requests: JSON, and a JSON header followed by binary tensors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serval_server::memory::{MemoryPool, Reservation};
use serval_server::wire::v2_json::decode;

fuzz_target!(|data: &[u8]| {
    // A budget of 64 MiB: whatever the input claims, decoding never charges past it.
    let pool = MemoryPool::new(64 << 20);
    let _ = decode(data, None, 1 << 20, &mut Reservation::new(pool.clone(), 64 << 20), true);
    // The first two bytes choose where the JSON header ends.
    if data.len() > 2 {
        let split = (usize::from(data[0]) << 8 | usize::from(data[1])) % data.len().max(1);
        let mut memory = Reservation::new(pool.clone(), 64 << 20);
        let _ = decode(&data[2..], Some(&split.to_string()), 1 << 20, &mut memory, true);
        assert!(memory.charged() <= 64 << 20);
    }
    assert_eq!(pool.used(), 0, "every reservation gave its memory back");
});
