//! The control protocol's decoder (what the daemon reads from a local
//! application, and the client from the daemon) on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_node::api::{read_frame, ClientFrame, ServerFrame};

const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    smol::block_on(async {
        let mut r = smol::io::Cursor::new(data);
        while let Ok(Some(_)) = read_frame::<ClientFrame, _>(&mut r, MAX).await {}
        let mut r = smol::io::Cursor::new(data);
        while let Ok(Some(_)) = read_frame::<ServerFrame, _>(&mut r, MAX).await {}
    });
});
