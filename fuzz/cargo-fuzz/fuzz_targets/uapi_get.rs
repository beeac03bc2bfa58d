#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpblu_fuzz::uapi_get(data));
