//! Fuzzes the handshake frame decoder: arbitrary bytes, fed in arbitrary splits, must give
//! messages or typed errors, never a panic, and whatever decodes must re-encode to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use postern_proto::frame::encode;
use postern_proto::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let cut = (split as usize).min(rest.len());
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    for chunk in [&rest[..cut], &rest[cut..]] {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(msg)) => {
                    let mut again = BytesMut::new();
                    if encode(&msg, &mut again).is_ok() {
                        let back = Decoder::new().decode(&mut again).expect("re-decode").expect("whole");
                        assert_eq!(back, msg);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = dec.decode_eof(&mut buf);
});
