//! The incremental UTF-8 validator against `std::str::from_utf8`.
//!
//! The first two bytes choose two split points; the rest is the text. The
//! verdict and, for invalid input, the failure offset must match std's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::utf8::Utf8Validator;

fuzz_target!(|data: &[u8]| {
    let [a, b, text @ ..] = data else { return };
    let mut cuts = [
        *a as usize % (text.len() + 1),
        *b as usize % (text.len() + 1),
    ];
    cuts.sort();
    let mut validator = Utf8Validator::new();
    let fed = validator
        .feed(&text[..cuts[0]])
        .and_then(|()| validator.feed(&text[cuts[0]..cuts[1]]))
        .and_then(|()| validator.feed(&text[cuts[1]..]))
        .and_then(|()| validator.finish());
    match (fed, std::str::from_utf8(text)) {
        (Ok(()), Ok(_)) => {}
        (Err(ours), Err(std)) => assert_eq!(ours.valid_up_to, std.valid_up_to() as u64),
        (ours, std) => panic!("verdicts differ: ours {ours:?}, std {std:?}"),
    }
});
