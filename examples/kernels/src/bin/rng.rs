//! `rng`: asks the entropy device for 64 bytes and shows them.
#![no_std]
#![no_main]

use pvkit_guest::virtio::rng::Rng;
use pvkit_spec::virtio::DeviceId;
use rt::virtio::RtHal;
use rt::{Boot, println};

rt::entry!(main);

fn main(boot: Boot) -> u8 {
    let Some(transport) = rt::virtio::find(DeviceId::Entropy, &boot) else {
        println!("rng: no entropy device");
        return 2;
    };
    let mut rng = match Rng::<RtHal, _>::new(transport) {
        Ok(r) => r,
        Err(e) => {
            println!("rng: {e}");
            return 1;
        }
    };
    let mut bytes = [0u8; 64];
    let got = match rng.fill(&mut bytes) {
        Ok(n) => n,
        Err(e) => {
            println!("rng: {e}");
            return 1;
        }
    };
    rt::out::print(format_args!("rng: {got} bytes:"));
    for b in &bytes[..got] {
        rt::out::print(format_args!(" {b:02x}"));
    }
    println!();
    let varied = bytes[..got].iter().any(|&b| b != bytes[0]);
    println!("rng: {}", if varied { "not all equal" } else { "ALL EQUAL" });
    if got == 64 && varied { 0 } else { 1 }
}
