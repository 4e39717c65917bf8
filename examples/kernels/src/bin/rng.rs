//! `rng`: asks the entropy device for 64 bytes and shows them. On a
//! virtio-pci device with MSI-X it then sends one request by hand with
//! interrupts on (the driver polls and suppresses them), the device's
//! MSI-X entry aimed at the boot vCPU's [`VECTOR`], and says how many
//! interrupts came.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use pvkit_guest::virtio::AnyTransport;
use pvkit_guest::virtio::pci::MsiMessage;
use pvkit_guest::virtio::rng::Rng;
use pvkit_spec::virtio::DeviceId;
use rt::virtio::RtHal;
use rt::{Boot, println};

rt::entry!(main);

/// The vector the device's MSI-X message raises.
const VECTOR: u8 = 0x40;
/// Interrupts taken on `VECTOR`.
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

fn count(_vector: u8) {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
}

fn main(boot: Boot) -> u8 {
    let Some(transport) = rt::virtio::find(DeviceId::Entropy, &boot) else {
        println!("rng: no entropy device");
        return 2;
    };
    let pci = matches!(transport, AnyTransport::Pci(_));
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
    drop(rng);
    if pci {
        msix_request(&boot);
    }
    let varied = bytes[..got].iter().any(|&b| b != bytes[0]);
    println!("rng: {}", if varied { "not all equal" } else { "ALL EQUAL" });
    if got == 64 && varied { 0 } else { 1 }
}

/// One request by hand on the (reset) device, with its MSI-X entry aimed at
/// [`VECTOR`] and interrupts not suppressed; prints how many came.
fn msix_request(boot: &Boot) {
    let Some(w) = rt::raw::window(DeviceId::Entropy, boot) else { return };
    // The boot vCPU's local APIC (ID 0), fixed delivery of VECTOR.
    rt::irq::set_handler(VECTOR, count);
    if !w.use_msix(MsiMessage { address: 0xfee0_0000, data: VECTOR.into() }) {
        println!("rng: no MSI-X");
        return;
    }
    let Some(mut q) = rt::raw::RawQueue::new() else { return };
    if !q.attach(&w, pvkit_spec::virtio::Features::VERSION_1.bits()) {
        println!("rng: the device refused the queue");
        return;
    }
    w.driver_ok();
    q.submit(&w, &[(0, 16, true)]);
    let used = q.used(500);
    // The device writes the used entry, then sends the message: the
    // interrupt may come a little after the entry is seen.
    for _ in 0..100_000 {
        rt::irq::take_pending();
        if INTERRUPTS.load(Ordering::Relaxed) > 0 {
            break;
        }
    }
    w.write(pvkit_spec::virtio::mmio::Register::Status, 0);
    println!(
        "rng: a request with interrupts on: used {used:?}, {} interrupt(s) by MSI-X",
        INTERRUPTS.load(Ordering::Relaxed)
    );
}
