//! Open Inference Protocol requests: JSON, and a JSON header followed by binary tensors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serval_server::wire::v2_json::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data, None, 1 << 20);
    // The first two bytes choose where the JSON header ends.
    if data.len() > 2 {
        let split = (usize::from(data[0]) << 8 | usize::from(data[1])) % data.len().max(1);
        let _ = decode(&data[2..], Some(&split.to_string()), 1 << 20);
    }
});
