//! Kubernetes byte quantities of policy files (`memoryLimit: 64Mi`, outputs' `maxSize`). Any
//! text: no panic; an accepted quantity is exactly the number times its suffix's multiplier
//! (computed here independently, in u128), and its plain decimal form reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmgate::config::parse_quantity;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(bytes) = parse_quantity(text) else {
        return;
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("{text:?} accepted with suffix {other:?}"),
    };
    let number: u128 = number
        .parse()
        .expect("accepted quantities start with digits");
    assert_eq!(u128::from(bytes), number * multiplier, "{text:?}");
    assert_eq!(parse_quantity(&bytes.to_string()), Ok(bytes));
});
