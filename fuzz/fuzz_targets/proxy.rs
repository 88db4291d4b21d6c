//! The PROXY protocol header parser: v1 and v2, any bytes: a header, a need for more, or an
//! error; never a panic, never a header longer than the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((Some(_), used)) = moat::listener::proxy_protocol::parse(data) {
        assert!(used <= data.len());
    }
});
