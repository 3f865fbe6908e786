//! Go durations as the API server sends them in `?timeout=` (and policy files in `timeout:`).
//! Any text: no panic, and an accepted duration reads back the same when written in whole
//! nanoseconds (exactly representable ones: the parser sums in f64, as Go's does not).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmgate::wire::parse_go_duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(duration) = parse_go_duration(text) else {
        return;
    };
    let nanos = duration.as_nanos();
    if nanos < 1 << 53 {
        assert_eq!(
            parse_go_duration(&format!("{nanos}ns")),
            Ok(duration),
            "{text:?} parsed to {duration:?}, which does not read back"
        );
    }
});
